"""One contender's Redis hit, for benches/redis_peers.sh.

    python benches/redis_peer.py <restflow|drf-restflow|dogpile> <redis url>

Prints one JSON line: the contender's median hit latency and the redis-py
floor (GET + pickle.loads of the same payload) measured in the same process.
"""

from __future__ import annotations

import json
import pickle
import statistics
import sys
import timeit

PAYLOAD = {
    **{f"field_{n}": f"value {n}" for n in range(15)},
    "id": 42,
    "active": True,
    "score": 9.5,
    "created": "2026-11-27T04:12:17+00:00",
    "items": [{"id": n, "name": f"item {n}", "price": n * 1.5} for n in range(10)],
}


def contender(kind: str, url: str):
    if kind == "dogpile":
        from dogpile.cache import make_region

        region = make_region().configure(
            "dogpile.cache.redis", expiration_time=3600, arguments={"url": url}
        )

        @region.cache_on_arguments()
        def payload(n):
            return PAYLOAD

        return payload
    import django
    from django.conf import settings

    if kind == "restflow":
        settings.configure(
            SECRET_KEY="bench", RESTFLOW_SETTINGS={"CACHE_SETTINGS": {"BACKEND": url}}
        )
    else:  # drf-restflow 2.0.1 on django-redis
        settings.configure(
            SECRET_KEY="bench",
            CACHES={
                "default": {
                    "BACKEND": "django_redis.cache.RedisCache",
                    "LOCATION": url,
                    "OPTIONS": {"CLIENT_CLASS": "django_redis.client.DefaultClient"},
                }
            },
        )
    django.setup()
    from restflow.caching import cache_result

    @cache_result(ttl=3600)
    def payload(n):
        return PAYLOAD

    return payload


def main() -> int:
    kind, url = sys.argv[1], sys.argv[2]
    import redis

    client = redis.Redis.from_url(url)
    client.set("floor", pickle.dumps(PAYLOAD, protocol=5))
    payload = contender(kind, url)
    payload(1)
    floor = timeit.Timer(
        "pickle.loads(client.get('floor'))", globals={**globals(), "client": client}
    )
    ours = timeit.Timer("payload(1)", globals={"payload": payload})
    floors, hits = [], []
    for _ in range(11):
        floors.append(floor.timeit(300) / 300 * 1e6)
        hits.append(ours.timeit(300) / 300 * 1e6)
    print(
        json.dumps(
            {
                "contender": kind,
                "hit_us": statistics.median(hits),
                "floor_us": statistics.median(floors),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
