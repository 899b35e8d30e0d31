"""Key fields: the declarative parts of a cache key.

A field reads one thing from a call (some arguments, a value on the request,
the query string, the URL kwargs, a constant) and contributes it to the key
as a small dict, its *payload*. Fields are declared on a
:class:`~restflow.caching.key_constructor.KeyConstructor`, much like
serializer fields on a DRF serializer.

Every field takes three options:

``partition``
    The payload goes into the key's partition part instead of its suffix, so
    ``delete_by_prefix`` can drop every entry that shares it (all the entries
    of one tenant, say) in one step.
``hash_value``
    Only a fixed 128-bit digest of the value goes into the key (for long or
    sensitive values).
``sort_lists``
    Lists in the value are compared as sets: ``[2, 1]`` and ``[1, 2]`` give
    one key.

Values are encoded by restflow's engine, type-tagged and canonical; a value
it cannot represent raises ``TypeError`` naming the field and the parameter.
"""

from __future__ import annotations

import inspect
import re
import uuid
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from restflow.caching.status import CACHE_MISSING

__all__ = [
    "ArgsKeyField",
    "CacheKeyField",
    "ConstantKeyField",
    "DjangoModelKeyField",
    "DrfSerializerKeyField",
    "QueryParamsKeyField",
    "RequestValueKeyField",
    "ViewKwargsKeyField",
]

#: Payload labels are identifiers and dotted paths, which is what keeps the
#: ``label=value`` text of a key string unambiguous.
_LABEL = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z0-9_]+)*$")

#: Payload keys that may stand in a label as they are (``name.key``): no
#: ``=`` or ``,`` (which end a label and a labelled value in the key text).
_PAYLOAD_KEY = re.compile(r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$")

#: Parameters that are never URL kwargs or call data.
_RECEIVERS = ("self", "cls")


class KeyFieldError(TypeError):
    """A key field that cannot work on the function it decorates."""


class CallShape:
    """What fields need to know of the function beyond its bound arguments:
    the names of its ``*args`` and ``**kwargs`` parameters, if any, and for
    fields written against ``get_key_payload(func, args, kwargs)``, the
    function and its signature."""

    __slots__ = ("func", "signature", "var_keyword", "var_positional")

    def __init__(
        self, signature: inspect.Signature, func: Callable[..., Any] | None = None
    ) -> None:
        self.signature = signature
        self.func = func
        self.var_positional: str | None = None
        self.var_keyword: str | None = None
        for parameter in signature.parameters.values():
            if parameter.kind is parameter.VAR_POSITIONAL:
                self.var_positional = parameter.name
            elif parameter.kind is parameter.VAR_KEYWORD:
                self.var_keyword = parameter.name

    def call(self, bound: Mapping[str, Any]) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """The call as ``(args, kwargs)``, rebuilt from its bound arguments:
        every parameter that can be passed by position is in ``args``
        (defaults applied), keyword-only ones in ``kwargs``, so ``f(1)`` and
        ``f(x=1)`` look the same."""
        rebuilt = inspect.BoundArguments(self.signature, dict(bound))  # type: ignore[arg-type]
        return rebuilt.args, rebuilt.kwargs

    def keyword(self, bound: Mapping[str, Any], name: str) -> Any:
        """An argument by name, looking in ``**kwargs`` too."""
        if name in bound:
            return bound[name]
        if self.var_keyword is not None:
            return bound.get(self.var_keyword, {}).get(name, CACHE_MISSING)
        return CACHE_MISSING


def _names(value: str | Iterable[str], what: str) -> tuple[str, ...] | None:
    """``"*"`` → ``None`` (all); one name or a list of names → a tuple."""
    if value == "*":
        return None
    names = (value,) if isinstance(value, str) else tuple(value)
    for name in names:
        if not isinstance(name, str) or not _LABEL.match(name):
            raise ValueError(f"{what} must be '*', a name or a list of names; got {name!r}")
    return names


def resolve_path(value: Any, path: str | None) -> Any:
    """Follows a dotted path of attributes (or mapping keys) from ``value``.

    A step that does not exist gives ``CACHE_MISSING``, which is keyed apart
    from every real value (``None`` included).
    """
    if not path:
        return value
    for step in path.split("."):
        if isinstance(value, Mapping):
            value = value.get(step, CACHE_MISSING)
        else:
            value = getattr(value, step, CACHE_MISSING)
        if value is CACHE_MISSING:
            return CACHE_MISSING
    return value


def _identity(value: Any) -> Any:
    """A stable, hashable description of an option, for constructor identity."""
    if callable(value):
        return f"{getattr(value, '__module__', '?')}.{getattr(value, '__qualname__', repr(value))}"
    if isinstance(value, (list, tuple)):
        return tuple(_identity(v) for v in value)
    if isinstance(value, Mapping):  # a custom field's options may hold one: kept hashable
        return tuple(sorted(((k, _identity(v)) for k, v in value.items()), key=repr))
    if isinstance(value, (set, frozenset)):
        return tuple(sorted((_identity(v) for v in value), key=repr))
    return value


#: Attributes every field has; a custom field's other public attributes are its options.
_BASE_ATTRIBUTES = frozenset({"name", "partition", "hash_value", "sort_lists"})


class CacheKeyField:
    """Base class of key fields.

    Subclasses implement :meth:`payload`, which reads the bound arguments of
    a call (a dict of parameter name to value, defaults applied) and returns
    the dict the field contributes; or, as in drf-restflow,
    :meth:`get_key_payload`, which gets the function and the call as
    ``(args, kwargs)`` (see :meth:`CallShape.call`). Such a field runs Python
    on every call, and is taken to read every parameter (:meth:`needs`).
    """

    #: The attribute name on the key constructor; set when the class is made.
    name: str = ""

    def __init__(
        self, partition: bool = False, hash_value: bool = False, *, sort_lists: bool = False
    ) -> None:
        self.partition = bool(partition)
        self.hash_value = bool(hash_value)
        self.sort_lists = bool(sort_lists)

    def __set_name__(self, owner: type, name: str) -> None:
        if not _LABEL.match(name):
            raise TypeError(f"a key field needs an identifier as its name; got {name!r}")
        self.name = name

    # -- what subclasses provide ------------------------------------------

    def payload(self, bound: Mapping[str, Any], shape: CallShape) -> dict[str, Any]:
        """The dict this field contributes for one call's bound arguments."""
        if overrides_get_key_payload(self):
            args, kwargs = shape.call(bound)
            return self.get_key_payload(shape.func, args, kwargs)
        raise NotImplementedError(_MISSING_PAYLOAD.format(type(self).__name__))

    def check(self, func: Callable[..., Any], signature: inspect.Signature) -> None:
        """Raises :class:`KeyFieldError` if the field cannot work on ``func``."""

    def options(self) -> tuple[Any, ...]:
        """What makes two fields of this type equal (for constructor identity).

        By default the field's public attributes (``HeaderKeyField("X-Tenant")``
        and ``HeaderKeyField("X-Region")`` differ), so a custom field need not
        say; one holding objects without a stable ``repr`` should."""
        return tuple(
            sorted(
                (
                    (key, value)
                    for key, value in vars(self).items()
                    if not key.startswith("_") and key not in _BASE_ATTRIBUTES
                ),
                key=lambda item: item[0],
            )
        )

    def needs(self, signature: inspect.Signature) -> set[str]:
        """The parameters this field reads: what ``delete_by_prefix`` must be
        given when the field is a partition field, and what invalidation
        rules must map. A field that does not say is taken to read every
        parameter but ``self``/``cls``, ``*args`` and ``**kwargs``; a field
        that reads none returns an empty set."""
        return {
            name
            for name, p in signature.parameters.items()
            if name not in _RECEIVERS and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        }

    # -- shared behaviour --------------------------------------------------

    def identity(self) -> tuple[Any, ...]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            _identity(self.options()),
            self.partition,
            self.hash_value,
            self.sort_lists,
        )

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CacheKeyField) and self.identity() == other.identity()

    def __hash__(self) -> int:
        return hash(self.identity())

    def get_key_payload(
        self, func: Callable[..., Any] | None, args: tuple[Any, ...], kwargs: Mapping[str, Any]
    ) -> dict[str, Any]:
        """The dict this field contributes to the key of ``func(*args, **kwargs)``.

        ``func`` may be ``None`` for a field that does not read the call (a
        constant, a fingerprint). drf-restflow's extension point: a subclass
        may override this instead of :meth:`payload`."""
        if type(self).payload is CacheKeyField.payload:
            # Neither is implemented (or an override called this one).
            raise NotImplementedError(_MISSING_PAYLOAD.format(type(self).__name__))
        if func is None:
            return self.payload({}, CallShape(inspect.Signature()))
        shape = CallShape(inspect.signature(func), func)
        return self.payload(bind_arguments(func, args, kwargs), shape)

    def get_cache_key_part(
        self, func: Callable[..., Any] | None, args: tuple[Any, ...], kwargs: Mapping[str, Any]
    ) -> str:
        """The text this field adds to the key of ``func(*args, **kwargs)``, as
        restflow's engine encodes it (typed; a digest when ``hash_value``)."""
        from restflow import _engine

        payload = self.get_key_payload(func, args, kwargs)
        items = payload_items(self, self.name or type(self).__name__, payload)
        return _engine.key_parts("", (), items)[1]

    def extract_request_object(
        self,
        func: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: Mapping[str, Any],
        request_arg: str = "request",
        normalize: bool = False,
        view_self_request_fallback: bool = True,
    ) -> Any:
        """The request of a call, for a field of your own (drf-restflow's
        helper): the ``request_arg`` keyword, else that parameter by position,
        else ``self.request`` of a view method (``args[0]``). ``normalize``
        prefers a DRF request where an object carries one in ``.request``.
        ``None`` when there is none."""
        if request_arg in kwargs:
            found = kwargs[request_arg]
        else:
            names = list(inspect.signature(func).parameters)
            index = names.index(request_arg) if request_arg in names else None
            if index is not None and index < len(args):
                found = args[index]
            elif view_self_request_fallback and args and hasattr(args[0], "request"):
                found = args[0].request
            else:
                return None
        if normalize and found is not None and not hasattr(found, "query_params"):
            inner = getattr(found, "request", None)
            if hasattr(inner, "query_params"):
                return inner
        return found

    def items(
        self, bound: Mapping[str, Any], shape: CallShape
    ) -> tuple[tuple[str, Any, bool, bool], ...]:
        """The payload as the engine reads it: ``(label, value, hashed, sort_lists)``."""
        if overrides_get_key_payload(self):
            payload = self.get_key_payload(shape.func, *shape.call(bound))
        else:
            payload = self.payload(bound, shape)
        return payload_items(self, self.name, payload)

    def plan(self, signature: inspect.Signature) -> list[tuple[str, str, Any, bool, bool]] | None:
        """The field's items as a plan the engine follows without calling
        Python: ``(label, "arg", parameter name, hashed, sort_lists)`` or
        ``(label, "const", value, hashed, sort_lists)``, in label order. ``None``
        when the field needs Python code for each call."""
        return None

    def reader(
        self, signature: inspect.Signature, shape: CallShape
    ) -> Callable[[Mapping[str, Any]], tuple[tuple[str, Any, bool, bool], ...]]:
        """A function from bound arguments to :meth:`items`, made once per
        decorated function: fields whose items can be worked out ahead of the
        call override it to skip the payload dict on every call."""

        def read(bound: Mapping[str, Any]) -> tuple[tuple[str, Any, bool, bool], ...]:
            return self.items(bound, shape)

        return read

    def __repr__(self) -> str:
        flags = [f for f in ("partition", "hash_value", "sort_lists") if getattr(self, f)]
        options = ", ".join([repr(o) for o in self.options()] + [f"{f}=True" for f in flags])
        return f"{type(self).__name__}({options})"


def payload_items(
    field: CacheKeyField, label: str, payload: Mapping[Any, Any]
) -> tuple[tuple[str, Any, bool, bool], ...]:
    """A payload as labelled items: ``label.key`` for each key, when every
    key is a name (letters, digits, ``_``, ``-``, dots).

    A payload with any other key (a field of your own that returns, say, the
    query string as a dict) is one item, ``label``, whose value is the whole
    dict, encoded with its keys' types. Keys in labels would make ``{1: x}``
    and ``{"1": x}`` one entry, and a key holding ``=`` or ``,`` could spell
    out another payload's key text (``{"a=s1:x,f.b": 5}`` against
    ``{"a": "x", "b": 5}``) in a shared store.
    """
    if not isinstance(payload, Mapping):
        raise TypeError(
            f"{type(field).__name__} {label!r} must return a dict from get_key_payload "
            f"(or payload); got {type(payload).__name__}."
        )
    hashed, sort_lists = field.hash_value, field.sort_lists
    if all(type(key) is str and _PAYLOAD_KEY.match(key) for key in payload):
        return tuple(
            (f"{label}.{key}", value, hashed, sort_lists) for key, value in sorted(payload.items())
        )
    return ((label, dict(payload), hashed, sort_lists),)


def overrides_get_key_payload(field: CacheKeyField) -> bool:
    """Whether ``field``'s class overrides ``get_key_payload`` (drf-restflow's
    extension point), on a built-in field too: then that method makes the
    payload, on every call, and the field's own shortcuts are not used."""
    return type(field).get_key_payload is not CacheKeyField.get_key_payload


_MISSING_PAYLOAD = (
    "{} must implement get_key_payload(func, args, kwargs) (or payload(bound, shape)): "
    "the dict it contributes to the key."
)


def bind_arguments(
    func: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: Mapping[str, Any],
) -> dict[str, Any]:
    """Binds a call like Python does, defaults applied: ``{parameter: value}``."""
    bound = inspect.signature(func).bind(*args, **kwargs)
    bound.apply_defaults()
    return dict(bound.arguments)


class ConstantKeyField(CacheKeyField):
    """A fixed ``{key: value}``: an API version, a serializer revision."""

    def __init__(self, key: str, value: Any, **options: bool) -> None:
        super().__init__(**options)
        if not isinstance(key, str) or not _LABEL.match(key):
            raise ValueError(f"ConstantKeyField key must be an identifier; got {key!r}")
        self.key, self.value = key, value

    def options(self) -> tuple[Any, ...]:
        return (self.key, self.value)

    def payload(self, bound: Mapping[str, Any], shape: CallShape) -> dict[str, Any]:
        return {self.key: self.value}

    def needs(self, signature: inspect.Signature) -> set[str]:
        return set()

    def reader(self, signature: inspect.Signature, shape: CallShape):
        constant = ((f"{self.name}.{self.key}", self.value, self.hash_value, self.sort_lists),)
        return lambda bound: constant

    def plan(self, signature: inspect.Signature):
        return [(f"{self.name}.{self.key}", "const", self.value, self.hash_value, self.sort_lists)]


class ArgsKeyField(CacheKeyField):
    """Arguments of the call: ``"*"`` (all but ``self``/``cls``), a name, or a list of names.

    ``path`` is a dotted attribute path applied to each value
    (``ArgsKeyField("user", path="id")`` keys by ``user.id``). ``normalizer``
    is applied to each value (after ``path``); if it raises, the raw value is
    used.
    """

    def __init__(
        self,
        arguments: str | Iterable[str] = "*",
        path: str | None = None,
        normalizer: Callable[[Any], Any] | None = None,
        **options: bool,
    ) -> None:
        super().__init__(**options)
        #: As given ("*", a name, or a list of names), as drf-restflow keeps it.
        self.arguments = arguments
        self._arguments = _names(arguments, "ArgsKeyField arguments")  # None: all
        if path is not None and not _LABEL.match(path):
            raise ValueError(f"ArgsKeyField path must be a dotted name; got {path!r}")
        if normalizer is not None and not callable(normalizer):
            raise TypeError(f"ArgsKeyField normalizer must be callable; got {normalizer!r}")
        self.path, self.normalizer = path, normalizer
        self._var_keyword: str | None = None

    def options(self) -> tuple[Any, ...]:
        return ("*" if self._arguments is None else self._arguments, self.path, self.normalizer)

    def check(self, func: Callable[..., Any], signature: inspect.Signature) -> None:
        parameters = signature.parameters
        has_var_keyword = any(p.kind is p.VAR_KEYWORD for p in parameters.values())
        for name in self._arguments or ():
            if name not in parameters and not has_var_keyword:
                raise KeyFieldError(
                    f"ArgsKeyField {self.name!r} names argument {name!r}, but "
                    f"{func.__qualname__}() has no such parameter "
                    f"(it takes: {', '.join(parameters) or 'nothing'})."
                )

    def needs(self, signature: inspect.Signature) -> set[str]:
        if self._arguments is not None:
            return {name for name in self._arguments if name in signature.parameters}
        return super().needs(signature)  # every argument

    def _value(self, value: Any) -> Any:
        value = resolve_path(value, self.path)
        if self.normalizer is not None and value is not CACHE_MISSING:
            try:
                value = self.normalizer(value)
            except Exception:  # a normalizer that cannot handle a value keys it raw
                pass
        return value

    def payload(self, bound: Mapping[str, Any], shape: CallShape) -> dict[str, Any]:
        if self._arguments is None:
            return {
                name: self._value(value) for name, value in bound.items() if name not in _RECEIVERS
            }
        return {name: self._value(shape.keyword(bound, name)) for name in self._arguments}

    def _direct(self, signature: inspect.Signature) -> bool:
        """Named parameters read as they are: no path, no normalizer."""
        return (
            self._arguments is not None
            and self.path is None
            and self.normalizer is None
            and all(
                name in signature.parameters
                and signature.parameters[name].kind
                not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
                for name in self._arguments
            )
        )

    def plan(self, signature: inspect.Signature):
        if not self._direct(signature):
            return None
        return [
            (f"{self.name}.{name}", "arg", name, self.hash_value, self.sort_lists)
            for name in sorted(self._arguments)
        ]

    def reader(self, signature: inspect.Signature, shape: CallShape):
        if not self._direct(signature):
            return super().reader(signature, shape)
        # Named parameters read straight from the bound arguments, in label order.
        plan = tuple((f"{self.name}.{name}", name) for name in sorted(self._arguments))
        hashed, sort_lists = self.hash_value, self.sort_lists
        if len(plan) == 1:
            ((label, name),) = plan
            return lambda bound: ((label, bound[name], hashed, sort_lists),)
        return lambda bound: tuple(
            [(label, bound[name], hashed, sort_lists) for label, name in plan]
        )


def find_request(
    bound: Mapping[str, Any], shape: CallShape, request_arg: str, view_fallback: bool
) -> Any:
    """The request of a call: by parameter name or keyword, else ``self.request``."""
    request = shape.keyword(bound, request_arg)
    if request is CACHE_MISSING and view_fallback:
        receiver = bound.get("self")
        request = getattr(receiver, "request", CACHE_MISSING)
    return request


class _RequestField(CacheKeyField):
    """What the request-reading fields share: finding the request."""

    def __init__(
        self, request_arg: str = "request", view_self_request_fallback: bool = True, **options: bool
    ) -> None:
        super().__init__(**options)
        self.request_arg = request_arg
        self.view_self_request_fallback = bool(view_self_request_fallback)

    def check(self, func: Callable[..., Any], signature: inspect.Signature) -> None:
        parameters = signature.parameters
        if self.request_arg in parameters:
            return
        if any(p.kind is p.VAR_KEYWORD for p in parameters.values()):
            return
        first = next(iter(parameters), None)
        if self.view_self_request_fallback and first == "self":
            return
        raise KeyFieldError(
            f"{type(self).__name__} {self.name!r} reads the request, but "
            f"{func.__qualname__}() has no {self.request_arg!r} parameter and is not a view "
            f"method with self.request. Pass request_arg= to name the parameter."
        )

    def needs(self, signature: inspect.Signature) -> set[str]:
        if self.request_arg in signature.parameters:
            return {self.request_arg}
        return {"self"} if "self" in signature.parameters else set()

    def request(self, bound: Mapping[str, Any], shape: CallShape) -> Any:
        request = find_request(bound, shape, self.request_arg, self.view_self_request_fallback)
        if request is CACHE_MISSING or request is None:
            raise KeyFieldError(
                f"{type(self).__name__} {self.name!r} found no request: pass it as "
                f"{self.request_arg!r} (by position or keyword), or call from a view whose "
                "self.request is set."
            )
        return request


class RequestValueKeyField(_RequestField):
    """A value on the request by dotted path: ``"user.id"``, ``"META.HTTP_X_TENANT"``."""

    def __init__(
        self,
        path: str,
        request_arg: str = "request",
        view_self_request_fallback: bool = True,
        **options: bool,
    ) -> None:
        super().__init__(request_arg, view_self_request_fallback, **options)
        if not isinstance(path, str) or not _LABEL.match(path):
            raise ValueError(f"RequestValueKeyField path must be a dotted name; got {path!r}")
        self.path = path

    def options(self) -> tuple[Any, ...]:
        return (self.path, self.request_arg, self.view_self_request_fallback)

    def payload(self, bound: Mapping[str, Any], shape: CallShape) -> dict[str, Any]:
        return {self.path: resolve_path(self.request(bound, shape), self.path)}


class QueryParamsKeyField(_RequestField):
    """Query parameters: all (``"*"``) or the listed ones; repeated values in order.

    Reads DRF's ``request.query_params``, Django's ``request.GET``, or a
    plain dict passed as the request argument. Values are keyed as the text
    a query string carries, so from a plain dict ``1`` and ``"1"`` are one
    value, as they are in ``?page=1``. A repeated parameter keeps the order
    the request gave (``?sort=a&sort=b`` is not ``?sort=b&sort=a``: a view
    may read ``getlist`` in order); ``sort_lists=True`` makes it irrelevant
    for a view that treats the values as a set.
    """

    def __init__(
        self,
        params: str | Iterable[str] = "*",
        request_arg: str = "request",
        view_self_request_fallback: bool = True,
        **options: bool,
    ) -> None:
        super().__init__(request_arg, view_self_request_fallback, **options)
        #: As given ("*", a name, or a list of names), as drf-restflow keeps it.
        self.params = params
        self._params = (  # None: all
            None if params == "*" else tuple([params] if isinstance(params, str) else params)
        )

    def options(self) -> tuple[Any, ...]:
        return (self._params or "*", self.request_arg, self.view_self_request_fallback)

    @staticmethod
    def _source(request: Any) -> Any:
        for attribute in ("query_params", "GET"):
            source = getattr(request, attribute, None)
            if source is not None:
                return source
        if isinstance(request, Mapping):
            return request
        raise KeyFieldError(
            f"QueryParamsKeyField cannot read query parameters from {type(request).__name__}: "
            "give it a DRF Request, a Django HttpRequest or a dict."
        )

    @staticmethod
    def _values(source: Any, name: str) -> list[str]:
        if hasattr(source, "getlist"):
            values = source.getlist(name)
        else:
            value = source.get(name, [])
            values = list(value) if isinstance(value, (list, tuple)) else [value]
        return [str(v) for v in values]

    def payload(self, bound: Mapping[str, Any], shape: CallShape) -> dict[str, Any]:
        source = self._source(self.request(bound, shape))
        names = self._params if self._params is not None else sorted(source.keys())
        # One entry, the whole query: parameter names are data, not labels.
        return {"query": {name: self._values(source, name) for name in names}}


def _url_text(value: Any) -> Any:
    """A URL kwarg as the text its URL carries, when that is unambiguous.

    A URL is text: DRF's routers (``(?P<pk>[^/.]+)``) and ``<str:pk>`` give
    ``"3"`` where ``<int:pk>`` gives ``3``, and an invalidation rule or a
    ``delete_by_prefix`` call gives the model's ``pk``, ``3``. Keyed as
    given, type-tagged, ``"3"`` and ``3`` are two partitions, and a rule
    never drops what a router-served view cached. An ``int`` and a ``UUID``
    are keyed as their text, which is what ``<int:>`` and ``<uuid:>``
    write in a URL; other values (a custom converter's object) as they are.
    """
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, uuid.UUID):
        return str(value)
    return value


class ViewKwargsKeyField(CacheKeyField):
    """A view's URL kwargs: every argument but ``self``, ``cls`` and the
    request (``request_arg``, ``"request"`` by default; ``**kwargs``
    flattened), or the listed ones. Each is keyed as the text its URL
    carries (``3`` and ``"3"`` are one value, see :func:`_url_text`)."""

    def __init__(
        self, arguments: str | Iterable[str] = "*", request_arg: str = "request", **options: bool
    ) -> None:
        super().__init__(**options)
        #: As given ("*", a name, or a list of names), as drf-restflow keeps it.
        self.arguments = arguments
        self._arguments = _names(arguments, "ViewKwargsKeyField arguments")  # None: all
        if not isinstance(request_arg, str) or not request_arg.isidentifier():
            raise ValueError(
                f"ViewKwargsKeyField request_arg must be a parameter name; got {request_arg!r}"
            )
        self.request_arg = request_arg
        self._skipped = (*_RECEIVERS, request_arg)

    def options(self) -> tuple[Any, ...]:
        arguments = "*" if self._arguments is None else self._arguments
        # The default request name adds nothing: keys made before it existed stay.
        return (arguments,) if self.request_arg == "request" else (arguments, self.request_arg)

    def check(self, func: Callable[..., Any], signature: inspect.Signature) -> None:
        parameters = signature.parameters
        if any(p.kind is p.VAR_KEYWORD for p in parameters.values()):
            return  # URL kwargs may arrive through **kwargs
        for name in self._arguments or ():
            if name not in parameters:
                raise KeyFieldError(
                    f"ViewKwargsKeyField {self.name!r} names URL kwarg {name!r}, but "
                    f"{func.__qualname__}() has no such parameter and no **kwargs."
                )

    def needs(self, signature: inspect.Signature) -> set[str]:
        names = self._arguments or tuple(signature.parameters)
        return {
            name
            for name in names
            if name in signature.parameters
            and name not in self._skipped
            and signature.parameters[name].kind
            not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
        }

    def _url_kwargs(self, bound: Mapping[str, Any], shape: CallShape) -> dict[str, Any]:
        found: dict[str, Any] = {}
        for name, value in bound.items():
            if name in self._skipped or name == shape.var_positional:
                continue
            if name == shape.var_keyword:
                found.update({key: _url_text(item) for key, item in value.items()})
            else:
                found[name] = _url_text(value)
        return found

    def payload(self, bound: Mapping[str, Any], shape: CallShape) -> dict[str, Any]:
        kwargs = self._url_kwargs(bound, shape)  # every value as its URL text
        if self._arguments is None:
            return {"kwargs": kwargs}
        return {name: kwargs.get(name, CACHE_MISSING) for name in self._arguments}


class _FingerprintField(CacheKeyField):
    """A fingerprint of a class's fields, computed once per class, so that
    changing a serializer or a model changes every key built with it."""

    def __init__(self, target: type | None, **options: bool) -> None:
        super().__init__(**options)
        if target is not None:
            self.validate(target)
        self.target = target
        self._fingerprint: tuple[Any, ...] | None = None  # of target, once computed

    def validate(self, target: Any) -> None:
        raise NotImplementedError(f"{type(self).__name__} must implement validate()")

    def fingerprint(self, target: type) -> tuple[Any, ...]:
        raise NotImplementedError(f"{type(self).__name__} must implement fingerprint()")

    def options(self) -> tuple[Any, ...]:
        return (self.target,)

    def needs(self, signature: inspect.Signature) -> set[str]:
        return set()  # reads the class, not the call

    def payload(self, bound: Mapping[str, Any], shape: CallShape) -> dict[str, Any]:
        if self.target is None:
            return {}
        if self._fingerprint is None:  # once per class, not per call
            self._fingerprint = self.fingerprint(self.target)
        return {"fingerprint": self._fingerprint}


class DrfSerializerKeyField(_FingerprintField):
    """A fingerprint of a DRF serializer's fields (name, type, source, read/write)."""

    def __init__(self, serializer_class: type | None, **options: bool) -> None:
        super().__init__(serializer_class, **options)

    def validate(self, target: Any) -> None:
        from rest_framework.serializers import BaseSerializer

        if not (isinstance(target, type) and issubclass(target, BaseSerializer)):
            raise ValueError(f"DrfSerializerKeyField needs a DRF serializer class; got {target!r}")
        # The fingerprint builds one without arguments: a class that cannot be
        # fails here, at import, rather than on the first call.
        try:
            self._probe = target()  # kept: the fingerprint reads its fields
        except Exception as error:
            raise ValueError(
                f"Failed to initialize serializer class {target.__qualname__}: "
                f"DrfSerializerKeyField builds it without arguments to read its fields ({error})."
            ) from error

    def fingerprint(self, target: type) -> tuple[Any, ...]:
        fields = self._probe.fields
        return (
            f"{target.__module__}.{target.__qualname__}",
            tuple(
                (name, type(field).__name__, str(field.source), field.read_only, field.write_only)
                for name, field in sorted(fields.items())
            ),
        )


class DjangoModelKeyField(_FingerprintField):
    """A fingerprint of a Django model's concrete fields (name and column type)."""

    def __init__(self, model_class: type | None, **options: bool) -> None:
        super().__init__(model_class, **options)

    def validate(self, target: Any) -> None:
        from django.db.models import Model

        if not (isinstance(target, type) and issubclass(target, Model)):
            raise ValueError(f"DjangoModelKeyField needs a Django model class; got {target!r}")

    def fingerprint(self, target: type) -> tuple[Any, ...]:
        meta = target._meta
        return (
            meta.label,
            tuple((field.name, field.get_internal_type()) for field in meta.concrete_fields),
        )
