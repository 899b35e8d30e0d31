"""Connects the Rust engine to this package, once per process.

The engine hands back Python objects it cannot make itself (the
``CacheStatus`` members, ``CACHE_MISSING``, the ``restflow.caching`` logger)
and asks Python for its settings on first use. A process forked after
import gets fresh refresh threads, connections and in-flight maps of its
own (the engine notices the fork itself); at exit, queued refreshes are
dropped.
"""

from __future__ import annotations

import atexit
import logging

from restflow import _engine
from restflow.caching import settings
from restflow.caching.status import CACHE_MISSING, CacheStatus

logger = logging.getLogger("restflow.caching")

_installed = False


def install() -> None:
    global _installed
    if _installed:
        return
    _engine.install(
        CacheStatus,
        CACHE_MISSING,
        logger,
        settings.engine_settings,
        settings.backend_for,
    )
    settings.connect_signals()
    atexit.register(_engine.shutdown)
    _installed = True
