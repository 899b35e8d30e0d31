"""``django_q``: the jobs are queued as a django-q2 task.

The task function is ``restflow.caching.tasks.run_cache_rules`` (setting
``FUNCTION_PATH``), queued by its dotted path. ``cluster`` and ``group``
are passed on when set. Requires ``pip install 'restflow-cache[django-q]'``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from restflow.caching.dispatchers.base import Dispatcher, Requirement
from restflow.caching.dispatchers.django_rq import FUNCTION_PATH
from restflow.caching.dispatchers.jobs import Job


class DjangoQDispatcher(Dispatcher):
    """Queues the jobs as one django-q task (``cluster``, ``group``, ``function_path``)."""

    name = "django_q"
    in_process = False
    config_keys = frozenset({"cluster", "group", "function_path"})
    default_settings: ClassVar[dict[str, Any]] = {
        "CLUSTER": None,
        "GROUP": None,
        "FUNCTION_PATH": FUNCTION_PATH,
    }
    requires = Requirement("django_q", extra="django-q", package="django-q2")

    def dispatch(self, jobs: Sequence[Job]) -> None:
        tasks = self.broker("django_q.tasks")
        options = {
            key: self.option(key) for key in ("cluster", "group") if self.option(key) is not None
        }
        tasks.async_task(
            self.option("function_path"),
            [job.to_payload() for job in jobs],
            dispatcher_name=self.name,
            **options,
        )
