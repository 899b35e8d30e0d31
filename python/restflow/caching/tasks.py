"""Where invalidation jobs run: in this process, or in a broker's worker.

:func:`run_cache_rules` is the one entry point: the in-process dispatchers
call it with jobs, and a broker's worker with the payloads the job was sent
as. Each job names its rule (``"<function path>#<position>"``); a worker
that has not imported the function's module yet imports it, so workers
need no particular import order.

* Celery: the task ``restflow.caching.tasks.task_run_cache_rules``, found by
  ``app.autodiscover_tasks()`` when ``restflow.caching`` is an installed app.
* django-rq and django-q2: ``restflow.caching.tasks.run_cache_rules``, by path.
* Dramatiq: call :func:`dramatiq_actor` in a module the worker imports.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from restflow.caching.dispatchers.base import raises
from restflow.caching.dispatchers.dramatiq import ACTOR_NAME, DramatiqDispatcher
from restflow.caching.dispatchers.jobs import Job
from restflow.caching.dispatchers.origin import jobs_from_origin
from restflow.caching.process_locks import ProcessLock
from restflow.caching.registry import CacheRegister

__all__ = ["arun_cache_rules", "dramatiq_actor", "run_cache_rules", "task_run_cache_rules"]

logger = logging.getLogger("restflow.caching")


def run_cache_rules(
    jobs: Iterable[Any] = (),
    rule_kwargs: dict[str, Any] | str | None = None,
    *,
    dispatcher_name: str | None = None,
    context: dict[str, Any] | None = None,
    rule_ids: Iterable[Any] | None = None,
) -> None:
    """Runs each job; one that fails does not stop the others.

    A failure is logged, or raised (the first one, once all jobs have run)
    when its rule's ``raise_exception`` says so, else when the
    dispatcher's ``RAISE_EXCEPTION`` setting does, else when
    ``DISPATCHER_RAISE_EXCEPTION`` does. Raising lets a broker retry or
    record the task as failed.

    drf-restflow's form is taken too: ``run_cache_rules(rule_ids,
    rule_kwargs, dispatcher_name=..., context=...)``, from a custom
    dispatcher written for it or a message it queued (see
    :mod:`restflow.caching.dispatchers.origin`).
    """
    if isinstance(rule_kwargs, str):  # run_cache_rules(jobs, "django_rq")
        dispatcher_name, rule_kwargs = rule_kwargs, None
    if rule_ids is not None or rule_kwargs is not None:
        jobs = jobs_from_origin(
            jobs if rule_ids is None else rule_ids, rule_kwargs or {}, context or {}
        )
    failures: list[Exception] = []
    for item in jobs:
        rule = None
        try:
            job = item if isinstance(item, Job) else Job.from_payload(item)
            bound = job.rule if job.rule is not None else CacheRegister.find(job)
            rule = bound.rule
            bound.run(job)
        except Exception as error:
            surfaces = rule.raises(dispatcher_name) if rule else raises(None, dispatcher_name)
            if surfaces:
                failures.append(error)
            else:
                logger.exception(
                    "restflow: invalidation %s failed (dispatcher %s)",
                    _name(item),
                    dispatcher_name,
                )
    for extra in failures[1:]:
        logger.error("restflow: invalidation failed", exc_info=extra)
    if failures:
        raise failures[0]


async def arun_cache_rules(*args: Any, **kwargs: Any) -> None:
    """:func:`run_cache_rules` on a worker thread, awaited (drf-restflow's
    async entry point): the rules touch stores and the database."""
    import asyncio
    import functools

    await asyncio.get_running_loop().run_in_executor(
        None, functools.partial(run_cache_rules, *args, **kwargs)
    )


def _name(item: Job | dict[str, Any]) -> str:
    if isinstance(item, Job):
        return item.rule_id
    return str(item.get("rule")) if isinstance(item, dict) else repr(item)


def task_run_cache_rules(
    jobs: list[dict[str, Any]] | None = None,
    dispatcher_name: str = "celery",
    *,
    rule_ids: list[Any] | None = None,
    rule_kwargs: dict[str, Any] | None = None,
    **context: Any,
) -> None:
    """The Celery task: runs the payloads a ``celery`` dispatcher sent.

    ``context`` is what the message says beside them (``model_label``,
    ``pk``, ``signal_type``, as drf-restflow's messages did); a message
    drf-restflow queued (``rule_ids``, ``rule_kwargs``) runs too."""
    if rule_ids is not None:
        run_cache_rules(
            rule_ids=rule_ids,
            rule_kwargs=rule_kwargs or {},
            dispatcher_name=dispatcher_name,
            context=context,
        )
    else:
        run_cache_rules(jobs or [], dispatcher_name=dispatcher_name)


try:
    from celery import shared_task
except ImportError:
    pass
else:
    task_run_cache_rules = shared_task(name="restflow.caching.tasks.task_run_cache_rules")(
        task_run_cache_rules
    )


_actors: dict[str, Any] = {}
_actors_lock = ProcessLock()


def dramatiq_actor(actor_name: str = ACTOR_NAME, queue_name: str = "default") -> Any:
    """The Dramatiq actor that runs jobs, declared on the current broker on
    first use. Call it, with the names the sending side uses, in a module
    the worker imports."""
    with _actors_lock:
        actor = _actors.get(actor_name)
        if actor is None:
            dramatiq = DramatiqDispatcher.broker()

            def run(jobs: list[Any], dispatcher_name: Any = "dramatiq") -> None:
                # (jobs, name), or drf-restflow's (rule_ids, rule_kwargs).
                run_cache_rules(jobs, dispatcher_name)

            actor = _actors[actor_name] = dramatiq.actor(
                run, actor_name=actor_name, queue_name=queue_name
            )
        elif actor.queue_name != queue_name:
            raise ValueError(
                f"The Dramatiq actor {actor_name!r} sends to queue {actor.queue_name!r}; "
                f"use another actor_name for queue {queue_name!r}."
            )
        return actor
