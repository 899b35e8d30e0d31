"""The HTTP caching headers of ``cache_response`` (issue 15, item 4) on Redis.

The tests are those of ``tests/test_cache_response_http.py``; here their
``store`` fixture points the cache at a real redis-server, so the stored
``ETag`` and the entry's times survive the serializer and a round trip.
"""

import pytest

from tests.test_cache_response_http import (
    _fresh_runs,
    test_a_matching_if_none_match_is_a_304_without_running_the_view,
    test_a_response_cache_if_refuses_is_a_miss_not_stored,
    test_a_stored_error_is_never_answered_304,
    test_a_views_own_validators_and_cache_control_are_kept,
    test_age_is_never_negative,
    test_an_async_view_answers_304_without_running,
    test_an_entry_for_other_vary_values_is_a_vary_miss,
    test_bypass_method_and_refresh_say_why_the_view_ran,
    test_cache_control_is_derived_from_the_decorator,
    test_cache_status_and_age_follow_the_entry,
    test_head_is_answered_304_and_other_methods_run_the_view,
    test_if_modified_since_and_if_none_match_wins,
    test_set_response_cache_header_writes_cache_status_when_asked,
    test_the_drf_test_client_gets_a_304_and_the_x_cache_headers_stay,
    test_the_etag_is_computed_when_stored_not_per_hit,
    test_the_headers_can_be_turned_off,
)

__all__ = [
    "_fresh_runs",
    "test_a_matching_if_none_match_is_a_304_without_running_the_view",
    "test_a_response_cache_if_refuses_is_a_miss_not_stored",
    "test_a_stored_error_is_never_answered_304",
    "test_a_views_own_validators_and_cache_control_are_kept",
    "test_age_is_never_negative",
    "test_an_async_view_answers_304_without_running",
    "test_an_entry_for_other_vary_values_is_a_vary_miss",
    "test_bypass_method_and_refresh_say_why_the_view_ran",
    "test_cache_control_is_derived_from_the_decorator",
    "test_cache_status_and_age_follow_the_entry",
    "test_head_is_answered_304_and_other_methods_run_the_view",
    "test_if_modified_since_and_if_none_match_wins",
    "test_set_response_cache_header_writes_cache_status_when_asked",
    "test_the_drf_test_client_gets_a_304_and_the_x_cache_headers_stay",
    "test_the_etag_is_computed_when_stored_not_per_hit",
    "test_the_headers_can_be_turned_off",
]


@pytest.fixture
def store(redis):
    """The Redis store (the ``redis`` fixture empties a database and points BACKEND at it)."""
    return "redis"
