"""restflow's cache settings: ``RESTFLOW_SETTINGS["CACHE_SETTINGS"]``.

The same place the older pure-Python restflow read its cache settings from.
They are read lazily, on the first cached call rather than at import, so
decorated functions can be imported before Django is configured, and read
again after Django's ``setting_changed`` signal, so ``override_settings``
works in tests. Outside Django the defaults apply.
"""

from __future__ import annotations

import hashlib
import hmac
import numbers
import os
import re
import sys
from collections.abc import Mapping
from datetime import timedelta
from typing import Any, NamedTuple

from restflow import _engine

#: Every key ``CACHE_SETTINGS`` accepts, with its default.
DEFAULTS: dict[str, Any] = {
    # The most entries the in-process memory store keeps; the least
    # valuable are evicted past it.
    "MAX_ENTRIES": 10_000,
    # Seconds an entry may be served stale, while one background refresh
    # runs, after its ttl ends. 0 turns stale serving off.
    "STALE_WHILE_REVALIDATE": 0,
    # Parts of a key string (the partition, the arguments) longer than this
    # many characters are replaced by their 128-bit digest.
    "MAX_KEY_PART_LENGTH": 250,
    # The dispatcher an InvalidationRule uses when it names none.
    "DEFAULT_DISPATCHER": "inline",
    # Whether a failing invalidation raises (by default it is logged).
    "DISPATCHER_RAISE_EXCEPTION": False,
    # Per-dispatcher options, by dispatcher name.
    "DISPATCHER_SETTINGS": {},
    # Where entries live: "memory" (this process), "redis://host:port/db" /
    # "rediss://..." (shared by every process that names it), "redis+cluster://h:p,h:p"
    # / "rediss+cluster://..." (a Redis Cluster, from seed nodes),
    # "redis+sentinel://h:p,h:p/<service>[/db]" (the master Sentinel names), or "django" /
    # "django:<alias>" (any cache in CACHES, through Django's cache API).
    "BACKEND": "memory",
    # Seconds past its stale window an entry is kept, and served (as STALE)
    # when its recompute raises. 0: off.
    "STALE_IF_ERROR": 0,
    # Prepended to every key a shared store holds.
    "KEY_PREFIX": "",
    # How values are written to a shared store: "pickle" or "json".
    "SERIALIZER": "pickle",
    # The HMAC key that signs shared entries; by default derived from
    # Django's SECRET_KEY.
    "SIGNING_KEY": None,
    # A failing shared store: "bypass" (compute live, report BYPASS, log)
    # or "raise" (CacheBackendError).
    "FAILURE_MODE": "bypass",
    # Shared store connections: pool size and timeouts (seconds).
    "POOL_SIZE": 16,
    "CONNECT_TIMEOUT": 0.5,
    "READ_TIMEOUT": 0.1,
    # Longest busy-wait (seconds) for a Redis lookup's answer before the
    # thread sleeps; 0: always sleep. Spares a nearby Redis's hit the cost
    # of waking a sleeping thread; paused by itself when answers are slower.
    "READ_SPIN": 0.0,
    # Replicas of each Redis master an invalidation reaches that must
    # acknowledge it before it returns (WAIT, up to READ_TIMEOUT); one fewer
    # acknowledged raises CacheBackendError, since a failover to a replica
    # that missed it would undo it. 0: not waited for. Not for Django caches.
    "INVALIDATION_REPLICAS": 0,
    # Whether an async caller's Redis hit is read by the event loop itself,
    # on a non-blocking socket of its own (True), or, like everything else
    # an async caller asks of a shared store, in a worker thread (False).
    "LOOP_SOCKET": True,
    # How long a computation lock lives: the longest a crashed process can
    # hold others up.
    "LOCK_TIMEOUT": 10,
    # The name cache_response writes in Cache-Status (RFC 9211): an HTTP
    # token, so a CDN's entries and restflow's can be told apart.
    "CACHE_STATUS_NAME": "restflow",
    # A per-process near cache in front of a Redis store, kept coherent by
    # Redis's invalidation messages: False (off), True (on, at most
    # NEAR_CACHE_DEFAULT_ENTRIES entries) or an int (on, at most that many
    # entries). Decorators override it with near_cache=True/False.
    "NEAR_CACHE": False,
}

#: The entries a near cache holds at most when ``NEAR_CACHE`` is ``True``
#: (or off, for the functions that turn it on with ``near_cache=True``).
NEAR_CACHE_DEFAULT_ENTRIES = 10_000

#: drf-restflow's key settings, accepted so its projects' settings need no
#: change, and checked. They do not change restflow's keys: every key part
#: longer than MAX_KEY_PART_LENGTH is digested, always (what
#: HASH_SUFFIX_ON_OVERFLOW=True did). KEY_HASH_ALGORITHM (a hashlib name or
#: a callable str -> str) is what restflow.caching.hashing.hash_string uses.
ORIGIN_KEY_SETTINGS: dict[str, Any] = {
    "MAX_KEY_SUFFIX_LENGTH": 250,
    "HASH_SUFFIX_ON_OVERFLOW": False,
    "KEY_HASH_ALGORITHM": "sha256",
}
DEFAULTS.update(ORIGIN_KEY_SETTINGS)

_cached: dict[str, Any] | None = None

#: An sf-token (RFC 8941 §3.3.4): how RFC 9211 §2 names a cache in
#: Cache-Status. A token is never quoted, so the header stays simple.
_TOKEN = re.compile(r"[A-Za-z*][A-Za-z0-9:/!#$%&'*+\-.^_`|~]*")


#: The largest counts the engine's integer settings hold (u64 / usize, u32):
#: a larger int would fail in the conversion with "int too big to convert".
_MAX_U64 = 2**64 - 1
_MAX_U32 = 2**32 - 1

#: The longest connect, read or lock timeout, in seconds.
_MAX_TIMEOUT = 86_400


def _count_within(value: Any, low: int, high: int) -> bool:
    """Whether ``value`` is an int (not a bool) from ``low`` to ``high``."""
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def configuration_error(message: str) -> Exception:
    """``ImproperlyConfigured`` under Django, ``ValueError`` without it."""
    try:
        from django.core.exceptions import ImproperlyConfigured
    except ImportError:
        return ValueError(message)
    return ImproperlyConfigured(message)


def seconds(value: Any, *, name: str, allow_none: bool = False) -> float | None:
    """Reads a duration given as seconds (int or float) or a ``timedelta``."""
    if value is None and allow_none:
        return None
    if isinstance(value, timedelta):
        value = value.total_seconds()
    elif isinstance(value, bool) or not isinstance(value, numbers.Real):
        allowed = "seconds (int or float), a timedelta" + (" or None" if allow_none else "")
        raise TypeError(f"{name} must be {allowed}; got {value!r}")
    value = float(value)
    if value < 0 or value != value or value == float("inf"):
        raise ValueError(f"{name} must be a finite number of seconds >= 0; got {value!r}")
    return value


def _user_settings() -> Mapping[str, Any]:
    try:
        from django.conf import settings
    except ImportError:
        return {}
    if not settings.configured:
        return {}
    restflow_settings = getattr(settings, "RESTFLOW_SETTINGS", None) or {}
    if not isinstance(restflow_settings, Mapping):
        raise configuration_error("RESTFLOW_SETTINGS must be a dict.")
    cache_settings = restflow_settings.get("CACHE_SETTINGS") or {}
    if not isinstance(cache_settings, Mapping):
        raise configuration_error('RESTFLOW_SETTINGS["CACHE_SETTINGS"] must be a dict.')
    return cache_settings


def _validate(user: Mapping[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(user) - set(DEFAULTS))
    if unknown:
        raise configuration_error(
            f'Unknown RESTFLOW_SETTINGS["CACHE_SETTINGS"] key(s): {", ".join(unknown)}. '
            f"Allowed keys: {', '.join(sorted(DEFAULTS))}."
        )
    merged = {**DEFAULTS, **user}
    max_entries = merged["MAX_ENTRIES"]
    if not _count_within(max_entries, 1, _MAX_U64):
        raise configuration_error(
            f'RESTFLOW_SETTINGS["CACHE_SETTINGS"]["MAX_ENTRIES"] must be an int >= 1 '
            f"(at most {_MAX_U64}); got {max_entries!r}."
        )
    max_part = merged["MAX_KEY_PART_LENGTH"]
    if not _count_within(max_part, 40, _MAX_U64):
        raise configuration_error(
            f'RESTFLOW_SETTINGS["CACHE_SETTINGS"]["MAX_KEY_PART_LENGTH"] must be an int >= 40 '
            f"(a digest takes 33; at most {_MAX_U64}); got {max_part!r}."
        )
    if not isinstance(merged["DEFAULT_DISPATCHER"], str) or not merged["DEFAULT_DISPATCHER"]:
        raise configuration_error(
            'RESTFLOW_SETTINGS["CACHE_SETTINGS"]["DEFAULT_DISPATCHER"] must be a dispatcher name; '
            f"got {merged['DEFAULT_DISPATCHER']!r}."
        )
    if not isinstance(merged["DISPATCHER_RAISE_EXCEPTION"], bool):
        raise configuration_error(
            'RESTFLOW_SETTINGS["CACHE_SETTINGS"]["DISPATCHER_RAISE_EXCEPTION"] must be True or '
            f"False; got {merged['DISPATCHER_RAISE_EXCEPTION']!r}."
        )
    dispatcher_settings = merged["DISPATCHER_SETTINGS"]
    if not isinstance(dispatcher_settings, Mapping) or not all(
        isinstance(v, Mapping) for v in dispatcher_settings.values()
    ):
        raise configuration_error(
            'RESTFLOW_SETTINGS["CACHE_SETTINGS"]["DISPATCHER_SETTINGS"] must map dispatcher names '
            f"to dicts of options; got {dispatcher_settings!r}."
        )
    _validate_backend_settings(merged)
    _validate_origin_key_settings(merged)
    name = merged["CACHE_STATUS_NAME"]
    if not isinstance(name, str) or _TOKEN.fullmatch(name) is None:
        raise configuration_error(
            'RESTFLOW_SETTINGS["CACHE_SETTINGS"]["CACHE_STATUS_NAME"] must be an HTTP token '
            "(a letter or *, then letters, digits and !#$%&'*+-.^_`|~:/; no spaces, commas or "
            f"semicolons), as Cache-Status (RFC 9211) names caches; got {name!r}."
        )
    try:
        merged["STALE_WHILE_REVALIDATE"] = seconds(
            merged["STALE_WHILE_REVALIDATE"], name="STALE_WHILE_REVALIDATE"
        )
    except (TypeError, ValueError) as error:
        raise configuration_error(
            f'RESTFLOW_SETTINGS["CACHE_SETTINGS"]["STALE_WHILE_REVALIDATE"]: {error}.'
        ) from None
    return merged


def validate_backend(spec: Any, name: str = "BACKEND") -> str:
    """Checks a backend spec: ``"memory"``, ``"redis://..."``, ``"rediss://..."``,
    ``"unix:///path"`` (or ``"redis+unix:///path"``), ``"redis+cluster://..."``,
    ``"rediss+cluster://..."``, ``"redis+sentinel://..."``,
    ``"rediss+sentinel://..."``, ``"django"`` or ``"django:<alias>"``."""
    if not isinstance(spec, str) or not (
        spec in ("memory", "django")
        or spec.startswith(
            (
                "redis://",
                "rediss://",
                "unix://",
                "redis+unix://",
                "redis+cluster://",
                "rediss+cluster://",
                "redis+sentinel://",
                "rediss+sentinel://",
            )
        )
        or (spec.startswith("django:") and len(spec) > len("django:"))
    ):
        raise configuration_error(
            f'{name} must be "memory", "redis://host:port/db", "rediss://...", '
            f'"unix:///path/to/redis.sock[?db=N]", '
            f'"redis+cluster://host:port[,host:port...]", "rediss+cluster://...", '
            f'"redis+sentinel://host:port[,host:port...]/<service>[/db]", '
            f'"rediss+sentinel://...", "django" or "django:<alias>"; got {spec!r}.'
        )
    if spec.startswith(("unix://", "redis+unix://")) and re.search(
        r"[?&](password|username)=", spec
    ):
        # redis-py's names; the engine's client reads "pass" and "user", and
        # would connect without them (every call then a BYPASS: NOAUTH).
        raise configuration_error(
            f'{name}: a unix:// URL takes its credentials as "?pass=...&user=...", '
            f'not "password=" or "username="; got {spec!r}.'
        )
    return spec


def _validate_backend_settings(merged: dict[str, Any]) -> None:
    key = 'RESTFLOW_SETTINGS["CACHE_SETTINGS"]'
    validate_backend(merged["BACKEND"], f'{key}["BACKEND"]')
    for name in ("STALE_IF_ERROR", "CONNECT_TIMEOUT", "READ_TIMEOUT", "READ_SPIN", "LOCK_TIMEOUT"):
        try:
            merged[name] = seconds(merged[name], name=name)
        except (TypeError, ValueError) as error:
            raise configuration_error(f'{key}["{name}"]: {error}.') from None
    for name in ("CONNECT_TIMEOUT", "READ_TIMEOUT", "LOCK_TIMEOUT"):
        if merged[name] <= 0:
            raise configuration_error(f'{key}["{name}"] must be > 0; got {merged[name]!r}.')
        if merged[name] > _MAX_TIMEOUT:
            # Longer is a unit mistake (milliseconds given as seconds), and
            # past ~5.8e11 years no Duration holds it at all.
            raise configuration_error(
                f'{key}["{name}"] is in seconds and must be at most {_MAX_TIMEOUT} (a day); '
                f"got {merged[name]!r}."
            )
    if merged["READ_SPIN"] > 0.001:
        raise configuration_error(
            f'{key}["READ_SPIN"] is in seconds and must be <= 0.001 (1 ms; 0 turns '
            f"busy-waiting off); got {merged['READ_SPIN']!r}."
        )
    if merged["SERIALIZER"] not in ("pickle", "json"):
        raise configuration_error(
            f'{key}["SERIALIZER"] must be "pickle" or "json"; got {merged["SERIALIZER"]!r}.'
        )
    if merged["FAILURE_MODE"] not in ("bypass", "raise"):
        raise configuration_error(
            f'{key}["FAILURE_MODE"] must be "bypass" or "raise"; got {merged["FAILURE_MODE"]!r}.'
        )
    if not isinstance(merged["KEY_PREFIX"], str) or "::" in merged["KEY_PREFIX"]:
        raise configuration_error(
            f'{key}["KEY_PREFIX"] must be a str without "::"; got {merged["KEY_PREFIX"]!r}.'
        )
    if not isinstance(merged["LOOP_SOCKET"], bool):
        raise configuration_error(
            f'{key}["LOOP_SOCKET"] must be True or False; got {merged["LOOP_SOCKET"]!r}.'
        )
    pool = merged["POOL_SIZE"]
    if not _count_within(pool, 1, _MAX_U32):
        raise configuration_error(
            f'{key}["POOL_SIZE"] must be an int >= 1 (at most {_MAX_U32}); got {pool!r}.'
        )
    replicas = merged["INVALIDATION_REPLICAS"]
    if not _count_within(replicas, 0, _MAX_U32):
        raise configuration_error(
            f'{key}["INVALIDATION_REPLICAS"] must be an int >= 0 (the replicas that must '
            f"acknowledge each invalidation; 0: none waited for; at most {_MAX_U32}); "
            f"got {replicas!r}."
        )
    if replicas and merged["BACKEND"].startswith("django"):
        # A Django cache has no replicas restflow can ask about (WAIT).
        raise configuration_error(
            f'{key}["INVALIDATION_REPLICAS"] must be 0 with BACKEND {merged["BACKEND"]!r}: '
            f"restflow waits for replicas only on Redis; got {replicas!r}."
        )
    near = merged["NEAR_CACHE"]
    if not isinstance(near, bool) and not _count_within(near, 1, _MAX_U64):
        raise configuration_error(
            f'{key}["NEAR_CACHE"] must be False, True or an int >= 1 (the most entries each '
            f"process keeps, at most {_MAX_U64}); got {near!r}."
        )
    signing = merged["SIGNING_KEY"]
    if signing is not None and not (isinstance(signing, (str, bytes)) and signing):
        raise configuration_error(
            f'{key}["SIGNING_KEY"] must be a non-empty str or bytes; got {signing!r}.'
        )


def signing_key() -> bytes:
    """The key that signs shared entries: ``SIGNING_KEY``, or one derived
    from Django's ``SECRET_KEY`` (never the secret itself)."""
    configured = cache_settings()["SIGNING_KEY"]
    if configured is not None:
        return configured.encode() if isinstance(configured, str) else configured
    secret = None
    try:
        from django.conf import settings
    except ImportError:
        pass
    else:
        if settings.configured:
            secret = getattr(settings, "SECRET_KEY", None)
    if not secret:
        raise configuration_error(
            'A shared cache store needs RESTFLOW_SETTINGS["CACHE_SETTINGS"]["SIGNING_KEY"] '
            "(or Django's SECRET_KEY) to sign its entries."
        )
    secret = secret.encode() if isinstance(secret, str) else secret
    return hmac.new(secret, b"restflow.caching.signing", hashlib.sha256).digest()


def _validate_origin_key_settings(merged: dict[str, Any]) -> None:
    prefix = 'RESTFLOW_SETTINGS["CACHE_SETTINGS"]'
    length = merged["MAX_KEY_SUFFIX_LENGTH"]
    if isinstance(length, bool) or not isinstance(length, int) or length < 1:
        raise configuration_error(
            f'{prefix}["MAX_KEY_SUFFIX_LENGTH"] must be an int >= 1; got {length!r}.'
        )
    if not isinstance(merged["HASH_SUFFIX_ON_OVERFLOW"], bool):
        raise configuration_error(
            f'{prefix}["HASH_SUFFIX_ON_OVERFLOW"] must be True or False; '
            f"got {merged['HASH_SUFFIX_ON_OVERFLOW']!r}."
        )
    algorithm = merged["KEY_HASH_ALGORITHM"]
    if not callable(algorithm) and algorithm not in hashlib.algorithms_available:
        raise configuration_error(
            f'{prefix}["KEY_HASH_ALGORITHM"] must be a hashlib algorithm name (such as '
            f"'sha256') or a callable str -> str; got {algorithm!r}."
        )


def cache_settings() -> dict[str, Any]:
    """The validated settings, read once and kept until they change."""
    global _cached
    if _cached is None:
        _cached = _validate(_user_settings())
    return _cached


class EngineSettings(NamedTuple):
    """What the engine reads on first use, and again after the settings
    change (it reads the fields by name)."""

    max_entries: int
    stale_while_revalidate: float
    max_key_part_length: int
    #: Whether ``BACKEND`` is the in-process memory store.
    memory: bool
    stale_if_error: float


def engine_settings() -> EngineSettings:
    """The settings the engine reads, from the validated ones."""
    current = cache_settings()
    return EngineSettings(
        max_entries=current["MAX_ENTRIES"],
        stale_while_revalidate=current["STALE_WHILE_REVALIDATE"],
        max_key_part_length=current["MAX_KEY_PART_LENGTH"],
        memory=current["BACKEND"] == "memory",
        stale_if_error=current["STALE_IF_ERROR"],
    )


def _check_cache_alias(alias: str) -> None:
    from django.conf import settings

    if alias not in getattr(settings, "CACHES", {"default": {}}):
        raise configuration_error(
            f"The cache backend 'django:{alias}' names no alias in CACHES "
            f"(aliases: {', '.join(settings.CACHES) or 'none'})."
        )
    _check_memcached_options(alias, settings.CACHES[alias])
    _check_django_redis_options(alias, settings.CACHES[alias])


def _check_memcached_options(alias: str, params: Mapping) -> None:
    """Refuses a ``PyMemcacheCache`` alias whose client answers without
    asking memcached.

    pymemcache's ``HashClient`` (what Django's ``PyMemcacheCache`` uses)
    marks a server failed at its first connection error and then, for
    ``retry_timeout`` seconds and up to ``retry_attempts`` times (1 s and 2
    by default), answers every call without sending it: ``get_many`` finds
    nothing, ``add`` and ``delete`` say False. A delete of a generation
    counter (an invalidation) is then lost while the call reports success,
    and other threads and processes, whose connections are fine, go on
    serving the retired entries. With ``retry_attempts`` 0 the client
    raises instead, so restflow computes live (BYPASS) and an invalidation
    raises until memcached answers; ``ignore_exc`` would swallow every
    error the same way.

    ``default_noreply`` is refused: ``add`` then says True without waiting
    for the answer, and it is restflow's only atomic claim (locks, fences,
    the start of a counter). Several servers are refused too: ``HashClient`` drops a server it
    cannot reach from its ring, so that server's keys go to the others
    meanwhile (a counter deleted there was never on them: the invalidation
    reports success), and come back to it, entries and counters as they
    were, when it answers again (a paused server, a network blip).
    """
    from django.core.cache.backends.memcached import PyMemcacheCache
    from django.utils.module_loading import import_string

    try:
        backend = import_string(params.get("BACKEND", ""))
    except ImportError:
        return  # Django's own error names it at the first use of the alias
    if not (isinstance(backend, type) and issubclass(backend, PyMemcacheCache)):
        return
    options = params.get("OPTIONS") or {}
    retries, ignores = options.get("retry_attempts", 2), options.get("ignore_exc", False)
    if len(_memcached_servers(params.get("LOCATION", ""))) > 1:
        raise configuration_error(
            f"The cache backend 'django:{alias}' is a PyMemcacheCache on several memcached "
            "servers: pymemcache moves the keys of a server it cannot reach to the others, "
            "so an invalidation made then deletes nothing, and the server's entries are "
            "served again when it comes back. Give restflow an alias with one server in "
            "LOCATION (memcached keeps one server's keys to itself)."
        )
    if options.get("default_noreply", False):
        raise configuration_error(
            f"The cache backend 'django:{alias}' is a PyMemcacheCache whose client does not "
            "wait for memcached's answers (default_noreply=True): its add, restflow's locks "
            "and counters, would always say it stored, and a computation would not be "
            "shared across processes. Leave CACHES"
            f"[{alias!r}]['OPTIONS']['default_noreply'] False (Django's default)."
        )
    if retries == 0 and not ignores:
        return
    raise configuration_error(
        f"The cache backend 'django:{alias}' is a PyMemcacheCache whose client answers "
        f"without asking memcached after a failed connection (retry_attempts={retries!r}, "
        f"ignore_exc={ignores!r}): an invalidation made then would be lost silently. Set "
        f"CACHES[{alias!r}]['OPTIONS']['retry_attempts'] = 0 (and leave ignore_exc False); "
        "a failed connection then raises and restflow computes live (BYPASS) until memcached "
        "answers. 'dead_timeout' (60 s by default) is how long pymemcache then waits before "
        "trying the server again: 1 resumes caching within a second of its return."
    )


def _check_django_redis_options(alias: str, params: Mapping) -> None:
    """Refuses a django-redis alias (``django_redis.cache.RedisCache``) on
    which restflow's invalidations could be lost or retired entries served.

    - ``IGNORE_EXCEPTIONS`` (or ``DJANGO_REDIS_IGNORE_EXCEPTIONS``):
      django-redis then answers a failed connection with nothing (``get``
      None, ``add`` and ``delete`` None) instead of raising, so an
      invalidation made then is lost while it reports success, and the
      retired entry is served once Redis answers again.
    - ``HerdClient``: its ``touch`` is a read then a write, so an
      invalidation between the two is undone (the counter it deleted is
      written back, and the entry it retired is current again); it also
      keeps every key ``CACHE_HERD_TIMEOUT`` (60 s) past its timeout, so a
      lost lock holds that much longer. restflow already computes a missing
      entry once (its lock) and serves stale while refreshing.
    - Reads from replicas (several servers in ``LOCATION`` without
      ``ShardClient``, or ``SentinelClient``): a replica behind an
      invalidation serves the entry it retired.
    - A ``SERIALIZER`` that cannot store bytes and text as they are (the
      JSON serializer): every write failed, and the store was reported down
      ("until it answers again") when it never would.
    """
    from django.conf import settings
    from django.utils.module_loading import import_string

    try:
        backend = import_string(params.get("BACKEND", ""))
        from django_redis import client as clients
        from django_redis.cache import RedisCache
    except ImportError:
        return  # not django-redis, or Django's own error names it at first use
    if not (isinstance(backend, type) and issubclass(backend, RedisCache)):
        return
    name = f"The cache backend 'django:{alias}' is a django-redis RedisCache"
    options = params.get("OPTIONS") or {}
    ignores = options.get(
        "IGNORE_EXCEPTIONS", getattr(settings, "DJANGO_REDIS_IGNORE_EXCEPTIONS", False)
    )
    if ignores:
        raise configuration_error(
            f"{name} that ignores connection errors (IGNORE_EXCEPTIONS, or "
            "DJANGO_REDIS_IGNORE_EXCEPTIONS): it answers a failed connection with nothing, "
            "so an invalidation made then would be lost silently and the retired entry "
            f"served again. Set CACHES[{alias!r}]['OPTIONS']['IGNORE_EXCEPTIONS'] = False "
            "(it overrides DJANGO_REDIS_IGNORE_EXCEPTIONS; give restflow an alias of its own "
            "if other code relies on it): a failed connection then raises and restflow "
            "computes live (BYPASS) until Redis answers."
        )
    try:
        client = import_string(options.get("CLIENT_CLASS", "django_redis.client.DefaultClient"))
    except ImportError:
        return  # django-redis's own error names it at the first use of the alias
    herd, sentinel = clients.HerdClient, getattr(clients, "SentinelClient", None)
    shard = clients.ShardClient
    if isinstance(client, type) and issubclass(client, herd):
        raise configuration_error(
            f"{name} with django-redis's HerdClient: its touch is a read then a write, so an "
            "invalidation made between the two is undone and the retired entry served, and "
            "it keeps every key 60 s (CACHE_HERD_TIMEOUT) past its timeout, locks included. "
            "Use django_redis.client.DefaultClient (the default): restflow already computes "
            "a missing entry once across processes and serves stale while it refreshes."
        )
    location = params.get("LOCATION", "")
    servers = location.split(",") if isinstance(location, str) else list(location)
    replicas = len(servers) > 1 and not (isinstance(client, type) and issubclass(client, shard))
    if replicas or (sentinel and isinstance(client, type) and issubclass(client, sentinel)):
        raise configuration_error(
            f"{name} that reads from replicas (several servers in LOCATION, or "
            "SentinelClient): a replica behind an invalidation serves the entry it retired. "
            "Give restflow an alias with the master alone in LOCATION, or restflow's own Redis "
            "backend (BACKEND 'redis+sentinel://...' follows a failover, reading the master)."
        )
    serializer_path = options.get("SERIALIZER", "django_redis.serializers.pickle.PickleSerializer")
    try:
        serializer = import_string(serializer_path)(options=options)
    except ImportError:
        return  # django-redis's own error names it at the first use of the alias
    for probe in (b"\x00restflow\xff", "restflow"):
        try:
            back = serializer.loads(serializer.dumps(probe))
        except Exception:
            back = None
        if type(back) is not type(probe) or back != probe:
            raise configuration_error(
                f"{name} whose SERIALIZER ({serializer_path}) does not give back "
                f"{type(probe).__name__} values as they were: restflow stores its entries as "
                "bytes and its lock tokens as text, so every write would fail. Use "
                "django_redis.serializers.pickle.PickleSerializer (the default), or give "
                "restflow an alias of its own with it."
            )


def _close_inherited_django_caches() -> None:
    """In a forked child: closes the Django cache objects it inherited, so
    its calls open connections of their own.

    Django keeps one cache object per thread, and the child inherits the
    forking thread's, sockets included. pymemcache (``PyMemcacheCache``)
    never notices a fork: parent and child wrote to one memcached
    connection and could read each other's answers (a call hung waiting
    for an answer the other process had read, or took another's).
    ``close()`` only drops the child's copy of the socket; the parent's
    connection is untouched, and the next call connects again.
    """
    if "django.core.cache" not in sys.modules:
        return  # nothing made yet
    from django.core.cache import caches

    try:
        inherited = caches.all(initialized_only=True)
    except Exception:  # settings not configured: no cache was made
        return
    for cache in inherited:
        try:
            cache.close()
        except Exception:  # a backend whose close fails: leave it
            pass


os.register_at_fork(after_in_child=_close_inherited_django_caches)


def _memcached_servers(location: Any) -> list[str]:
    """The servers of a memcached alias's ``LOCATION``, as Django reads it
    (a list, or one string separated by ``;`` or ``,``)."""
    if isinstance(location, str):
        return [server for server in re.split("[;,]", location) if server.strip()]
    return list(location)


def backend_for(spec: str | None):
    """The engine's backend for a wrapper's ``backend=`` (``None``: the
    ``BACKEND`` setting): ``None`` for the memory store, else a shared one
    made from the settings. The engine keeps what this returns until the
    settings change."""
    current = cache_settings()
    from_settings = spec is None
    where = 'RESTFLOW_SETTINGS["CACHE_SETTINGS"]["BACKEND"]' if from_settings else "backend="
    spec = current["BACKEND"] if spec is None else spec
    if spec == "memory":
        return None
    if spec.startswith("django"):
        _check_cache_alias(spec.partition(":")[2] or "default")
    try:
        return _engine.SharedBackend(
            spec,
            signing_key=signing_key(),
            key_prefix=current["KEY_PREFIX"],
            serializer=current["SERIALIZER"],
            pool_size=current["POOL_SIZE"],
            connect_timeout=current["CONNECT_TIMEOUT"],
            read_timeout=current["READ_TIMEOUT"],
            read_spin=current["READ_SPIN"],
            invalidation_replicas=current["INVALIDATION_REPLICAS"],
            lock_timeout=current["LOCK_TIMEOUT"],
            bypass_on_failure=current["FAILURE_MODE"] == "bypass",
            # Every Redis backend can keep one, made on first use by a function
            # that uses it; NEAR_CACHE says whether functions do by default.
            near_cache_size=0
            if spec.startswith("django")
            else _near_cache_size(current["NEAR_CACHE"]),
            near_cache_default=bool(current["NEAR_CACHE"]),
        )
    except ValueError as error:
        # A URL the engine cannot parse: nothing was connected, so this is
        # the setting's (ImproperlyConfigured) or the parameter's
        # (ValueError) fault, and the message says which.
        message = f"{where} {spec!r} cannot be used: {error}."
        raise (configuration_error(message) if from_settings else ValueError(message)) from None


def _near_cache_size(setting: bool | int) -> int:
    """The most entries a near cache holds, for ``NEAR_CACHE``."""
    if isinstance(setting, bool):
        return NEAR_CACHE_DEFAULT_ENTRIES
    return setting


def reload() -> None:
    """Forgets the settings read so far; the next cached call reads them again."""
    global _cached
    _cached = None
    _engine.reconfigure()


def _on_setting_changed(*, setting: str, **kwargs: Any) -> None:
    if setting == "RESTFLOW_SETTINGS":
        reload()


def connect_signals() -> None:
    """Follows ``override_settings`` and other setting changes, when Django is installed."""
    try:
        from django.core.signals import setting_changed
    except ImportError:
        return
    setting_changed.connect(_on_setting_changed, dispatch_uid="restflow.caching.settings")
