"""The spec page's views, verbatim, plus views that ask for REFRESH and BYPASS."""

import itertools
import threading

from rest_framework.decorators import api_view
from rest_framework.response import Response
from rest_framework.views import APIView

from restflow.caching import cache_result, set_response_cache_header

_versions = itertools.count(1)
_lock = threading.Lock()
calls: list[int] = []


def expensive_lookup(user_id: int) -> dict:
    """Stands in for a slow query; each computation gets a new version number."""
    with _lock:
        calls.append(user_id)
        version = next(_versions)
    return {"id": user_id, "name": f"user {user_id}", "version": version}


# --- the spec, unchanged ---------------------------------------------------


@cache_result(ttl=300)
def get_user_payload(user_id: int):
    return expensive_lookup(user_id)


@api_view(["GET"])
def user_view(request, user_id):
    value, metadata = get_user_payload.get_with_metadata(user_id)
    response = Response(value)
    return set_response_cache_header(response, metadata)


class UserView(APIView):
    def get(self, request, user_id):
        value, metadata = get_user_payload.get_with_metadata(user_id)
        response = Response(value)
        return set_response_cache_header(response, metadata)


# --- the other two statuses ------------------------------------------------


@api_view(["GET"])
def user_refresh_view(request, user_id):
    value, metadata = get_user_payload.refresh_with_metadata(user_id)
    return set_response_cache_header(Response(value), metadata)


@api_view(["GET"])
def user_bypass_view(request, user_id):
    value, metadata = get_user_payload.bypass_cache_with_metadata(user_id)
    return set_response_cache_header(Response(value), metadata)
