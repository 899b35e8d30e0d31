"""``InvalidationRule(rewarm=True)`` on the Redis store (issue 10, item 14).

The tests are those of ``tests/test_invalidation_rules.py``, run with the
cache on a real redis-server: the rewarmed value is serialized, so an
un-awaited coroutine could not even be stored there.
"""

import pytest

from tests.test_invalidation_rules import (
    _forget_rules,
    test_rewarm_of_an_async_function_stores_the_awaited_value,
    test_rewarm_recomputes_a_cached_entry_in_place,
    test_rewarm_recomputes_an_entry_keyed_only_by_its_partition,
)

__all__ = [
    "_forget_rules",
    "test_rewarm_of_an_async_function_stores_the_awaited_value",
    "test_rewarm_recomputes_a_cached_entry_in_place",
    "test_rewarm_recomputes_an_entry_keyed_only_by_its_partition",
]

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("redis")]
