"""Runs tests/prometheus_app.py under gunicorn with two workers in
prometheus_client's multiprocess mode, sends requests to both workers, and
scrapes the metrics over HTTP (shared by the memory and Redis tests)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(port: int, path: str) -> bytes:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=30) as response:
        return response.read()


def wait_for(condition, what: str, timeout: float = 60) -> None:
    """Polls ``condition`` (a hang guard: the test waits for a state, not a time)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def samples(text: str) -> dict[tuple[str, tuple], float]:
    """``{(sample name, sorted labels): value}`` of a scrape."""
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def run_two_workers(
    tmp_path: Path, backend: str, preload: bool = False
) -> tuple[dict, list[dict], dict]:
    """Serves the app; one request held in worker A, five to worker B, then
    the release of A and a scrape. Returns (held answer, other answers,
    scraped samples). ``preload``: the app is loaded, and makes a cached
    call, in gunicorn's master before it forks the workers."""
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    port = free_port()
    env = {
        **os.environ,
        "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
        "HOLD_DIR": str(tmp_path),
        "APP_BACKEND": backend,
        "PYTHONPATH": str(ROOT),
        **({"APP_WARM": "1"} if preload else {}),
    }
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "-w",
            "2",
            "-b",
            f"127.0.0.1:{port}",
            "--timeout",
            "120",
            *(["--preload"] if preload else []),
            "tests.prometheus_app:application",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:

        def up() -> bool:
            assert server.poll() is None, server.stderr.read().decode()
            try:
                return get(port, "/health/") == b"ok"
            except OSError:
                return False

        wait_for(up, "gunicorn to answer")
        held: list[dict] = []
        holder = threading.Thread(target=lambda: held.append(json.loads(get(port, "/hold/"))))
        holder.start()
        wait_for(lambda: any(tmp_path.glob("entered-*")), "the held request to start")
        # Worker A is held: these five go to worker B.
        others = [json.loads(get(port, "/payload/7/")) for _ in range(5)]
        (tmp_path / "release").touch()
        holder.join(60)
        assert held, "the held request did not answer"
        scraped = samples(get(port, "/metrics").decode())
        return held[0], others, scraped
    finally:
        server.terminate()
        server.wait(30)
