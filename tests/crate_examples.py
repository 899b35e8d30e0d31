"""Builds and runs the engine crate's examples (crates/restflow-cache/examples).

The examples are the Rust user's first contact with restflow-cache, so the
tests run them for real and check what they print. They are built once per
test session, by cargo itself, which also says where each binary went (so a
custom CARGO_TARGET_DIR works too).
"""

from __future__ import annotations

import functools
import json
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@functools.cache
def _built() -> dict[str, str]:
    """Every example of the engine crate, built: name -> executable."""
    result = subprocess.run(
        [
            "cargo",
            "build",
            "--quiet",
            "-p",
            "restflow-cache",
            "--examples",
            "--message-format=json",
        ],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    )
    built = {}
    for line in result.stdout.splitlines():
        message = json.loads(line)
        target = message.get("target", {})
        if message.get("reason") == "compiler-artifact" and "example" in target.get("kind", []):
            built[target["name"]] = message["executable"]
    return built


def run_example(name: str, *args: str) -> list[str]:
    """Runs the example `name` with `args`; its output lines. Fails the test
    (with the example's stderr) when it exits with an error."""
    result = subprocess.run(
        [_built()[name], *args], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()
