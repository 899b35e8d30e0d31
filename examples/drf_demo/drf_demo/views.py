"""The spec's views, with a short ttl so every cache status shows up in seconds.

Both views read the same cached function, so ``/users/1/`` and
``/class/users/1/`` share one entry; use a different user id per route to
watch each one start from MISS.

``?refresh=1`` forces a recompute (status REFRESH) and ``?bypass=1`` skips
the cache (status BYPASS); without either, the call is the spec's
``get_with_metadata`` (HIT, MISS or STALE).
"""

import itertools
import time
from datetime import UTC, datetime

from rest_framework.decorators import api_view
from rest_framework.response import Response
from rest_framework.views import APIView

from restflow.caching import cache_result, set_response_cache_header

# One number per computation in this process, so a refresh is easy to spot.
_versions = itertools.count(1)


def expensive_lookup(user_id: int) -> dict:
    """Stands in for a slow query (0.2 s), stamped so you can tell computations apart."""
    time.sleep(0.2)
    return {
        "id": user_id,
        "name": f"user {user_id}",
        "version": next(_versions),
        "computed_at": datetime.now(UTC).isoformat(),
    }


# The spec uses ttl=300. The demo shortens it to 5 seconds, and adds a 30-second
# stale window, so a person with curl sees MISS, HIT, STALE and the refreshed
# HIT within about 15 seconds instead of waiting five minutes.
@cache_result(ttl=5, stale_while_revalidate=30)
def get_user_payload(user_id: int):
    return expensive_lookup(user_id)


def lookup_with_metadata(request, user_id):
    """The spec's ``get_with_metadata`` call, or REFRESH / BYPASS when the query asks."""
    if request.query_params.get("refresh") == "1":
        return get_user_payload.refresh_with_metadata(user_id)
    if request.query_params.get("bypass") == "1":
        return get_user_payload.bypass_cache_with_metadata(user_id)
    return get_user_payload.get_with_metadata(user_id)


@api_view(["GET"])
def user_view(request, user_id):
    """The spec's function view, plus the two query flags."""
    value, metadata = lookup_with_metadata(request, user_id)
    response = Response(value)
    return set_response_cache_header(response, metadata)


class UserView(APIView):
    """The spec's class-based view, plus the same two query flags."""

    def get(self, request, user_id):
        value, metadata = lookup_with_metadata(request, user_id)
        response = Response(value)
        return set_response_cache_header(response, metadata)
