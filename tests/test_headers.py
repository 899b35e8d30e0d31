"""``set_response_cache_header(response, metadata)`` on its own.

Three kinds of response: DRF ``Response``, Django ``HttpResponse``, and a
plain object with a ``headers`` dict (standing in for Starlette / Flask).
"""

from __future__ import annotations

import enum
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.http import HttpResponse
from rest_framework.renderers import JSONRenderer
from rest_framework.response import Response

from restflow.caching import CacheStatus, set_response_cache_header
from restflow.caching.testing import frozen_clock

STATUS = "X-Cache-status"
CACHED_AT = "X-Cached-at"
RESET_AT = "X-Cache-reset-at"
CACHE_HEADERS = (STATUS, CACHED_AT, RESET_AT)

CACHED = "2026-11-27T04:12:17.071457+00:00"
RESET = "2026-11-27T04:17:17.071457+00:00"
OTHER = "2030-01-01T00:00:00+00:00"

FULL = {"cache_status": CacheStatus.HIT, "cached_at": CACHED, "reset_at": RESET}


class PlainResponse:
    """Any response type whose headers are a plain mapping."""

    def __init__(self) -> None:
        self.headers: dict[str, str] = {"Content-Type": "application/json"}


class OldStatus(str, enum.Enum):  # noqa: UP042 -- the old style is the point of the test
    """A str-mixin enum like the older pure-Python restflow's; its ``str()`` is
    ``"OldStatus.HIT"`` on Python 3.11+, unlike a ``StrEnum``'s."""

    HIT = "HIT"
    MISS = "MISS"


def make_drf() -> Response:
    return Response({"id": 1})


def make_django() -> HttpResponse:
    return HttpResponse(b"{}", content_type="application/json")


def make_plain() -> PlainResponse:
    return PlainResponse()


KINDS = [make_drf, make_django, make_plain]
KIND_IDS = ["drf", "django", "plain"]


@pytest.fixture(params=KINDS, ids=KIND_IDS)
def response(request):
    return request.param()


def written(response: Any) -> dict[str, str]:
    """The cache headers present on ``response``, by their spec names.

    Looked up by exact name: a plain dict is case-sensitive, Django's are not.
    """
    headers = response.headers
    return {name: headers[name] for name in CACHE_HEADERS if name in headers}


def all_headers(response: Any) -> dict[str, str]:
    return dict(response.headers.items())


# --- every header from its key ----------------------------------------------


def test_every_header_from_its_key(response):
    result = set_response_cache_header(response, FULL)

    assert result is response
    assert written(response) == {STATUS: "HIT", CACHED_AT: CACHED, RESET_AT: RESET}


def test_headers_are_not_swapped(response):
    """Distinct values per field so a header read from the wrong key shows."""
    metadata = {"cache_status": "MISS", "cached_at": CACHED, "reset_at": OTHER}
    set_response_cache_header(response, metadata)

    assert response.headers[STATUS] == "MISS"
    assert response.headers[CACHED_AT] == CACHED
    assert response.headers[RESET_AT] == OTHER


def test_other_headers_are_kept(response):
    before = all_headers(response)
    set_response_cache_header(response, FULL)
    after = all_headers(response)

    for name, value in before.items():
        assert after[name] == value
    assert len(after) == len(before) + 3


def test_django_response_item_access():
    """Django code reads headers as ``response["X-..."]``."""
    for response in (make_drf(), make_django()):
        set_response_cache_header(response, FULL)
        assert response["X-Cache-status"] == "HIT"
        assert response["x-cached-at"] == CACHED
        assert response["X-CACHE-RESET-AT"] == RESET


def test_existing_cache_headers_are_overwritten(response):
    set_response_cache_header(response, FULL)
    set_response_cache_header(
        response, {"cache_status": CacheStatus.MISS, "cached_at": OTHER, "reset_at": OTHER}
    )

    assert written(response) == {STATUS: "MISS", CACHED_AT: OTHER, RESET_AT: OTHER}


def test_rendered_drf_response_keeps_the_headers():
    response = set_response_cache_header(make_drf(), FULL)
    # Render as a view would, with a JSON renderer.
    response.accepted_renderer = JSONRenderer()
    response.accepted_media_type = "application/json"
    response.renderer_context = {}
    response.render()

    assert response.content == b'{"id":1}'
    assert written(response) == {STATUS: "HIT", CACHED_AT: CACHED, RESET_AT: RESET}


# --- missing fields, None, empty ---------------------------------------------


@pytest.mark.parametrize("missing", ["cache_status", "cached_at", "reset_at"])
@pytest.mark.parametrize("how", ["absent", "none"])
def test_a_missing_field_skips_its_header(response, missing, how):
    metadata = dict(FULL)
    if how == "absent":
        del metadata[missing]
    else:
        metadata[missing] = None
    header = {"cache_status": STATUS, "cached_at": CACHED_AT, "reset_at": RESET_AT}[missing]

    result = set_response_cache_header(response, metadata)

    assert result is response
    expected = {STATUS: "HIT", CACHED_AT: CACHED, RESET_AT: RESET}
    del expected[header]
    assert written(response) == expected
    assert header not in response.headers


def test_status_only_metadata_writes_only_the_status(response):
    set_response_cache_header(response, {"cache_status": CacheStatus.BYPASS})

    assert written(response) == {STATUS: "BYPASS"}


@pytest.mark.parametrize("metadata", [None, {}], ids=["None", "empty"])
def test_no_metadata_is_a_no_op(response, metadata):
    before = all_headers(response)

    result = set_response_cache_header(response, metadata)

    assert result is response
    assert all_headers(response) == before
    assert written(response) == {}


def test_all_fields_none_writes_nothing(response):
    before = all_headers(response)
    metadata = {"cache_status": None, "cached_at": None, "reset_at": None}

    assert set_response_cache_header(response, metadata) is response
    assert all_headers(response) == before


def test_metadata_is_not_modified(response):
    metadata = {"cache_status": CacheStatus.STALE, "cache_reset_at": RESET}
    copy = dict(metadata)

    set_response_cache_header(response, metadata)

    assert metadata == copy
    assert metadata["cache_status"] is CacheStatus.STALE


# --- the status word ----------------------------------------------------------


@pytest.mark.parametrize("status", list(CacheStatus), ids=[s.value for s in CacheStatus])
def test_status_member_is_written_as_the_bare_word(response, status):
    set_response_cache_header(response, {"cache_status": status})

    value = response.headers[STATUS]
    assert value == status.value
    assert type(value) is str
    assert "CacheStatus" not in value


@pytest.mark.parametrize("status", ["HIT", "MISS", "STALE", "BYPASS", "REFRESH"])
def test_plain_string_status_is_written_as_is(response, status):
    set_response_cache_header(response, {"cache_status": status})

    assert response.headers[STATUS] == status


@pytest.mark.parametrize("status", list(OldStatus), ids=[s.value for s in OldStatus])
def test_str_mixin_enum_status_is_written_as_its_value(response, status):
    set_response_cache_header(response, {"cache_status": status})

    assert response.headers[STATUS] == status.value
    assert "OldStatus" not in response.headers[STATUS]


# --- the older reset key -------------------------------------------------------


def test_cache_reset_at_is_an_alias_for_reset_at(response):
    metadata = {"cache_status": "HIT", "cached_at": CACHED, "cache_reset_at": RESET}

    set_response_cache_header(response, metadata)

    assert written(response) == {STATUS: "HIT", CACHED_AT: CACHED, RESET_AT: RESET}


def test_reset_at_wins_over_the_alias(response):
    metadata = {"cache_status": "HIT", "reset_at": RESET, "cache_reset_at": OTHER}

    set_response_cache_header(response, metadata)

    assert response.headers[RESET_AT] == RESET


def test_alias_alone_writes_only_the_reset_header(response):
    set_response_cache_header(response, {"cache_reset_at": RESET})

    assert written(response) == {RESET_AT: RESET}


# --- no header injection -------------------------------------------------------

INJECTIONS = [
    "\r\nSet-Cookie: session=evil",
    "\nSet-Cookie: session=evil",
    "\rSet-Cookie: session=evil",
    "\r\n\r\n<html>",
]


@pytest.mark.parametrize("key", ["cache_status", "cached_at", "reset_at", "cache_reset_at"])
@pytest.mark.parametrize("tail", INJECTIONS, ids=["crlf", "lf", "cr", "body"])
def test_cr_lf_never_reach_a_header(response, key, tail):
    metadata: dict[str, Any] = {key: CACHED + tail}

    result = set_response_cache_header(response, metadata)

    assert result is response
    header = {
        "cache_status": STATUS,
        "cached_at": CACHED_AT,
        "reset_at": RESET_AT,
        "cache_reset_at": RESET_AT,
    }[key]
    assert header in response.headers
    for name, value in all_headers(response).items():
        assert "\r" not in value, name
        assert "\n" not in value, name
        assert "\r" not in name and "\n" not in name
    assert "Set-Cookie" not in response.headers
    assert written(response).keys() == {header}


def test_cr_lf_in_every_field_at_once(response):
    metadata = {
        "cache_status": "HIT\r\nX-Evil: 1",
        "cached_at": "\n" + CACHED,
        "reset_at": RESET + "\r",
    }

    set_response_cache_header(response, metadata)

    values = written(response)
    assert values.keys() == set(CACHE_HEADERS)
    for value in values.values():
        assert "\r" not in value
        assert "\n" not in value
    assert "X-Evil" not in response.headers


# --- odd metadata values ------------------------------------------------------------------

T0 = datetime(2026, 11, 27, 4, 12, 17, tzinfo=UTC)


def test_a_datetime_is_written_as_its_iso_text(response):
    metadata = {"cache_status": "HIT", "cached_at": T0, "reset_at": T0 + timedelta(seconds=300)}

    set_response_cache_header(response, metadata)

    assert written(response) == {
        STATUS: "HIT",
        CACHED_AT: "2026-11-27T04:12:17+00:00",
        RESET_AT: "2026-11-27T04:17:17+00:00",
    }


@pytest.mark.parametrize("times", ["iso", "datetime"])
def test_cache_status_reads_iso_text_datetimes_and_the_alias(response, times):
    stored, resets = T0, T0 + timedelta(seconds=300)
    if times == "iso":
        stored, resets = stored.isoformat(), resets.isoformat()
    metadata = {"cache_status": "HIT", "cached_at": stored, "cache_reset_at": resets}

    with frozen_clock(T0 + timedelta(seconds=12)):
        set_response_cache_header(response, metadata, cache_status=True)

    headers = all_headers(response)
    assert (headers["Cache-Status"], headers["Age"]) == ("restflow; hit; ttl=288", "12")
    assert headers[RESET_AT] == "2026-11-27T04:17:17+00:00"


@pytest.mark.parametrize(
    ("key", "value"),
    [("cached_at", "yesterday"), ("reset_at", 1_764_216_737), ("cache_reset_at", "soon")],
)
def test_an_unreadable_time_is_a_clear_error_that_writes_nothing(response, key, value):
    metadata = {"cache_status": "HIT", "cached_at": CACHED, "reset_at": RESET}
    if key == "cache_reset_at":
        del metadata["reset_at"]
    metadata[key] = value
    before = dict(all_headers(response))

    with pytest.raises(ValueError, match=rf"metadata\['{key}'\] must be an ISO-8601 time"):
        set_response_cache_header(response, metadata, cache_status=True)

    assert dict(all_headers(response)) == before
