"""``celery``: the jobs are sent to a Celery task.

The task is ``restflow.caching.tasks.task_run_cache_rules`` (setting
``TASK_NAME``); a worker finds it with ``app.autodiscover_tasks()`` when
``restflow.caching`` is in ``INSTALLED_APPS``. When the task is registered
in this process it is called with ``apply_async`` (so ``task_always_eager``
works in tests), else sent by name. Requires ``pip install 'restflow-cache[celery]'``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from restflow.caching.dispatchers.base import Dispatcher, Requirement
from restflow.caching.dispatchers.jobs import Job, encode

TASK_NAME = "restflow.caching.tasks.task_run_cache_rules"


class CeleryDispatcher(Dispatcher):
    """Sends the jobs to one Celery task call (``task_name``, ``queue``)."""

    name = "celery"
    in_process = False
    config_keys = frozenset({"task_name", "queue"})
    default_settings: ClassVar[dict[str, Any]] = {"TASK_NAME": TASK_NAME, "QUEUE": None}
    requires = Requirement("celery", extra="celery")

    def dispatch(self, jobs: Sequence[Job]) -> None:
        celery = self.broker()
        # Registers the shared task with the current app.
        import restflow.caching.tasks  # noqa: F401

        task_name = self.option("task_name")
        queue = self.option("queue")
        kwargs = {
            "jobs": [job.to_payload() for job in jobs],
            "dispatcher_name": self.name,
            **_change_of(jobs),
        }
        options = {"queue": queue} if queue else {}
        app = celery.current_app
        task = app.tasks.get(task_name)
        if task is not None:
            task.apply_async(kwargs=kwargs, **options)
        else:
            app.send_task(task_name, kwargs=kwargs, **options)


def _change_of(jobs: Sequence[Job]) -> dict[str, Any]:
    """``model_label``, ``pk`` and ``signal_type`` at the top of the message,
    as drf-restflow's messages had them (for task routes and monitoring that
    read them); ``None`` where the jobs of a batch disagree."""
    fields: dict[str, Any] = {}
    for name, values in (
        ("model_label", {job.model for job in jobs}),
        ("pk", {repr(encode(job.pk)) for job in jobs}),
        ("signal_type", {job.change.signal_type.value for job in jobs}),
    ):
        fields[name] = values.pop() if len(values) == 1 else None
    if fields["pk"] is not None:
        fields["pk"] = encode(jobs[0].pk)
    return fields
