"""``cache_result`` keeps the decorated function's signature for type
checkers (ParamSpec): mypy checks tests/type_checks/cached_calls.py, whose
revealed types and errors must be exactly the ones below."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "tests" / "type_checks" / "cached_calls.py"

REVEALED = [
    "dict[str, int]",
    "tuple[dict[str, int], dict[str, Any]]",
    "dict[str, int]",
    "list[str]",
    "tuple[list[str], dict[Any, Any]]",
]


def test_cached_functions_keep_their_signatures_for_mypy():
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--no-incremental",
            "--follow-imports=silent",
            "--ignore-missing-imports",
            "--show-error-codes",
            "--no-error-summary",
            str(SAMPLE),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    lines = done.stdout.splitlines()
    revealed = [
        re.sub(r'^.*Revealed type is "(.*)"$', r"\1", line)
        for line in lines
        if "Revealed type is" in line
    ]
    assert revealed == REVEALED, done.stdout
    errors = [line for line in lines if ": error:" in line]
    error_lines = {int(line.split(":")[1]) for line in errors}
    source = SAMPLE.read_text().splitlines()
    expected_lines = {n for n, text in enumerate(source, 1) if "# E:" in text}
    assert error_lines == expected_lines, done.stdout
