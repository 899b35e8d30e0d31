"""``django_q``: the jobs are queued as a django-q2 task.

The task function is ``restflow.caching.tasks.run_cache_rules`` (setting
``FUNCTION_PATH``), queued by its dotted path. ``cluster`` and ``group``
are passed on when set. Requires ``pip install 'restflow-cache[django-q]'``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from restflow.caching.dispatchers.base import Dispatcher, require
from restflow.caching.dispatchers.jobs import Job

FUNCTION_PATH = "restflow.caching.tasks.run_cache_rules"


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

    def validate_config(self) -> None:
        super().validate_config()
        require("django_q", dispatcher=self.name, extra="django-q", package="django-q2")

    def batch_key(self) -> tuple[Any, ...]:
        return (
            type(self),
            self.option("cluster"),
            self.option("group"),
            self.option("function_path"),
        )

    def dispatch(self, jobs: Sequence[Job]) -> None:
        tasks = require(
            "django_q.tasks", dispatcher=self.name, extra="django-q", package="django-q2"
        )
        options = {
            key: self.option(key) for key in ("cluster", "group") if self.option(key) is not None
        }
        tasks.async_task(
            self.option("function_path") or FUNCTION_PATH,
            [job.to_payload() for job in jobs],
            dispatcher_name=self.name,
            **options,
        )
