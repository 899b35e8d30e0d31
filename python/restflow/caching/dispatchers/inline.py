"""``inline``: the work runs on the saving thread, right after the commit.

The default: when ``save()`` (or the ``atomic`` block around it) returns,
the cache no longer serves what the change made stale. Its cost is the
saving request's: a rule with ``rewarm=True`` recomputes there.
"""

from __future__ import annotations

from collections.abc import Sequence

from restflow.caching.dispatchers.base import Dispatcher
from restflow.caching.dispatchers.jobs import Job


class InlineDispatcher(Dispatcher):
    """Runs the jobs at once, on the calling thread."""

    name = "inline"
    config_keys = frozenset()  # takes no options: any dispatcher_config is a mistake
    # Nothing to save by grouping: each job runs where it is.
    supports_batching = False

    def dispatch(self, jobs: Sequence[Job]) -> None:
        from restflow.caching.tasks import run_cache_rules

        run_cache_rules(jobs, dispatcher_name=self.name)
