"""The cache's statistics as Prometheus metrics (``pip install restflow-cache[prometheus]``).

Metrics (``function`` is the function id, ``backend`` ``"memory"`` or the
store's URL without credentials, ``status`` the word clients see)::

    restflow_cache_requests_total{function,status,backend}   HIT/MISS/STALE/BYPASS/REFRESH
    restflow_cache_events_total{function,event,backend}      computations, errors,
                                                             stale_if_error, single_flight_waits,
                                                             background_refreshes, near_*, ...
    restflow_cache_compute_seconds{function,backend}         histogram
    restflow_cache_lookup_seconds{function,backend}          histogram (shared stores only)
    restflow_cache_store_errors_total{backend}
    restflow_cache_breaker_trips_total{backend}
    restflow_cache_lock_waits_total{backend}

Set-up, one process (``runserver``, a single worker)::

    # urls.py
    from restflow.caching.prometheus import metrics_view
    urlpatterns += [path("metrics", metrics_view)]

Several worker processes (gunicorn ``-w 4``): prometheus_client's
multiprocess mode (``PROMETHEUS_MULTIPROC_DIR`` set before the workers
start). A custom collector cannot be used there: the scrape reaches one
worker, which cannot read the others' memory. So each worker folds its
engine counters, as deltas since its last fold, into prometheus_client's
own ``Counter`` and ``Histogram`` objects, whose values that mode keeps in
files the ``MultiProcessCollector`` adds up. The fold runs at the end of
every request (:class:`PrometheusMiddleware`; it reads only functions whose
counts moved) and in the worker that answers a scrape, so a scrape sees
every request answered before it.

The histograms' buckets are the engine's (1 µs to ~33 s, doubling), so a
fold adds bucket counts as they are instead of replaying observations.
"""

from __future__ import annotations

import logging
import os
import threading
import weakref
from collections.abc import Callable, Iterator
from typing import Any

try:
    from prometheus_client import CONTENT_TYPE_LATEST as CONTENT_TYPE
    from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram, generate_latest
    from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
except ImportError as missing:  # pragma: no cover - the test environment has it
    raise ImportError(
        "restflow.caching.prometheus needs prometheus_client: "
        "pip install restflow-cache[prometheus]"
    ) from missing

from restflow.caching import statistics as _stats

logger = logging.getLogger("restflow.caching")

STATUSES = {
    "hit": "HIT",
    "miss": "MISS",
    "stale": "STALE",
    "bypass": "BYPASS",
    "refresh": "REFRESH",
}
#: Per-function counts that are not statuses (exported as events).
EVENTS = (
    "computations",
    "errors",
    "stale_if_error",
    "single_flight_waits",
    "background_refreshes",
    "near_hits",
    "near_misses",
    "near_invalidations",
    "early_refreshes",
)
#: Counts a store keeps for itself, each its own metric.
STORE_METRICS = {
    "store_errors": ("restflow_cache_store_errors", "Store operations that failed"),
    "breaker_trips": ("restflow_cache_breaker_trips", "Times the circuit breaker opened"),
    "lock_waits": ("restflow_cache_lock_waits", "Waits on another process's computation"),
}
REQUESTS_HELP = "Cached calls by the status they ended with"
EVENTS_HELP = "Computations, errors and other events of cached calls"
COMPUTE_HELP = "How long cached functions ran"
LOOKUP_HELP = "How long shared-store lookups took (memory hits are not timed)"


def multiprocess_mode() -> bool:
    """Whether prometheus_client keeps values in files for several processes."""
    return bool(
        os.environ.get("PROMETHEUS_MULTIPROC_DIR") or os.environ.get("prometheus_multiproc_dir")
    )


# -- one process: a collector that reads the engine's totals at scrape time --


class RestflowCollector:
    """Reads every function's running totals when scraped. Monotonic, as
    Prometheus counters must be (a decrease reads as a restart, which
    ``rate()`` counts as the whole value again): ``reset_stats()`` does not
    touch the totals, and a function collected after a scrape read it
    leaves what it counted in its series (kept per function id and store,
    not per wrapper)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # The wrappers the last scrape read, by id(): each one's counters
        # (which outlive it) and the label it was exported under.
        self._exported: dict[int, _Exported] = {}
        # (function id, backend label) -> what collected wrappers counted.
        self._retired: dict[tuple[str, str], dict[str, Any]] = {}

    def totals(self) -> dict[tuple[str, str], dict[str, Any]]:
        """Running totals per (function id, backend label): the live
        wrappers' (a function defined again, added together), plus what the
        ones collected since an earlier scrape read them had counted, to
        their end.

        A wrapper the last scrape read and this one does not find alive was
        collected in between: its final counts move to ``_retired`` under
        the label it was exported under. (The live wrappers are held for the
        whole pass, so none dies in the middle of it.)"""
        with self._lock:
            pairs: dict[tuple[str, str], dict[str, Any]] = {}
            exported: dict[int, _Exported] = {}
            for wrapper in _stats.tracked():
                record = self._exported.get(id(wrapper))
                if record is None or record.ref() is not wrapper:
                    record = _Exported(wrapper)
                record.label = _stats.store_of(wrapper)[1]
                exported[id(wrapper)] = record
                key = (record.function_id, record.label)
                _stats.add_counts(pairs.setdefault(key, {}), wrapper.counters(True))
            for address, record in self._exported.items():
                if exported.get(address) is not record:
                    key = (record.function_id, record.label)
                    _stats.add_counts(
                        self._retired.setdefault(key, {}), record.counts.counters(True)
                    )
            self._exported = exported
            for key, raw in self._retired.items():
                _stats.add_counts(pairs.setdefault(key, {}), raw)
            return pairs

    def collect(self) -> Iterator[Metric]:
        labels = ["function", "backend"]
        requests = CounterMetricFamily(
            "restflow_cache_requests", REQUESTS_HELP, labels=["function", "status", "backend"]
        )
        events = CounterMetricFamily(
            "restflow_cache_events", EVENTS_HELP, labels=["function", "event", "backend"]
        )
        compute = HistogramMetricFamily(
            "restflow_cache_compute_seconds", COMPUTE_HELP, labels=labels
        )
        lookup = HistogramMetricFamily("restflow_cache_lookup_seconds", LOOKUP_HELP, labels=labels)
        for (function, backend), raw in self.totals().items():
            for name, status in STATUSES.items():
                requests.add_metric([function, status, backend], raw[name])
            for name in EVENTS:
                events.add_metric([function, name, backend], raw[name])
            for family, key in ((compute, "compute"), (lookup, "lookup")):
                summary = _stats.histogram(raw[key])
                family.add_metric(
                    [function, backend],
                    [(_le(bound), count) for bound, count in summary["buckets"]],
                    summary["sum"],
                )
        yield from (requests, events, compute, lookup)
        stores = {
            name: CounterMetricFamily(metric, help_text, labels=["backend"])
            for name, (metric, help_text) in STORE_METRICS.items()
        }
        for label, backend in _stats.backends_in_use().items():
            if backend is None:
                continue
            own = backend.stats(totals=True)
            for name, family in stores.items():
                family.add_metric([label], own[name])
        yield from stores.values()


class _Exported:
    """A wrapper a scrape read: the wrapper (weakly), its function id, its
    counters (``wrapper.counts()``, readable once it is collected) and the
    label it was last exported under, where its counts stay."""

    __slots__ = ("counts", "function_id", "label", "ref")

    def __init__(self, wrapper: Any) -> None:
        self.ref = weakref.ref(wrapper)
        self.function_id = wrapper.function_id
        self.counts = wrapper.counts()
        self.label = ""


def _le(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(bound)


_installed: RestflowCollector | None = None
_install_lock = threading.Lock()


def install(registry: CollectorRegistry = REGISTRY) -> None:
    """Registers :class:`RestflowCollector` (once) in ``registry``; in
    multiprocess mode the folded metrics are registered instead, by
    :func:`flush`."""
    global _installed
    if multiprocess_mode():
        _folded()
        return
    with _install_lock:
        if _installed is None:
            _installed = RestflowCollector()
            registry.register(_installed)


# -- several processes: fold deltas into prometheus_client's own metrics ----


class _Folded:
    """prometheus_client metrics in multiprocess mode, and what this process
    has folded into them so far (per wrapper and per store)."""

    def __init__(self) -> None:
        labels = ["function", "backend"]
        self.requests = Counter(
            "restflow_cache_requests", REQUESTS_HELP, ["function", "status", "backend"]
        )
        self.events = Counter(
            "restflow_cache_events", EVENTS_HELP, ["function", "event", "backend"]
        )
        bounds = _stats.BUCKET_BOUNDS
        self.compute = Histogram(
            "restflow_cache_compute_seconds", COMPUTE_HELP, labels, buckets=bounds
        )
        self.lookup = Histogram(
            "restflow_cache_lookup_seconds", LOOKUP_HELP, labels, buckets=bounds
        )
        self.stores = {
            name: Counter(metric, help_text, ["backend"])
            for name, (metric, help_text) in STORE_METRICS.items()
        }
        self.lock = threading.Lock()
        # Per live wrapper, by ``id()`` (a dict lookup per wrapper and
        # request; a WeakKeyDictionary's made a weak reference each time):
        # its events at its last fold and the running totals folded so far.
        # An entry holds its wrapper weakly and counts only for that very
        # wrapper (``_Folds.ref``): a wrapper made later at a collected one's
        # address is a new one; the collected one's entry leaves at the next
        # fold.
        self.functions: dict[int, _Folds] = {}
        # Appended to as folded wrappers are collected: (Counts, _Folds), so
        # what they counted after their last fold is folded at the next.
        self.collected: list[tuple[Any, ...]] = []
        # Bumped in a forked child: the parent's _Folds are not the child's.
        self.generation = 0
        # Per store label: the running totals folded so far.
        self.stores_folded: dict[str, dict[str, Any]] = {}
        # In a forked child (made there, or there since the fork): stores
        # whose baseline is still to be read.
        self.forked = _stats.forked()
        self.rebased: set[str] = set()

    def tracked_count(self) -> int:
        """How many live wrappers the fold keeps totals for."""
        return len(self.functions)

    def forget(self) -> None:
        """In a child just forked: what the parent counted is the parent's
        to report (folded already, or never); the child starts from here.

        A function's baseline is what it had counted at the fork
        (:func:`restflow.caching.statistics.inherited`, read at every fork,
        whether this module was imported then or not). A store's baseline
        is taken at its first fold in the child instead, since finding a
        store may build it, which is no work for a fork hook (its counts
        before that fold are store errors and waits, not requests)."""
        self.functions.clear()
        self.collected.clear()
        self.generation += 1
        self.stores_folded.clear()
        self.forked = True
        self.rebased.clear()

    def flush(self) -> None:
        """Folds what moved. Per request this costs one atomic read per
        function whose counts did not move; a store is read only when one of
        its functions moved (its errors, trips and waits come with calls)."""
        with self.lock:
            while self.collected:
                counts, folds = self.collected.pop()
                if folds.generation != self.generation:
                    continue  # the parent's record, before a fork
                if self.functions.get(folds.address) is folds:
                    del self.functions[folds.address]
                if counts.counted_events() != folds.events:
                    self._fold_function(folds, counts.counters(True))
            moved: dict[str, Any] = {}
            for wrapper in _stats.live():
                events = wrapper.counted_events()
                folds = self.functions.get(id(wrapper))
                if folds is None or folds.ref() is not wrapper:
                    if not events:
                        continue  # nothing to fold, and nothing kept for it
                    folds = _Folds(wrapper, _stats.inherited(wrapper), self.generation)
                    self.functions[folds.address] = folds
                    _stats.on_collected(wrapper, self.collected, folds)
                elif folds.events == events:
                    continue
                folds.events = events
                backend, folds.label = _stats.store_of(wrapper)
                self._fold_function(folds, wrapper.counters(True))
                if backend is not None:
                    moved[folds.label] = backend
            for label, backend in moved.items():
                self._fold_store(label, backend)

    @staticmethod
    def _delta(before: dict[str, Any] | None, now: dict[str, Any]) -> dict[str, Any]:
        """``now - before`` of running totals (all of ``now`` without
        ``before``, or when a count went down: a store built again under
        the same label counts from zero)."""
        if before is None or any(not isinstance(v, dict) and v < before[k] for k, v in now.items()):
            return now
        delta: dict[str, Any] = {}
        for name, value in now.items():
            if isinstance(value, dict):
                delta[name] = {
                    "buckets": [
                        a - b
                        for a, b in zip(value["buckets"], before[name]["buckets"], strict=True)
                    ],
                    "sum": value["sum"] - before[name]["sum"],
                }
            else:
                delta[name] = value - before[name]
        return delta

    def _fold_function(self, folds: _Folds, now: dict[str, Any]) -> None:
        """Folds ``now`` (a wrapper's running totals) less what was folded of it."""
        function, backend = folds.function_id, folds.label
        delta, folds.totals = self._delta(folds.totals, now), now
        for name, status in STATUSES.items():
            if delta[name]:
                self.requests.labels(function, status, backend).inc(delta[name])
        for name in EVENTS:
            if delta[name]:
                self.events.labels(function, name, backend).inc(delta[name])
        for histogram, key in ((self.compute, "compute"), (self.lookup, "lookup")):
            if any(delta[key]["buckets"]):
                _add_to_histogram(histogram.labels(function, backend), delta[key])

    def _fold_store(self, label: str, backend: Any) -> None:
        if self.forked and label not in self.rebased:  # its first fold in a forked child
            self.rebased.add(label)
            self.stores_folded[label] = backend.stats(totals=True)
        now = backend.stats(totals=True)
        delta = self._delta(self.stores_folded.get(label), now)
        self.stores_folded[label] = now
        for name, counter in self.stores.items():
            child = counter.labels(label)  # shown from the first fold, at 0
            if delta[name]:
                child.inc(delta[name])


class _Folds:
    """What the fold knows of one wrapper: the wrapper (weakly) and its
    address, its function id, the backend label of its last fold, its events
    then (``None`` before the first), the running totals folded so far
    (``None``: none, all it counted is new), and the fold generation it
    belongs to (see ``_Folded.forget``)."""

    __slots__ = ("address", "events", "function_id", "generation", "label", "ref", "totals")

    def __init__(self, wrapper: Any, totals: dict[str, Any] | None, generation: int) -> None:
        self.ref = weakref.ref(wrapper)
        self.address = id(wrapper)
        self.function_id = wrapper.function_id
        self.label = ""
        self.events: int | None = None
        self.totals = totals
        self.generation = generation


def _add_to_histogram(child: Any, delta: dict[str, Any]) -> None:
    """Adds per-bucket counts to a prometheus_client histogram child.

    ``Histogram.observe`` takes one value at a time; replaying thousands of
    observations per fold would cost more than the requests they describe.
    The child keeps one value per bucket (not cumulative) and a sum, in the
    same bucket layout as the engine's, so the counts are added as they are.
    (``_buckets`` and ``_sum`` are prometheus_client internals, stable since
    0.4; tests/test_prometheus.py scrapes the result to hold them to it.)"""
    for value, n in zip(child._buckets, delta["buckets"], strict=True):
        if n:
            value.inc(n)
    child._sum.inc(delta["sum"])


_folded_metrics: _Folded | None = None


def _folded() -> _Folded:
    global _folded_metrics
    with _install_lock:
        if _folded_metrics is None:
            _folded_metrics = _Folded()
    return _folded_metrics


def _after_fork_in_child() -> None:
    # Another thread of the parent may have held these locks at the fork;
    # the child's copies would stay locked forever.
    global _install_lock
    _install_lock = threading.Lock()
    if _folded_metrics is not None:
        _folded_metrics.lock = threading.Lock()
        _folded_metrics.forget()


os.register_at_fork(after_in_child=_after_fork_in_child)


def flush() -> None:
    """Folds this process's new counts into the multiprocess metrics (a
    no-op without multiprocess mode, where the collector reads them live)."""
    if multiprocess_mode():
        _folded().flush()


class PrometheusMiddleware:
    """Folds the cache's counts after every response (multiprocess mode).

    A fold that fails (the metrics directory removed under a running
    server, a full disk) never fails the request: it is logged once, when it
    starts failing; the counts it was folding are lost, and folds count
    again once they work. (The scrape's own fold raises, so a scrape shows
    the failure.)"""

    def __init__(self, get_response: Callable[[Any], Any]) -> None:
        self.get_response = get_response
        self.active = multiprocess_mode()
        self.failing = False
        if self.active:
            _folded()

    def __call__(self, request: Any) -> Any:
        response = self.get_response(request)
        if self.active:
            try:
                flush()
            except Exception:
                if not self.failing:
                    self.failing = True
                    logger.warning(
                        "restflow: could not fold the cache's counts into the Prometheus "
                        "metrics in %s; requests are still answered, and counts are lost "
                        "until folding works again",
                        os.environ.get("PROMETHEUS_MULTIPROC_DIR")
                        or os.environ.get("prometheus_multiproc_dir"),
                        exc_info=True,
                    )
            else:
                self.failing = False
        return response


def metrics_view(request: Any) -> Any:
    """The metrics in Prometheus' text format: this process's (one
    process), or every worker's (multiprocess mode)."""
    from django.http import HttpResponse

    if multiprocess_mode():
        from prometheus_client import multiprocess

        flush()
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    else:
        install()
        registry = REGISTRY
    return HttpResponse(generate_latest(registry), content_type=CONTENT_TYPE)
