"""drf-restflow 2.0.1's dispatch format, beside restflow's.

drf-restflow handed a dispatcher ``dispatch(*, rule_ids, rule_kwargs,
model_label, pk, signal_type)``, with ``rule_kwargs = {str(rule_id):
{parameter: value}}``, and its workers called
``run_cache_rules(rule_ids, rule_kwargs)``. restflow's dispatchers take
:class:`~restflow.caching.dispatchers.jobs.Job` objects. This module
translates both ways, so:

* a custom ``Dispatcher`` written for drf-restflow (its ``dispatch`` takes
  ``rule_ids`` and ``rule_kwargs``) keeps working: :func:`adapt` wraps it;
* ``restflow.caching.tasks.run_cache_rules(rule_ids, rule_kwargs)`` runs
  restflow's rules by their ids (:func:`jobs_from_origin`);
* messages drf-restflow queued before the deploy still run. Their rule ids
  came from an import-order counter, which names nothing here (the reason
  restflow's ids are stable), so such a rule is found by its model (when the
  message says it) and the parameters its ``field_mapping`` maps; when
  nothing matches, every function with a rule on that model drops all its
  entries: more than needed, never a stale entry kept.
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from restflow.caching.dispatchers.jobs import Change, Job, SignalTypes

__all__ = ["adapt", "jobs_from_origin", "takes_origin_arguments"]

logger = logging.getLogger("restflow.caching")


def takes_origin_arguments(dispatch: Callable[..., Any]) -> bool:
    """Whether ``dispatch`` is written for drf-restflow: it takes ``rule_ids``
    and ``rule_kwargs`` by name."""
    try:
        parameters = inspect.signature(dispatch).parameters
    except (TypeError, ValueError):
        return False
    return "rule_ids" in parameters and "rule_kwargs" in parameters


def adapt(origin_dispatch: Callable[..., Any]) -> Callable[..., Any]:
    """A ``dispatch(self, jobs)`` that calls a drf-restflow ``dispatch`` once
    per changed instance, with restflow's rule ids. Jobs of custom
    invalidators carry no arguments to send: they run here, at once, as
    drf-restflow ran them (in the process, at the signal)."""

    @functools.wraps(origin_dispatch)
    def dispatch(self: Any, jobs: Sequence[Job]) -> None:
        from restflow.caching.tasks import run_cache_rules

        invalidators = [job for job in jobs if job.kwargs is None]
        if invalidators:
            run_cache_rules(invalidators, dispatcher_name=self.name)
        groups: dict[tuple[Any, ...], list[Job]] = {}
        for job in jobs:
            if job.kwargs is not None:
                groups.setdefault((job.model, job.pk, job.change.signal_type), []).append(job)
        for (model_label, pk, signal_type), members in groups.items():
            origin_dispatch(
                self,
                model_label=model_label,
                pk=pk,
                rule_ids=[job.rule_id for job in members],
                signal_type=signal_type,
                rule_kwargs={job.rule_id: dict(job.kwargs or {}) for job in members},
            )

    return dispatch


def _signal(value: Any) -> SignalTypes:
    text = str(getattr(value, "value", value) or SignalTypes.POST_SAVE)
    return SignalTypes(text.rpartition(".")[2])


def jobs_from_origin(
    rule_ids: Iterable[Any], rule_kwargs: Mapping[str, Any], context: Mapping[str, Any]
) -> list[Job]:
    """The jobs of drf-restflow's ``(rule_ids, rule_kwargs)``; ``context`` may
    say ``model_label``, ``pk`` and ``signal_type``. As in drf-restflow, a
    rule without arguments in ``rule_kwargs`` is skipped."""
    from restflow.caching.registry import CacheRegister

    change = Change(_signal(context.get("signal_type")))
    jobs: list[Job] = []
    for rule_id in rule_ids:
        kwargs = rule_kwargs.get(str(rule_id))
        if kwargs is None:
            continue
        bound = CacheRegister.get_rule(str(rule_id))
        if bound is None:
            CacheRegister.auto_discover()  # a worker that imported nothing yet
            bound = CacheRegister.get_rule(str(rule_id))
        if bound is not None:
            jobs.append(_job(bound, change, kwargs, context.get("pk")))
        else:
            jobs.extend(_queued_before_the_deploy(rule_id, kwargs, change, context))
    return jobs


def _job(bound: Any, change: Change, kwargs: Mapping[str, Any], pk: Any) -> Job:
    return Job(
        bound.rule_id, bound.module, bound.model_label, change, dict(kwargs), pk=pk, rule=bound
    )


def _queued_before_the_deploy(
    rule_id: Any, kwargs: Mapping[str, Any], change: Change, context: Mapping[str, Any]
) -> list[Job]:
    from restflow.caching.registry import CacheRegister
    from restflow.caching.rules import INVALIDATOR

    label = context.get("model_label")
    rules = [
        bound
        for bound in CacheRegister.rules()
        if bound.target != INVALIDATOR and (label is None or bound.model_label == label)
    ]
    matching = [bound for bound in rules if set(bound.rule.field_mapping) == set(kwargs)]
    if matching:
        return [_job(bound, change, kwargs, context.get("pk")) for bound in matching]
    logger.warning(
        "restflow: drf-restflow rule %r (model %s, arguments %s) names no rule here; "
        "dropping every entry of the functions with rules on that model",
        rule_id,
        label or "unknown",
        sorted(kwargs),
    )
    for wrapper in {id(bound.wrapper): bound.wrapper for bound in rules}.values():
        wrapper.invalidate_all()
    return []
