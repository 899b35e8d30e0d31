"""The spec's views, end to end through DRF's test client.

The function view (``/users/<id>/``) and the ``APIView`` (``/class-users/<id>/``)
run the spec's code unchanged; ``/users/<id>/refresh/`` and ``/users/<id>/bypass/``
produce REFRESH and BYPASS. ``get_user_payload`` has ``ttl=300`` and the project
settings give a 60 s stale window. Expiry is driven by the frozen engine clock.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest
from rest_framework.test import APIClient

from restflow.caching import CacheStatus, cache_result
from restflow.caching.testing import frozen_clock, wait_for_refreshes
from tests.django_project import views

TTL = timedelta(seconds=300)
STALE_WINDOW = timedelta(seconds=60)

URLS = ["/users/{}/", "/class-users/{}/"]
URL_IDS = ["function-view", "api-view"]

STATUS = "X-Cache-status"
CACHED_AT = "X-Cached-at"
RESET_AT = "X-Cache-reset-at"

METADATA_KEYS = {"cache_status", "cached_at", "reset_at"}


# Extra decorated functions live at module level (their dotted path is their id).
@cache_result(ttl=None)
def forever(x: int) -> dict:
    return {"x": x}


# --- helpers -----------------------------------------------------------------


@pytest.fixture
def client() -> APIClient:
    return APIClient()


@pytest.fixture
def computed(monkeypatch) -> list[dict]:
    """Every payload ``expensive_lookup`` returns, in order.

    ``get_user_payload`` looks ``expensive_lookup`` up in the views module at
    call time, so wrapping it there records what the cache was given.
    """
    produced: list[dict] = []
    original = views.expensive_lookup

    def recording(user_id: int) -> dict:
        payload = original(user_id)
        produced.append(payload)
        return payload

    monkeypatch.setattr(views, "expensive_lookup", recording)
    return produced


def parse_timestamp(header: str) -> datetime:
    """Parses a timestamp header, checking it is ``isoformat()`` of an aware UTC datetime."""
    parsed = datetime.fromisoformat(header)
    assert parsed.tzinfo is not None, header
    assert parsed.utcoffset() == timedelta(0), header
    assert header.endswith("+00:00"), header
    assert header == parsed.isoformat(), header
    return parsed


def fetch(client: APIClient, url: str, user_id: int = 7):
    response = client.get(url.format(user_id))
    assert response.status_code == 200, response.content
    return response


def assert_cached_headers(response, status: str) -> tuple[datetime, datetime]:
    """Checks status and both timestamps; returns (cached_at, reset_at)."""
    assert response[STATUS] == status
    cached_at = parse_timestamp(response[CACHED_AT])
    reset_at = parse_timestamp(response[RESET_AT])
    assert reset_at - cached_at == TTL
    return cached_at, reset_at


# --- MISS, HIT ---------------------------------------------------------------


@pytest.mark.parametrize("url", URLS, ids=URL_IDS)
def test_first_request_is_a_miss_with_timestamps(client, computed, url):
    start = len(views.calls)
    with frozen_clock() as clock:
        now = clock.now()
        response = fetch(client, url)

    assert response[STATUS] == "MISS"
    cached_at, reset_at = assert_cached_headers(response, "MISS")
    assert cached_at == now
    assert response[CACHED_AT] == now.isoformat()
    assert reset_at == now + TTL
    assert views.calls[start:] == [7]
    assert len(computed) == 1
    assert response.json() == computed[0]
    assert computed[0]["id"] == 7


@pytest.mark.parametrize("url", URLS, ids=URL_IDS)
def test_second_request_is_a_hit_with_the_same_value(client, computed, url):
    start = len(views.calls)
    with frozen_clock() as clock:
        first = fetch(client, url)
        clock.advance(10)
        second = fetch(client, url)

    assert first[STATUS] == "MISS"
    assert second[STATUS] == "HIT"
    assert second[CACHED_AT] == first[CACHED_AT]
    assert second[RESET_AT] == first[RESET_AT]
    assert second.json() == first.json() == computed[0]
    assert views.calls[start:] == [7]


@pytest.mark.parametrize(
    "timestamp",
    [
        datetime(2026, 1, 1, tzinfo=UTC),
        datetime(2026, 11, 27, 4, 12, 17, 71457, tzinfo=UTC),
        datetime(2026, 6, 30, 23, 59, 59, 999999, tzinfo=UTC),
        datetime(2026, 6, 30, 12, 0, 0, 1, tzinfo=UTC),
    ],
    ids=["whole-second", "spec-example", "max-micro", "one-micro"],
)
def test_timestamps_are_printed_like_isoformat(client, timestamp):
    with frozen_clock(timestamp):
        response = fetch(client, URLS[0])

    assert response[CACHED_AT] == timestamp.isoformat()
    assert response[RESET_AT] == (timestamp + TTL).isoformat()


# --- STALE, then the background refresh -------------------------------------


@pytest.mark.parametrize("url", URLS, ids=URL_IDS)
def test_stale_is_served_then_refreshed(client, computed, url):
    start = len(views.calls)
    with frozen_clock() as clock:
        first = fetch(client, url)
        clock.advance(301)
        refreshed_at = clock.now()
        stale = fetch(client, url)

        assert stale[STATUS] == "STALE"
        assert stale[CACHED_AT] == first[CACHED_AT]
        assert stale[RESET_AT] == first[RESET_AT]
        assert stale.json() == first.json() == computed[0]

        wait_for_refreshes()
        clock.advance(5)
        after = fetch(client, url)

    assert after[STATUS] == "HIT"
    cached_at, reset_at = assert_cached_headers(after, "HIT")
    assert cached_at == refreshed_at
    assert cached_at > parse_timestamp(first[CACHED_AT])
    assert reset_at == refreshed_at + TTL
    assert len(computed) == 2
    assert after.json() == computed[1]
    assert after.json()["version"] > first.json()["version"]
    assert views.calls[start:] == [7, 7]


@pytest.mark.parametrize("url", URLS, ids=URL_IDS)
def test_stale_does_not_wait_for_the_refresh_and_refreshes_once(client, monkeypatch, url):
    """STALE answers while the refresh is still running; a second STALE call
    during that refresh starts no second one."""
    original = views.expensive_lookup
    gate = threading.Event()
    started = threading.Event()
    finished = threading.Event()
    blocking = {"on": False}

    def lookup(user_id: int) -> dict:
        if not blocking["on"]:
            return original(user_id)
        started.set()
        gate.wait(timeout=10)
        try:
            return original(user_id)
        finally:
            finished.set()

    monkeypatch.setattr(views, "expensive_lookup", lookup)
    start = len(views.calls)
    try:
        with frozen_clock() as clock:
            first = fetch(client, url)
            clock.advance(301)
            blocking["on"] = True
            stale = fetch(client, url)
            again = fetch(client, url)

            # Both answered while the refresh was still blocked.
            assert not finished.is_set()
            assert stale[STATUS] == "STALE"
            assert again[STATUS] == "STALE"
            assert stale.json() == again.json() == first.json()
            assert started.wait(timeout=5), "no background refresh started"
    finally:
        gate.set()
    wait_for_refreshes()

    assert finished.is_set()
    assert views.calls[start:] == [7, 7]


def test_stale_window_boundaries(client):
    """HIT before ttl; STALE from exactly ttl."""
    with frozen_clock(datetime(2026, 3, 1, tzinfo=UTC)) as clock:
        fetch(client, URLS[0])
        clock.advance(299)
        assert fetch(client, URLS[0])[STATUS] == "HIT"
        clock.advance(1)
        assert fetch(client, URLS[0])[STATUS] == "STALE"


def test_last_second_of_the_stale_window_is_stale(client):
    with frozen_clock(datetime(2026, 3, 1, tzinfo=UTC)) as clock:
        first = fetch(client, URLS[0])
        clock.advance(TTL + STALE_WINDOW - timedelta(seconds=1))
        response = fetch(client, URLS[0])

    assert response[STATUS] == "STALE"
    assert response[CACHED_AT] == first[CACHED_AT]
    assert response.json() == first.json()


@pytest.mark.parametrize("url", URLS, ids=URL_IDS)
@pytest.mark.parametrize("past", [timedelta(0), timedelta(seconds=1), timedelta(days=2)])
def test_miss_again_after_the_stale_window(client, computed, url, past):
    start = len(views.calls)
    with frozen_clock() as clock:
        first = fetch(client, url)
        clock.advance(TTL + STALE_WINDOW + past)
        now = clock.now()
        response = fetch(client, url)

    assert response[STATUS] == "MISS"
    cached_at, reset_at = assert_cached_headers(response, "MISS")
    assert cached_at == now
    assert cached_at == parse_timestamp(first[CACHED_AT]) + TTL + STALE_WINDOW + past
    assert reset_at == now + TTL
    assert views.calls[start:] == [7, 7]
    assert response.json() == computed[1]
    assert response.json()["version"] > first.json()["version"]


# --- REFRESH -----------------------------------------------------------------


@pytest.mark.parametrize("url", URLS, ids=URL_IDS)
def test_refresh_overwrites_the_entry(client, computed, url):
    start = len(views.calls)
    with frozen_clock() as clock:
        first = fetch(client, url)
        clock.advance(42)
        refreshed_at = clock.now()
        refreshed = fetch(client, "/users/{}/refresh/")
        clock.advance(3)
        after = fetch(client, url)

    assert refreshed[STATUS] == "REFRESH"
    cached_at, reset_at = assert_cached_headers(refreshed, "REFRESH")
    assert cached_at == refreshed_at
    assert cached_at != parse_timestamp(first[CACHED_AT])
    assert reset_at == refreshed_at + TTL
    assert refreshed.json() == computed[1]
    assert refreshed.json()["version"] > first.json()["version"]
    assert views.calls[start:] == [7, 7]

    assert after[STATUS] == "HIT"
    assert after[CACHED_AT] == refreshed[CACHED_AT]
    assert after[RESET_AT] == refreshed[RESET_AT]
    assert after.json() == refreshed.json()
    assert views.calls[start:] == [7, 7]


def test_refresh_without_an_entry_stores_one(client):
    start = len(views.calls)
    with frozen_clock():
        refreshed = fetch(client, "/users/{}/refresh/")
        after = fetch(client, URLS[0])

    assert refreshed[STATUS] == "REFRESH"
    assert after[STATUS] == "HIT"
    assert after[CACHED_AT] == refreshed[CACHED_AT]
    assert after.json() == refreshed.json()
    assert views.calls[start:] == [7]


# --- BYPASS ------------------------------------------------------------------


@pytest.mark.parametrize("url", URLS, ids=URL_IDS)
def test_bypass_computes_live_and_leaves_the_entry(client, computed, url):
    start = len(views.calls)
    with frozen_clock() as clock:
        first = fetch(client, url)
        clock.advance(30)
        bypass = fetch(client, "/users/{}/bypass/")
        clock.advance(30)
        after = fetch(client, url)

    assert bypass[STATUS] == "BYPASS"
    assert CACHED_AT not in bypass.headers
    assert RESET_AT not in bypass.headers
    assert bypass.json() == computed[1]
    assert bypass.json()["version"] > first.json()["version"]
    assert views.calls[start:] == [7, 7]

    assert after[STATUS] == "HIT"
    assert after[CACHED_AT] == first[CACHED_AT]
    assert after[RESET_AT] == first[RESET_AT]
    assert after.json() == first.json() == computed[0]
    assert views.calls[start:] == [7, 7]


def test_bypass_writes_nothing(client):
    start = len(views.calls)
    with frozen_clock():
        bypass = fetch(client, "/users/{}/bypass/")
        after = fetch(client, URLS[0])

    assert bypass[STATUS] == "BYPASS"
    assert after[STATUS] == "MISS"
    assert after.json()["version"] > bypass.json()["version"]
    assert views.calls[start:] == [7, 7]


# --- one entry per call, shared by both views --------------------------------


@pytest.mark.parametrize(
    ("first_url", "second_url"), [URLS, URLS[::-1]], ids=["fn-then-cls", "cls-then-fn"]
)
def test_both_views_share_one_entry(client, first_url, second_url):
    start = len(views.calls)
    with frozen_clock():
        first = fetch(client, first_url)
        second = fetch(client, second_url)

    assert first[STATUS] == "MISS"
    assert second[STATUS] == "HIT"
    assert second[CACHED_AT] == first[CACHED_AT]
    assert second.json() == first.json()
    assert views.calls[start:] == [7]


@pytest.mark.parametrize("url", URLS, ids=URL_IDS)
def test_different_user_ids_are_different_entries(client, url):
    start = len(views.calls)
    with frozen_clock() as clock:
        seven = fetch(client, url, 7)
        clock.advance(1)
        eight = fetch(client, url, 8)
        seven_again = fetch(client, url, 7)
        eight_again = fetch(client, url, 8)

    assert seven[STATUS] == "MISS"
    assert eight[STATUS] == "MISS"
    assert seven.json()["id"] == 7
    assert eight.json()["id"] == 8
    assert eight[CACHED_AT] != seven[CACHED_AT]
    assert seven_again[STATUS] == "HIT"
    assert eight_again[STATUS] == "HIT"
    assert seven_again.json() == seven.json()
    assert eight_again.json() == eight.json()
    assert seven_again[CACHED_AT] == seven[CACHED_AT]
    assert eight_again[CACHED_AT] == eight[CACHED_AT]
    assert views.calls[start:] == [7, 8]


# --- the status header is the bare word --------------------------------------


def test_every_status_header_is_the_bare_word(client):
    seen: dict[str, str] = {}
    with frozen_clock() as clock:
        seen["MISS"] = fetch(client, URLS[0])[STATUS]
        seen["HIT"] = fetch(client, URLS[1])[STATUS]
        clock.advance(301)
        seen["STALE"] = fetch(client, URLS[0])[STATUS]
        wait_for_refreshes()
        seen["REFRESH"] = fetch(client, "/users/{}/refresh/")[STATUS]
        seen["BYPASS"] = fetch(client, "/users/{}/bypass/")[STATUS]

    assert seen == {word: word for word in ("MISS", "HIT", "STALE", "REFRESH", "BYPASS")}
    assert set(seen) == {member.value for member in CacheStatus}
    for value in seen.values():
        assert "CacheStatus" not in value
        assert "." not in value


# --- the metadata dict itself ------------------------------------------------


def test_metadata_on_miss_and_hit():
    payload = views.get_user_payload
    with frozen_clock() as clock:
        now = clock.now()
        value, miss = payload.get_with_metadata(7)
        clock.advance(1)
        hit_value, hit = payload.get_with_metadata(7)

    assert set(miss) == METADATA_KEYS
    assert miss["cache_status"] is CacheStatus.MISS
    assert miss["cache_status"] == "MISS"
    assert miss["cached_at"] == now.isoformat()
    assert miss["reset_at"] == (now + TTL).isoformat()

    assert set(hit) == METADATA_KEYS
    assert hit["cache_status"] is CacheStatus.HIT
    assert hit["cache_status"] == "HIT"
    assert hit["cached_at"] == miss["cached_at"]
    assert hit["reset_at"] == miss["reset_at"]
    assert hit_value == value


def test_metadata_on_stale_and_refresh():
    payload = views.get_user_payload
    with frozen_clock() as clock:
        _, miss = payload.get_with_metadata(7)
        clock.advance(301)
        _, stale = payload.get_with_metadata(7)
        wait_for_refreshes()
        clock.advance(1)
        now = clock.now()
        _, refresh = payload.refresh_with_metadata(7)

    assert set(stale) == METADATA_KEYS
    assert stale["cache_status"] is CacheStatus.STALE
    assert stale["cached_at"] == miss["cached_at"]
    assert stale["reset_at"] == miss["reset_at"]

    assert set(refresh) == METADATA_KEYS
    assert refresh["cache_status"] is CacheStatus.REFRESH
    assert refresh["cached_at"] == now.isoformat()
    assert refresh["reset_at"] == (now + TTL).isoformat()


def test_metadata_on_bypass_has_only_the_status():
    start = len(views.calls)
    value, metadata = views.get_user_payload.bypass_cache_with_metadata(7)

    assert metadata == {"cache_status": CacheStatus.BYPASS}
    assert metadata["cache_status"] is CacheStatus.BYPASS
    assert set(metadata) == {"cache_status"}
    assert value["id"] == 7
    assert views.calls[start:] == [7]


def test_metadata_without_ttl_has_no_reset_at():
    with frozen_clock() as clock:
        now = clock.now()
        value, miss = forever.get_with_metadata(3)
        clock.advance(timedelta(days=3650))
        hit_value, hit = forever.get_with_metadata(3)
        _, refresh = forever.refresh_with_metadata(3)

    assert value == hit_value == {"x": 3}
    assert set(miss) == {"cache_status", "cached_at"}
    assert "reset_at" not in miss
    assert miss["cache_status"] is CacheStatus.MISS
    assert miss["cached_at"] == now.isoformat()
    assert set(hit) == {"cache_status", "cached_at"}
    assert hit["cache_status"] is CacheStatus.HIT
    assert hit["cached_at"] == miss["cached_at"]
    assert set(refresh) == {"cache_status", "cached_at"}
    assert refresh["cache_status"] is CacheStatus.REFRESH
    assert None not in miss.values()
    assert None not in hit.values()
    assert None not in refresh.values()
