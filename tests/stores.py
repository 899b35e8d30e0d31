"""The stores ``cache_response`` tests run on, besides Redis (whose runs
live under ``tests/redis`` and point the ``store`` fixture at a server)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from django.core.cache import caches as django_caches
from django.test import override_settings


@contextmanager
def using_store(kind: str) -> Iterator[str]:
    """The cached views use ``kind``: the memory store, or a Django cache."""
    if kind == "memory":
        yield kind
        return
    caches = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    backend = {"CACHE_SETTINGS": {"BACKEND": "django:default"}}
    with override_settings(CACHES=caches, RESTFLOW_SETTINGS=backend):
        django_caches["default"].clear()  # locmem outlives the test that filled it
        yield kind
        django_caches["default"].clear()


@pytest.fixture(params=["memory", "django"], name="store")
def memory_or_django(request):
    """``store``: each test runs on the memory store and on a Django cache.
    A module imports it (as ``memory_or_django``); a Redis run of the same
    tests defines its own ``store``."""
    with using_store(request.param):
        yield request.param
