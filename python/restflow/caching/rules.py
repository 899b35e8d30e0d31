"""``InvalidationRule``: which model changes make a cached function's entries stale.

::

    @cache_result(
        ttl=300,
        invalidates_on=[
            InvalidationRule(Article, field_mapping={"article_id": "pk"}),
            InvalidationRule(Comment, field_mapping={"article_id": "article_id"},
                             trigger_on_create=True),
        ],
    )
    def article_payload(article_id: int): ...

A rule listens to ``post_save`` and ``post_delete`` of its model (and of
its subclasses and proxies) and, once the transaction commits, drops what
the change made stale. ``field_mapping`` says how to find the entries:
function parameter → attribute path on the instance. What it drops follows
from the function's key constructor, decided once, at decoration:

* the mapping covers the partition fields and nothing else → that
  **partition** (``delete_by_prefix``), unless the partition is all the key
  reads and the rule rewarms: then it is the one entry below;
* the mapping gives every argument the key reads → that one **entry**
  (``delete_cache``); with ``rewarm=True`` a cached entry is recomputed
  (``refresh``; ``arefresh``, awaited, for an ``async def``) instead, so
  readers never miss;
* the mapping covers the partition fields and only some other arguments →
  that **partition**: the entries of the other arguments cannot be named;
* otherwise (and for a rule without mapping on a function without
  parameters) → every entry of the **function** (``invalidate_all``).

``rewarm`` recomputes only an exact entry that is cached, and only on a
save (a deleted row has nothing to recompute); when the rule drops a
partition or the function, ``rewarm`` drops them too, because the variants
they held cannot be named. The values are read when the signal fires, so a
delete inside ``atomic`` still finds the primary key that Django clears
before the commit. Invalidation costs the same at any cache size: no
invalidation looks for entries.
"""

from __future__ import annotations

import copy
import importlib
import inspect
import logging
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from restflow.caching.decorators import is_method
from restflow.caching.dispatchers.jobs import Change, Job, SignalTypes
from restflow.caching.function_identity import function_id_of
from restflow.caching.key_fields import (
    ArgsKeyField,
    CacheKeyField,
)
from restflow.caching.process_locks import ProcessLock
from restflow.caching.status import CACHE_MISSING

if TYPE_CHECKING:
    from restflow.caching.dispatchers.base import Dispatcher

__all__ = ["InvalidationRule", "attach_rules"]

logger = logging.getLogger("restflow.caching")

_VARIADIC = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)

ENTRY = "entry"
PARTITION = "partition"
FUNCTION = "function"
INVALIDATOR = "invalidator"


def _accepted_extras(func: Callable[..., Any]) -> frozenset[str] | None:
    """Which of the extras ``func`` asks for; ``None``: all (it takes ``**kwargs``)."""
    try:
        parameters = inspect.signature(func).parameters.values()
    except (TypeError, ValueError):
        return frozenset()
    if any(p.kind is p.VAR_KEYWORD for p in parameters):
        return None
    return frozenset(p.name for p in parameters)


def _pick(extras: dict[str, Any], accepted: frozenset[str] | None) -> dict[str, Any]:
    if accepted is None:
        return extras
    return {key: value for key, value in extras.items() if key in accepted}


def _read_path(instance: Any, steps: tuple[str, ...]) -> Any:
    value = instance
    for step in steps:
        if value is None:
            return None
        value = getattr(value, step)
    return value


class InvalidationRule:
    """Drops (or refreshes) a cached function's entries when ``model`` changes.

    :param model: a model class, or ``"app_label.ModelName"`` (resolved when
        the apps are loaded). Saves and deletes of its subclasses and
        proxies count too; for a proxy, so do those made through its
        concrete model or another proxy of it (one table), the instance
        read as the proxy's; for a multi-table child, so do saves made
        through its parent, the child's row read (one query). Checked
        when the rule is registered (at decoration), so a rule may be
        built with a stand-in.
    :param field_mapping: ``{parameter: "attribute.path"}``: where the
        instance keeps each argument of the entries it affects. Map foreign
        keys by their column (``"author_id"``, or ``"author.id"``, which is
        read the same way): the related row may be gone in a cascade.
    :param invalidator: ``invalidator(wrapper, instance, **extras)``, a
        callable or its dotted path (imported on first use), that does the
        work itself; it runs on the rule's dispatcher. ``extras`` are those
        of ``signal_type``, ``instance_created`` and ``update_fields`` its
        signature names. Excludes ``field_mapping`` and ``rewarm``.
    :param watch_fields: field names; a save whose ``update_fields`` names
        none of them is ignored. A plain ``save()`` (which may change
        anything) and a delete always count.
    :param invalidate_when: ``invalidate_when(instance, **extras)``: the rule
        runs only when it is truthy; evaluated for every change the other
        options let through. The older form, a dict of ``{"attr": value}``
        / ``{"!attr": value}`` conditions, is accepted.
    :param require_args: with ``True`` (the default) a rule for a function
        that has parameters must give ``field_mapping`` or ``invalidator``
        (else ``ValueError`` at decoration); ``False`` lets it drop every
        entry of the function. A list of parameter names also skips changes
        where any of them maps to ``None``.
    :param trigger_on_create: whether a save that creates the row counts.
    :param rewarm: recompute the exact entry instead of dropping it (see
        the module documentation for when that is possible).
    :param dispatcher: where the work runs: a dispatcher name, class or
        instance; ``None`` takes the ``DEFAULT_DISPATCHER`` setting.
    :param dispatcher_config: options of the dispatcher (``{"queue": ...}``).
    :param batch: let the jobs of one change (or one bulk call) share one
        dispatch with other batching rules of the same dispatcher.
    :param raise_exception: ``True``: a failure raises (from ``save()`` or
        the ``atomic`` block with the inline dispatcher, in the worker
        otherwise); ``False``: it is logged; ``None``: the dispatcher's
        ``RAISE_EXCEPTION`` setting, else ``DISPATCHER_RAISE_EXCEPTION``.

    The parameters after ``model`` may be given by position, in
    drf-restflow's order (``rewarm``, ``field_mapping``, ``require_args``,
    ``trigger_on_create``, ``watch_fields``, ``invalidate_when``,
    ``invalidator``, ``dispatcher``, ``dispatcher_config``, ``batch``,
    ``raise_exception``).
    """

    def __init__(
        self,
        model: Any,
        rewarm: bool = False,
        field_mapping: Mapping[str, str] | None = None,
        require_args: bool | Iterable[str] = True,
        trigger_on_create: bool = False,
        watch_fields: Iterable[str] | str | None = None,
        invalidate_when: Callable[..., Any] | Mapping[str, Any] | None = None,
        invalidator: Callable[..., Any] | str | None = None,
        dispatcher: str | type[Dispatcher] | Dispatcher | None = None,
        dispatcher_config: Mapping[str, Any] | None = None,
        batch: bool = False,
        raise_exception: bool | None = None,
    ) -> None:
        if field_mapping and invalidator is not None:
            raise ValueError(
                "InvalidationRule field_mapping and invalidator are mutually exclusive "
                "(give one, not both): the invalidator does the work itself."
            )
        if invalidator is not None and rewarm:
            raise ValueError(
                "rewarm has no effect with an invalidator, which decides what to do itself."
            )
        if invalidator is not None and not callable(invalidator):
            if not isinstance(invalidator, str):
                raise TypeError(
                    "invalidator must be a callable or its dotted path "
                    f"('myapp.invalidators.drop_feed'); got {invalidator!r}."
                )
            if "." not in invalidator.strip("."):  # drf-restflow's type: ValueError
                raise ValueError(
                    "An InvalidationRule invalidator string must be a dotted import path "
                    f"('myapp.invalidators.drop_feed'); got {invalidator!r}."
                )
        self.model = model
        self.field_mapping = _mapping(field_mapping)
        self.invalidator = invalidator
        self.watch_fields = _names(watch_fields, "watch_fields")
        if invalidate_when is not None and not (
            callable(invalidate_when) or isinstance(invalidate_when, Mapping)
        ):
            raise TypeError(
                "invalidate_when must be a callable invalidate_when(instance, **extras) "
                f"(or a dict of attribute conditions); got {invalidate_when!r}."
            )
        self.invalidate_when = invalidate_when
        if isinstance(require_args, bool):
            self.require_args: bool | tuple[str, ...] = require_args
        else:
            self.require_args = _names(require_args, "require_args") or ()
        for flag, value in (
            ("trigger_on_create", trigger_on_create),
            ("rewarm", rewarm),
            ("batch", batch),
        ):
            if not isinstance(value, bool):
                raise TypeError(f"InvalidationRule {flag} must be True or False; got {value!r}.")
        if raise_exception is not None and not isinstance(raise_exception, bool):
            raise TypeError(
                f"raise_exception must be True, False or None; got {raise_exception!r}."
            )
        if dispatcher_config is not None and not isinstance(dispatcher_config, Mapping):
            raise TypeError(f"dispatcher_config must be a dict; got {dispatcher_config!r}.")
        self.trigger_on_create = trigger_on_create
        self.rewarm = rewarm
        self.dispatcher = dispatcher
        self.dispatcher_config = dict(dispatcher_config or {})
        self.batch = batch
        self.raise_exception = raise_exception
        self._lock = ProcessLock()
        self._invalidator: tuple[Callable[..., Any], frozenset[str] | None] | None = None
        self._when_extras = (
            _accepted_extras(invalidate_when) if callable(invalidate_when) else frozenset()
        )
        self._dispatchers: dict[str, Dispatcher] = {}
        if dispatcher is not None:
            # Named explicitly: a typo or a missing broker package fails at
            # import. A name registered later is checked by auto_discover().
            from restflow.caching.dispatchers import is_registered

            if not isinstance(dispatcher, str) or is_registered(dispatcher):
                self.get_dispatcher()

    def __repr__(self) -> str:
        model = self.model if isinstance(self.model, str) else _label(self.model)
        how = f"invalidator={self.invalidator!r}" if self.invalidator else f"{self.field_mapping}"
        return f"<InvalidationRule {model} {how}>"

    # -- resolved lazily, once ------------------------------------------------

    def resolve_invalidator(self) -> Callable[..., Any]:
        """The invalidator, importing a dotted path on first use."""
        return self._resolved_invalidator()[0]

    def _resolved_invalidator(self) -> tuple[Callable[..., Any], frozenset[str] | None]:
        if self._invalidator is None:
            target = self.invalidator
            if isinstance(target, str):
                module, _, name = target.rpartition(".")
                target = getattr(importlib.import_module(module), name)
                if not callable(target):
                    raise TypeError(f"invalidator {self.invalidator!r} is not callable.")
            assert target is not None
            self._invalidator = (target, _accepted_extras(target))
        return self._invalidator

    @property
    def dispatcher_name(self) -> str:
        """The name of the dispatcher the rule uses now (without building it)."""
        spec = self.dispatcher
        if spec is None:
            from restflow.caching.settings import cache_settings

            return cache_settings()["DEFAULT_DISPATCHER"]
        return spec if isinstance(spec, str) else spec.name

    def get_dispatcher(self) -> Dispatcher:
        """The rule's dispatcher, built once (per ``DEFAULT_DISPATCHER`` value
        when the rule names none, so a settings change is followed)."""
        from restflow.caching.dispatchers import get_dispatcher

        name = self.dispatcher_name
        found = self._dispatchers.get(name)
        if found is None:
            with self._lock:
                found = self._dispatchers.get(name)
                if found is None:
                    spec = self.dispatcher if self.dispatcher is not None else name
                    found = self._dispatchers[name] = get_dispatcher(spec, self.dispatcher_config)
        return found

    def raises(self, dispatcher_name: str | None = None) -> bool:
        """Whether this rule's failures surface (see ``raise_exception``)."""
        from restflow.caching.dispatchers.base import raises

        return raises(self.raise_exception, dispatcher_name or self.dispatcher_name)

    # -- deciding ---------------------------------------------------------------

    def wants(self, instance: Any, change: Change, watched: frozenset[str] | None) -> bool:
        """Whether ``change`` of ``instance`` concerns this rule."""
        if change.signal_type is SignalTypes.POST_SAVE:
            if change.created and not self.trigger_on_create:
                return False
            if (
                watched
                and not change.created
                and change.update_fields is not None
                and not watched & change.update_fields
            ):
                return False
        when = self.invalidate_when
        if when is None:
            return True
        if callable(when):
            return bool(when(instance, **_pick(change.extras(), self._when_extras)))
        return all(_condition(instance, key, expected) for key, expected in when.items())


def _condition(instance: Any, key: str, expected: Any) -> bool:
    negate = key.startswith("!")
    actual = _read_path(instance, tuple(key.lstrip("!").split(".")))
    matched = actual is expected if expected is None else actual == expected
    return matched != negate


def _is_model(value: Any) -> bool:
    from django.db import models

    return isinstance(value, type) and issubclass(value, models.Model)


def _label(model: Any) -> str:
    meta = getattr(model, "_meta", None)
    return getattr(meta, "label", None) or repr(model)


def check_model(model: Any) -> None:
    """A rule's model is checked when the rule is registered (at decoration),
    not when it is made, as in drf-restflow: a rule may be built with a
    stand-in, but never wired to one."""
    if not (isinstance(model, str) and model.count(".") == 1) and not _is_model(model):
        raise TypeError(
            f"InvalidationRule model must be a model class or 'app_label.ModelName'; got {model!r}."
        )


def _names(value: Iterable[str] | str | None, what: str) -> tuple[str, ...] | None:
    if value is None:
        return None
    names = (value,) if isinstance(value, str) else tuple(value)
    if not all(isinstance(name, str) and name for name in names):
        raise TypeError(f"{what} must be a list of names; got {value!r}.")
    return names


def _mapping(value: Mapping[str, str] | None) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, Mapping) or not all(
        isinstance(k, str)
        and k.isidentifier()
        and isinstance(v, str)
        and v
        and "" not in v.split(".")
        for k, v in value.items()
    ):
        raise TypeError(
            "field_mapping must map parameter names to attribute paths "
            f"({{'article_id': 'article_id'}}); got {value!r}."
        )
    return dict(value)


class BoundRule:
    """One :class:`InvalidationRule` attached to one cached function at one
    position: the identity a broker names, what the rule drops, and how it
    reads an instance of its model."""

    def __init__(self, rule: InvalidationRule, wrapper: Any, model: type, position: int) -> None:
        self.rule = rule
        self.wrapper = wrapper
        # Dropping needs no await: an async def's deletes go straight to the
        # engine's sync wrapper, which the async one keeps. Only a rewarm,
        # which runs the function, must go through the async wrapper.
        self.engine = getattr(wrapper, "_engine", wrapper) if _is_async(wrapper) else wrapper
        self.model = model
        self.position = position
        self.function = function_path(wrapper)
        self.rule_id = f"{self.function}#{position}"
        self.module = wrapper.func.__module__
        self.model_label = model._meta.label
        self.target, self._placeholders = _plan(rule, wrapper)
        if rule.rewarm and self.target != ENTRY:
            # Not an error (the drop is correct), but not what was asked: say so once.
            logger.warning(
                "restflow: rule %s has rewarm=True, but its field_mapping does not name every "
                "argument the key of %s reads, so a change drops the %s instead of "
                "recomputing one entry.",
                self.rule_id,
                self.function,
                self.target,
            )
        self._paths = {
            name: _compile_path(model, path) for name, path in rule.field_mapping.items()
        }
        self._watched = _watched(model, rule.watch_fields)
        if isinstance(rule.invalidate_when, Mapping):
            for key in rule.invalidate_when:
                _compile_path(model, key.lstrip("!"))

    def __repr__(self) -> str:
        return f"<BoundRule {self.rule_id} on {self.model_label}: {self.target}>"

    def capture(self, instance: Any, change: Change) -> Job | None:
        """The job for this change, with the mapped values read now; ``None``
        when the rule does not apply."""
        if not isinstance(instance, self.model):
            # A row changed through another class than the rule's model
            # (see CacheRegistry.rules_for): read it as the rule's model's.
            instance = _as_model(instance, self.model)
            if instance is None:
                return None
        if not self.rule.wants(instance, change, self._watched):
            return None
        job = Job(self.rule_id, self.module, self.model_label, change, rule=self)
        job.pk = instance.pk  # a broker's top-level pk (drf-restflow's); the invalidator's row
        if self.target == INVALIDATOR:
            # A delete clears the instance's pk at the end of the deletion,
            # before the invalidator runs after the commit: keep a copy.
            deleted = change.signal_type is SignalTypes.POST_DELETE
            job.instance = copy.copy(instance) if deleted else instance
            return job
        job.kwargs = {name: _read_path(instance, steps) for name, steps in self._paths.items()}
        required = self.rule.require_args
        if isinstance(required, tuple) and any(job.kwargs.get(n) is None for n in required):
            return None
        return job

    def run(self, job: Job) -> None:
        """Does the job's work on the cached function."""
        wrapper = self.engine
        if self.target == INVALIDATOR:
            target, accepted = self.rule._resolved_invalidator()
            instance = job.instance if job.instance is not None else self._load(job.pk)
            result = target(wrapper, instance, **_pick(job.change.extras(), accepted))
            if inspect.isawaitable(result):
                _wait(result)
        elif self.target == ENTRY:
            arguments = {**self._placeholders, **(job.kwargs or {})}
            if self.rule.rewarm and job.change.signal_type is SignalTypes.POST_SAVE:
                self._rewarm(arguments)
            else:
                wrapper.delete_cache(**arguments)
        elif self.target == PARTITION:
            wrapper.delete_by_prefix(**(job.kwargs or {}))
        else:
            wrapper.invalidate_all()

    def _rewarm(self, arguments: dict[str, Any]) -> None:
        wrapper = self.engine
        if wrapper.get_cache_only(**arguments) is CACHE_MISSING:
            return
        try:
            if wrapper is self.wrapper:
                wrapper.refresh(**arguments)
            else:
                # The engine's sync refresh would store the coroutine an
                # async def returns, unawaited: await the value instead.
                _wait(self.wrapper.arefresh(**arguments))
        except BaseException:
            # Never leave the stale value behind a failed recomputation.
            wrapper.delete_cache(**arguments)
            raise

    def _load(self, pk: Any) -> Any:
        """The instance a broker job names: the row as it is now, or, once
        deleted, an unsaved instance that carries only the primary key."""
        found = self.model._default_manager.filter(pk=pk).first()
        return found if found is not None else self.model(pk=pk)


def _as_model(instance: Any, model: type) -> Any:
    """``instance`` as an instance of ``model``: for a proxy of its table,
    a copy with the proxy's class (the same fields, seen with the proxy's
    methods and properties); for a model that inherits its table, that
    model's row of it, read now (one query), or ``None`` when the row has
    no such child."""
    concrete = type(instance)._meta.concrete_model
    if model._meta.concrete_model is concrete:
        view = copy.copy(instance)
        view.__class__ = model
        return view
    link = model._meta.get_ancestor_link(concrete)
    if link is None or instance.pk is None:
        return None
    rows = model._base_manager.using(instance._state.db or "default")
    return rows.filter(**{link.attname: instance.pk}).first()


def _is_async(wrapper: Any) -> bool:
    from restflow.caching.asynchronous import AsyncCachedWrapper

    return isinstance(wrapper, AsyncCachedWrapper)


def _wait(awaitable: Any) -> None:
    from asgiref.sync import async_to_sync

    async def wait() -> None:
        await awaitable

    async_to_sync(wait)()


def function_path(wrapper: Any) -> str:
    """The cached function's dotted path: its ``function_id`` unless a
    ``Meta.key_identifier`` makes several functions share one."""
    func = wrapper.func
    method = is_method(list(inspect.signature(func).parameters.values()))
    return function_id_of(func, method=method)


def _parameters(wrapper: Any) -> tuple[list[inspect.Parameter], bool]:
    """The parameters a rule can give values to, and whether it is a method
    (decided as the engine decides it)."""
    parameters = list(inspect.signature(wrapper.func).parameters.values())
    method = is_method(parameters)
    return (parameters[1:] if method else parameters), method


def _key_fields(wrapper: Any) -> list[CacheKeyField]:
    constructor = getattr(wrapper, "key_constructor", None)
    get_fields = getattr(constructor, "get_fields", None)
    if get_fields is None:
        return [ArgsKeyField("*")]
    return list(get_fields().values())


def _plan(rule: InvalidationRule, wrapper: Any) -> tuple[str, dict[str, Any]]:
    """What the rule drops (see the module documentation), and the filler
    values of parameters the key does not read, so a call binds."""
    if rule.invalidator is not None:
        return INVALIDATOR, {}
    parameters, method = _parameters(wrapper)
    signature = inspect.signature(wrapper.func)
    fields = _key_fields(wrapper)
    partition = [f for f in fields if f.partition]
    # What each field reads (a custom field that does not say: every parameter).
    partition_reads = set().union(*(f.needs(signature) for f in partition))
    key_reads = set().union(*(f.needs(signature) for f in fields))
    mapped = set(rule.field_mapping)
    exact = (
        not method
        and key_reads <= mapped
        and not any(p.kind in _VARIADIC or p.kind is p.POSITIONAL_ONLY for p in parameters)
    )
    # A mapping that names all the key reads names one entry; it drops the
    # partition instead only when the partition is all the key reads (the
    # same entry, one step), unless the rule rewarms: then the entry is
    # recomputed in place, so readers never miss.
    drop_partition = mapped <= partition_reads and not rule.rewarm
    if partition and partition_reads <= mapped and (drop_partition or not exact):
        return PARTITION, {}
    if exact:
        fillers = {
            p.name: None for p in parameters if p.name not in mapped and p.default is p.empty
        }
        return ENTRY, fillers
    return FUNCTION, {}


def _compile_path(model: type, path: str) -> tuple[str, ...]:
    """``"a.b"`` as steps, checking the first against the model. A foreign
    key's ``"author.id"`` / ``"author.pk"`` becomes ``"author_id"``: the
    column needs no query, and after a cascade the related row is gone."""
    from django.core.exceptions import FieldDoesNotExist

    steps = tuple(path.split("."))
    try:
        field = model._meta.get_field(steps[0])
    except FieldDoesNotExist:
        field = None
    if field is not None and len(steps) == 2 and getattr(field, "concrete", False):
        target = getattr(field, "target_field", None)
        if (field.many_to_one or field.one_to_one) and steps[1] in (
            "pk",
            getattr(target, "name", None),
            getattr(target, "attname", None),
        ):
            return (field.attname,)
    if field is None and not hasattr(model, steps[0]):
        raise ValueError(
            f"{model._meta.label} has no field or attribute {steps[0]!r} (in {path!r})."
        )
    return steps


def _watched(model: type, names: tuple[str, ...] | None) -> frozenset[str] | None:
    """The watched fields by name and by column, as ``update_fields`` may use either."""
    if not names:
        return None
    from django.core.exceptions import FieldDoesNotExist

    watched: set[str] = set()
    for name in names:
        try:
            field = model._meta.get_field(name)
        except FieldDoesNotExist:
            raise ValueError(
                f"watch_fields names {name!r}, a field {model._meta.label} lacks."
            ) from None
        watched.update({field.name, getattr(field, "attname", field.name)})
    return frozenset(watched)


class NotCachedFunctionError(TypeError, AttributeError):
    """A rule registered for a function that ``cache_result`` did not wrap.

    A ``TypeError`` (a wrong argument), and an ``AttributeError``, which is
    what drf-restflow raises there and what its users catch."""


def check_function(rule: InvalidationRule, wrapper: Any) -> None:
    """The checks that need only the function, made at decoration."""
    if not getattr(wrapper, "is_cached_function", False):
        raise NotCachedFunctionError(
            f"Must be a decorated function of `@cache_result`; got {wrapper!r} "
            "(decorate it with @cache_result first)."
        )
    parameters, _method = _parameters(wrapper)
    names = {p.name for p in parameters if p.kind not in _VARIADIC}
    takes_kwargs = any(p.kind is p.VAR_KEYWORD for p in parameters)
    qualname = wrapper.func.__qualname__
    positional_only = {p.name for p in parameters if p.kind is p.POSITIONAL_ONLY}
    for name in rule.field_mapping:
        if name not in names and not takes_kwargs:
            raise ValueError(
                f"field_mapping names {name!r}, which {qualname}() does not take "
                f"(it takes: {', '.join(sorted(names)) or 'nothing'})."
            )
        if name in positional_only:
            raise ValueError(
                f"field_mapping names {name!r}, a positional-only parameter of {qualname}(); "
                "rules pass arguments by name."
            )
    for name in rule.require_args if isinstance(rule.require_args, tuple) else ():
        if name not in rule.field_mapping:
            raise ValueError(f"require_args names {name!r}, which field_mapping does not map.")
    if rule.require_args and names and not rule.field_mapping and rule.invalidator is None:
        raise ValueError(
            f"An InvalidationRule for {qualname}(), which takes {', '.join(sorted(names))}, "
            "must say which entries a change affects: give field_mapping={parameter: "
            "'attribute'} or an invalidator (or require_args=False to drop every entry)."
        )


def attach_rules(wrapper: Any, rules: Iterable[InvalidationRule]) -> None:
    """Registers ``cache_result(invalidates_on=rules)`` for ``wrapper``; each
    rule is known by its position in the list."""
    if isinstance(rules, InvalidationRule) or not isinstance(rules, Iterable):
        raise TypeError("invalidates_on must be a list of InvalidationRule objects.")
    rules = list(rules)
    for rule in rules:
        if not isinstance(rule, InvalidationRule):
            raise TypeError(f"invalidates_on takes InvalidationRule objects; got {rule!r}.")
        check_function(rule, wrapper)
        check_model(rule.model)
    from restflow.caching.registry import CacheRegister

    for position, rule in enumerate(rules):
        CacheRegister.add(rule.model, wrapper, rule, position=position)
