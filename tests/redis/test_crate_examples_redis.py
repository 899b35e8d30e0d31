"""The engine crate's Redis example, against this session's redis-server:
two processes share one cache, so one's stored value is the other's HIT
and an invalidation in one is seen by the other."""

from __future__ import annotations

import re

from tests.crate_examples import run_example


def test_the_redis_example_shares_values_and_invalidations_between_processes(redis, redis_server):
    lines = run_example("redis_two_processes", redis_server.url)
    first = r'"user 7 \(computation (\d) in process (\d+)\)"'
    assert len(lines) == 4, lines
    miss = re.fullmatch(f"first process: MISS {first}", lines[0])
    hit = re.fullmatch(f"second process: HIT {first}", lines[1])
    again = re.fullmatch(f"first process, after the invalidation: MISS {first}", lines[3])
    assert miss and hit and again, lines
    assert lines[2] == "second process: invalidated get_user"
    # The second process was served what the first computed, and after
    # the second one's invalidation the first computed again.
    assert hit.groups() == miss.groups() == ("1", miss.group(2))
    assert again.groups() == ("2", miss.group(2))
    # It wrote to the server it was given (the database was emptied
    # before the test).
    assert redis.exists("restflow-example:get_user:7")
