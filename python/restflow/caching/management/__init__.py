"""Django management commands of restflow.caching."""
