"""``dramatiq``: the jobs are sent to a Dramatiq actor.

Dramatiq finds actors by name in the modules a worker imports, so the
actor is declared by :func:`restflow.caching.tasks.dramatiq_actor`, which
the sending side calls on first use and the worker side calls in a module
it loads (``dramatiq_actor()`` at the top of your ``tasks.py``), with the
same ``ACTOR_NAME`` and ``QUEUE`` settings. Requires
``pip install 'restflow-cache[dramatiq]'``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from restflow.caching.dispatchers.base import Dispatcher, Requirement
from restflow.caching.dispatchers.jobs import Job

#: drf-restflow's actor name, so messages it queued find the actor after the deploy.
ACTOR_NAME = "restflow.task_run_cache_rules"


class DramatiqDispatcher(Dispatcher):
    """Sends the jobs as one message to the restflow actor (``actor_name``, ``queue``)."""

    name = "dramatiq"
    in_process = False
    config_keys = frozenset({"actor_name", "queue"})
    default_settings: ClassVar[dict[str, Any]] = {"ACTOR_NAME": ACTOR_NAME, "QUEUE": "default"}
    requires = Requirement("dramatiq", extra="dramatiq")

    def dispatch(self, jobs: Sequence[Job]) -> None:
        from restflow.caching.tasks import dramatiq_actor

        actor = dramatiq_actor(self.option("actor_name"), self.option("queue"))
        actor.send([job.to_payload() for job in jobs], self.name)
