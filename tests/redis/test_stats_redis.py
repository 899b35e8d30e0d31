"""Statistics of a Redis store that fails (issue 15, item 1): its errors and
its breaker. The counts every store keeps are in tests/test_stats.py."""

from __future__ import annotations

from django.test import override_settings

from restflow.caching import CacheStatus, cache_result, reset_stats, stats
from tests.redis.conftest import redis_settings


@cache_result(ttl=30)
def card(user_id):
    return {"id": user_id}


def test_a_store_that_fails_counts_errors_and_one_breaker_trip(own_redis):
    with override_settings(RESTFLOW_SETTINGS=redis_settings(own_redis.url)):
        card(1)
        reset_stats()
        own_redis.stop()
        # Three connection failures in a row open the breaker (threshold 3).
        statuses = [card.get_with_metadata(1)[1]["cache_status"] for _ in range(3)]
        assert statuses == [CacheStatus.BYPASS] * 3
        mine = card.stats()
        backend = stats()["backends"][own_redis.url]
    assert (mine["bypass"], mine["computations"]) == (3, 3)
    assert (backend["store_errors"], backend["breaker_trips"], backend["bypass"]) == (3, 1, 3)


def test_a_scrape_with_the_store_down_reports_its_failures(own_redis, monkeypatch):
    """The scrape reads counters in this process: it needs no round trip,
    and shows the bypasses, the errors and the breaker's trip."""
    from django.test import RequestFactory

    from restflow.caching import prometheus
    from tests.prometheus_gunicorn import samples

    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)

    def scrape():
        return samples(prometheus.metrics_view(RequestFactory().get("/metrics")).content.decode())

    with override_settings(RESTFLOW_SETTINGS=redis_settings(own_redis.url)):
        card(1)
        before = scrape()
        own_redis.stop()
        for _ in range(3):
            card(1)
        after = scrape()

    def grew(name, **labels):
        key = (name, tuple(sorted(labels.items())))
        return after[key] - before.get(key, 0)

    url = own_redis.url
    function = "tests.redis.test_stats_redis.card"
    assert (
        grew("restflow_cache_requests_total", function=function, status="BYPASS", backend=url) == 3
    )
    assert grew("restflow_cache_store_errors_total", backend=url) == 3
    assert grew("restflow_cache_breaker_trips_total", backend=url) == 1
