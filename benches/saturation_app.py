"""The one-view Django/DRF app that benches/saturation.sh serves with gunicorn.

``GET /payload/`` answers a DRF-like payload (~20 fields and a nested list of
10 items, the one benches/redis_hit.py uses). Where the payload comes from is
chosen by the environment, so one app serves every row of the table:

* ``BENCH_BACKEND=redis://...`` or ``memory``: from a ``cache_result``
  function on that store (after the first request, every request is a hit);
* ``BENCH_BACKEND=none``: built by the view itself, no cache at all (the
  framework's own cost: the ceiling any cache can reach);
* ``BENCH_READ_SPIN``: ``READ_SPIN`` in seconds (the Redis lookup busy-wait).
* ``BENCH_LOOP_SOCKET``: ``LOOP_SOCKET`` (``1`` or ``0``): whether an async
  caller's Redis hit is read on the event loop's own socket.

``GET /apayload/`` is the same payload from an ``async def`` Django view and
an ``async def`` cached function, served by ``asgi_application`` (uvicorn).
* ``BENCH_NEAR_CACHE=1``: ``NEAR_CACHE`` on (hits from the near cache).

Configured in this module rather than a settings file so the benchmark stays
one script and one app.
"""

from __future__ import annotations

import os

import django
from bench_django import bench_settings
from django.conf import settings

BACKEND = os.environ.get("BENCH_BACKEND", "memory")

settings.configure(
    **bench_settings(
        {
            "BACKEND": "memory" if BACKEND == "none" else BACKEND,
            "READ_SPIN": float(os.environ.get("BENCH_READ_SPIN", "0")),
            "LOOP_SOCKET": os.environ.get("BENCH_LOOP_SOCKET", "1") == "1",
            "NEAR_CACHE": os.environ.get("BENCH_NEAR_CACHE") == "1",
        },
        __name__,
        "127.0.0.1",
    )
)
django.setup()

from django.core.asgi import get_asgi_application  # noqa: E402
from django.core.wsgi import get_wsgi_application  # noqa: E402
from django.http import JsonResponse  # noqa: E402
from django.urls import path  # noqa: E402
from rest_framework.decorators import api_view  # noqa: E402
from rest_framework.response import Response  # noqa: E402

from restflow.caching import cache_result  # noqa: E402


def build_payload(n: int) -> dict:
    """Costless on purpose: the table measures the cache and the framework."""
    return {
        **{f"field_{i}": f"value {i}" for i in range(15)},
        "id": n,
        "active": True,
        "score": 9.5,
        "created": "2026-11-27T04:12:17+00:00",
        "items": [{"id": i, "name": f"item {i}", "price": i * 1.5} for i in range(10)],
    }


@cache_result(ttl=3600)
def cached_payload(n: int) -> dict:
    return build_payload(n)


@cache_result(ttl=3600)
async def acached_payload(n: int) -> dict:
    return build_payload(n)


async def abuild_payload(n: int) -> dict:
    return build_payload(n)


source = build_payload if BACKEND == "none" else cached_payload
asource = abuild_payload if BACKEND == "none" else acached_payload


@api_view(["GET"])
def payload_view(request):
    return Response(source(42))


async def apayload_view(request):
    """No DRF here (its views are sync): Django's own async view."""
    return JsonResponse(await asource(42))


urlpatterns = [path("payload/", payload_view), path("apayload/", apayload_view)]
application = get_wsgi_application()
asgi_application = get_asgi_application()
