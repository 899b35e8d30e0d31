"""A URLconf with Django async views over an ``async def`` cached payload
(``@pytest.mark.urls("tests.async_views")`` in tests/test_async.py)."""

import json

from django.http import HttpResponse
from django.urls import path

from restflow.caching import cache_result, set_response_cache_header
from tests.parking import Gate

calls: list[int] = []
#: Closed by a test that needs the query in flight while other requests arrive.
gate = Gate()


@cache_result(ttl=300)
async def get_user_payload(user_id: int):
    calls.append(user_id)
    await gate.passed()  # a slow query, awaited
    return {"id": user_id, "name": f"user {user_id}", "version": len(calls)}


async def user_view(request, user_id):
    value, metadata = await get_user_payload.aget_with_metadata(user_id)
    response = HttpResponse(json.dumps(value), content_type="application/json")
    return set_response_cache_header(response, metadata)


urlpatterns = [
    path("async-users/<int:user_id>/", user_view),
]
