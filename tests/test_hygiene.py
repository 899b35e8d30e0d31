"""The repository fetches nothing by URL and names no outside host.

Packages come from the registries by name, through pip, cargo and apt; the
servers the Redis tests run against come from PyPI packages that ship them.
A script that downloads by URL, or a host name written into the tree, is a
regression this test catches before review does.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# A URL whose host is anything but loopback or the reserved example name.
OUTSIDE_URL = re.compile(
    r"\b[a-z][a-z0-9+.-]*://(?!(?:127\.\d+\.\d+\.\d+|localhost|\[::1\]|example\.invalid)[:/\s\"']|"
    r"[^/\s]*@(?:127\.|localhost))[a-z0-9.-]+\.[a-z]{2,}",
    re.IGNORECASE,
)
# curl or wget saving what it fetched (to a file, or into a shell/unpacker);
# the demo's curl lines that print a local response are fine.
DOWNLOADERS = re.compile(
    r"^[^#\n]*\b(?:curl|wget)\b[^\n]*(?:\s-[a-zA-Z]*[oO]\b|--output|--remote-name|"
    r"\|\s*(?:sh|bash|tar|dpkg))",
    re.MULTILINE,
)


def tracked_files() -> list[Path]:
    try:
        out = subprocess.run(
            ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    return [ROOT / name for name in out.decode().split("\0") if name]


def text_of(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except (UnicodeDecodeError, IsADirectoryError, FileNotFoundError):
        return None


def test_no_outside_host_is_named():
    found = []
    for path in tracked_files():
        if path.name == "Cargo.lock":  # the registry's checksums, not addresses
            continue
        if path == Path(__file__).resolve():  # this file's own examples of what it catches
            continue
        text = text_of(path)
        if text is None:
            continue
        for number, line in enumerate(text.splitlines(), 1):
            if OUTSIDE_URL.search(line):
                found.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert found == []


def test_no_script_downloads_by_url():
    scripts = [p for p in tracked_files() if p.suffix == ".sh" or p.parent.name == ".ci"]
    found = [
        str(path.relative_to(ROOT))
        for path in scripts
        if (text := text_of(path)) is not None and DOWNLOADERS.search(text)
    ]
    assert found == []


# The examples are split at "//" so that this file itself names no host.
@pytest.mark.parametrize(
    "line, outside",
    [
        ("mirror=http:" + "//mirror.example.net/debian", True),
        ('curl -o x "https:' + '//files.example.org/a.whl"', True),
        ("redis:" + "//127.0.0.1:6379/0", False),
        ("redis:" + "//:secret@localhost:6379/0", False),
        ('repository = "https:' + '//example.invalid/restflow"', False),
        ("rediss:" + "//cache.internal.example.com:6380/0", True),
    ],
)
def test_the_host_check_itself(line, outside):
    assert bool(OUTSIDE_URL.search(line)) is outside
