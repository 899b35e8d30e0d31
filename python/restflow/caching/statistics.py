"""What the cache did: counts, hit ratio and latencies, per function and per backend.

The engine counts (one relaxed atomic increment per event, kept in Rust);
this module reads those counts and adds what is arithmetic: the number of
calls, the hit ratio, and percentiles from the latency histograms.

::

    from restflow.caching import stats, reset_stats

    stats()["functions"]["myapp.payloads.get_user_payload"]["hit_ratio"]
    get_user_payload.stats()        # the same dict, for one function
    reset_stats()                   # every function and backend starts over

Latencies: ``compute`` is how long the function ran (every computation:
misses, refreshes, background refreshes, bypasses). ``lookup`` is how long
a shared-store lookup took (Redis, Django caches): a memory hit is counted
but never timed, since reading a clock would cost more than the hit.
Percentiles are the upper bound of the histogram bucket they fall in
(buckets double from 1 µs to ~33 s), so ``p99 = 0.000512`` reads "at most
512 µs".
"""

from __future__ import annotations

import itertools
import os
import weakref
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from restflow import _engine

#: The statuses a call ends with, as counted.
STATUSES = ("hit", "miss", "stale", "bypass", "refresh")

#: Counters a store keeps for itself (not per function).
STORE_COUNTERS = ("store_errors", "breaker_trips", "lock_waits")

#: The histograms' finite bucket bounds in seconds; a +Inf bucket follows.
BUCKET_BOUNDS: tuple[float, ...] = tuple(_engine.stats_bucket_bounds())

# Every engine wrapper made by cache_result (the Rust CachedWrapper, also
# under async and cache_response wrappers), by serial number; weak, so
# counting never keeps a function alive (an entry leaves with its wrapper).
# A plain dict, not a WeakSet: a WeakSet is iterated step by step in Python,
# and a function made in another thread between two steps broke the
# iteration ("Set changed size during iteration") of stats() or a scrape;
# ``list(dict.values())`` is one step (see :func:`live`).
_wrappers: dict[int, weakref.ref[Any]] = {}
_serials = itertools.count()


# In a forked child: each wrapper's running totals at the fork (what the
# parent counted, the parent's to report); weak, as ``_wrappers``; written
# only at a fork, where no other thread runs.
_at_fork: weakref.WeakKeyDictionary[Any, dict[str, Any]] = weakref.WeakKeyDictionary()
_forked = False


def track(wrapper: Any) -> None:
    """Lists ``wrapper`` (an engine ``CachedWrapper``) in :func:`stats`."""
    serial = next(_serials)  # atomic under the GIL
    _wrappers[serial] = weakref.ref(
        wrapper, lambda _, serial=serial, wrappers=_wrappers: wrappers.pop(serial, None)
    )


def untrack(wrapper: Any) -> None:
    """Leaves ``wrapper`` out of :func:`stats` (a function of restflow's own)."""
    for serial, ref in list(_wrappers.items()):
        if ref() is wrapper:
            _wrappers.pop(serial, None)


def live() -> list[Any]:
    """The live engine wrappers, in no order. Safe while other threads make
    or drop cached functions: the references are copied in one step (C code
    that runs no Python, so no other thread or weakref callback runs in the
    middle of it), then each is followed."""
    return [wrapper for ref in list(_wrappers.values()) if (wrapper := ref()) is not None]


def on_collected(wrapper: Any, collected: list[tuple[Any, ...]], *about: Any) -> None:
    """Appends ``(counts, *about)`` to ``collected`` once ``wrapper`` has been
    garbage-collected; ``counts`` (``wrapper.counts()``, an engine
    ``Counts``) reads what it counted up to its end. For exporters whose
    counters must never go down. Only a list append, at whatever moment the
    collector runs: the exporter reads the list on its next pass, under its
    own lock. The ``Counts`` holds no Python object, so it keeps nothing
    alive."""
    finalizer = weakref.finalize(wrapper, collected.append, (wrapper.counts(), *about))
    finalizer.atexit = False


def inherited(wrapper: Any) -> dict[str, Any] | None:
    """In a forked child, ``wrapper``'s running totals (``counters(True)``)
    at the latest fork: counts its parent made, which exporters that report
    per process (Prometheus' multiprocess mode) must not report again.
    ``None`` for a wrapper made after the fork, or that had counted nothing."""
    return _at_fork.get(wrapper)


def forked() -> bool:
    """Whether this process was forked from one that imported restflow."""
    return _forked


def _after_fork_in_child() -> None:
    # Read here, in every child, rather than by the Prometheus module: a
    # parent may fork before it ever imports that module (a --preload
    # master whose metrics view is imported on the first request), and the
    # child's own calls start moving the counts at once.
    global _forked
    _forked = True
    _at_fork.clear()
    for wrapper in live():
        if wrapper.counted_events():
            _at_fork[wrapper] = wrapper.counters(True)


os.register_at_fork(after_in_child=_after_fork_in_child)


def tracked() -> list[Any]:
    """The live engine wrappers, oldest first by function id."""
    return sorted(live(), key=lambda w: w.function_id)


def backend_label(backend: Any) -> str:
    """``"memory"``, or a shared backend's URL without its credentials
    (labels end up in dashboards and logs)."""
    if backend is None:
        return "memory"
    url = backend.url
    parts = urlsplit(url)
    if parts.password is None and parts.username is None:
        return url
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))


def backend_of(wrapper: Any) -> Any:
    """The shared backend a wrapper's calls use, or ``None`` for memory
    (also when the backend cannot be built: ``check`` reports that)."""
    return store_of(wrapper)[0]


#: The label of a function whose shared store cannot be built (a backend
#: naming no Django cache alias, a URL that does not parse): its calls fail
#: before they are counted, and ``manage.py restflow_cache check`` says why.
UNAVAILABLE = "unavailable"


def store_of(wrapper: Any) -> tuple[Any, str]:
    """The shared backend a wrapper's calls use (``None``: memory, or one
    that cannot be built) and its label: ``"memory"``, the store's URL
    without credentials, or :data:`UNAVAILABLE`."""
    try:
        backend = wrapper.shared_backend()
    except Exception:
        return None, UNAVAILABLE
    return backend, backend_label(backend)


def histogram(raw: dict[str, Any]) -> dict[str, Any]:
    """A raw histogram (per-bucket counts, sum) as count, sum, p50, p99 and
    cumulative ``(le, count)`` buckets."""
    counts = raw["buckets"]
    total = sum(counts)
    cumulative, seen = [], 0
    for bound, n in zip((*BUCKET_BOUNDS, float("inf")), counts, strict=True):
        seen += n
        cumulative.append((bound, seen))
    return {
        "count": total,
        "sum": raw["sum"],
        "p50": quantile(cumulative, total, 0.50),
        "p99": quantile(cumulative, total, 0.99),
        "buckets": cumulative,
    }


def quantile(cumulative: list[tuple[float, int]], total: int, q: float) -> float | None:
    """The upper bound of the bucket holding quantile ``q`` of ``total``
    observations, from cumulative ``(le, count)`` buckets; ``None`` when empty."""
    if total == 0:
        return None
    rank = max(1, -int(-q * total // 1))  # ceil(q * total), at least 1
    for bound, seen in cumulative:
        if seen >= rank:
            return bound
    return float("inf")


def _described(raw: dict[str, Any], store: bool = False) -> dict[str, Any]:
    """Raw engine counts with ``calls``, ``hit_ratio`` and the histograms
    summarised. The hit ratio is the share of calls served from the cache
    (HIT or STALE); ``None`` before any call. The store's own counters are
    kept only for a backend (``store``): a function's are always 0."""
    left_out = ("compute", "lookup") if store else ("compute", "lookup", *STORE_COUNTERS)
    out = {k: v for k, v in raw.items() if k not in left_out}
    calls = sum(raw[s] for s in STATUSES)
    out["calls"] = calls
    out["hit_ratio"] = (raw["hit"] + raw["stale"]) / calls if calls else None
    out["compute"] = histogram(raw["compute"])
    out["lookup"] = histogram(raw["lookup"])
    return out


def add_counts(into: dict[str, Any], raw: dict[str, Any]) -> None:
    """Adds raw counts (``counters()``) into ``into``, histograms bucket by bucket."""
    for name, value in raw.items():
        if isinstance(value, dict):
            target = into.setdefault(name, {"buckets": [0] * len(value["buckets"]), "sum": 0.0})
            target["buckets"] = [
                a + b for a, b in zip(target["buckets"], value["buckets"], strict=True)
            ]
            target["sum"] += value["sum"]
        else:
            into[name] = into.get(name, 0) + value


def function_stats(wrapper: Any) -> dict[str, Any]:
    """One function's statistics (what ``wrapper.stats()`` returns)."""
    described = _described(wrapper.counters())
    described["backend"] = store_of(wrapper)[1]
    return described


def _collected(
    totals: bool,
) -> tuple[dict[tuple[str, str], dict[str, Any]], dict[str, tuple[Any, dict[str, Any]]]]:
    """One pass over the live wrappers: ``{(function_id, backend label): raw
    counts}`` (wrappers sharing a function id on one store, a function
    defined again, added together) and ``{backend label: (backend or None,
    raw counts of its functions)}``."""
    pairs: dict[tuple[str, str], dict[str, Any]] = {}
    backends: dict[str, tuple[Any, dict[str, Any]]] = {}
    for wrapper in tracked():
        backend, label = store_of(wrapper)
        raw = wrapper.counters(totals)
        add_counts(pairs.setdefault((wrapper.function_id, label), {}), raw)
        add_counts(backends.setdefault(label, (backend, {}))[1], raw)
    return pairs, backends


def backends_in_use() -> dict[str, Any]:
    """``{label: shared backend or None}`` for every backend a live function uses."""
    return {label: backend for label, (backend, _) in _collected(False)[1].items()}


def _function_entry(stores: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """A function id's entry of :func:`stats` from its raw counts per store.

    On one store (the common case): its counts and ``"backend"``, that
    store's label. Wrappers of one id on several stores (a function defined
    again with another ``backend=``, functions sharing a ``key_identifier``)
    are not one store's: their counts added up, ``"backend"`` the sorted
    list of labels, and ``"stores"`` each store's own entry, which is what
    Prometheus exports under each ``backend`` label."""
    if len(stores) == 1:
        ((label, raw),) = stores.items()
        return {**_described(raw), "backend": label}
    total: dict[str, Any] = {}
    for raw in stores.values():
        add_counts(total, raw)
    return {
        **_described(total),
        "backend": sorted(stores),
        "stores": {
            label: {**_described(raw), "backend": label} for label, raw in sorted(stores.items())
        },
    }


def stats() -> dict[str, Any]:
    """Every cached function's statistics since the last :func:`reset_stats`,
    and per-backend totals::

        {"functions": {function_id: {...}}, "backends": {label: {...}}}

    A function id used on several stores is described by
    :func:`_function_entry`. A backend's entry adds up its functions'
    counts, plus what the store counts itself (``store_errors``,
    ``breaker_trips``, ``lock_waits``, and the ``lookup`` histogram of its
    fetch round trips).
    """
    pairs, by_backend = _collected(False)
    per_function: dict[str, dict[str, dict[str, Any]]] = {}
    for (function_id, label), raw in pairs.items():
        per_function.setdefault(function_id, {})[label] = raw
    functions = {
        function_id: _function_entry(stores) for function_id, stores in per_function.items()
    }
    backends = {}
    for label, (backend, raw) in by_backend.items():
        if backend is not None:
            own = backend.stats()
            for name in STORE_COUNTERS:
                raw[name] += own[name]
            raw["lookup"] = own["lookup"]  # the store's own round trips
        backends[label] = _described(raw, store=True)
    return {"functions": functions, "backends": backends}


def reset_stats() -> None:
    """Starts every function's and backend's statistics over. Prometheus
    counters are not reset (they read the engine's running totals)."""
    for wrapper in tracked():
        wrapper.reset_stats()
    for backend in backends_in_use().values():
        if backend is not None:
            backend.reset_stats()
