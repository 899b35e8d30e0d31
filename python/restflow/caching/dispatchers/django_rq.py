"""``django_rq``: the jobs are enqueued on an RQ queue.

The worker function is ``restflow.caching.tasks.run_cache_rules`` (setting
``FUNCTION_PATH``), enqueued by its dotted path so the sending process need
not import it. Requires ``pip install 'restflow-cache[django-rq]'``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from restflow.caching.dispatchers.base import Dispatcher, Requirement
from restflow.caching.dispatchers.jobs import Job

FUNCTION_PATH = "restflow.caching.tasks.run_cache_rules"


class DjangoRqDispatcher(Dispatcher):
    """Enqueues the jobs as one RQ job (``queue``, ``function_path``)."""

    name = "django_rq"
    in_process = False
    config_keys = frozenset({"queue", "function_path"})
    default_settings: ClassVar[dict[str, Any]] = {
        "QUEUE": "default",
        "FUNCTION_PATH": FUNCTION_PATH,
    }
    requires = Requirement("django_rq", extra="django-rq")

    def dispatch(self, jobs: Sequence[Job]) -> None:
        queue = self.broker().get_queue(self.option("queue"))
        queue.enqueue(
            self.option("function_path"),
            [job.to_payload() for job in jobs],
            dispatcher_name=self.name,
        )
