"""A request made outside DRF's dispatch, prepared as dispatch would.

drf-restflow documents calling a cached handler's methods with a bare view
and a plain Django request (``MyView.get.delete_cache(MyView(), request,
pk=1)``): in a test, a management command, a signal handler. The key of a
cached response depends on what DRF negotiated for its request (the media
type, the API version, the user), so such a request is first prepared the
way ``APIView.dispatch`` and ``APIView.initial`` prepare one: wrapped in
DRF's ``Request``, its content negotiated, its version determined. The user
is authenticated lazily, when the key reads ``request.user``; permissions
and throttles are not checked (the caller is the application, not a client).
"""

from __future__ import annotations

from typing import Any

__all__ = ["can_negotiate", "negotiate"]


def can_negotiate(view: Any) -> bool:
    """Whether ``view`` is a DRF view that can prepare a request itself."""
    return all(
        hasattr(view, name)
        for name in ("initialize_request", "perform_content_negotiation", "determine_version")
    )


def negotiate(
    view: Any, request: Any, handler_name: str, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    """The DRF ``Request`` that ``view``'s dispatch would hand its handler for
    the Django ``request`` with URL ``args`` / ``kwargs``; ``view`` is left
    set up for it, as dispatch leaves it (``request``, ``headers``,
    ``format_kwarg``), so the handler's response can be finalized."""
    from rest_framework.viewsets import ViewSetMixin

    if isinstance(view, ViewSetMixin) and getattr(view, "action_map", None) is None:
        # as_view({"get": "retrieve"}) gives a ViewSet its actions; a bare one
        # is being asked about this handler.
        view.action_map = {request.method.lower(): handler_name}
    view.setup(request, *args, **kwargs)
    drf_request = view.initialize_request(request, *args, **kwargs)
    view.request = drf_request
    view.headers = view.default_response_headers
    view.format_kwarg = view.get_format_suffix(**kwargs)
    renderer, media_type = view.perform_content_negotiation(drf_request)
    drf_request.accepted_renderer, drf_request.accepted_media_type = renderer, media_type
    version, scheme = view.determine_version(drf_request, *args, **kwargs)
    drf_request.version, drf_request.versioning_scheme = version, scheme
    return drf_request
