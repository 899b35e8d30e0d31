"""A small Django REST framework project that shows restflow's cache headers."""
