"""``rediss+sentinel://``: Redis Sentinel over TLS.

A master, a replica and three sentinels, all speaking only TLS
(``port 0``): the replica replicates over TLS and the sentinels watch the
servers and talk to each other over TLS (``tls-replication yes``). Two
throwaway CAs (``trustme``, as in tests/redis/test_tls.py) signed the
certificates, one the servers', one the sentinels'; the engine trusts them
through ``SSL_CERT_FILE``. The store asks a sentinel over TLS for the
master, then connects to the master over TLS: the lifecycle model runs
through it, sync and async, and a ``SENTINEL FAILOVER`` with connections
pooled on the old master is followed to the new one. A certificate no
trusted CA signed, a sentinel's or the master's, is a store that fails
(BYPASS), logged with the reason and the server; so is a master whose
certificate does not name the address the sentinels give for it (a
second, small deployment). Started once for the module (~5 s: the
sentinels find each other)."""

from __future__ import annotations

import subprocess

import pytest
import redis as redis_py
from django.test import override_settings
from redis.backoff import NoBackoff
from redis.retry import Retry

from restflow.caching import CacheStatus, cache_result, reset_stats, stats
from tests.redis.cluster import wait_for
from tests.redis.conftest import RedisServer, free_port, redis_settings, system_redis_server
from tests.redis.test_sentinel import SERVICE, Sentinels, role
from tests.redis.test_tls import Certificates
from tests.test_fork import run_forks
from tests.test_lifecycle_model import AsyncApi, SyncApi, new_loop, run_model
from tests.test_lifecycle_model import areport as model_areport
from tests.test_lifecycle_model import report as model_report

computed: list = []


@cache_result(ttl=60)
def tripled(n):
    computed.append(n)
    return n * 3


def status(n):
    return tripled.get_with_metadata(n)[1]["cache_status"]


@cache_result(ttl=60, near_cache=True)
def near_tripled(n):
    computed.append(n)
    return n * 3


class Authorities:
    """Two throwaway CAs, in subdirectories of ``directory``: ``servers``
    signed the master's and the replica's certificates (for
    ``server_names``), ``sentinels`` the sentinels'; ``bundle`` holds both
    (what the deployment trusts, and what the engine is told to trust,
    unless a test leaves one out)."""

    def __init__(self, directory, server_names=("127.0.0.1", "localhost")) -> None:
        (directory / "servers").mkdir()
        (directory / "sentinels").mkdir()
        self.servers = Certificates(directory / "servers", server_names)
        self.sentinels = Certificates(directory / "sentinels")
        self.bundle = directory / "both.pem"
        both = self.servers.ca_file.read_text() + self.sentinels.ca_file.read_text()
        self.bundle.write_text(both)

    def options(self, certificates: Certificates) -> dict[str, str]:
        """A server's TLS options: the certificate ``certificates`` hold,
        either CA trusted (for replication, and between the sentinels and
        the servers), no client certificates."""
        return {
            "tls-cert-file": str(certificates.directory / "server.pem"),
            "tls-key-file": str(certificates.directory / "server.key"),
            "tls-ca-cert-file": str(self.bundle),
            "tls-auth-clients": "no",
            "tls-replication": "yes",
        }


class TlsServer(RedisServer):
    """A master or replica on loopback that speaks only TLS, replication
    included."""

    def __init__(self, directory, authorities: Authorities) -> None:
        super().__init__(directory=directory)
        self.authorities = authorities

    def listen(self) -> list[str]:
        options = self.authorities.options(self.authorities.servers)
        return [
            "--port", "0", "--tls-port", str(self.port),
            *(word for name, value in options.items() for word in (f"--{name}", value)),
        ]  # fmt: skip

    def client(self, db: int = 0):
        return self.authorities.servers.client(self.port, db)


class TlsSentinels(Sentinels):
    """tests/redis/test_sentinel.py's deployment, asked over TLS."""

    def __init__(self, servers, ports, authorities: Authorities) -> None:
        url = "rediss+sentinel://" + ",".join(f"127.0.0.1:{p}" for p in ports) + f"/{SERVICE}/0"
        super().__init__(servers, ports, url)
        self.authorities = authorities

    def sentinel(self, index: int = 0) -> redis_py.Redis:
        return self.authorities.sentinels.client(self.ports[index])


def start_sentinel(directory, port: int, master: RedisServer, authorities, quorum: int):
    """A TLS-only sentinel watching ``master``: it listens on ``port`` over
    TLS only, and reaches the servers and the other sentinels over TLS."""
    options = authorities.options(authorities.sentinels)
    conf = directory / f"sentinel-{port}.conf"
    conf.write_text(
        f"port 0\ntls-port {port}\nbind 127.0.0.1\ndir {directory}\n"
        + "".join(f"{name} {value}\n" for name, value in options.items())
        + f"sentinel monitor {SERVICE} 127.0.0.1 {master.port} {quorum}\n"
        f"sentinel down-after-milliseconds {SERVICE} 1000\n"
        f"sentinel failover-timeout {SERVICE} 10000\n"
    )
    return subprocess.Popen(
        [system_redis_server(), str(conf), "--sentinel"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def stop(processes, servers) -> None:
    for process in processes:
        process.kill()
        process.wait(10)
    for server in servers:
        server.stop()


@pytest.fixture(scope="module")
def tls_sentinels(tmp_path_factory):
    if system_redis_server() is None:
        pytest.fail("redis-server is not installed: run ./scripts/bootstrap.sh")
    directory = tmp_path_factory.mktemp("sentinel-tls")
    authorities = Authorities(directory)
    servers = [TlsServer(directory, authorities) for _ in range(2)]
    processes = []
    try:
        master, replica = (server.start() for server in servers)
        replica.client().replicaof("127.0.0.1", master.port)
        ports = [free_port() for _ in range(3)]
        for port in ports:
            processes.append(start_sentinel(directory, port, master, authorities, quorum=2))
        sentinels = TlsSentinels([master, replica], ports, authorities)

        def ready() -> bool:
            for index in range(len(ports)):
                try:
                    known = sentinels.sentinel(index).sentinel_master(SERVICE)
                except redis_py.ConnectionError:
                    return False  # not listening yet
                if known["num-other-sentinels"] < 2 or known["num-slaves"] < 1:
                    return False
            return replica.client().info("replication")["master_link_status"] == "up"

        wait_for(ready, "the TLS sentinels did not find each other and the replica")
        yield sentinels
    finally:
        stop(processes, servers)


@pytest.fixture
def trusted(tls_sentinels, monkeypatch):
    """The test CA trusted, an empty master, and BACKEND on the sentinels."""
    monkeypatch.setenv("SSL_CERT_FILE", str(tls_sentinels.authorities.bundle))
    tls_sentinels.master().client().flushdb()
    computed.clear()
    with override_settings(RESTFLOW_SETTINGS=redis_settings(tls_sentinels.url)):
        yield tls_sentinels


def test_the_deployment_speaks_only_tls(tls_sentinels):
    # A plain connection to any of the five is refused: nothing is tested
    # over plain TCP by mistake.
    ports = [server.port for server in tls_sentinels.servers] + tls_sentinels.ports
    for port in ports:
        plain = redis_py.Redis(port=port, socket_timeout=2, retry=Retry(NoBackoff(), 0))
        with pytest.raises(redis_py.ConnectionError):
            plain.ping()
    # The sentinels reach the replica and each other over TLS.
    known = tls_sentinels.sentinel().sentinel_master(SERVICE)
    assert (known["num-other-sentinels"], known["num-slaves"]) == (2, 1)


def test_calls_are_cached_on_the_master_the_sentinels_name(trusted):
    assert [status(4), status(4)] == [CacheStatus.MISS, CacheStatus.HIT]
    assert computed == [4]
    master = trusted.master()
    assert master.client().exists(tripled.get_cache_key(4)) == 1
    tripled.invalidate_all()
    assert status(4) is CacheStatus.MISS
    assert computed == [4, 4]


@pytest.mark.parametrize("seed", [65, 66])
def test_calls_follow_the_lifecycle_model(trusted, seed):
    run_model(seed, SyncApi(model_report))


def test_async_calls_follow_the_lifecycle_model(trusted):
    with new_loop() as loop:
        run_model(67, AsyncApi(model_areport, loop=loop))


def test_children_forked_from_a_busy_process_cache_over_tls(trusted):
    # Each child asks the sentinels and makes its TLS connections itself
    # (tests/test_fork.py; SSL_CERT_FILE is inherited).
    run_forks(trusted.url, "threads", 10)


def test_there_is_no_near_cache_over_tls(trusted):
    # NEAR_CACHE asked for: as the README says, over TLS there is none;
    # every call goes to the master, and nothing breaks.
    statuses = [near_tripled.get_with_metadata(7)[1]["cache_status"] for _ in range(3)]
    assert (statuses, computed) == ([CacheStatus.MISS, CacheStatus.HIT, CacheStatus.HIT], [7])
    backend = near_tripled.shared_backend()
    assert backend.near_sync(timeout=1) is False
    assert backend.near_stats() is None
    assert trusted.master().client().exists(near_tripled.get_cache_key(7)) == 1


def refused(url, trusted_ca, monkeypatch, caplog) -> str:
    """What a call on ``url`` logs when the engine trusts only
    ``trusted_ca``: it is a BYPASS, one store error, no trip yet."""
    monkeypatch.setenv("SSL_CERT_FILE", str(trusted_ca))
    with override_settings(RESTFLOW_SETTINGS=redis_settings(url, READ_TIMEOUT=5.0)):
        reset_stats()
        value, meta = tripled.get_with_metadata(5)
        assert (value, meta["cache_status"]) == (15, CacheStatus.BYPASS)
        backend = stats()["backends"][url]
        assert (backend["store_errors"], backend["breaker_trips"]) == (1, 0)
    [record] = [r for r in caplog.records if "BYPASS" in r.getMessage()]
    return record.getMessage()


def test_a_sentinel_certificate_no_trusted_ca_signed_is_refused(tls_sentinels, monkeypatch, caplog):
    # The servers' CA only: the sentinels' certificates are unknown. A
    # fourth sentinel listed last is down (as one may be): its refusal
    # must not hide why the others were not asked.
    down = free_port()
    hosts = [f"127.0.0.1:{port}" for port in tls_sentinels.ports]
    url = f"rediss+sentinel://{','.join(hosts)},127.0.0.1:{down}/{SERVICE}/0"
    servers_ca = tls_sentinels.authorities.servers.ca_file
    logged = refused(url, servers_ca, monkeypatch, caplog)
    reasons = [f"{host}: invalid peer certificate: UnknownIssuer" for host in hosts]
    reasons.append(f"127.0.0.1:{down}: Connection refused (os error 111)")
    assert f"(store unavailable: no sentinel named the master: {'; '.join(reasons)})" in logged


def test_a_master_certificate_no_trusted_ca_signed_is_refused(tls_sentinels, monkeypatch, caplog):
    # The sentinels' CA only: they answer, the master they name is unknown.
    # The URL names only the sentinels: the reason names the master.
    master = tls_sentinels.master()
    sentinels_ca = tls_sentinels.authorities.sentinels.ca_file
    logged = refused(tls_sentinels.url, sentinels_ca, monkeypatch, caplog)
    reason = f"master 127.0.0.1:{master.port}: invalid peer certificate: UnknownIssuer"
    assert f"(store unavailable: {reason})" in logged


@pytest.fixture(scope="module")
def misnamed(tmp_path_factory):
    """A TLS master whose certificate names only ``localhost`` (a trusted
    CA signed it) and one TLS sentinel that knows it as 127.0.0.1; the
    ``rediss+sentinel://`` URL and the bundle of both CAs."""
    directory = tmp_path_factory.mktemp("sentinel-tls-misnamed")
    authorities = Authorities(directory, server_names=("localhost",))
    master = TlsServer(directory, authorities)
    port = free_port()
    processes = []
    try:
        master.start()
        processes.append(start_sentinel(directory, port, master, authorities, quorum=1))
        sentinel = authorities.sentinels.client(port)
        wait_for(lambda: ping(sentinel), "the sentinel did not start")
        yield f"rediss+sentinel://127.0.0.1:{port}/{SERVICE}/0", master, authorities.bundle
    finally:
        stop(processes, [master])


def ping(client) -> bool:
    try:
        return client.ping()
    except redis_py.ConnectionError:
        return False


def test_the_master_certificate_must_name_the_address_the_sentinels_give(
    misnamed, monkeypatch, caplog
):
    # A CA the engine trusts signed it, but for another name: refused.
    url, master, bundle = misnamed
    logged = refused(url, bundle, monkeypatch, caplog)
    reason = (
        f"master 127.0.0.1:{master.port}: invalid peer certificate: certificate not valid"
        ' for name "127.0.0.1"; certificate is only valid for DnsName("localhost")'
    )
    assert f"(store unavailable: {reason})" in logged


def test_a_failover_with_pooled_connections_is_followed(trusted):
    """Last: the master changes. As tests/redis/test_sentinel.py's
    hand-over, over TLS: a write the demoted master refuses (READONLY)
    goes to the new master."""
    old = trusted.master()
    new = trusted.other(old)
    first = tripled(1)
    assert status(1) is CacheStatus.HIT  # the connections are pooled on `old`
    old.client().wait(1, 5000)
    assert trusted.sentinel().sentinel_failover(SERVICE)

    def switched() -> bool:
        return trusted.named_master() is new and role(new) == "master"

    wait_for(switched, "the sentinels did not promote the replica")
    old.client().replicaof("127.0.0.1", new.port)
    wait_for(
        lambda: old.client().info("replication")["master_link_status"] == "up",
        "the old master did not follow the new one over TLS",
    )
    # The invalidation goes to `old` first (READONLY), then to `new`: had
    # it been lost, `new` (which replicated the entry) would serve a HIT.
    reset_stats()
    tripled.invalidate_all()
    value, meta = tripled.get_with_metadata(1)
    assert (value, meta["cache_status"]) == (first, CacheStatus.MISS)
    assert computed == [1, 1]
    assert status(1) is CacheStatus.HIT
    assert new.client().exists(tripled.get_cache_key(1)) == 1
    assert role(old) == "slave"
    # Nothing failed on the way: no error, no BYPASS.
    assert stats()["backends"][trusted.url]["store_errors"] == 0
