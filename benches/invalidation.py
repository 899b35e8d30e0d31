"""Invalidation cost against the number of stored entries (memory store).

Fills the store with 10k, 100k and 1M entries of one cached function
(spread over 100 tenants, the partition), then times ``delete_by_prefix``
(one tenant) and ``invalidate_all``. Both bump a generation, so their cost
should not depend on the number of entries: the bar is 1M / 10k <= 2x.

Run: ``python benches/invalidation.py`` (after ``scripts/bootstrap.sh``).
"""

from __future__ import annotations

import json
import statistics
import sys
import time

import django
from django.conf import settings

settings.configure(
    RESTFLOW_SETTINGS={"CACHE_SETTINGS": {"MAX_ENTRIES": 1_100_000}},
    SECRET_KEY="bench",
)
django.setup()

from restflow import _engine  # noqa: E402 - Django must be configured first
from restflow.caching import ArgsKeyField, KeyConstructor, cache_result  # noqa: E402
from restflow.caching.testing import clear_caches  # noqa: E402


class TenantKey(KeyConstructor):
    tenant = ArgsKeyField("tenant", partition=True)
    item = ArgsKeyField("item")


@cache_result(ttl=3600, key_constructor=TenantKey)
def report(tenant, item):
    return item


def fill(count: int) -> None:
    clear_caches()
    for n in range(count):
        report(f"t{n % 100}", n)
    assert _engine.entry_count() >= count * 0.99, _engine.entry_count()


def timed_us(operation, batches: int = 31, batch: int = 100) -> float:
    """Median over batches of the time per operation (a batch amortises the
    timer's own cost, which is close to an ``invalidate_all``)."""
    samples = []
    for b in range(batches):
        start = time.perf_counter_ns()
        for n in range(batch):
            operation(b * batch + n)
        samples.append((time.perf_counter_ns() - start) / 1_000 / batch)
    return statistics.median(samples)


def main() -> int:
    rows = []
    for count in (10_000, 100_000, 1_000_000):
        fill(count)
        # A different tenant each time, so every call really drops a partition.
        by_prefix = timed_us(lambda n: report.delete_by_prefix(tenant=f"t{n % 100}"))
        everything = timed_us(lambda n: report.invalidate_all())
        rows.append((count, by_prefix, everything))
    print("| entries | delete_by_prefix (us, median) | invalidate_all (us, median) |")
    print("|---:|---:|---:|")
    for count, by_prefix, everything in rows:
        print(f"| {count:,} | {by_prefix:.2f} | {everything:.2f} |")
    if "--json" in sys.argv[1:]:  # one JSON line for benches/report.py
        fields = ("entries", "delete_by_prefix_us", "invalidate_all_us")
        table = [dict(zip(fields, row, strict=True)) for row in rows]
        print(json.dumps({"bench": "invalidation", "rows": table}))
    base, top = rows[0], rows[-1]
    print(
        f"\n1M / 10k: delete_by_prefix {top[1] / base[1]:.2f}x, "
        f"invalidate_all {top[2] / base[2]:.2f}x (bar <= 2x)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
