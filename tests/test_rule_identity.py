"""A rule's identity is the same in every process, whatever the import order (issue 6).

The older restflow numbered rules as modules registered them, so a worker
that imported ``second`` before ``first`` ran another rule than the one a
web process had sent. Here one process sends the jobs of a save and a
second process, importing in the other order, runs them.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

SETUP = """
import json, sys
import django
django.setup()
from restflow.caching.registry import CacheRegister

def rule_ids():
    status = CacheRegister.get_status()["models"]
    return sorted(r["id"] for rules in status.values() for r in rules if "rule_identity" in r["id"])
"""

SENDER = (
    SETUP
    + """
import tests.rule_identity.first
import tests.rule_identity.second
from django.test import override_settings
from restflow.caching.dispatchers import Dispatcher, register_dispatcher
from tests.testapp.models import Article

sent = []

@register_dispatcher
class Outbox(Dispatcher):
    name = "outbox"
    in_process = False

    def dispatch(self, jobs):
        sent.extend(job.to_payload() for job in jobs)

with override_settings(RESTFLOW_SETTINGS={"CACHE_SETTINGS": {"DEFAULT_DISPATCHER": "outbox"}}):
    CacheRegister.invalidate_instances(Article(pk=7, title="t", views=3))
print(json.dumps({"ids": rule_ids(), "jobs": sent}))
"""
)

WORKER = (
    SETUP
    + """
import tests.rule_identity.second
import tests.rule_identity.first
from django.core.management import call_command
from restflow.caching import CACHE_MISSING
from restflow.caching.tasks import run_cache_rules
from tests.rule_identity.first import article_summary
from tests.rule_identity.second import by_views

for f, arg in ((article_summary, 7), (article_summary, 8), (by_views, 3), (by_views, 4)):
    f(arg)
ids = rule_ids()
call_command("migrate", verbosity=0)  # the invalidator's job loads its row
run_cache_rules(json.loads(sys.stdin.read()), dispatcher_name="outbox")
print(json.dumps({
    "ids": ids,
    "invalidated": tests.rule_identity.first.SEEN,
    "dropped": [
        f"{f.__name__}({arg})"
        for f, arg in ((article_summary, 7), (article_summary, 8), (by_views, 3), (by_views, 4))
        if f.get_cache_only(arg) is CACHE_MISSING
    ],
}))
"""
)


def run(script, stdin=""):
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
        DJANGO_SETTINGS_MODULE="tests.django_project.settings",
    )
    out = subprocess.run(
        [sys.executable, "-c", script],
        input=stdin,
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_processes_that_import_in_different_orders_run_the_same_rules():
    sender = run(SENDER)
    worker = run(WORKER, stdin=json.dumps(sender["jobs"]))

    expected_ids = [
        "tests.rule_identity.first.article_summary#0",
        "tests.rule_identity.first.article_summary#1",
        "tests.rule_identity.first.front_page#0",
        "tests.rule_identity.second.by_views#0",
    ]
    assert sender["ids"] == worker["ids"] == expected_ids
    # The save of article 7 (3 views) sent the rules on Article, by identity.
    sent = sorted(job["rule"] for job in sender["jobs"] if "rule_identity" in job["rule"])
    assert sent == [
        "tests.rule_identity.first.article_summary#1",
        "tests.rule_identity.first.front_page#0",
        "tests.rule_identity.second.by_views#0",
    ]
    # The worker ran each on the right function with the right values; the
    # invalidator's job (front_page) found no row 7 and got a stand-in with its pk.
    assert worker["dropped"] == ["article_summary(7)", "by_views(3)"]
    assert worker["invalidated"] == [[7, "POST_SAVE"]]
