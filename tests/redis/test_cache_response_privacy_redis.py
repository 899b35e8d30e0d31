"""The ``cache_response`` privacy rules (issue 10, item 15) on the Redis store.

The tests are those of ``tests/test_cache_response_privacy.py``; here their
``store`` fixture points the cache at a real redis-server, so entries go
through the serializer and the vary record survives a round trip.
"""

import pytest

from tests.test_cache_response_privacy import (
    _fresh_runs,
    test_a_browsable_api_page_carrying_a_csrf_token_is_never_stored,
    test_a_custom_constructor_still_keys_host_scheme_and_method,
    test_a_get_never_receives_the_head_render,
    test_a_key_that_reads_the_vary_header_caches_every_variant,
    test_a_response_built_with_the_csrf_token_is_never_stored,
    test_a_response_is_served_only_to_requests_its_vary_headers_match,
    test_a_response_that_read_the_session_is_never_shared,
    test_a_session_read_before_the_view_does_not_stop_caching,
    test_a_session_that_cannot_be_watched_is_taken_as_read,
    test_an_async_view_keeps_sessions_vary_and_hosts_apart,
    test_host_and_scheme_are_part_of_the_key,
    test_the_order_of_repeated_query_parameters_is_part_of_the_key,
)

__all__ = [
    "_fresh_runs",
    "test_a_browsable_api_page_carrying_a_csrf_token_is_never_stored",
    "test_a_custom_constructor_still_keys_host_scheme_and_method",
    "test_a_get_never_receives_the_head_render",
    "test_a_key_that_reads_the_vary_header_caches_every_variant",
    "test_a_response_built_with_the_csrf_token_is_never_stored",
    "test_a_response_is_served_only_to_requests_its_vary_headers_match",
    "test_a_response_that_read_the_session_is_never_shared",
    "test_a_session_read_before_the_view_does_not_stop_caching",
    "test_a_session_that_cannot_be_watched_is_taken_as_read",
    "test_an_async_view_keeps_sessions_vary_and_hosts_apart",
    "test_host_and_scheme_are_part_of_the_key",
    "test_the_order_of_repeated_query_parameters_is_part_of_the_key",
]


@pytest.fixture
def store(redis):
    """The Redis store (the ``redis`` fixture empties a database and points BACKEND at it)."""
    return "redis"
