"""Probabilistic early refresh (XFetch) on Redis: the scenario of
tests/test_early_refresh.py, with the same seeded draws and the same
outcome, since the decision is the engine's whatever the store. The refresh
is claimed through the store's refresh lock, as a stale entry's is, so one
process refreshes for the cluster."""

from __future__ import annotations

import hashlib
import hmac
import struct

from restflow.caching import CacheStatus, cache_result
from restflow.caching.settings import signing_key
from tests.test_early_refresh import (
    FIRST_EARLY,
    FIRST_EARLY_BETA_3,
    STEP,
    TTL,
    check_one_refresh_across_threads,
    check_refreshes_once_at_first_early,
    run_async_scenario,
    run_scenario,
)

#: The version 2 header: magic, flags, three instants, three generations.
V2_HEADER = 4 + 1 + 3 * 8 + 3 * 8


def test_a_hit_refreshes_early_at_the_seeded_read_on_redis(redis):
    # Every read decodes the entry from Redis: that it refreshes early at
    # all shows the payload kept the measured compute time and beta.
    check_refreshes_once_at_first_early(run_scenario(early_refresh=True))


def test_a_larger_beta_refreshes_earlier_on_redis(redis):
    seen = run_scenario(early_refresh=True, beta=3.0)
    assert len(seen) == FIRST_EARLY_BETA_3 < FIRST_EARLY


def test_without_early_refresh_nothing_runs_before_expiry_on_redis(redis):
    seen = run_scenario()
    assert seen == [(read, CacheStatus.HIT, 1) for read in range(1, TTL // STEP)]


def test_one_refresh_however_many_threads_draw_it_on_redis(redis):
    check_one_refresh_across_threads()


def test_an_async_function_refreshes_early_at_the_seeded_read_on_redis(redis):
    # Its reads skip the event loop's fresh-hit shortcut, so each draws once.
    check_refreshes_once_at_first_early(run_async_scenario())


def test_an_entry_of_payload_version_2_is_still_a_hit(redis):
    # Entries written before early refresh existed (format RFC2: the RFC3
    # header without its delta and beta) are read, not recomputed, so an
    # upgrade keeps the cache.
    computed = []

    @cache_result(ttl=300)
    def profile(user_id):
        computed.append(user_id)
        return {"id": user_id}

    profile(1)
    key = profile.get_cache_key(1)
    stored = redis.get(key)
    assert stored.startswith(b"RFC3")
    body = b"RFC2" + stored[4:V2_HEADER] + stored[V2_HEADER + 16 : -32]
    signed = struct.pack("<Q", len(key.encode())) + key.encode() + body
    redis.set(key, body + hmac.new(signing_key(), signed, hashlib.sha256).digest())
    value, meta = profile.get_with_metadata(1)
    assert (value, meta["cache_status"], computed) == ({"id": 1}, CacheStatus.HIT, [1])
