"""Keys of cached responses: what the URL says, and what the request negotiated.

Two requests for one URL can still deserve different bodies: one asked for
JSON and the other for HTML, one reads French and the other German, one is
Alice's and the other Bob's. :class:`ResponseCacheKeyConstructor` keys what
the URL says (its query string and URL kwargs); :class:`ResponseVariantKeyField`
keys the rest, and ``cache_response`` adds it to whatever constructor it is
given, so a custom constructor cannot forget it.
"""

from __future__ import annotations

import inspect
import sys
from collections.abc import Mapping
from typing import Any

from django.utils import timezone, translation

from restflow.caching.key_constructor import KeyConstructor, KeyConstructorMeta, resolve
from restflow.caching.key_fields import (
    CacheKeyField,
    CallShape,
    QueryParamsKeyField,
    ViewKwargsKeyField,
)
from restflow.caching.process_locks import ProcessLock
from restflow.caching.status import CACHE_MISSING

__all__ = [
    "LOCALE_ATTR",
    "USER_ATTR",
    "ResponseCacheKeyConstructor",
    "ResponseVariantKeyField",
    "check_request_not_keyed",
    "default_constructor",
    "is_drf_request",
    "locale_of",
    "user_key",
    "user_of",
    "with_variant",
]

#: Where ``cache_response`` stamps the language and time zone a request was
#: served in: the key reads it, and a background refresh on an engine thread
#: renders in it.
LOCALE_ATTR = "_restflow_locale"

#: Where the async ``cache_response`` stamps the user of a plain Django
#: request, fetched with ``await request.auser()``: reading the lazy
#: ``request.user`` on the event loop would query the database there.
USER_ATTR = "_restflow_user"

_UNSET = object()

#: The field name ``cache_response`` adds to a constructor; a constructor
#: that declares it itself would lose it, so that is refused.
VARIANT_FIELD = "response_variant"


class ResponseCacheKeyConstructor(KeyConstructor):
    """What ``cache_response`` keys by default: the URL.

    The query string is hashed (it can be long, and may carry values nobody
    wants in a key string); the URL kwargs form the partition, so
    ``delete_by_prefix(pk=3)`` drops every cached variant of one object.
    Subclass it to add fields or narrow the query parameters.
    """

    query_params = QueryParamsKeyField("*", hash_value=True)
    path_params = ViewKwargsKeyField("*", partition=True)

    class Meta:
        namespace = "ResponseCache"


def is_drf_request(request: Any) -> bool:
    """Whether ``request`` is DRF's ``Request`` (without importing DRF: a
    project that never imported it has none)."""
    module = sys.modules.get("rest_framework.request")
    return module is not None and isinstance(request, module.Request)


def user_of(request: Any) -> Any:
    """The user's primary key when the request is authenticated, else ``None``.

    ``CACHE_MISSING`` for an authenticated user without a primary key (a
    stateless token user, say), and for a client DRF authenticated without a
    user (``request.auth`` beside an anonymous user): there is nothing safe
    to key it by, so ``cache_response`` serves such a request live. A user the async
    ``cache_response`` awaited (:data:`USER_ATTR`) is read before ``request.user``.
    """
    user = _authenticated_user(request)
    if user is None:
        return CACHE_MISSING if _client_without_user(request) else None
    pk = getattr(user, "pk", None)
    return CACHE_MISSING if pk is None else pk


def _client_without_user(request: Any) -> bool:
    """Whether DRF authenticated a client but no user: ``request.auth`` (an
    API key, a tenant's token) beside an anonymous ``request.user``. The
    response may be that client's, and the key holds users only, so such a
    request has nothing safe to be keyed by (it runs live, as a user without
    a primary key does). A plain Django request has no ``auth``."""
    return is_drf_request(request) and getattr(request, "auth", None) is not None


def _authenticated_user(request: Any) -> Any:
    """The request's user when it is authenticated, else ``None``."""
    user = getattr(request, "__dict__", {}).get(USER_ATTR, _UNSET)
    if user is _UNSET:
        user = getattr(request, "user", None)
    return user if getattr(user, "is_authenticated", False) else None


def user_key(request: Any) -> Any:
    """Who the response is for, as the key holds it: the user's kind and
    primary key (``None`` when anonymous, ``CACHE_MISSING`` without a pk).

    A primary key alone names a row of one table: a project whose
    authentication classes give ``request.user`` objects of two kinds (staff
    and customers, service accounts beside people) has a staff member 1 and
    a customer 1, who must never share a response. The kind is the model's
    concrete label (a proxy of the user model is the same person), or the
    class's dotted path for a user that is not a model (a token's user).
    """
    user = _authenticated_user(request)
    if user is None:
        return CACHE_MISSING if _client_without_user(request) else None
    pk = getattr(user, "pk", None)
    if pk is None:
        return CACHE_MISSING
    meta = getattr(user, "_meta", None)
    concrete = getattr(meta, "concrete_model", None)
    label = getattr(getattr(concrete, "_meta", None), "label", None)
    if label is None:
        kind = user.__class__  # a lazy user's (SimpleLazyObject) is the wrapped one's
        label = f"{kind.__module__}.{kind.__qualname__}"
    return (label, pk)


def locale_of() -> tuple[str | None, str]:
    """The active language and time zone: DRF renders text and datetimes in them."""
    return translation.get_language(), timezone.get_current_timezone_name()


class ResponseVariantKeyField(CacheKeyField):
    """What the request negotiated, beyond its URL.

    - the media type DRF's content negotiation picked
      (``request.accepted_media_type``): JSON and the browsable API differ;
      for a plain Django request, which nothing negotiated for, the whole
      ``Accept`` header the client sent (the view may choose by it);
    - the API version (``request.version``): header and host-name versioning
      leave the URL as it is;
    - the active language and time zone;
    - the user's kind and primary key when the request is authenticated
      (:func:`user_key`; anonymous requests share entries);
    - positional URL arguments (unnamed regex groups), which
      ``ViewKwargsKeyField`` does not see;
    - the method: a view may render HEAD differently (an empty body), and a
      GET must never be served that;
    - the scheme, host (``request.get_host()``) and path, as
      ``build_absolute_uri`` reads them: absolute URLs rendered for one
      host, or over plain HTTP, must never reach another host, or an HTTPS
      request; and a paginator's ``next`` link rendered for ``/api/v1/items/``
      must never reach ``/api/items/`` when both route to the view with the
      same URL kwargs. A Host that ``ALLOWED_HOSTS`` refuses is refused here,
      as any absolute URL would be.
    """

    def __init__(self, request_arg: str = "request", **options: bool) -> None:
        super().__init__(**options)
        self.request_arg = request_arg

    def options(self) -> tuple[Any, ...]:
        return (self.request_arg,)

    def needs(self, signature: inspect.Signature) -> set[str]:
        # Said explicitly so invalidation rules know the field reads only the request.
        return {self.request_arg} & set(signature.parameters)

    def payload(self, bound: Mapping[str, Any], shape: CallShape) -> dict[str, Any]:
        request = shape.keyword(bound, self.request_arg)
        language, time_zone = getattr(request, LOCALE_ATTR, None) or locale_of()
        user = user_key(request)
        payload = {
            "media_type": getattr(request, "accepted_media_type", CACHE_MISSING),
            "version": getattr(request, "version", None),
            "language": language,
            "time_zone": time_zone,
            # An authenticated user without a pk is served live; keying it
            # as missing keeps a key-only call (get_cache_key) working.
            "user": user,
            "url_args": tuple(bound.get(shape.var_positional, ())),
            "method": getattr(request, "method", None),
            "scheme": getattr(request, "scheme", None),
            "host": _host(request),
            "path": getattr(request, "path", None),
        }
        headers = getattr(request, "headers", None)
        if not is_drf_request(request) and isinstance(headers, Mapping):
            # A plain Django view negotiates for itself, if at all: key what it may read.
            payload["accept"] = headers.get("Accept")
        return payload


def _host(request: Any) -> str | None:
    """The host (and port) the request was sent to, validated by Django."""
    get_host = getattr(request, "get_host", None)
    return get_host() if callable(get_host) else None


_variants: dict[tuple[type, str], type[KeyConstructor]] = {}
_variants_lock = ProcessLock()
_defaults: dict[str, type[KeyConstructor]] = {}


def default_constructor(request_arg: str) -> type[KeyConstructor]:
    """:class:`ResponseCacheKeyConstructor`, reading the request from the
    handler's parameter ``request_arg``: a handler may name it ``req``, and
    the default must neither look for a ``request`` it lacks nor key the
    request itself as a URL kwarg. The same namespace and owner, so its keys
    and ``wipe()`` are the default's."""
    if request_arg == "request":
        return ResponseCacheKeyConstructor
    with _variants_lock:
        made = _defaults.get(request_arg)
        if made is None:
            base = ResponseCacheKeyConstructor
            owner = base.get_owner()
            made = KeyConstructorMeta(
                base.__name__,
                (base,),
                {
                    "query_params": QueryParamsKeyField(
                        "*", request_arg=request_arg, hash_value=True
                    ),
                    "path_params": ViewKwargsKeyField("*", request_arg=request_arg, partition=True),
                    "__module__": base.__module__,
                    "__qualname__": base.__qualname__,
                    "get_owner": classmethod(lambda cls: owner),
                },
            )
            _defaults[request_arg] = made
    return made


def check_request_not_keyed(key_constructor: Any, func: Any, request_arg: str) -> None:
    """Refuses, at decoration, a ``ViewKwargsKeyField`` that would key the
    handler's request as a URL kwarg (it skips a parameter named
    ``request`` unless told another name): every call would fail to encode
    the request, a 500 on every request instead of an error now."""
    signature = inspect.signature(func)
    for name, field in resolve(key_constructor).get_fields().items():
        if isinstance(field, ViewKwargsKeyField) and request_arg in field.needs(signature):
            raise TypeError(
                f"{type(resolve(key_constructor)).__qualname__}.{name} is a ViewKwargsKeyField "
                f"that would key {func.__qualname__}()'s request parameter {request_arg!r} as "
                f"a URL kwarg: give it request_arg={request_arg!r}, or name the parameter "
                "'request'."
            )


def with_variant(key_constructor: Any, request_arg: str) -> KeyConstructor:
    """``key_constructor`` (anything ``cache_result`` accepts) plus the variant field.

    The result is a subclass of the given constructor with the same name,
    ``Meta`` and owner, so ``wipe()`` and ``delete_previous_versions()`` on
    the given constructor still reach the responses it keys.
    """
    base = type(resolve(key_constructor))
    if VARIANT_FIELD in base._declared_fields:
        raise TypeError(
            f"{base.__qualname__} declares a field named {VARIANT_FIELD!r}; cache_response "
            "adds a field of that name itself: rename yours."
        )
    with _variants_lock:
        made = _variants.get((base, request_arg))
        if made is None:
            owner = base.get_owner()
            made = KeyConstructorMeta(
                base.__name__,
                (base,),
                {
                    VARIANT_FIELD: ResponseVariantKeyField(request_arg),
                    "__module__": base.__module__,
                    "__qualname__": base.__qualname__,
                    "get_owner": classmethod(lambda cls: owner),
                },
            )
            _variants[(base, request_arg)] = made
    return made()
