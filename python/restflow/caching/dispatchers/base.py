"""The :class:`Dispatcher` base: where invalidation work runs.

A dispatcher receives the jobs of one committed change and runs them: on
the saving thread, on a thread pool, on the running event loop, or through
a task broker. Whatever it does, the jobs end in
:func:`restflow.caching.tasks.run_cache_rules`, which runs each rule and
applies the error policy, so every dispatcher fails the same way.

Options come from two places: a rule's ``dispatcher_config`` (lower-case
keys, e.g. ``{"queue": "cache"}``), then the dispatcher's block in
``CACHE_SETTINGS["DISPATCHER_SETTINGS"]`` (upper-case keys, e.g.
``{"celery": {"QUEUE": "cache"}}``), then the class's ``default_settings``.
"""

from __future__ import annotations

import abc
import importlib
from collections.abc import Sequence
from types import ModuleType
from typing import Any, ClassVar, NamedTuple

from restflow.caching.dispatchers.jobs import Job
from restflow.caching.dispatchers.origin import adapt, takes_origin_arguments
from restflow.caching.settings import cache_settings

__all__ = [
    "DEFAULT_FUNCTION_PATH",
    "Dispatcher",
    "Requirement",
    "get_dispatcher_settings",
    "import_dotted",
    "raises",
    "require",
]


def require(module: str, *, dispatcher: str, extra: str, package: str = "") -> ModuleType:
    """Imports a broker package, or says which extra installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise ImportError(
            f"The {dispatcher!r} dispatcher needs the {package or extra!r} package, "
            f"an optional extra: pip install 'restflow-cache[{extra}]'"
        ) from error


class Requirement(NamedTuple):
    """The broker package a dispatcher imports, and the extra that installs it."""

    module: str
    extra: str
    #: The package's name on PyPI, when it is not the extra's.
    package: str = ""


def raises(raise_exception: bool | None, dispatcher_name: str | None) -> bool:
    """Whether a failure surfaces (raises) rather than being logged.

    The rule's ``raise_exception`` decides when it is set; else the
    dispatcher's ``RAISE_EXCEPTION`` setting; else ``DISPATCHER_RAISE_EXCEPTION``.
    """
    if raise_exception is not None:
        return bool(raise_exception)
    settings = cache_settings()
    if dispatcher_name:
        configured = settings["DISPATCHER_SETTINGS"].get(dispatcher_name, {})
        if configured.get("RAISE_EXCEPTION") is not None:
            return bool(configured["RAISE_EXCEPTION"])
    return bool(settings["DISPATCHER_RAISE_EXCEPTION"])


#: The worker function broker dispatchers name by default (drf-restflow's name).
DEFAULT_FUNCTION_PATH = "restflow.caching.tasks.run_cache_rules"


def get_dispatcher_settings(name: str) -> dict[str, Any]:
    """The settings of the dispatcher registered as ``name``, defaults
    included (drf-restflow's helper; :meth:`Dispatcher.settings`)."""
    from restflow.caching.dispatchers import registered_dispatcher

    registered = registered_dispatcher(name)
    if registered is not None:
        return registered.settings()
    return dict(cache_settings()["DISPATCHER_SETTINGS"].get(name, {}))


def import_dotted(path: str) -> Any:
    """The object at ``"package.module.name"`` (drf-restflow's helper)."""
    module_name, _, attribute = path.rpartition(".")
    if not module_name:
        raise ImportError(f"Invalid dotted path: {path!r}; give 'package.module.name'.")
    return getattr(importlib.import_module(module_name), attribute)


class Dispatcher(abc.ABC):
    """Runs the jobs of a change somewhere.

    Subclasses set ``name`` (how rules and settings refer to it) and
    implement :meth:`dispatch`. A dispatcher that sends jobs out of the
    process sets ``in_process = False`` and sends ``job.to_payload()``, which
    the worker hands to :func:`restflow.caching.tasks.run_cache_rules`.
    """

    #: How ``InvalidationRule(dispatcher=...)`` and ``DISPATCHER_SETTINGS`` name it.
    name: ClassVar[str]
    #: Whether rules with ``batch=True`` may share one :meth:`dispatch` call.
    supports_batching: ClassVar[bool] = True
    #: Whether jobs stay in this process (and so may carry the instance itself).
    in_process: ClassVar[bool] = True
    #: The ``dispatcher_config`` keys this dispatcher accepts; ``None`` (a
    #: dispatcher that declares none, as drf-restflow's did): any, read with
    #: :meth:`option` or ``self.config``. The built-ins declare theirs.
    config_keys: ClassVar[frozenset[str] | None] = None
    #: Defaults of its ``DISPATCHER_SETTINGS`` block. ``RAISE_EXCEPTION``
    #: (``None``: follow ``DISPATCHER_RAISE_EXCEPTION``) is known to all.
    default_settings: ClassVar[dict[str, Any]] = {}
    #: The broker package it needs, imported when a rule is bound (see :meth:`broker`).
    requires: ClassVar[Requirement | None] = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        dispatch = cls.__dict__.get("dispatch")
        if dispatch is not None and takes_origin_arguments(dispatch):
            # drf-restflow's contract: dispatch(*, rule_ids, rule_kwargs, **context).
            cls.dispatch = adapt(dispatch)  # type: ignore[method-assign]

    def __init__(self, **config: Any) -> None:
        self.config = config
        self.validate_config()

    def validate_config(self) -> None:
        """Checks the rule's ``dispatcher_config`` when the rule is bound, so a
        typo or a missing broker package (``requires``) fails at import."""
        unknown = [] if self.config_keys is None else sorted(set(self.config) - self.config_keys)
        if unknown:
            allowed = ", ".join(sorted(self.config_keys or ())) or "none"
            raise ValueError(
                f"dispatcher {self.name!r} got unknown dispatcher_config key(s) "
                f"{', '.join(unknown)}; it accepts: {allowed}."
            )
        if self.requires is not None:
            self.broker()

    @classmethod
    def broker(cls, module: str | None = None) -> ModuleType:
        """The package in ``requires`` (or ``module``, one of its modules),
        imported, or an ``ImportError`` that says which extra installs it."""
        if cls.requires is None:
            raise TypeError(f"dispatcher {cls.name!r} requires no broker package")
        requirement = cls.requires
        return require(
            module or requirement.module,
            dispatcher=cls.name,
            extra=requirement.extra,
            package=requirement.package,
        )

    @abc.abstractmethod
    def dispatch(self, jobs: Sequence[Job]) -> None:
        """Runs, or sends to be run, the jobs of one change (or of one batch)."""

    def batch_key(self) -> tuple[Any, ...]:
        """Rules whose dispatchers give equal keys share one :meth:`dispatch`
        call when they set ``batch=True``: by default, those whose options
        (:meth:`option` of each of ``config_keys``) are equal."""
        keys = sorted(self.config) if self.config_keys is None else sorted(self.config_keys)
        return (type(self), repr([(key, self.option(key)) for key in keys]))

    def option(self, key: str) -> Any:
        """A rule's ``dispatcher_config[key]``, else the ``KEY`` setting; where
        that is ``None``, the ``KEY`` of ``default_settings``."""
        if key in self.config:
            value = self.config[key]
        else:
            value = self.settings().get(key.upper())
        if value is None:
            value = self.default_settings.get(key.upper())
        return value

    @classmethod
    def settings(cls) -> dict[str, Any]:
        """This dispatcher's settings: its defaults under its
        ``DISPATCHER_SETTINGS`` block, read now (so ``override_settings`` works)."""
        configured = cache_settings()["DISPATCHER_SETTINGS"].get(cls.name, {})
        return {"RAISE_EXCEPTION": None, **cls.default_settings, **configured}

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} {self.config!r}>"
