"""Which errors of a Django cache are the cache's answer to one operation,
and which say the cache cannot be reached.

A Django backend raises whatever its client library raises. The Django
store (``"django:<alias>"``) counts an exception as a store that is down
(the circuit breaker opens after three in a row, for every function on the
store, and the warning says calls are computed live until it answers)
unless it is an answer: then only that operation failed, as with a write
Redis refuses. The engine calls :func:`answered` only on an error, never on
the hot path.
"""

from __future__ import annotations

import sys

from django.core.cache.backends.base import InvalidCacheKey


def classify(error: BaseException) -> str:
    """What ``error`` from a Django cache call says: ``"answer"`` (see
    :func:`answered`), ``"closed"`` (see :func:`closed`) or ``"failure"``
    (the cache could not be reached, or anything else)."""
    if answered(error):
        return "answer"
    return "closed" if closed(error) else "failure"


def closed(error: BaseException) -> bool:
    """Whether the connection was found closed when the call read its
    answer (pymemcache's ``MemcacheUnexpectedCloseError``): memcached
    restarted, or closed the connection, while it sat idle. pymemcache then
    drops the socket and connects again at the next call, so the call is
    made once more (a server that is down fails that one too). A connection
    refused or reset is an ``OSError``, after which pymemcache stops using
    the server for ``dead_timeout``: a failure."""
    exceptions = sys.modules.get("pymemcache.exceptions")
    return exceptions is not None and isinstance(error, exceptions.MemcacheUnexpectedCloseError)


def answered(error: BaseException) -> bool:
    """Whether ``error`` is the cache's answer to one operation (it is up):
    memcached refusing an item over its size limit (``SERVER_ERROR object
    too large for cache``) or a command (``CLIENT_ERROR``), Redis refusing
    a command (redis-py's ``ResponseError``, which django-redis and
    Django's own Redis backend raise as they get it: a full Redis under
    ``noeviction`` refusing writes with ``OOM``, a replica refusing them
    with ``READONLY``), or Django refusing a key for memcached. A
    connection that closed mid-answer is not one: pymemcache raises it as
    a server error too. Nor is ``ERROR`` (pymemcache's
    ``MemcacheUnknownCommandError``, a client error): to the commands
    Django sends (``get``, ``set``, ``add``, ``delete``, ``touch``), all
    memcached's own, memcached says it only on a connection it refuses,
    past its connection limit (``-c``): ``ERROR Too many open
    connections``, then it closes it. That server cannot be reached, as
    one that is down."""
    if isinstance(error, InvalidCacheKey):
        return True
    # Loaded only if a Redis client could have raised it.
    redis_exceptions = sys.modules.get("redis.exceptions")
    if redis_exceptions is not None and isinstance(error, redis_exceptions.ResponseError):
        return True
    # Loaded only if a pymemcache client could have raised it.
    exceptions = sys.modules.get("pymemcache.exceptions")
    if exceptions is None:
        return False
    refused = exceptions.MemcacheUnexpectedCloseError | exceptions.MemcacheUnknownCommandError
    if isinstance(error, refused):
        return False
    return isinstance(error, exceptions.MemcacheClientError | exceptions.MemcacheServerError)
