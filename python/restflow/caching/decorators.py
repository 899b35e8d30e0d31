"""``@cache_result``: turns a function into a :class:`CachedWrapper`.

Everything here runs once, when a function is decorated: the parameters are
checked (so a mistake fails at import, with a message that says what to
change), the function's signature is read for the engine, and
``cache_if`` / ``cache_unless`` / a callable ``ttl`` are folded into one
policy callable. Calls never pass through Python code of ours.
"""

from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any, NamedTuple, ParamSpec, Protocol, TypeVar, overload

from restflow._engine import CachedWrapper
from restflow.caching.function_identity import claim, function_id_of, repeatable
from restflow.caching.key_constructor import (
    DefaultKeyConstructor,
    KeyConstructor,
    refuse_ttl_as_constructor,
    register,
    resolve,
)
from restflow.caching.key_fields import _RECEIVERS
from restflow.caching.settings import seconds, validate_backend
from restflow.caching.statistics import track
from restflow.caching.twins import Steps, run

if TYPE_CHECKING:
    from restflow.caching.asynchronous import AsyncCachedWrapper

F = TypeVar("F", bound=Callable[..., Any])
P = ParamSpec("P")
T = TypeVar("T")

TtlArg = int | float | timedelta | None | Callable[..., Any]


class CacheDecorator(Protocol):
    """What ``cache_result(...)`` returns, for type checkers: it keeps the
    decorated function's parameters and return type, so a wrapper's calls
    and ``get_with_metadata`` are checked like the function's own. An
    ``async def`` becomes an :class:`AsyncCachedWrapper` (its calls are
    awaited), anything else a :class:`CachedWrapper`."""

    @overload
    def __call__(
        self, func: Callable[P, Coroutine[Any, Any, T]], /
    ) -> AsyncCachedWrapper[P, T]: ...
    @overload
    def __call__(self, func: Callable[P, T], /) -> CachedWrapper[P, T]: ...


def _check_predicate(name: str, predicate: Callable[..., Any] | None) -> None:
    if predicate is None:
        return
    if not callable(predicate):
        raise TypeError(
            f"{name} must be a callable predicate(result, *args, **kwargs); got {predicate!r}"
        )


def check_policy(
    ttl: TtlArg, cache_if: Callable[..., Any] | None, cache_unless: Callable[..., Any] | None
) -> float | None:
    """Checks a decorator's ``ttl``, ``cache_if`` and ``cache_unless``, and
    returns the fixed ttl in seconds (``None`` for a callable ttl)."""
    if cache_if is not None and cache_unless is not None:
        raise ValueError(
            "Give cache_if or cache_unless, not both: one predicate decides what is stored."
        )
    _check_predicate("cache_if", cache_if)
    _check_predicate("cache_unless", cache_unless)
    return None if callable(ttl) else seconds(ttl, name="ttl", allow_none=True)


class Decision(NamedTuple):
    """What a policy decided about one computed value, as the engine reads
    it: whether to store it, and for how many seconds (``None``: for ever)."""

    store: bool
    ttl: float | None


#: The decision not to store a value.
NOT_STORED = Decision(store=False, ttl=None)


def stored_for(chosen: Any, function_name: str) -> Decision:
    """The decision once a callable ttl has returned ``chosen``: store, for
    that long (sync and async policies alike)."""
    ttl = seconds(chosen, name=f"the ttl returned for {function_name}()", allow_none=True)
    return Decision(store=True, ttl=ttl)


def refuse_async_policy(
    ttl: Any,
    cache_if: Callable[..., Any] | None,
    cache_unless: Callable[..., Any] | None,
    target: str = "function",
) -> None:
    """A sync target's policy runs synchronously: an ``async def`` predicate's
    coroutine would always be truthy, an ``async def`` ttl never a number."""
    for name, value, kind in (
        ("cache_if", cache_if, "predicate"),
        ("cache_unless", cache_unless, "predicate"),
        ("ttl", ttl, "ttl"),
    ):
        if callable(value) and inspect.iscoroutinefunction(value):
            raise TypeError(
                f"{name} is an async def; on a sync {target} it must be a plain def "
                f"(an async {kind} works on async def {target}s)"
            )


def _signature_spec(func: Callable[..., Any]) -> tuple[list[tuple[str, int, Any, bool]], bool]:
    """The parameters as the engine reads them, and whether it is a method."""
    try:
        parameters = list(inspect.signature(func).parameters.values())
    except (TypeError, ValueError) as error:
        raise TypeError(f"cache_result cannot read the signature of {func!r}: {error}") from None
    spec = [
        (
            p.name,
            int(p.kind),
            None if p.default is inspect.Parameter.empty else p.default,
            p.default is not inspect.Parameter.empty,
        )
        for p in parameters
    ]
    return spec, is_method(parameters)


def _refuse_nameless(func: Callable[..., Any]) -> None:
    """Keys name a function by its ``module.qualname``: a callable without
    one (a ``functools.partial``, an instance with ``__call__``) is refused
    at decoration, saying how to name it, rather than failing on an
    attribute it lacks."""
    if isinstance(getattr(func, "__qualname__", None), str):
        return
    raise TypeError(
        f"@cache_result names a function's entries by its module.qualname, and {func!r} "
        "has none (a functools.partial or a callable object): decorate a def that calls "
        "it, or name the entries: key_constructor={'fields': {'args': ArgsKeyField('*')}, "
        "'key_identifier': '<a name unique to this function>'}."
    )


def check_owner(wrapper: Any, owner: type, name: str) -> None:
    """Refuses a cached method of a class whose instances are its values,
    when the class body assigns it (``__set_name__``): the refusal comes at
    import. See :func:`check_receiver`."""
    func = wrapper.func
    parameters = list(inspect.signature(func).parameters.values())
    if is_method(parameters) and parameters[0].name == "self":
        check_receiver(func, getattr(wrapper, "key_constructor", None), owner, name)


def check_receiver(
    func: Callable[..., Any], constructor: Any, owner: type, name: str | None = None
) -> None:
    """Raises ``TypeError`` for a cached method whose ``self`` is an
    instance of ``owner`` when those instances are values.

    A method's key names its class, not ``self`` (a view or a service is
    the same whichever instance runs it). A Django model's instances are
    its rows and an Enum's are its members: keyed by class, every row would
    be served the first row's value. drf-restflow keyed ``self`` by its
    ``str()`` (``"Order object (1)"``), so code migrated from it relied on
    per-row entries. Checked when a class body assigns the method (at
    import) and, for a method a model inherits from a plain mixin, the
    first time it is called on an instance of that class. A key
    constructor that reads ``self`` (``ArgsKeyField("self", path="pk")``)
    is what to use instead.
    """
    found = _value_class(owner)
    if found is None:
        return
    if constructor is not None:
        signature = inspect.signature(func)
        if any("self" in field.needs(signature) for field in constructor.get_fields().values()):
            return
    shared, keyed_by = found
    how = (
        f"Key it by the instance: key_constructor={{'fields': {{'instance': "
        f"ArgsKeyField('self', path={keyed_by!r}), 'args': ArgsKeyField('*')}}}}, or make it "
        "a classmethod or staticmethod if it does not read self."
        if keyed_by
        else "Cache a function that takes what the query filters by instead."
    )
    raise TypeError(
        f"@cache_result on {owner.__qualname__}.{name or func.__name__}(): a cached method is "
        f"keyed by its class, not by self, so {shared.format(owner.__name__)} would share one "
        f"entry. {how}"
    )


def _value_class(owner: type) -> tuple[str, str | None] | None:
    """``(who would share an entry, the path that names an instance)`` when
    ``owner``'s instances are values: a model's rows, an Enum's members, a
    manager of each model, a queryset (whose query nothing names); ``None``
    for any other class."""
    import enum
    import sys

    if not isinstance(owner, type):
        return None
    if issubclass(owner, enum.Enum):
        return "every member of {}", "value"
    models = sys.modules.get("django.db.models")  # a model class means Django is imported
    if models is None:
        return None
    if issubclass(owner, models.Model):
        return "every row of {}", "pk"
    if issubclass(owner, models.manager.BaseManager):
        return "the {} of every model", "model._meta.label"
    if issubclass(owner, models.QuerySet):
        return "every {} query", None
    return None


def is_method(parameters: list[inspect.Parameter]) -> bool:
    """Whether the engine takes a function with these parameters for a method:
    its first parameter is a positional ``self`` or ``cls``, the receiver,
    which is not part of the key (its class is)."""
    if not parameters:
        return False
    first = parameters[0]
    return first.name in _RECEIVERS and first.kind in (
        first.POSITIONAL_ONLY,
        first.POSITIONAL_OR_KEYWORD,
    )


@dataclass(frozen=True, slots=True)
class Policy:
    """What the engine asks after each computation: store it, and for how long?

    Made only when the answer depends on the result (:func:`_policy`).
    :meth:`steps` is the decision, written once for both kinds of function
    (see :mod:`restflow.caching.twins`): a sync function's engine calls the
    policy, an ``async def``'s wrapper awaits the same steps, since its
    predicates and ttl may be ``async def``.
    """

    ttl: TtlArg
    cache_if: Callable[..., Any] | None
    cache_unless: Callable[..., Any] | None
    fixed: float | None  # the ttl in seconds, when it is not a callable
    function_name: str

    def steps(
        self, result: Any, args: tuple[Any, ...], kwargs: dict[str, Any] | None
    ) -> Steps[Decision]:
        """The :class:`Decision` for ``result``; yields each predicate's and the
        ttl's answer to be resolved (awaited, for an async function)."""
        kwargs = kwargs or {}
        cache_if, cache_unless, ttl = self.cache_if, self.cache_unless, self.ttl
        if cache_if is not None and not (yield cache_if(result, *args, **kwargs)):
            return NOT_STORED
        if cache_unless is not None and (yield cache_unless(result, *args, **kwargs)):
            return NOT_STORED
        if not callable(ttl):
            return Decision(store=True, ttl=self.fixed)
        chosen = yield ttl(result, *args, **kwargs)
        if inspect.isawaitable(chosen):  # only the sync driver hands one back
            raise TypeError(
                f"the ttl of {self.function_name}() is an async ttl; "
                "on a sync function it must be a plain def"
            )
        return stored_for(chosen, self.function_name)

    def decide(self, result: Any, args: tuple[Any, ...], kwargs: dict[str, Any] | None) -> Decision:
        """The decision for a sync function: the callable the engine is given
        (a bound method, which it calls faster than an instance)."""
        return run(self.steps(result, args, kwargs))


def _policy(
    ttl: TtlArg,
    cache_if: Callable[..., Any] | None,
    cache_unless: Callable[..., Any] | None,
    fixed: float | None,
    function_name: str,
) -> Policy | None:
    """The policy, or ``None`` when the answer never depends on the result,
    which keeps the miss path free of Python calls of ours."""
    if cache_if is None and cache_unless is None and not callable(ttl):
        return None
    return Policy(ttl, cache_if, cache_unless, fixed, function_name)


def early_refresh_beta(early_refresh: bool, beta: float | None) -> float | None:
    """The beta the engine refreshes early with, or ``None`` for no early
    refresh; refuses, at decoration time, a beta that could not work."""
    if not isinstance(early_refresh, bool):
        raise TypeError(f"early_refresh must be True or False, got {early_refresh!r}")
    if beta is None:
        return 1.0 if early_refresh else None
    if not early_refresh:
        raise ValueError("beta= only applies to early refresh: add early_refresh=True")
    if isinstance(beta, bool) or not isinstance(beta, (int, float)):
        raise TypeError(
            f"beta must be a number greater than 0 (1.0 is the usual choice), got {beta!r}"
        )
    if not math.isfinite(beta) or beta <= 0:
        raise ValueError(
            f"beta must be a finite number greater than 0 (1.0 is the usual choice); got {beta}"
        )
    return float(beta)


def cache_result(
    key_constructor: type[KeyConstructor] | KeyConstructor | dict[str, Any] = DefaultKeyConstructor,
    ttl: TtlArg = 3600,
    invalidates_on: list[Any] | None = None,
    cache_if: Callable[..., Any] | None = None,
    cache_unless: Callable[..., Any] | None = None,
    *,
    stale_while_revalidate: int | float | timedelta | None = None,
    backend: str | None = None,
    stale_if_error: int | float | timedelta | None = None,
    early_refresh: bool = False,
    beta: float | None = None,
    near_cache: bool | None = None,
) -> CacheDecorator:
    """Caches what a function returns, per distinct call.

    :param ttl: how long a value stays fresh: seconds (int or float), a
        ``timedelta``, ``None`` (never expires), or a callable
        ``ttl(result, *args, **kwargs)`` that returns one of those.
    :param key_constructor: which parts of a call make the key: a
        :class:`KeyConstructor` subclass or instance, a dict of
        ``InlineKeyConstructor`` arguments, or a dict of key fields. The
        default keys by every argument.
    :param stale_while_revalidate: seconds after the ttl during which the old
        value is still served (status STALE) while one background refresh
        runs. ``None`` takes ``CACHE_SETTINGS["STALE_WHILE_REVALIDATE"]``.
    :param cache_if: ``predicate(result, *args, **kwargs)``; the value is
        stored only when it is truthy.
    :param cache_unless: ``predicate(result, *args, **kwargs)``; the value is
        stored only when it is falsy. Give at most one of the two.
    :param invalidates_on: :class:`InvalidationRule` objects: model saves and
        deletes that drop (or refresh) this function's entries.
    :param backend: where entries live: ``"memory"``, ``"redis://..."``,
        ``"redis+cluster://..."``, ``"redis+sentinel://..."`` or ``"django[:alias]"``;
        ``None`` takes the ``BACKEND`` setting.
    :param stale_if_error: seconds past the stale window during which the old
        value is served (STALE) when a recompute raises; ``None`` takes the
        ``STALE_IF_ERROR`` setting.
    :param early_refresh: refresh a fresh entry in the background before it
        expires, with a probability that grows as expiry nears and with how
        long the function took (XFetch), so a hot key never reaches MISS.
        The caller still gets HIT.
    :param beta: how early (``early_refresh=True`` only): above 1.0 (the
        default) refreshes earlier, below later; a finite number > 0.
    :param near_cache: on a Redis backend, whether hits are served from the
        per-process near cache (kept coherent by Redis; see the README);
        ``None`` takes the ``NEAR_CACHE`` setting. Turn it off for a
        function whose callers must see another process's change the
        moment that process's call returns.

    The first five parameters may be given by position, in drf-restflow's
    order (``@cache_result(UserKey, 300)``); a number in the key
    constructor's place is refused with a ``TypeError`` that suggests
    ``ttl=``. The others are keyword-only.

    Arguments are part of the key with their types (``f(1)``, ``f(1.0)`` and
    ``f("1")`` are three entries) and bound like a call (``f(1)`` and
    ``f(x=1)`` are one). On a method, ``self``/``cls`` is not part of the
    key, but its class is, so two subclasses never share entries.
    """
    return result_cache(
        key_constructor,
        ttl,
        invalidates_on,
        cache_if,
        cache_unless,
        stale_while_revalidate=stale_while_revalidate,
        backend=backend,
        stale_if_error=stale_if_error,
        early_refresh=early_refresh,
        beta=beta,
        near_cache=near_cache,
    )


def result_cache(
    key_constructor: type[KeyConstructor] | KeyConstructor | dict[str, Any],
    ttl: TtlArg,
    invalidates_on: list[Any] | None,
    cache_if: Callable[..., Any] | None,
    cache_unless: Callable[..., Any] | None,
    *,
    stale_while_revalidate: int | float | timedelta | None,
    backend: str | None,
    stale_if_error: int | float | timedelta | None,
    early_refresh: bool,
    beta: float | None,
    near_cache: bool | None,
    serves: Callable[[Any, tuple[Any, ...], dict[str, Any] | None], bool] | None = None,
) -> CacheDecorator:
    """:func:`cache_result`, every parameter given, plus what
    ``cache_response`` adds: ``serves(value, args, kwargs)``, whether a call
    may be answered with the value found for its key (its ``Vary`` headers
    match); a call it may not answer never refreshes that value. Kept out
    of ``cache_result``'s signature: it is no user's to set."""
    refuse_ttl_as_constructor(key_constructor, "cache_result")
    fixed_ttl = check_policy(ttl, cache_if, cache_unless)
    stale = seconds(stale_while_revalidate, name="stale_while_revalidate", allow_none=True)
    if_error = seconds(stale_if_error, name="stale_if_error", allow_none=True)
    early_beta = early_refresh_beta(early_refresh, beta)
    if near_cache is not None and not isinstance(near_cache, bool):
        raise TypeError(
            f"near_cache must be True, False or None (the NEAR_CACHE setting); got {near_cache!r}"
        )
    if backend is not None:
        try:
            validate_backend(backend, "backend")
        except Exception as error:  # ImproperlyConfigured: a parameter, so ValueError
            raise ValueError(str(error)) from None
    constructor = resolve(key_constructor)
    meta = type(constructor)._meta

    def decorator(func: Callable[..., Any]) -> Any:
        if isinstance(func, (classmethod, staticmethod)):
            raise TypeError(
                f"@cache_result must be applied beneath @{type(func).__name__}, "
                "directly on the function."
            )
        if not callable(func):
            raise TypeError(f"@cache_result decorates functions; got {func!r}")
        is_async = inspect.iscoroutinefunction(func)
        if not is_async:
            refuse_async_policy(ttl, cache_if, cache_unless)
        spec, method = _signature_spec(func)
        if not meta.key_identifier:
            _refuse_nameless(func)
        function_id = meta.key_identifier or function_id_of(func, method=method)
        # A name other live functions can have: entries of its own in
        # memory, and a check before its key strings reach a shared store.
        name_claim = (
            functools.partial(claim, f"{meta.namespace_part}::{function_id}", func, method=method)
            if not meta.key_identifier and repeatable(func)
            else None
        )
        # The default constructor keys by every argument, which the engine
        # does on its own: no Python runs to build those keys.
        fields = None if type(constructor) is DefaultKeyConstructor else constructor.compile(func)
        policy = _policy(ttl, cache_if, cache_unless, fixed_ttl, function_id)
        wrapper = CachedWrapper.create(
            func,
            signature=spec,
            method=method,
            ttl=fixed_ttl,
            stale=stale,
            # An async function's policy may await: its wrapper decides.
            policy=None if is_async or policy is None else policy.decide,
            namespace=meta.namespace or "default",
            function_id=function_id,
            owner=type(constructor).get_owner(),
            version=meta.version,
            key_identifier=bool(meta.key_identifier),
            fields=fields,
            backend=backend,
            stale_if_error=if_error,
            claim=name_claim,
            early_refresh_beta=early_beta,
            near_cache=near_cache,
            receiver_check=(
                functools.partial(check_receiver, func, constructor) if method else None
            ),
            serves=serves,
        )
        functools.update_wrapper(wrapper, func)
        wrapper.key_constructor = constructor
        wrapper.get_key_version = constructor.get_version  # drf-restflow's name for Meta.version
        register(wrapper, constructor)
        track(wrapper)
        if is_async:
            from restflow.caching.asynchronous import AsyncCachedWrapper

            wrapper = AsyncCachedWrapper(wrapper, func, policy=policy, serves=serves)
        if invalidates_on:
            # Imported here: rules pull in Django's signals and models. They
            # get the wrapper the user sees: a rewarm of an async def awaits it.
            from restflow.caching.rules import attach_rules

            attach_rules(wrapper, invalidates_on)
        return wrapper

    return decorator  # type: ignore[return-value]  # CacheDecorator's overloads
