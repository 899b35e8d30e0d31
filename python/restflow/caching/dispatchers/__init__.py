"""Dispatchers: where an :class:`~restflow.caching.rules.InvalidationRule` runs its work.

==============  ==========================================================
``inline``      on the saving thread, after the commit (the default)
``threadpool``  on a shared thread pool in this process
``asyncio``     on the running event loop (inline when there is none)
``celery``      a Celery task (``pip install 'restflow-cache[celery]'``)
``django_rq``   an RQ job (``pip install 'restflow-cache[django-rq]'``)
``django_q``    a django-q2 task (``pip install 'restflow-cache[django-q]'``)
``dramatiq``    a Dramatiq actor (``pip install 'restflow-cache[dramatiq]'``)
==============  ==========================================================

A rule names its dispatcher (``dispatcher="celery"``) or leaves it to the
``DEFAULT_DISPATCHER`` setting. Add your own with :func:`register_dispatcher`::

    @register_dispatcher
    class OutboxDispatcher(Dispatcher):
        name = "outbox"
        in_process = False

        def dispatch(self, jobs):
            Outbox.objects.create(payload=[job.to_payload() for job in jobs])

and run the payloads later with ``restflow.caching.tasks.run_cache_rules``.
Broker packages are imported only when a rule uses them.
"""

from __future__ import annotations

from typing import Any

from restflow.caching.dispatchers.asyncio import AsyncIODispatcher
from restflow.caching.dispatchers.base import Dispatcher
from restflow.caching.dispatchers.celery import CeleryDispatcher
from restflow.caching.dispatchers.django_q import DjangoQDispatcher
from restflow.caching.dispatchers.django_rq import DjangoRqDispatcher
from restflow.caching.dispatchers.dramatiq import DramatiqDispatcher
from restflow.caching.dispatchers.inline import InlineDispatcher
from restflow.caching.dispatchers.threadpool import ThreadPoolDispatcher
from restflow.caching.process_locks import ProcessLock

__all__ = [
    "AsyncIODispatcher",
    "CeleryDispatcher",
    "Dispatcher",
    "DjangoQDispatcher",
    "DjangoRqDispatcher",
    "DramatiqDispatcher",
    "InlineDispatcher",
    "ThreadPoolDispatcher",
    "UnknownDispatcherError",
    "get_dispatcher",
    "is_registered",
    "register",
    "register_dispatcher",
    "registered_dispatcher",
    "registered_dispatcher_names",
    "registered_names",
    "resolve",
]


class UnknownDispatcherError(ValueError, KeyError):
    """A dispatcher name nothing registered: a ``ValueError`` (a wrong
    setting), and the ``KeyError`` drf-restflow raises for it."""

    __str__ = BaseException.__str__  # the message, not KeyError's repr of it


_registry: dict[str, type[Dispatcher]] = {}
_lock = ProcessLock()


def register_dispatcher(cls: type[Dispatcher]) -> type[Dispatcher]:
    """Makes a :class:`Dispatcher` subclass available by its ``name``; usable as a
    class decorator. A later class of the same name replaces the earlier."""
    if not isinstance(cls, type) or not issubclass(cls, Dispatcher):
        raise TypeError(f"register_dispatcher() takes a Dispatcher subclass; got {cls!r}.")
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not name:
        raise ValueError(f"{cls.__qualname__} must set `name` (a non-empty str) to be registered.")
    with _lock:
        _registry[name] = cls
    return cls


def registered_dispatcher_names() -> list[str]:
    """The names rules may use, sorted."""
    with _lock:
        return sorted(_registry)


def registered_dispatcher(name: str) -> type[Dispatcher] | None:
    """The class registered as ``name``, or ``None``."""
    with _lock:
        return _registry.get(name)


def is_registered(name: str) -> bool:
    """Whether a dispatcher of that name is registered (yet)."""
    with _lock:
        return name in _registry


def get_dispatcher(
    spec: str | type[Dispatcher] | Dispatcher, config: dict[str, Any] | None = None
) -> Dispatcher:
    """A dispatcher from a registered name, a :class:`Dispatcher` subclass or an
    instance (which takes no ``config``)."""
    if isinstance(spec, Dispatcher):
        if config:
            raise ValueError(
                "Give dispatcher_config with a dispatcher name or class, not an instance."
            )
        return spec
    if isinstance(spec, str):
        cls = registered_dispatcher(spec)
        if cls is None:
            known = ", ".join(registered_dispatcher_names())
            raise UnknownDispatcherError(
                f"Unknown dispatcher {spec!r}; registered: {known}. "
                "Register yours with restflow.caching.dispatchers.register_dispatcher."
            )
        return cls(**(config or {}))
    if isinstance(spec, type) and issubclass(spec, Dispatcher):
        return spec(**(config or {}))
    raise TypeError(
        f"dispatcher must be a dispatcher name, a Dispatcher subclass or instance; got {spec!r}."
    )


for _builtin in (
    InlineDispatcher,
    ThreadPoolDispatcher,
    AsyncIODispatcher,
    CeleryDispatcher,
    DjangoRqDispatcher,
    DjangoQDispatcher,
    DramatiqDispatcher,
):
    register_dispatcher(_builtin)


# drf-restflow's names in this module (``restflow.caching.dispatchers``).
register = register_dispatcher
registered_names = registered_dispatcher_names
resolve = get_dispatcher
