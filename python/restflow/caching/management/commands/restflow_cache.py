"""``python manage.py restflow_cache``: see, inspect and wipe the cache from a shell.

::

    restflow_cache stats                      calls, hit ratio, p50/p99 compute and lookup
    restflow_cache inspect app.mod.func 42 kind='"a"'   one call's key, status, times, size
    restflow_cache wipe app.mod.func          drop every entry of one function
    restflow_cache wipe --all                 ... of every cached function
    restflow_cache check                      each backend: reachable, latency, version,
                                              eviction policy

Statistics live in each process. ``stats`` shows this process's, or, when
``PROMETHEUS_MULTIPROC_DIR`` is set (or ``--metrics-dir`` given), what every
worker folded there (see :mod:`restflow.caching.prometheus`): that is how a
shell sees a gunicorn server's numbers. ``wipe`` and ``inspect`` act on the
shared stores (Redis, Django caches); the memory store lives in each
process, so from a shell they see and drop only this process's entries.
"""

from __future__ import annotations

import ast
import importlib
import os
import pickle
import time
from collections import defaultdict
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from restflow import _engine
from restflow.caching import cache_result, statistics

#: Counters and histograms behind the ``stats`` table.
_PERCENTILES = ("p50", "p99")

# Eviction policies the README warns about, and why.
_POLICY_WARNINGS = {
    "noeviction": "a full Redis refuses new entries (writes fail, calls run live)",
    "allkeys-lfu": "may evict generation counters: costs misses when one goes",
    "allkeys-random": "may evict generation counters: costs misses when one goes",
}
_POLICY_ADVICE = "prefer volatile-lru or volatile-lfu (or allkeys-lru); see the README"

_PERSISTENCE_WARNING = (
    "a server that crashes comes back from its last snapshot (or log), and serves "
    "again what was invalidated after it; run restflow's Redis without persistence "
    '(save "", appendonly no), or empty it (FLUSHDB) after such a restart; see the README'
)


def _persistence(info: dict[str, str]) -> str:
    """The persistence a Redis server reports (``save`` points, the append-only
    file), as a warning names it; empty when it has none or did not say."""
    found = []
    if info.get("save"):
        found.append(f'save "{info["save"]}"')
    if info.get("appendonly") == "yes":
        found.append("appendonly yes")
    return ", ".join(found)


@cache_result(ttl=1)
def _probe() -> None:
    """A function on the default BACKEND: how `check` finds that backend."""


statistics.untrack(_probe)  # not a user's function


def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    if value == float("inf"):
        return ">33s"
    if value < 1e-3:
        return f"{value * 1e6:.0f}us"
    if value < 1:
        return f"{value * 1e3:.3g}ms"
    return f"{value:.3g}s"


def _shown(text: str) -> str:
    """``text`` on one line: a ``key_identifier`` may hold a newline or a
    tab, which would break a table row in two (or look like another
    function's); those are shown escaped (``\\n``), other text as it is."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _literal(text: str) -> Any:
    """A Python literal (``42``, ``'a'``, ``[1, 2]``), or else the text."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def _resolve(dotted: str) -> Any:
    """The cached function at ``dotted`` (``package.module.function``)."""
    parts = dotted.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        try:
            target: Any = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        try:
            for name in parts[cut:]:
                target = getattr(target, name)
        except AttributeError:
            break
        if getattr(target, "is_cached_function", False):
            return target
        raise CommandError(f"{dotted} is not a cached function (@cache_result or @cache_response)")
    raise CommandError(f"cannot find {dotted}: give its dotted path, e.g. myapp.payloads.get_user")


def _engine_of(target: Any) -> Any:
    """The engine wrapper under an async or a view wrapper."""
    target = getattr(target, "cached_render", target)
    return getattr(target, "_engine", target)


def _import_functions() -> None:
    """Imports the installed apps' modules, so their cached functions are known."""
    from restflow.caching.registry import import_app_modules

    import_app_modules()


class Command(BaseCommand):
    help = "Statistics, inspection, wiping and a health check of restflow's cache."

    def add_arguments(self, parser: CommandParser) -> None:
        actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
        stats = actions.add_parser("stats", help="calls, hit ratio and latencies per function")
        stats.add_argument(
            "--metrics-dir",
            # The names prometheus_client reads (the lower-case one is older).
            default=os.environ.get("PROMETHEUS_MULTIPROC_DIR")
            or os.environ.get("prometheus_multiproc_dir"),
            help="read what every worker folded into this prometheus_client "
            "multiprocess directory (default: $PROMETHEUS_MULTIPROC_DIR)",
        )
        inspect = actions.add_parser("inspect", help="one call's entry")
        inspect.add_argument("function", help="dotted path of the cached function")
        inspect.add_argument(
            "call_args",
            nargs="*",
            metavar="args",
            help="arguments as Python literals; name=value for keywords",
        )
        wipe = actions.add_parser("wipe", help="drop every entry of a function, or of all")
        wipe.add_argument("function", nargs="?", help="dotted path of the cached function")
        wipe.add_argument("--all", action="store_true", help="every cached function")
        actions.add_parser("check", help="is each backend reachable, and how is it set up")

    def handle(self, *args: Any, **options: Any) -> None:
        action = options["action"]
        if action == "stats":
            self.stats(options["metrics_dir"])
        elif action == "inspect":
            self.inspect(options["function"], options["call_args"])
        elif action == "wipe":
            self.wipe(options["function"], options["all"])
        else:
            self.check_stores()

    # -- stats ---------------------------------------------------------------

    def stats(self, metrics_dir: str | None) -> None:
        if metrics_dir:
            if not os.path.isdir(metrics_dir):
                raise CommandError(
                    f"the metrics directory {metrics_dir!r} (--metrics-dir, by default "
                    "$PROMETHEUS_MULTIPROC_DIR) is not a directory: give the one the "
                    "server's workers write to"
                )
            rows = _rows_from_metrics_dir(metrics_dir)
            source = f"every worker, from {metrics_dir}"
        else:
            _import_functions()
            rows = _rows_from_this_process()
            source = "this process (set PROMETHEUS_MULTIPROC_DIR to see a server's workers)"
        header = (
            "function",
            "backend",
            "calls",
            "hit ratio",
            "compute p50",
            "compute p99",
            "lookup p50",
            "lookup p99",
        )
        table = [header] + [
            (
                _shown(function),
                _shown(backend),
                str(row["calls"]),
                "-" if row["hit_ratio"] is None else f"{row['hit_ratio']:.1%}",
                *(_seconds(row["compute"][p]) for p in _PERCENTILES),
                *(_seconds(row["lookup"][p]) for p in _PERCENTILES),
            )
            for (function, backend), row in sorted(rows.items())
        ]
        widths = [max(len(line[i]) for line in table) for i in range(len(header))]
        self.stdout.write(f"Statistics of {source}")
        for line in table:
            cells = [
                cell.ljust(width) if i < 2 else cell.rjust(width)
                for i, (cell, width) in enumerate(zip(line, widths, strict=True))
            ]
            self.stdout.write("  ".join(cells).rstrip())
        if not rows:
            self.stdout.write("(no cached function has been called)")

    # -- inspect -------------------------------------------------------------

    def inspect(self, dotted: str, raw_args: list[str]) -> None:
        target = _resolve(dotted)
        if hasattr(target, "cached_render"):
            # A response's key is made from the request (media type, user,
            # host, path, query): there is none to build from a shell.
            raise CommandError(
                f"{dotted} is a @cache_response view handler, whose keys come from each "
                "request: inspect takes @cache_result functions. Wipe it with "
                f"'restflow_cache wipe {dotted}'."
            )
        engine = _engine_of(target)
        args, kwargs = [], {}
        for text in raw_args:
            name, sep, value = text.partition("=")
            if sep and name.isidentifier():
                kwargs[name] = _literal(value)
            else:
                args.append(_literal(text))
        try:
            key = engine.get_cache_key(*args, **kwargs)
        except (TypeError, ValueError) as error:
            raise CommandError(
                f"cannot call {dotted} with these arguments: {error} (arguments are "
                "Python literals, name=value for keywords)"
            ) from None
        try:
            backend = engine.shared_backend()
        except Exception as error:  # a backend that cannot be built
            raise CommandError(f"{dotted}: NO BACKEND ({error})") from None
        label = statistics.backend_label(backend)
        if backend is not None:
            # A store that fails answers "no entry" (a failing store never
            # fails a call): ask it first, and watch its errors, so that an
            # unreachable store is not reported as a missing entry.
            try:
                _reach(label, backend)
            except Exception as error:
                raise CommandError(
                    f"{label}: UNREACHABLE ({error}); cannot tell whether the entry is there"
                ) from None
        errors = _store_errors(backend)
        metadata = engine.get_cached_metadata(*args, **kwargs)
        if _store_errors(backend) > errors:
            raise CommandError(
                f"{label} failed during the lookup; cannot tell whether the entry is there"
            )
        lines = [("function", _shown(engine.function_id)), ("key", _shown(key))]
        if metadata is None:
            lines.append(("status", "MISSING (no usable entry)"))
        else:
            lines.append(("status", str(metadata["cache_status"].value)))
            lines.append(("cached_at", metadata.get("cached_at", "-")))
            lines.append(("reset_at", metadata.get("reset_at", "never")))
            value = engine.get_cache_only(*args, **kwargs)
            try:
                size = f"{len(pickle.dumps(value, protocol=5))} bytes (pickled)"
            except Exception as error:  # a value the memory store holds as it is
                size = f"unknown (not picklable: {type(error).__name__})"
            lines.append(("size", size))
        lines.append(("backend", label))
        width = max(len(name) for name, _ in lines)
        for name, value in lines:
            self.stdout.write(f"{name.ljust(width)}  {value}")
        if backend is None:
            # A shell's memory store is its own: MISSING here says nothing
            # about what a server's workers hold, as wipe says too.
            self.stdout.write(
                "note: the memory store lives in each process; this shows only this "
                "process's entry (a server's workers each have their own)"
            )

    # -- wipe ----------------------------------------------------------------

    def wipe(self, dotted: str | None, everything: bool) -> None:
        if everything == (dotted is not None):
            raise CommandError("wipe takes a function's dotted path, or --all (one of the two)")
        if dotted is not None:
            targets = [_engine_of(_resolve(dotted))]
        else:
            _import_functions()
            targets = statistics.tracked()
        memory = False
        failed = []
        for engine in targets:
            try:
                engine.invalidate_all()
            except Exception as error:  # its store failed, or cannot be built
                # The others are still wiped; this one is said, and fails the command.
                failed.append(engine.function_id)
                self.stdout.write(self.style.ERROR(f"NOT wiped {engine.function_id} ({error})"))
                continue
            memory = memory or statistics.backend_of(engine) is None
            self.stdout.write(f"wiped {engine.function_id}")
        if everything:
            _engine.clear()
        self.stdout.write(f"{len(targets) - len(failed)} function(s) wiped")
        if memory:
            self.stdout.write(
                "note: the memory store lives in each process; this wiped only this "
                "process's entries (restart the server, or use invalidation rules)"
            )
        if failed:
            raise CommandError(
                f"not wiped: {', '.join(failed)} (see above); run wipe again once their "
                "store answers ('restflow_cache check' tells)"
            )

    # -- check ---------------------------------------------------------------

    # Not ``check``: that is BaseCommand's system-check hook, which Django
    # calls before every subcommand run from the command line.
    def check_stores(self) -> None:
        _import_functions()
        backends: dict[str, Any] = {}
        failed = []
        # The default BACKEND (through _probe), then every function's own.
        for wrapper in [_probe, *statistics.tracked()]:
            try:
                backend = wrapper.shared_backend()
            except Exception as error:  # a backend that cannot be built
                name = "BACKEND setting" if wrapper is _probe else wrapper.function_id
                failed.append(name)
                self.stdout.write(self.style.ERROR(f"{name}: NO BACKEND ({error})"))
                continue
            backends.setdefault(statistics.backend_label(backend), backend)
        for label, backend in sorted(backends.items()):
            if backend is None:
                self.stdout.write(
                    f"memory: ok (in this process: {_engine.entry_count()} entries, "
                    f"at most {_engine.max_entries()})"
                )
                continue
            started = time.perf_counter()
            try:
                info = _reach(label, backend)
            except Exception as error:
                failed.append(label)
                self.stdout.write(self.style.ERROR(f"{label}: UNREACHABLE ({error})"))
                continue
            latency = time.perf_counter() - started
            version = info.get("valkey_version") or info.get("redis_version")
            server = info.get("server_name", "valkey" if "valkey_version" in info else "redis")
            facts = [f"latency {_seconds(latency)}"]
            if version:
                facts.append(f"{server} {version}")
            policy = info.get("maxmemory_policy")
            if policy:
                facts.append(f"maxmemory-policy {policy}")
            self.stdout.write(f"{label}: ok ({', '.join(facts)})")
            if policy in _POLICY_WARNINGS:
                self.stdout.write(
                    self.style.WARNING(
                        f"  warning: maxmemory-policy {policy}: {_POLICY_WARNINGS[policy]}; "
                        f"{_POLICY_ADVICE}"
                    )
                )
            persistence = _persistence(info)
            if persistence:
                self.stdout.write(
                    self.style.WARNING(f"  warning: {persistence}: {_PERSISTENCE_WARNING}")
                )
        if failed:
            raise CommandError(f"unreachable: {', '.join(failed)}")


def _reach(label: str, backend: Any) -> dict[str, str]:
    """One round trip to a shared store: its server's facts (Redis), and
    a read from a Django cache; raises what the store raised."""
    info = dict(backend.server_info())
    if label.startswith("django"):
        _django_round_trip(label)
    return info


def _store_errors(backend: Any) -> int:
    """The failures a shared store has counted (none for memory)."""
    return 0 if backend is None else backend.stats(totals=True)["store_errors"]


def _django_round_trip(label: str) -> None:
    """One read from a Django cache alias (``django`` or ``django:<alias>``)."""
    from django.core.cache import caches

    alias = label.partition(":")[2] or "default"
    caches[alias].get("restflow:check")


def _rows_from_this_process() -> dict[tuple[str, str], dict[str, Any]]:
    """One row per function and store: a function id used on several stores
    has a row for each (``"stores"``), as a metrics directory has."""
    rows = {}
    for function, entry in statistics.stats()["functions"].items():
        stores = entry["stores"] if "stores" in entry else {entry["backend"]: entry}
        for label, row in stores.items():
            rows[(function, label)] = row
    return rows


def _rows_from_metrics_dir(path: str) -> dict[tuple[str, str], dict[str, Any]]:
    """The ``stats`` rows from what every worker folded into a prometheus_client
    multiprocess directory (see :mod:`restflow.caching.prometheus`)."""
    try:
        from prometheus_client import CollectorRegistry, multiprocess
    except ImportError:
        raise CommandError(
            "reading a metrics directory needs prometheus_client: "
            "pip install restflow-cache[prometheus]"
        ) from None
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=path)
    calls: dict[tuple[str, str], float] = defaultdict(float)
    hits: dict[tuple[str, str], float] = defaultdict(float)
    buckets: dict[tuple[str, str, str], dict[float, float]] = defaultdict(dict)
    for family in registry.collect():
        for sample in family.samples:
            labels = sample.labels
            if "function" not in labels:
                continue
            row = (labels["function"], labels["backend"])
            if sample.name == "restflow_cache_requests_total":
                calls[row] += sample.value
                if labels["status"] in ("HIT", "STALE"):
                    hits[row] += sample.value
            for kind in ("compute", "lookup"):
                if sample.name == f"restflow_cache_{kind}_seconds_bucket":
                    buckets[(*row, kind)][float(labels["le"])] = sample.value
    rows = {}
    for row in calls:
        out: dict[str, Any] = {
            "calls": int(calls[row]),
            "hit_ratio": hits[row] / calls[row] if calls[row] else None,
        }
        for kind in ("compute", "lookup"):
            cumulative = sorted(buckets.get((*row, kind), {}).items())
            total = int(cumulative[-1][1]) if cumulative else 0
            out[kind] = {
                p: statistics.quantile(cumulative, total, int(p[1:]) / 100) for p in _PERCENTILES
            }
        rows[row] = out
    return rows
