"""The spec's APIView written as an adrf (async DRF) view."""

from adrf.views import APIView
from django.urls import path
from rest_framework.response import Response

from restflow.caching import cache_result, set_response_cache_header

calls: list[int] = []


@cache_result(ttl=300)
async def get_user_payload(user_id: int):
    calls.append(user_id)
    return {"id": user_id, "n": len(calls)}


class UserView(APIView):
    async def get(self, request, user_id):
        value, metadata = await get_user_payload.aget_with_metadata(user_id)
        response = Response(value)
        return set_response_cache_header(response, metadata)


urlpatterns = [path("users/<int:user_id>/", UserView.as_view())]
