"""A URLconf with Django async views over an ``async def`` cached payload
(``@pytest.mark.urls("tests.async_views")`` in tests/test_async.py)."""

import asyncio
import json

from django.http import HttpResponse
from django.urls import path

from restflow.caching import cache_result, set_response_cache_header

calls: list[int] = []


@cache_result(ttl=300)
async def get_user_payload(user_id: int):
    calls.append(user_id)
    await asyncio.sleep(0.05)  # a slow query, awaited: keeps the computation in flight
    return {"id": user_id, "name": f"user {user_id}", "version": len(calls)}


async def user_view(request, user_id):
    value, metadata = await get_user_payload.aget_with_metadata(user_id)
    response = HttpResponse(json.dumps(value), content_type="application/json")
    return set_response_cache_header(response, metadata)


urlpatterns = [
    path("async-users/<int:user_id>/", user_view),
]
