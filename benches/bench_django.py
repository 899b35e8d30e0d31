"""The Django settings of the benchmarks that serve a DRF view: no database,
no middleware, no authentication, JSON only (the framework's own minimum),
so what they measure is the view and its cache."""

from __future__ import annotations

from typing import Any


def bench_settings(cache_settings: dict[str, Any], urlconf: str, host: str) -> dict[str, Any]:
    """Keyword arguments for ``settings.configure``."""
    return {
        "SECRET_KEY": "restflow-bench-only",
        "DEBUG": False,
        "ALLOWED_HOSTS": [host],
        "ROOT_URLCONF": urlconf,
        "INSTALLED_APPS": [
            "django.contrib.contenttypes",
            "django.contrib.auth",
            "rest_framework",
            "restflow.caching",
        ],
        "MIDDLEWARE": [],
        "DATABASES": {},
        "REST_FRAMEWORK": {
            "DEFAULT_AUTHENTICATION_CLASSES": [],
            "DEFAULT_PERMISSION_CLASSES": [],
            "UNAUTHENTICATED_USER": None,
            "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
        },
        "RESTFLOW_SETTINGS": {"CACHE_SETTINGS": cache_settings},
    }
