"""Hit-path latency of restflow against functools.lru_cache and cachetools.

Run with ``python benches/hit_path.py`` after ``make build`` (or through
``scripts/bench.sh``). Every contender is timed in the same process, in
interleaved rounds, and reported as the median ns per call plus the ratio to
``functools.lru_cache`` measured alongside it: on a shared, noisy machine the
ratio is what carries over, not the absolute number. For a measure that
no load moves, ``benches/hit_instructions.py`` counts instructions per call
under callgrind.

The issue's bars (checked here and printed, never asserted in a unit test):

* restflow ``__call__`` hit <= 1.5x lru_cache for ``f(5)``
* restflow ``__call__`` hit <= 1.0x lru_cache for ``f(1, "abc", 2.5)``
* restflow ``get_with_metadata`` hit <= 3x lru_cache
"""

from __future__ import annotations

import argparse
import enum
import functools
import json
import platform
import statistics
import sys
import timeit

import cachetools

from restflow.caching import cache_result

ROUNDS = 15
NUMBER = 200_000


class Color(enum.Enum):
    """The enum whose member the ``"enum"`` shape passes (hit_instructions.py
    only): a value keyed by its class's dotted path."""

    RED = 1
    GREEN = 2


class Name(str):
    """The ``str`` subclass whose instance the ``"subclass"`` shape passes
    (hit_instructions.py only): keyed by its class's path and its text."""


def make_contenders(arity: int | str):
    """The arguments and the contenders of one shape: ``1`` (``f(5)``),
    ``3`` (``f(1, "abc", 2.5)``), ``"enum"`` (``f(Color.RED)``) or
    ``"subclass"`` (``f(Name("abc"))``)."""
    if arity == 1:

        def plain(x):
            return x

        args = (5,)
    elif arity in ("enum", "subclass"):

        def plain(x):
            return x

        args = (Color.RED,) if arity == "enum" else (Name("abc"),)
    else:

        def plain(a, b, c):
            return a

        args = (1, "abc", 2.5)

    lru = functools.lru_cache(maxsize=None)(plain)
    ttl_cache = cachetools.cached(cachetools.TTLCache(maxsize=10_000, ttl=300))(plain)
    restflow = cache_result(ttl=300)(plain)
    with_metadata = restflow.get_with_metadata
    for f in (lru, ttl_cache, restflow, with_metadata):
        f(*args)  # warm: every timed call is a hit
    return args, {
        "plain function call": plain,
        "functools.lru_cache hit": lru,
        "cachetools TTLCache hit": ttl_cache,
        "restflow __call__ hit": restflow,
        "restflow get_with_metadata hit": with_metadata,
    }


#: (arity, contender) -> the issue's bar, as a ratio to lru_cache.
BARS = {
    (1, "restflow __call__ hit"): 1.5,
    (3, "restflow __call__ hit"): 1.0,
    (1, "restflow get_with_metadata hit"): 3.0,
    (3, "restflow get_with_metadata hit"): 3.0,
}
LABELS = {
    1: "f(5)",
    3: 'f(1, "abc", 2.5)',
    "enum": "f(Color.RED)",
    "subclass": 'f(Name("abc"))',
}
#: The shapes this script times (hit_instructions.py counts all of them).
TIMED = (1, 3)


def call_source(args: tuple) -> tuple[str, dict]:
    """The timed statement ``f(...)`` for `args`, and the globals it needs
    besides ``f``: an int, str or float is written as a literal (no lookup
    is timed), anything else (an enum member) as a global name."""
    names = {}
    parts = []
    for i, arg in enumerate(args):
        if type(arg) in (int, str, float):
            parts.append(repr(arg))
        else:
            names[f"arg{i}"] = arg
            parts.append(f"arg{i}")
    return f"f({', '.join(parts)})", names


def print_table(arity: int, results: dict[str, float], unit: str) -> list[str]:
    """Prints one shape's results (in `unit`) as a table of ratios to
    lru_cache with the bars; returns the bars missed, one line each (shared
    with hit_instructions.py, which counts instructions instead)."""
    label = LABELS[arity]
    base = results["functools.lru_cache hit"]
    failed = []
    print(f"| call | {unit} | x lru_cache | bar |")
    print("|---|---:|---:|---:|")
    for name, value in results.items():
        ratio = value / base
        bar = BARS.get((arity, name))
        mark = ""
        if bar is not None:
            mark = f"<= {bar}x " + ("ok" if ratio <= bar else "MISSED")
            if ratio > bar:
                failed.append(f"{label} {name}: {ratio:.2f}x > {bar}x")
        print(f"| {name} | {value:.1f} | {ratio:.2f} | {mark} |")
    return failed


def print_footer(failed: list[str], payload: dict | None, unit: str = "") -> None:
    """Prints the bars missed, and `payload` as one JSON line when given."""
    if failed:
        print(f"\nbars missed{unit}:\n  " + "\n  ".join(failed))
    if payload is not None:
        print(json.dumps(payload))


def measure(arity: int, rounds: int, number: int) -> dict[str, float]:
    args, contenders = make_contenders(arity)
    samples: dict[str, list[float]] = {name: [] for name in contenders}
    # The call expression is compiled per contender so no lambda or
    # argument unpacking is timed: just `f(5)` or `f(1, "abc", 2.5)`.
    call, names = call_source(args)
    timers = {name: timeit.Timer(call, globals={**names, "f": f}) for name, f in contenders.items()}
    for _ in range(rounds):
        for name, timer in timers.items():  # interleaved: noise hits everyone alike
            samples[name].append(timer.timeit(number) / number * 1e9)
    return {name: statistics.median(values) for name, values in samples.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    parser.add_argument("--number", type=int, default=NUMBER)
    parser.add_argument(
        "--json", action="store_true", help="also print the medians as one JSON line (report.py)"
    )
    options = parser.parse_args()

    machine = platform.processor() or platform.machine()
    python = f"{platform.python_implementation()} {platform.python_version()}"
    print(f"# {machine}, {python}, {options.rounds} interleaved rounds x {options.number} calls")
    failed = []
    everything = {}
    for arity in TIMED:
        label = LABELS[arity]
        results = measure(arity, options.rounds, options.number)
        everything[label] = results
        print(f"\n{label}\n")
        failed += print_table(arity, results, "ns/call (median)")
    payload = {"bench": "hit_path", "machine": machine, "python": python, "ns": everything}
    print_footer(failed, payload if options.json else None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
