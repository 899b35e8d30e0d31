"""Key constructors: which parts of a call make its cache key.

::

    class TenantKeyConstructor(KeyConstructor):
        tenant = RequestValueKeyField("META.HTTP_X_TENANT", partition=True)
        page = QueryParamsKeyField(["page"])

        class Meta:
            namespace = "reports"
            version = 2

    @cache_result(ttl=300, key_constructor=TenantKeyConstructor)
    def report(request): ...

A key is ``<namespace>::<function id>::<partition>::<suffix>``: partition
fields form the partition, the others the suffix. Invalidation never scans
the store: ``delete_by_prefix`` (one partition), ``invalidate_all`` (one
function) and :meth:`KeyConstructor.wipe` (every function of a constructor)
each bump a generation that every key carries, so old entries become
unreachable at once and leave by expiry or eviction.
"""

from __future__ import annotations

import copy
import hashlib
import inspect
import weakref
from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import Any, ClassVar

from restflow import _engine
from restflow.caching.function_identity import function_id_of, method_id_of
from restflow.caching.key_fields import (
    ArgsKeyField,
    CacheKeyField,
    CallShape,
    KeyFieldError,
    overrides_get_key_payload,
)
from restflow.caching.process_locks import ProcessLock

__all__ = ["DefaultKeyConstructor", "InlineKeyConstructor", "KeyConstructor"]

_META_OPTIONS = {
    "namespace": str,
    "version": int,
    "key_identifier": str,
    # drf-restflow's: accepted and checked. restflow digests every key part
    # longer than MAX_KEY_PART_LENGTH, always (see Options).
    "max_key_suffix_length": int,
    "hash_suffix_on_overflow": bool,
}

#: Every cached function with its constructor, for ``wipe``.
_registry: weakref.WeakKeyDictionary[Any, KeyConstructor] = weakref.WeakKeyDictionary()
_registry_lock = ProcessLock()


class Options:
    """A constructor's ``Meta``: namespace, version and key identifier.

    ``max_key_suffix_length`` and ``hash_suffix_on_overflow`` are
    drf-restflow's options, kept as given (``None``: not given): restflow
    replaces any key part longer than ``MAX_KEY_PART_LENGTH`` by its digest,
    whatever they say, so no key is ever over-long or truncated.
    """

    def __init__(
        self,
        namespace: str = "",
        version: int = 1,
        key_identifier: str = "",
        max_key_suffix_length: int | None = None,
        hash_suffix_on_overflow: bool | None = None,
    ) -> None:
        self.namespace = namespace
        self.version = version
        self.key_identifier = key_identifier
        self.max_key_suffix_length = max_key_suffix_length
        self.hash_suffix_on_overflow = hash_suffix_on_overflow

    def values(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in _META_OPTIONS}

    @property
    def namespace_part(self) -> str:
        """The namespace as it stands in key strings."""
        namespace = self.namespace or "default"
        return namespace if self.version == 1 else f"{namespace}:v{self.version}"


def digit_version(value: Any) -> Any:
    """drf-restflow accepts a version written as digits (``"2"``): the int it
    means. Anything else is returned as it is, for the checks to refuse."""
    if isinstance(value, str) and value.isascii() and value.isdigit():
        return int(value)
    return value


def _read_meta(name: str, meta: type | None, inherited: Options) -> Options:
    if meta is None:
        return Options(**inherited.values())
    given = {key: value for key, value in vars(meta).items() if not key.startswith("__")}
    unknown = sorted(set(given) - set(_META_OPTIONS))
    if unknown:
        raise TypeError(
            f"{name}.Meta has unknown option(s) {', '.join(unknown)}; "
            f"allowed: {', '.join(_META_OPTIONS)}."
        )
    if "version" in given:
        given["version"] = digit_version(given["version"])
    for option, kind in _META_OPTIONS.items():
        if option in given and (
            not isinstance(given[option], kind)
            or (kind is not bool and isinstance(given[option], bool))
        ):
            raise TypeError(
                f"{name}.Meta.{option} must be a {kind.__name__}; got {given[option]!r}."
            )
    options = Options(**{**inherited.values(), **given})
    if options.max_key_suffix_length is not None and options.max_key_suffix_length < 1:
        raise TypeError(
            f"{name}.Meta.max_key_suffix_length must be an int >= 1; "
            f"got {options.max_key_suffix_length!r}."
        )
    if ":" in options.namespace or options.namespace != options.namespace.strip():
        raise TypeError(
            f"{name}.Meta.namespace must not contain ':' or surrounding spaces; "
            f"got {options.namespace!r}."
        )
    if options.version < 1:
        raise TypeError(f"{name}.Meta.version must be an int >= 1; got {options.version!r}.")
    if "::" in options.key_identifier:
        raise TypeError(
            f"{name}.Meta.key_identifier must not contain '::'; got {options.key_identifier!r}."
        )
    return options


class KeyConstructorMeta(type):
    """Collects the :class:`CacheKeyField` attributes of a constructor class,
    inherited ones first, a subclass's field of the same name winning, and
    checks its ``Meta``.

    The fields are taken out of the class namespace (they live in
    ``_declared_fields``, as in drf-restflow), so a field may be named like a
    constructor attribute (``fields``, ``namespace``, ``wipe``) without
    hiding it."""

    def __new__(mcs, name: str, bases: tuple[type, ...], attrs: dict[str, Any]):
        meta = attrs.pop("Meta", None)
        declared = {k: v for k, v in attrs.items() if isinstance(v, CacheKeyField)}
        for field_name in declared:
            del attrs[field_name]
        cls = super().__new__(mcs, name, bases, attrs)
        for field_name, field in declared.items():
            field.__set_name__(cls, field_name)
        fields: dict[str, CacheKeyField] = {}
        for base in reversed(cls.__mro__[1:]):
            fields.update(getattr(base, "_declared_fields", {}))
        fields.update(declared)
        cls._declared_fields = dict(sorted(fields.items()))
        inherited = getattr(cls, "_meta", Options())
        cls._meta = _read_meta(name, meta, inherited)
        return cls


class KeyConstructor(metaclass=KeyConstructorMeta):
    """Declares the key of a cached function with key fields (see the module docs)."""

    _declared_fields: ClassVar[dict[str, CacheKeyField]]
    _meta: ClassVar[Options]

    # -- introspection -------------------------------------------------------

    @classmethod
    def get_owner(cls) -> str:
        """The dotted path that identifies this constructor across versions:
        what ``delete_previous_versions`` and ``wipe`` reach its entries by
        (a constructor made for a view by ``cache_response`` answers with
        the one it was made from)."""
        return f"{cls.__module__}.{cls.__qualname__}"

    def get_fields(self) -> dict[str, CacheKeyField]:
        """The fields, by name."""
        return dict(self._declared_fields)

    @property
    def fields(self) -> dict[str, CacheKeyField]:
        """The declared fields by name, inherited ones included (a subclass's
        field of the same name wins): drf-restflow's name for :meth:`get_fields`."""
        return self.get_fields()

    # drf-restflow's views of Meta, kept for code that reads them.

    def get_version(self) -> int:
        """``Meta.version``."""
        return self._meta.version

    @property
    def namespace(self) -> str:
        """``Meta.namespace`` as drf-restflow wrote it in front of keys: ``"ns::"``,
        or ``""`` without one."""
        return f"{self._meta.namespace}::" if self._meta.namespace else ""

    @property
    def key_identifier(self) -> str:
        """``Meta.key_identifier``."""
        return self._meta.key_identifier

    @classmethod
    def register_wrapper(cls, wrapper: Any) -> None:
        """Makes :meth:`wipe` reach ``wrapper`` (``cache_result`` does this itself)."""
        register(wrapper, cls())

    @property
    def has_only_partition_fields(self) -> bool:
        """Whether every field is a partition field (the suffix is empty)."""
        return all(field.partition for field in self._declared_fields.values())

    @property
    def has_partition_fields(self) -> bool:
        return any(field.partition for field in self._declared_fields.values())

    @staticmethod
    def get_function_identifier(func: Callable[..., Any]) -> str:
        """The function's dotted path, ``module.qualname`` (for a method bound
        to an instance or a class, that class's). A static method, as in
        drf-restflow, so ``UserKey.get_function_identifier(f)`` works on the
        class; keys use ``Meta.key_identifier`` instead when the constructor
        sets one (:meth:`function_part`)."""
        receiver = getattr(func, "__self__", None)
        func = getattr(func, "__func__", getattr(func, "func", func))
        if receiver is not None:
            owner = receiver if isinstance(receiver, type) else type(receiver)
            return method_id_of(owner, func)
        return function_id_of(func)

    def function_part(self, func: Callable[..., Any]) -> str:
        """The function part of ``func``'s keys: ``Meta.key_identifier``, or
        :meth:`get_function_identifier`."""
        return self._meta.key_identifier or self.get_function_identifier(func)

    # -- building keys -------------------------------------------------------

    def _readers(self, func: Callable[..., Any], signature: inspect.Signature | None = None):
        """``(signature, shape, partition readers, suffix readers)`` for ``func``
        (whose ``signature`` may be given), made once per function."""
        compiled = self._compiled.get(func)
        if compiled is None:
            if signature is None:
                signature = inspect.signature(func)
            shape = CallShape(signature, func)
            fields = self._declared_fields.values()
            compiled = (
                signature,
                shape,
                tuple(_reader(f, signature, shape) for f in fields if f.partition),
                tuple(_reader(f, signature, shape) for f in fields if not f.partition),
            )
            self._compiled[func] = compiled
        return compiled

    @property
    def _compiled(self) -> dict[Any, Any]:
        try:
            return self.__dict__["_compiled_readers"]
        except KeyError:
            return self.__dict__.setdefault("_compiled_readers", weakref.WeakKeyDictionary())

    @staticmethod
    def _read(readers, bound: Mapping[str, Any]) -> tuple[tuple[str, Any, bool, bool], ...]:
        items: tuple[tuple[str, Any, bool, bool], ...] = ()
        for read in readers:
            items += read(bound)
        return items

    def _bound(self, func: Callable[..., Any], args: tuple, kwargs: Mapping[str, Any]):
        target = getattr(func, "__func__", getattr(func, "func", func))
        receiver = getattr(func, "__self__", None)
        if receiver is not None:
            args = (receiver, *args)
        signature, _shape, partition, suffix = self._readers(target)
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        return bound.arguments, partition, suffix

    def _parts(
        self, func: Callable[..., Any], args: tuple, kwargs: Mapping[str, Any]
    ) -> tuple[str, str, str, str]:
        function_id = self.function_part(func)
        if args is None and kwargs is None:
            # No call: the function as a whole (drf-restflow's build_key_prefix(f, None, None)).
            return self._meta.namespace_part, function_id, "", ""
        bound, partition, suffix = self._bound(func, args, kwargs)
        partition_text, suffix_text = _engine.key_parts(
            function_id, self._read(partition, bound), self._read(suffix, bound)
        )
        return self._meta.namespace_part, function_id, partition_text, suffix_text

    def build_partition(self, func: Callable[..., Any], args: tuple, kwargs: Mapping[str, Any]):
        """The partition part of the key of ``func(*args, **kwargs)``; ``""``
        when ``args`` and ``kwargs`` are both ``None`` (no call)."""
        return self._parts(func, args, kwargs)[2]

    def build_key_prefix(self, func: Callable[..., Any], args: tuple, kwargs: Mapping[str, Any]):
        """``<namespace>::<function id>::<partition>``: what ``delete_by_prefix`` drops."""
        return "::".join(self._parts(func, args, kwargs)[:3])

    def build_key_suffix(
        self, func: Callable[..., Any], args: tuple, kwargs: Mapping[str, Any]
    ) -> str:
        """The suffix part of the key of ``func(*args, **kwargs)``: the non-partition fields."""
        return self._parts(func, args, kwargs)[3]

    def generate_key(self, func: Callable[..., Any], args: tuple, kwargs: Mapping[str, Any]):
        """The key string of ``func(*args, **kwargs)``, as its wrapper renders it."""
        return "::".join(self._parts(func, args, kwargs))

    def compile(self, func: Callable[..., Any]):
        """What the engine needs for ``func``: ``(build, partition, partitioned, plan)``.

        Checks every field against ``func``'s signature first, so a field
        naming a parameter ``func`` does not have fails at decoration. When
        every field can say ahead of time what it reads (named arguments,
        constants), ``plan`` lets the engine build keys without calling
        ``build``.
        """
        signature = inspect.signature(func)
        for field in self._declared_fields.values():
            field.check(func, signature)
        signature, _shape, partition_readers, suffix_readers = self._readers(func, signature)
        read = self._read

        def build(bound: dict[str, Any]):
            return read(partition_readers, bound), read(suffix_readers, bound)

        needed = {
            name: field_name
            for field_name, field in self._declared_fields.items()
            if field.partition
            for name in field.needs(signature)
        }

        def partition(args: tuple, kwargs: Mapping[str, Any] | None):
            bound = signature.bind_partial(*args, **(kwargs or {}))
            bound.apply_defaults()
            missing = [name for name in needed if name not in bound.arguments]
            if missing:
                raise TypeError(
                    f"{func.__qualname__}: dropping a partition needs a value for "
                    + ", ".join(f"{name!r} (partition field {needed[name]!r})" for name in missing)
                    + "; only partition fields need values."
                )
            return read(partition_readers, bound.arguments)

        return build, partition, self.has_partition_fields, self._plan(signature)

    def _plan(self, signature: inspect.Signature):
        plans = {
            name: None if overrides_get_key_payload(field) else field.plan(signature)
            for name, field in self._declared_fields.items()
        }
        if any(plan is None for plan in plans.values()):
            return None
        fields = self._declared_fields
        partition = [
            item for name, plan in plans.items() if fields[name].partition for item in plan
        ]
        suffix = [
            item for name, plan in plans.items() if not fields[name].partition for item in plan
        ]
        return partition, suffix

    # -- invalidation ---------------------------------------------------------

    @classmethod
    def _wrappers(cls):
        with _registry_lock:
            return [w for w, c in list(_registry.items()) if isinstance(c, cls)]

    @classmethod
    def wipe(cls, *args: Any, **kwargs: Any) -> int:
        """Drops entries of every function that uses this constructor or a subclass.

        With no arguments, all of their entries; with arguments (bound like a
        call, only partition fields needed), that partition of each. Costs one
        step per function, never per entry. Returns how many functions it touched.
        """
        return cls._wipe_any(*args, **kwargs)

    @classmethod
    def delete_previous_versions(cls) -> int:
        """Drops the entries this constructor made under lower ``Meta.version``
        numbers (a constructor sharing the namespace keeps its entries).
        Version 1 has no predecessors: a no-op. Returns how many functions'
        entries were dropped."""
        if cls._meta.version <= 1:
            return 0
        from restflow.caching.settings import backend_for

        shared = backend_for(None)
        if shared is not None:  # every process's entries, not only this one's
            shared.drop_versions_below(cls.get_owner(), cls._meta.version)
        return _engine.drop_versions_below(cls.get_owner(), cls._meta.version)

    @classmethod
    async def awipe(cls, *args: Any, **kwargs: Any) -> int:
        """:meth:`wipe` without blocking the event loop (shared stores are
        asked from a worker thread)."""
        import asyncio
        import functools

        from restflow.caching.asynchronous import worker_pool

        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            worker_pool(), functools.partial(cls._wipe_any, *args, **kwargs)
        )

    @classmethod
    def _wipe_any(cls, *args: Any, **kwargs: Any) -> int:
        wrappers = cls._wrappers()
        for wrapper in wrappers:
            engine = getattr(wrapper, "_engine", wrapper)  # async wrappers keep one
            if args or kwargs:
                engine.delete_by_prefix(*args, **kwargs)
            else:
                engine.invalidate_all()
        return len(wrappers)

    @classmethod
    async def adelete_previous_versions(cls) -> int:
        """:meth:`delete_previous_versions` without blocking the event loop."""
        import asyncio

        from restflow.caching.asynchronous import worker_pool

        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(worker_pool(), cls.delete_previous_versions)

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={field!r}" for name, field in self._declared_fields.items())
        return f"<{type(self).__name__} {fields}>"


def _reader(field: CacheKeyField, signature: inspect.Signature, shape: CallShape):
    """The field's reader; the generic one (which calls ``get_key_payload``)
    when a subclass overrides that, since a built-in's shortcut would skip it."""
    if overrides_get_key_payload(field):
        return CacheKeyField.reader(field, signature, shape)
    return field.reader(signature, shape)


def register(wrapper: Any, constructor: KeyConstructor) -> None:
    """Remembers which constructor a cached function uses, for ``wipe``."""
    with _registry_lock:
        _registry[wrapper] = constructor


class DefaultKeyConstructor(KeyConstructor):
    """Every argument of the call (but ``self``/``cls``): what ``cache_result`` uses
    when no constructor is given. Served by the engine without running Python."""

    arguments = ArgsKeyField("*")


_inline_classes: dict[tuple[Any, ...], type[KeyConstructor]] = {}
_inline_lock = ProcessLock()


def InlineKeyConstructor(
    fields: Mapping[str, CacheKeyField],
    version: int | str = 1,
    max_key_suffix_length: int | None = None,
    hash_suffix_on_overflow: bool | None = None,
    namespace: str = "",
    key_identifier: str = "",
) -> type[KeyConstructor]:
    """A :class:`KeyConstructor` subclass from a dict of fields.

    Identical inputs return the same class object, so a constructor built
    inline in a decorator is the same constructor each time the module is
    imported. The parameters are ``Meta``'s options, in drf-restflow's
    positional order; ``version`` may be written as digits (``"2"``).
    """
    if not isinstance(fields, Mapping) or not all(
        isinstance(field, CacheKeyField) for field in fields.values()
    ):
        raise ValueError(
            f"InlineKeyConstructor fields must be a dict of CacheKeyField; got {fields!r}"
        )
    version = digit_version(version)
    # Checked by Meta like the others; they do not change keys, so they are
    # not part of the owner path below.
    suffix_options = {
        name: value
        for name, value in (
            ("max_key_suffix_length", max_key_suffix_length),
            ("hash_suffix_on_overflow", hash_suffix_on_overflow),
        )
        if value is not None
    }
    # What the constructor is across its versions: its owner path, so a
    # version bump (a redeploy of {"fields": ..., "version": 2}) is the same
    # constructor's next version, whose delete_previous_versions() finds
    # the entries of the ones before.
    described = (
        tuple(sorted((name, field.identity()) for name, field in fields.items())),
        namespace,
        key_identifier,
    )
    # Equal inputs, in the strict sense: typed (1, 1.0 and True differ),
    # callables by object (two lambdas of one name differ), containers by
    # their contents (so unhashable constants work).
    identity = _freeze(
        (
            tuple(
                sorted(
                    (name, type(f), f.options(), f.partition, f.hash_value, f.sort_lists)
                    for name, f in fields.items()
                )
            ),
            namespace,
            version,
            key_identifier,
            tuple(sorted(suffix_options.items())),
        )
    )
    with _inline_lock:
        found = _inline_classes.get(identity)
        if found is not None:
            return found
        # The owner path must be the same in every process: built from the
        # printable description, never from object identities.
        digest = hashlib.sha256(repr(described).encode()).hexdigest()[:16]
        meta = type(
            "Meta",
            (),
            {
                "namespace": namespace,
                "version": version,
                "key_identifier": key_identifier,
                **suffix_options,
            },
        )
        # A field keeps the name it is declared under: each inline constructor
        # gets its own copy, so one field object can serve under several names.
        attrs: dict[str, Any] = {name: copy.copy(field) for name, field in fields.items()}
        attrs.update({"Meta": meta, "__module__": __name__})
        made = KeyConstructorMeta(f"InlineKeyConstructor_{digest}", (KeyConstructor,), attrs)
        made.__qualname__ = f"InlineKeyConstructor[{digest}]"
        _inline_classes[identity] = made
        return made


def _freeze(value: Any) -> Any:
    """A hashable, type-tagged stand-in for ``value``."""
    if isinstance(value, Mapping):
        return (
            "mapping",
            tuple(sorted(((_freeze(k), _freeze(v)) for k, v in value.items()), key=repr)),
        )
    if isinstance(value, (list, tuple)):
        return (type(value).__name__, tuple(_freeze(v) for v in value))
    if isinstance(value, (set, frozenset)):
        return (type(value).__name__, tuple(sorted((_freeze(v) for v in value), key=repr)))
    try:
        hash(value)
    except TypeError:
        return ("unhashable", type(value), id(value))
    return (type(value), value)


def refuse_ttl_as_constructor(value: Any, decorator: str) -> None:
    """The key constructor is the first positional parameter of ``cache_result``
    and ``cache_response`` (drf-restflow's order); restflow's first releases
    put the ttl there. A number, a ``timedelta`` or ``None`` in that place is a
    ttl written for the old order, and a function is a missing pair of
    parentheses or a callable ttl: say which, rather than key by it."""
    if (isinstance(value, (int, float, timedelta)) and not isinstance(value, bool)) or (
        value is None and decorator == "cache_result"
    ):
        raise TypeError(
            f"{decorator}()'s first positional parameter is key_constructor (as in "
            f"drf-restflow), and it got {value!r}: did you mean ttl={value!r}?"
        )
    if inspect.isfunction(value) or inspect.ismethod(value):
        raise TypeError(
            f"{decorator}()'s first positional parameter is key_constructor, and it got "
            f"the function {value.__qualname__}: write @{decorator}(...) with its "
            "parentheses, and pass a callable ttl by keyword (ttl=...)."
        )


def resolve(key_constructor: Any) -> KeyConstructor:
    """What ``cache_result(key_constructor=...)`` accepts, as an instance."""
    if isinstance(key_constructor, KeyConstructor):
        return key_constructor
    if isinstance(key_constructor, type) and issubclass(key_constructor, KeyConstructor):
        return key_constructor()
    if isinstance(key_constructor, Mapping):
        if "fields" in key_constructor:
            try:
                return InlineKeyConstructor(**key_constructor)()
            except TypeError as error:
                raise ValueError(f"Invalid KeyConstructor arguments: {error}") from None
        if key_constructor and all(isinstance(f, CacheKeyField) for f in key_constructor.values()):
            return InlineKeyConstructor(fields=key_constructor)()
    raise ValueError(
        f"Invalid KeyConstructor {key_constructor!r}: pass a KeyConstructor subclass or "
        "instance, a dict of InlineKeyConstructor arguments ({'fields': {...}, 'namespace': ...}) "
        "or a dict of key fields."
    )


__all__ += ["KeyFieldError"]
