"""The test servers keep their files to themselves.

A redis-server writes snapshots (``SAVE``, a replica's full sync) into its
directory; started in the checkout, it left a ``dump.rdb`` there that was
once committed by mistake.
"""

from __future__ import annotations

from pathlib import Path

from tests.redis.conftest import RedisServer


def test_a_server_writes_its_snapshot_in_a_directory_of_its_own_removed_when_it_stops(
    tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    server = RedisServer().start()
    try:
        server.client().set("k", b"v")
        assert server.client().save() is True
        directory = Path(server.client().config_get("dir")["dir"])
        assert (directory / "dump.rdb").exists()
        assert directory != tmp_path
    finally:
        server.stop()
    assert not directory.exists()
    assert list(tmp_path.iterdir()) == []
