"""Turns the benchmark results into PNG charts under docs/ for the README.

Runs each benchmark as it is (``hit_path.py``, ``redis_hit.py``,
``invalidation.py``, ``stampede.py`` with ``--json``; ``saturation.sh``,
whose per-run lines are JSON already), keeps each one's JSON lines in
``--results`` (default ``docs/bench-results``), and draws from them:

* ``docs/hit-latency.png``: memory hit latency against the peers
* ``docs/redis-hit.png``: a Redis hit against the redis-py GET + pickle floor
* ``docs/invalidation.png``: invalidation cost against the number of entries
* ``docs/stampede.png``: computations per key when many callers miss at once
* ``docs/drf-throughput.png``: DRF requests per second at saturation

``--from-results`` draws from the JSON kept by an earlier run instead of
running anything; ``--only NAME`` runs (or draws) one chart's benchmark.
Needs matplotlib: ``pip install -e ".[bench]"``. The benchmarks themselves
need what they always did (``scripts/bootstrap.sh``; wrk and gunicorn for
``saturation.sh``, which installs them).

Run: ``python benches/report.py`` (a few minutes; run it when the machine
is quiet, and say how quiet it was).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable

#: chart -> the command that produces its JSON lines (run from ROOT)
COMMANDS = {
    "hit_path": [PYTHON, "benches/hit_path.py", "--json"],
    "redis_hit": [PYTHON, "benches/redis_hit.py", "--json"],
    "invalidation": [PYTHON, "benches/invalidation.py", "--json"],
    "stampede": [PYTHON, "benches/stampede.py", "--json"],
    "saturation": ["bash", "benches/saturation.sh"],
}

#: saturation.sh's environment here: one round, shorter runs.
SATURATION_ENV = {"ROUNDS": "1", "DURATION": "5"}


def json_lines(text: str) -> list[dict]:
    """The JSON objects among a benchmark's output lines."""
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def run(name: str, results: Path) -> list[dict]:
    """Runs one benchmark and keeps its JSON lines in ``results``."""
    env = os.environ | (SATURATION_ENV if name == "saturation" else {})
    print(f"report: running {' '.join(COMMANDS[name][1:])}", flush=True)
    done = subprocess.run(COMMANDS[name], cwd=ROOT, env=env, capture_output=True, text=True)
    rows = json_lines(done.stdout)
    if done.returncode != 0 or not rows:
        sys.exit(
            f"report: {name} failed ({done.returncode}) or printed no JSON:\n"
            f"{done.stdout}\n{done.stderr}"
        )
    (results / f"{name}.json").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return rows


def load(name: str, results: Path) -> list[dict]:
    return json_lines((results / f"{name}.json").read_text())


def bars(path: Path, title: str, labels, values, unit: str, highlight: str = "restflow"):
    """One horizontal bar chart, restflow's bars in a colour of their own."""
    fig, ax = plt.subplots(figsize=(8, 0.5 * len(labels) + 1.5))
    colours = ["tab:orange" if highlight in label else "tab:gray" for label in labels]
    ax.barh(labels, values, color=colours)
    ax.invert_yaxis()
    ax.set_xlabel(unit)
    ax.set_title(title)
    for y, value in enumerate(values):
        ax.text(value, y, f" {value:,.0f}" if value >= 100 else f" {value:.3g}", va="center")
    ax.margins(x=0.15)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def hit_latency(rows: list[dict], out: Path) -> None:
    (row,) = rows
    fig, axes = plt.subplots(1, len(row["ns"]), figsize=(12, 3.8), sharex=False)
    for ax, (call, results) in zip(axes, row["ns"].items(), strict=True):
        labels = list(results)
        colours = ["tab:orange" if "restflow" in label else "tab:gray" for label in labels]
        ax.barh(labels, list(results.values()), color=colours)
        ax.invert_yaxis()
        ax.set_xscale("log")
        ax.set_xlabel("ns per call (median, log scale)")
        ax.set_title(call)
        for y, value in enumerate(results.values()):
            ax.text(value, y, f" {value:.0f}", va="center")
    fig.suptitle(f"Memory hit latency vs peers ({row['python']})")
    fig.tight_layout()
    fig.savefig(out / "hit-latency.png", dpi=110)
    plt.close(fig)


def redis_hit(rows: list[dict], out: Path) -> None:
    (row,) = rows
    bars(
        out / "redis-hit.png",
        f"Redis hit vs the redis-py floor (READ_SPIN={row['read_spin']})",
        list(row["us"]),
        list(row["us"].values()),
        "µs per hit (median)",
    )


def invalidation(rows: list[dict], out: Path) -> None:
    (row,) = rows
    entries = [r["entries"] for r in row["rows"]]
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(
        entries, [r["delete_by_prefix_us"] for r in row["rows"]], "o-", label="delete_by_prefix"
    )
    ax.plot(entries, [r["invalidate_all_us"] for r in row["rows"]], "s-", label="invalidate_all")
    ax.set_xscale("log")
    ax.set_ylim(bottom=0)
    ax.set_xlabel("entries in the memory store (log scale)")
    ax.set_ylabel("µs per invalidation (median)")
    ax.set_title("Invalidation cost does not grow with the entries")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "invalidation.png", dpi=110)
    plt.close(fig)


def stampede(rows: list[dict], out: Path) -> None:
    (row,) = rows
    bars(
        out / "stampede.png",
        f"{row['threads']} concurrent callers, one missing key",
        list(row["computations"]),
        list(row["computations"].values()),
        "computations of the function per key",
    )


def saturation(rows: list[dict], out: Path) -> None:
    labels = [f"{r['row']}, {r['workers']} workers" for r in rows]
    bars(
        out / "drf-throughput.png",
        "DRF view at saturation (gunicorn sync workers, wrk)",
        labels,
        [r["rps"] for r in rows],
        "requests per second",
        highlight="redis",
    )


CHARTS = {
    "hit_path": hit_latency,
    "redis_hit": redis_hit,
    "invalidation": invalidation,
    "stampede": stampede,
    "saturation": saturation,
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=ROOT / "docs" / "bench-results")
    parser.add_argument("--out", type=Path, default=ROOT / "docs")
    parser.add_argument("--from-results", action="store_true", help="draw only, run nothing")
    parser.add_argument("--only", choices=list(CHARTS), action="append")
    options = parser.parse_args()
    options.results.mkdir(parents=True, exist_ok=True)
    options.out.mkdir(parents=True, exist_ok=True)
    for name in options.only or CHARTS:
        rows = load(name, options.results) if options.from_results else run(name, options.results)
        CHARTS[name](rows, options.out)
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"
    print(f"report: charts in {options.out} ({machine}, load {os.getloadavg()[0]:.1f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
