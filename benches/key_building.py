"""Key building for a three-field key constructor, in ns per key.

The same script runs against this package and against the older,
pure-Python drf-restflow (which uses the same import name, so it lives in
its own virtualenv; ``benches/peers.sh`` makes it). Both expose
``KeyConstructor().generate_key(func, args, kwargs)``; for restflow the
script also times the key a cached call really builds (``get_cache_key``
and a hit through the wrapper, which includes building the key).

Prints one JSON line, so ``peers.sh`` can put the two runs side by side.
"""

from __future__ import annotations

import json
import statistics
import sys
import timeit

import django
from django.conf import settings

settings.configure(
    INSTALLED_APPS=["django.contrib.contenttypes", "django.contrib.auth", "rest_framework"],
    CACHES={"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}},
    SECRET_KEY="bench",
)
django.setup()

from restflow.caching import (  # noqa: E402 - Django must be configured first
    ArgsKeyField,
    ConstantKeyField,
    KeyConstructor,
    cache_result,
)


class BenchKey(KeyConstructor):
    tenant = ArgsKeyField("tenant", partition=True)
    user = ArgsKeyField("user_id")
    api = ConstantKeyField("api", "v2")


@cache_result(ttl=300, key_constructor=BenchKey)
def payload(tenant, user_id, page=1):
    return {"tenant": tenant, "user": user_id, "page": page}


def per_call_ns(stmt, number=20_000, rounds=9) -> float:
    timer = timeit.Timer(stmt, globals=globals())
    return statistics.median(timer.timeit(number) / number * 1e9 for _ in range(rounds))


def main() -> None:
    constructor = BenchKey()
    func = payload.func if hasattr(payload, "func") else payload
    args, kwargs = ("acme", 42), {"page": 3}
    globals().update(constructor=constructor, func=func, args=args, kwargs=kwargs)
    payload("acme", 42, page=3)
    import restflow

    results = {
        "package": "restflow-cache" if hasattr(restflow, "_engine") else "drf-restflow",
        "key": constructor.generate_key(func, args, kwargs),
        "generate_key_ns": per_call_ns("constructor.generate_key(func, args, kwargs)"),
    }
    if hasattr(payload, "get_cache_key"):
        results["get_cache_key_ns"] = per_call_ns("payload.get_cache_key('acme', 42, page=3)")
    results["hit_ns"] = per_call_ns("payload('acme', 42, page=3)")
    print(json.dumps(results))


if __name__ == "__main__":
    sys.exit(main())
