"""The second process of the near cache tests (tests/redis/test_near_cache.py).

    python -m tests.redis.near_worker <redis url> <operation> [<keys>]

<keys>: how many keys ``k0``, ``k1``… refresh/delete/get act on (else
the one key ``k``; their values are printed comma-separated). It uses
the functions of ``tests.redis.near_functions`` with the near cache on,
does one operation, prints a line saying what it saw, and exits.
"""

from __future__ import annotations

import os
import sys
import traceback

import django
from django.conf import settings


def main() -> int:
    from tests.timeouts import GENEROUS

    url, operation, *count = sys.argv[1:]
    keys = [f"k{i}" for i in range(int(count[0]))] if count else ["k"]
    settings.configure(
        SECRET_KEY="restflow-tests-only",  # the test project's: one signing key
        # Round-trip timeouts as hang guards: a loaded machine must not
        # turn this process's writes into BYPASS (tests/timeouts.py).
        RESTFLOW_SETTINGS={"CACHE_SETTINGS": {"BACKEND": url, "NEAR_CACHE": True, **GENEROUS}},
        # For ``model_save``: a model to save, in a database of its own.
        INSTALLED_APPS=["django.contrib.contenttypes", "tests.testapp"],
        DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}},
    )
    django.setup()
    if operation == "delete_previous_versions":
        # This process's constructor is version 2 (read at import).
        os.environ["NEAR_KEY_VERSION"] = "2"
    from tests.redis.near_functions import VersionedKey, report, value

    if operation == "refresh":
        print(",".join(value.refresh(key) for key in keys))
    elif operation == "delete":
        print(",".join(str(value.delete_cache(key)) for key in keys))
    elif operation == "invalidate_all":
        value.invalidate_all()
        print("done")
    elif operation == "delete_by_prefix":
        report.delete_by_prefix(tenant="a")
        print("done")
    elif operation == "delete_previous_versions":
        VersionedKey.delete_previous_versions()
        print("done")
    elif operation == "model_save":
        return save_under_a_rule()
    elif operation == "get":
        print(",".join(value(key) for key in keys))
    elif operation == "fork":
        return fork_after_first_use()
    else:
        raise SystemExit(f"unknown operation {operation!r}")
    return 0


def save_under_a_rule() -> int:
    """Attaches a save rule on Article to ``near_functions.article`` (as
    ``invalidates_on`` would; only here, so the test process's signals stay
    untouched), creates Article 1 and saves it: the rule drops the entry of
    ``article(1)`` in Redis, through the default (inline) dispatcher."""
    from django.core.management import call_command

    from restflow.caching.registry import CacheRegister
    from restflow.caching.rules import InvalidationRule
    from tests.redis.near_functions import article
    from tests.testapp.models import Article

    call_command("migrate", "testapp", verbosity=0)
    rule = InvalidationRule(Article, field_mapping={"article_id": "pk"})
    CacheRegister.add(Article, article, rule)
    saved = Article.objects.create(pk=1, title="first")
    saved.title = "second"
    saved.save()
    print("saved")
    return 0


def fork_after_first_use() -> int:
    """Fills the near cache (its thread and connection running), forks,
    and checks that the child starts with an empty near cache of its own
    that fills and serves, and that the parent's still serves."""
    from tests.redis.near_functions import value

    backend = value.shared_backend()
    first = value("k")
    assert backend.near_sync(), "the parent's channel came up"
    kept = value("k")  # read into the near cache (and its hot layer)
    assert value.get_with_metadata("k")[0] is kept
    hits = backend.near_stats()["hits"]
    assert hits >= 1, backend.near_stats()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            assert backend.near_stats() is None, "the child starts without one"
            assert value("k") == first, "read from Redis"
            assert backend.near_sync(), "the child's own channel came up"
            # From Redis or the child's near cache (its first read may have
            # been kept if the channel came up meanwhile): never the copy
            # the parent's hot layer holds.
            own = value("k")
            assert own == first and own is not kept, "never the parent's hot copy"
            before = backend.near_stats()["hits"]
            assert value.get_with_metadata("k")[0] is own, "the child's own hot copy"
            assert backend.near_stats()["hits"] == before + 1, backend.near_stats()
            code = 0
        except BaseException:
            # os._exit skips the usual report: the parent's stderr shows it.
            traceback.print_exc()
            sys.stderr.flush()
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, status
    # The child's writes (its sync keys) were invalidations here too: the
    # parent's hot copies went back once through its near cache.
    assert value.get_with_metadata("k")[0] == first
    assert backend.near_stats()["hits"] == hits + 1, backend.near_stats()
    print("forked ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
