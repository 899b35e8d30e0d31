"""The spec's view as an adrf async APIView, through Django's async client."""

import pytest
from asgiref.sync import async_to_sync
from django.test import AsyncClient

from tests import adrf_views

pytestmark = pytest.mark.urls("tests.adrf_views")


@pytest.fixture(autouse=True)
def _reset():
    adrf_views.calls.clear()


def test_miss_then_hit_with_the_same_cached_at():
    async def scenario():
        client = AsyncClient()
        first = await client.get("/users/3/")
        second = await client.get("/users/3/")
        return first, second

    first, second = async_to_sync(scenario)()
    assert first.status_code == 200
    assert first.json() == {"id": 3, "n": 1}
    assert first.headers["X-Cache-status"] == "MISS"
    assert second.headers["X-Cache-status"] == "HIT"
    assert second.headers["X-Cached-at"] == first.headers["X-Cached-at"]
    assert second.json() == first.json()
    assert adrf_views.calls == [3]
