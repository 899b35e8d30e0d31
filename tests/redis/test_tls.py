"""``rediss://``: Redis over TLS, as managed Redis services require.

The README documented ``rediss://`` (and its cluster and Sentinel forms),
but the engine was built without the redis crate's TLS support, so every
such URL failed at first use with "can't connect with TLS, the feature is
not enabled". Here a redis-server of the test's own listens on TLS only,
with a certificate from a throwaway CA (``trustme``) that the engine is told
to trust through ``SSL_CERT_FILE`` (read by rustls-native-certs, as
OpenSSL reads it)."""

from __future__ import annotations

import pytest
import trustme
from django.test import override_settings

from restflow.caching import CacheStatus, cache_result, reset_stats, stats
from tests.redis.cluster import Cluster
from tests.redis.conftest import RedisServer, redis_settings, system_redis_server
from tests.test_lifecycle_model import AsyncApi, SyncApi, new_loop, run_model
from tests.test_lifecycle_model import areport as model_areport
from tests.test_lifecycle_model import report as model_report

computed: list = []


@cache_result(ttl=60)
def doubled(n):
    computed.append(n)
    return n * 2


class Certificates:
    """A throwaway CA (``ca.pem``) and the certificate it issued for
    ``names`` (``server.pem``, ``server.key``), in ``directory``; clients
    connect to the first name."""

    def __init__(self, directory, names=("127.0.0.1", "localhost")) -> None:
        self.directory = directory
        self.host = names[0]
        ca = trustme.CA()
        self.ca_file = directory / "ca.pem"
        ca.cert_pem.write_to_path(str(self.ca_file))
        issued = ca.issue_cert(*names)
        issued.cert_chain_pems[0].write_to_path(str(directory / "server.pem"))
        issued.private_key_pem.write_to_path(str(directory / "server.key"))

    def server_arguments(self) -> list[str]:
        return [
            "--tls-cert-file", str(self.directory / "server.pem"),
            "--tls-key-file", str(self.directory / "server.key"),
            "--tls-ca-cert-file", str(self.ca_file),
            "--tls-auth-clients", "no",
        ]  # fmt: skip

    def client(self, port: int, db: int = 0):
        """A redis-py client over TLS."""
        import redis as redis_py

        return redis_py.Redis(
            host=self.host,
            port=port,
            db=db,
            ssl=True,
            ssl_ca_certs=str(self.ca_file),
            socket_timeout=5,
        )


class TlsCluster(Cluster):
    """tests/redis/cluster.py's three masters, speaking only TLS, the
    cluster bus too."""

    def __init__(self, directory) -> None:
        super().__init__(directory)
        self.certificates = Certificates(directory)

    @property
    def url(self) -> str:
        return "rediss+cluster://" + ",".join(f"127.0.0.1:{p}" for p in self.ports)

    def client(self, port: int):
        return self.certificates.client(port)

    def listen(self, port: int) -> list[str]:
        return [
            "--port", "0", "--tls-port", str(port), "--tls-cluster", "yes",
            *self.certificates.server_arguments(),
        ]  # fmt: skip


class TlsRedis(RedisServer):
    """A redis-server on loopback that speaks only TLS."""

    def __init__(self, directory) -> None:
        super().__init__(directory=directory)
        self.certificates = Certificates(directory)
        self.ca_file = self.certificates.ca_file

    @property
    def url(self) -> str:
        return f"rediss://127.0.0.1:{self.port}/0"

    def listen(self) -> list[str]:
        return [
            "--port",
            "0",
            "--tls-port",
            str(self.port),
            *self.certificates.server_arguments(),
        ]

    def client(self, db: int = 0):
        return self.certificates.client(self.port, db)


@pytest.fixture(scope="module")
def tls_redis(tmp_path_factory):
    if system_redis_server() is None:
        pytest.fail("redis-server is not installed: run ./scripts/bootstrap.sh")
    server = TlsRedis(tmp_path_factory.mktemp("tls")).start()
    yield server
    server.stop()


@pytest.fixture
def trusted(tls_redis, monkeypatch):
    """The test CA trusted, an empty database, and BACKEND on TLS."""
    monkeypatch.setenv("SSL_CERT_FILE", str(tls_redis.ca_file))
    tls_redis.client().flushdb()
    computed.clear()
    with override_settings(RESTFLOW_SETTINGS=redis_settings(tls_redis.url)):
        yield tls_redis


def test_calls_are_cached_over_tls(trusted):
    statuses = [doubled.get_with_metadata(4)[1]["cache_status"] for _ in range(2)]
    assert (statuses, computed) == ([CacheStatus.MISS, CacheStatus.HIT], [4])
    # Stored on the server, through TLS.
    assert trusted.client().exists(doubled.get_cache_key(4)) == 1
    doubled.invalidate_all()
    assert doubled.get_with_metadata(4)[1]["cache_status"] == CacheStatus.MISS
    assert computed == [4, 4]


@pytest.mark.parametrize("seed", [61, 62])
def test_calls_over_tls_follow_the_lifecycle_model(trusted, seed):
    run_model(seed, SyncApi(model_report))


def test_async_calls_over_tls_follow_the_lifecycle_model(trusted):
    with new_loop() as loop:
        run_model(63, AsyncApi(model_areport, loop=loop))


def test_a_certificate_no_trusted_ca_signed_is_refused(tls_redis, monkeypatch, caplog):
    # The system's roots only: the test CA signed nothing they trust.
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    settings = redis_settings(tls_redis.url, READ_TIMEOUT=5.0)
    with override_settings(RESTFLOW_SETTINGS=settings):
        reset_stats()
        value, meta = doubled.get_with_metadata(5)
        assert (value, meta["cache_status"]) == (10, CacheStatus.BYPASS)
        backend = stats()["backends"][tls_redis.url]
        # One failed connection, logged once with the reason; no trip yet.
        assert (backend["store_errors"], backend["breaker_trips"]) == (1, 0)
    assert "invalid peer certificate: UnknownIssuer" in caplog.text


@pytest.fixture(scope="module")
def tls_cluster(tmp_path_factory):
    cluster = TlsCluster(tmp_path_factory.mktemp("tls-cluster")).start()
    yield cluster
    cluster.stop()


@pytest.mark.parametrize("seed", [64])
def test_calls_on_a_tls_cluster_follow_the_lifecycle_model(tls_cluster, monkeypatch, seed):
    monkeypatch.setenv("SSL_CERT_FILE", str(tls_cluster.certificates.ca_file))
    tls_cluster.flush()
    with override_settings(RESTFLOW_SETTINGS=redis_settings(tls_cluster.url)):
        assert [doubled.get_with_metadata(6)[1]["cache_status"] for _ in range(2)] == [
            CacheStatus.MISS,
            CacheStatus.HIT,
        ]
        run_model(seed, SyncApi(model_report))
