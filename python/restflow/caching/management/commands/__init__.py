"""``manage.py restflow_cache``."""
