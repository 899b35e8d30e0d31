"""The function part of keys, for functions whose dotted path repeats.

A key names its function by ``module.qualname``, which is the same in every
process. For a function defined at module level it is also unique. A
function made inside another function (its qualname has ``<locals>``) or a
lambda is not: ``mk("USD")`` and ``mk("EUR")`` make two functions named
``app.mk.<locals>.rate``, and two lambdas in one module are both
``app.<lambda>``. Keyed by that name alone they would serve each other's
values. Their ``id()`` would tell them apart but is not the same in another
process, so keys cannot use it.

What restflow does instead (issue 10, item 11):

* In memory (entries that never leave the process) each such function
  object has entries of its own: no name is needed.
* In key strings (what Redis or a Django cache sees, and every process must
  agree on), a closure over **plain values** (``None``, ``bool``, ``int``,
  ``float``, ``str``, ``bytes``, dates and times, ``Decimal``, ``UUID``,
  ``Enum`` members, and tuples/frozensets of those) is named by those
  values too: ``app.mk.<locals>.rate[<digest of currency='USD'>]``. Every
  process that calls ``mk("USD")`` gets that name, and ``mk("EUR")``
  another one.
* A function that would share its key strings with another **live**
  function that may behave differently (a closure over an object, a second
  lambda, a second local class's method) is refused with a ``TypeError``
  when it first uses a shared store, saying how to name it. Never a silent
  share.

Two functions are interchangeable, and may share key strings, when they are
the same object, or when they run the same code (``__code__``) with no
closure or with equal plain closure values; a method of a local class never
is (its class may differ in anything). A ``Meta.key_identifier`` names the
entries explicitly, and is never second-guessed.
"""

from __future__ import annotations

import enum
import gc
import hashlib
import uuid
import weakref
from collections.abc import Callable
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

from restflow import _engine
from restflow.caching.process_locks import ProcessLock

__all__ = ["claim", "function_id_of", "method_id_of", "repeatable"]

#: Markers of a qualname that several live functions can have.
_REPEATABLE = ("<locals>", "<lambda>")

_PLAIN_TYPES = (type(None), bool, int, float, str, bytes, Decimal, uuid.UUID)
_MOMENT_TYPES = (date, datetime, time, timedelta)

#: identity (``<namespace>::<function id>``) -> the function holding it;
#: an entry leaves with its function.
_holders: dict[str, weakref.ref[Callable[..., Any]]] = {}
# Re-entrant: a garbage collection run while it is held may call _forget.
_lock = ProcessLock(reentrant=True)


def _forget(identity: str) -> Callable[[weakref.ref[Any]], None]:
    def forget(ref: weakref.ref[Any]) -> None:
        with _lock:
            if _holders.get(identity) is ref:
                del _holders[identity]

    return forget


def repeatable(func: Callable[..., Any]) -> bool:
    """Whether other live functions can have ``func``'s dotted path."""
    qualname = getattr(func, "__qualname__", "")
    return any(marker in qualname for marker in _REPEATABLE)


def _plain(value: Any, depth: int = 0) -> bool:
    """Whether ``value`` is immutable and keyed by what it is: two closures
    over equal plain values behave alike."""
    kind = type(value)
    if kind in _PLAIN_TYPES or kind in _MOMENT_TYPES or isinstance(value, enum.Enum):
        return True
    if kind in (tuple, frozenset) and depth < 16:
        return all(_plain(item, depth + 1) for item in value)
    return False


def _closure_digest(func: Callable[..., Any]) -> str | None:
    """A digest of the closure's values by name, or ``None`` when the
    function has no closure or one with a value that is not plain."""
    cells = getattr(func, "__closure__", None)
    if not cells:
        return None
    items = []
    for name, cell in zip(func.__code__.co_freevars, cells, strict=True):
        try:
            value = cell.cell_contents
        except ValueError:  # an empty cell: a name not bound yet
            return None
        if not _plain(value):
            return None
        items.append((f"closure.{name}", value, False, False))
    try:
        _, text = _engine.key_parts("", (), tuple(items))
    except TypeError:  # a plain type the encoder still refuses (a custom tzinfo)
        return None
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def function_id_of(func: Callable[..., Any], *, method: bool = False) -> str:
    """``module.qualname``, with the digest of a plain closure's values when
    the qualname is one several functions can have. The same in every
    process for the same function.

    A method's keys name its class instead (``Class.method``), which a
    closure's values cannot tell apart: for a method, ``module.qualname``
    alone, so two local classes' methods claim one name (see :func:`claim`).
    """
    function_id = f"{func.__module__}.{func.__qualname__}"
    if method or not repeatable(func):
        return function_id
    digest = _closure_digest(func)
    return function_id if digest is None else f"{function_id}[{digest}]"


def method_id_of(owner: type, func: Callable[..., Any]) -> str:
    """The function part of the keys of method ``func`` called on ``owner``
    (a class, or an instance's class): ``module.Class.method``, so two
    subclasses never share entries. When ``owner.method`` is another
    function (``func`` is reached through ``super()``, or called as
    ``Base.method(obj)``), that name is the other's: ``func``'s own dotted
    path follows it in brackets. A class without an attribute of that name
    (a function assigned under another name) keeps the plain name. The
    engine names methods the same way."""
    name = func.__name__
    function_id = f"{owner.__module__}.{owner.__qualname__}.{name}"
    for klass in owner.__mro__:
        if name in vars(klass):
            found = vars(klass)[name]
            found = getattr(found, "__func__", found)  # a classmethod's
            if getattr(found, "func", found) is func:
                return function_id
            return f"{function_id}[{func.__module__}.{func.__qualname__}]"
    return function_id  # no attribute of that name: it names no other function


def _interchangeable(held: Callable[..., Any], new: Callable[..., Any], method: bool) -> bool:
    if held is new:
        return True
    if method or getattr(held, "__code__", None) is not getattr(new, "__code__", None):
        return False
    # Same code: alike when neither closes over anything, or both over
    # plain values (which the function id then carries, so they are equal).
    return not held.__closure__ or _closure_digest(held) is not None


def claim(identity: str, func: Callable[..., Any], *, method: bool) -> None:
    """Registers ``func`` as the function whose key strings ``identity``
    names, or raises ``TypeError`` when a live function that is not
    interchangeable with it holds that identity already. The engine calls
    it (bound by ``functools.partial``) once, before the function first
    uses a shared store."""
    if not repeatable(func):
        return
    for attempt in range(2):
        with _lock:
            ref = _holders.get(identity)
            held = None if ref is None else ref()
            if held is None or _interchangeable(held, func, method):
                _holders[identity] = weakref.ref(func, _forget(identity))
                return
        if attempt == 0:
            # The holder may be garbage kept by a reference cycle; collect
            # before refusing (only ever on a clash, never per call).
            del held
            gc.collect()
    raise TypeError(
        f"cache_result: another live function already uses the shared store as "
        f"{identity.partition('::')[2]}(), and the two would serve each other's "
        f"entries (a function made by a factory or in a loop, or a lambda, has the "
        f"same name each time, and its closure holds no value restflow can name it "
        f"by). Close over plain values only (str, int, ... which restflow then keys, "
        f"as in mk('USD') and mk('EUR')), or name each one's entries: "
        f"key_constructor={{'fields': {{'args': ArgsKeyField('*')}}, "
        f"'key_identifier': '<a name unique to this function>'}}."
    )
