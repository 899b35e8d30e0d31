"""A small DRF app that tests/test_prometheus.py serves with gunicorn (two
workers, prometheus_client's multiprocess mode) and scrapes over HTTP.

``GET /payload/<n>/`` answers a cached payload and the worker's pid;
``GET /hold/`` makes one cached call, then holds its worker until the test
creates ``$HOLD_DIR/release`` (so the next requests go to the other worker);
``GET /metrics`` is restflow's metrics view; ``GET /health/`` touches no
cache. ``APP_BACKEND``: ``memory`` (default) or a Redis URL; ``APP_WARM=1``
makes one cached call at import (in gunicorn's master under ``--preload``:
counts its workers must not report as theirs).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import django
from django.conf import settings

settings.configure(
    SECRET_KEY="restflow-tests-only",
    DEBUG=False,
    ALLOWED_HOSTS=["127.0.0.1"],
    ROOT_URLCONF=__name__,
    INSTALLED_APPS=[
        "django.contrib.contenttypes",
        "django.contrib.auth",
        "rest_framework",
        "restflow.caching",
    ],
    MIDDLEWARE=["restflow.caching.prometheus.PrometheusMiddleware"],
    DATABASES={},
    REST_FRAMEWORK={
        "DEFAULT_AUTHENTICATION_CLASSES": [],
        "DEFAULT_PERMISSION_CLASSES": [],
        "UNAUTHENTICATED_USER": None,
        "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    },
    RESTFLOW_SETTINGS={"CACHE_SETTINGS": {"BACKEND": os.environ.get("APP_BACKEND", "memory")}},
)
django.setup()

from django.core.wsgi import get_wsgi_application  # noqa: E402
from django.http import HttpResponse  # noqa: E402
from django.urls import path  # noqa: E402
from rest_framework.decorators import api_view  # noqa: E402
from rest_framework.response import Response  # noqa: E402

from restflow.caching import cache_result  # noqa: E402
from restflow.caching.prometheus import metrics_view  # noqa: E402

HOLD_DIR = Path(os.environ.get("HOLD_DIR", "."))


@cache_result(ttl=3600)
def payload(n: int) -> dict:
    return {"n": n}


if os.environ.get("APP_WARM"):
    payload(99)


@api_view(["GET"])
def payload_view(request, n):
    value, metadata = payload.get_with_metadata(n)
    return Response({**value, "pid": os.getpid(), "status": metadata["cache_status"]})


@api_view(["GET"])
def hold_view(request):
    _, metadata = payload.get_with_metadata(7)
    (HOLD_DIR / f"entered-{os.getpid()}").touch()
    deadline = time.monotonic() + 60  # a hang guard, not synchronisation
    while not (HOLD_DIR / "release").exists():
        if time.monotonic() > deadline:
            break
        time.sleep(0.01)
    return Response({"pid": os.getpid(), "status": metadata["cache_status"]})


def health_view(request):
    return HttpResponse("ok")


urlpatterns = [
    path("payload/<int:n>/", payload_view),
    path("hold/", hold_view),
    path("metrics", metrics_view),
    path("health/", health_view),
]
application = get_wsgi_application()
