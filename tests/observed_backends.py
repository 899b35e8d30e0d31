"""The stores the statistics and command tests run on: the memory store
and a Django cache (Redis has its own tests under tests/redis)."""

from __future__ import annotations

import pytest
from django.core.cache import caches
from django.test import override_settings

from restflow.caching import reset_stats

CACHES = {
    "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
    "locmem": {
        "BACKEND": "django.core.cache.backends.locmem.LocMemCache",
        "LOCATION": "restflow-observed",
    },
}
BACKENDS = {"memory": "memory", "django": "django:locmem"}


@pytest.fixture(params=list(BACKENDS), name="observed_backend")
def observed_backend_fixture(request):
    """The BACKEND setting on each store, emptied, with statistics reset;
    the backend's label (as `stats()` names it)."""
    settings = {"CACHE_SETTINGS": {"BACKEND": BACKENDS[request.param]}}
    with override_settings(CACHES=CACHES, RESTFLOW_SETTINGS=settings):
        caches["locmem"].clear()
        reset_stats()
        yield BACKENDS[request.param]
