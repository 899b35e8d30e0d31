"""A second process for tests/test_lifecycle_model.py: the same cached
functions on the same shared store, driven one call at a time.

    python -m tests.model_peer <restflow settings as JSON> [<CACHES as JSON>]

Each line on stdin is a JSON command; each answer is one JSON line on
stdout. ``{"start": now}`` freezes this process's engine clock at the
parent's instant; ``{"advance": seconds}`` moves it with the parent's;
``{"call": name, "args": [...], "data": {...}}`` first takes the parent's
data (versions, whether the source is down, whether the policy turns values
away), then calls the wrapper method ``name`` and answers
``{"status": ..., "value": ...}`` (``get_cache_only``: ``{"value": ...}``
or ``{"missing": true}``), or ``{"raised": "<exception class>"}``. Every
call waits for the refreshes it queued before it answers, and a read on a
near cache first waits until every change made before it reached this
process (``near_sync``), so each answer is exact.
"""

from __future__ import annotations

import json
import os
import sys


def main() -> int:
    os.environ["DJANGO_SETTINGS_MODULE"] = "tests.django_project.settings"
    import django

    django.setup()
    from django.test import override_settings

    caches = {"CACHES": json.loads(sys.argv[2])} if len(sys.argv) > 2 else {}
    override_settings(RESTFLOW_SETTINGS=json.loads(sys.argv[1]), **caches).enable()

    from restflow import _engine
    from restflow.caching import CACHE_MISSING
    from restflow.caching.testing import wait_for_refreshes
    from tests import test_lifecycle_model as model

    functions = {"report": model.report, "picky": model.picky}
    for line in sys.stdin:
        command = json.loads(line)
        if "start" in command:
            _engine.freeze_clock(command["start"])
            answer: dict = {"ok": True}
        elif "advance" in command:
            _engine.advance_clock(command["advance"])
            answer = {"ok": True}
        else:
            data = command["data"]
            model.versions.clear()
            model.versions.update({(t, i): v for t, i, v in data["versions"]})
            model.down, model.turning_away = data["down"], data["away"]
            wrapper = functions[command["function"]]
            if command.get("near_sync"):
                wrapper.shared_backend().near_sync()
            try:
                served = getattr(wrapper, command["call"])(*command["args"])
            except model.SourceDown:
                answer = {"raised": "SourceDown"}
            else:
                answer = encode(served, CACHE_MISSING)
            wait_for_refreshes()
        print(json.dumps(answer), flush=True)
    return 0


def encode(served, missing) -> dict:
    """A wrapper method's answer as JSON: ``(value, metadata)``, a bare
    value, ``CACHE_MISSING``, or ``None`` (no metadata)."""
    if served is missing:
        return {"missing": True}
    if served is None or isinstance(served, bool):
        return {"plain": served}
    if isinstance(served, dict):  # get_cached_metadata
        return {"metadata_status": served["cache_status"].value}
    if isinstance(served, tuple) and len(served) == 2 and isinstance(served[1], dict):
        value, metadata = served
        return {"status": metadata["cache_status"].value, "value": list(value)}
    return {"value": list(served)}


if __name__ == "__main__":
    sys.exit(main())
