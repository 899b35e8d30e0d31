"""Parses wrk runs and prints the saturation table (used by benches/saturation.sh).

``parse ROW WORKERS``: reads one ``wrk --latency`` report on stdin and prints
one JSON line (row, workers, req/s, p50 and p99 in ms, errors).
``table [ON_ROW OFF_ROW]``: reads those lines on stdin and prints, per row
and worker count, the medians over the runs with their range, and the
on/off ratios of the two rows compared (default ``redis spin`` and
``redis no-spin``): of the medians, and the median of the per-round
back-to-back pairs.
"""

from __future__ import annotations

import json
import re
import statistics
import sys

UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def latency_ms(report: str, percentile: str) -> float:
    match = re.search(rf"^\s*{percentile}%\s+([\d.]+)(us|ms|s)\s*$", report, re.MULTILINE)
    if match is None:
        sys.exit(f"saturation_report: no {percentile}% latency in wrk's report:\n{report}")
    return float(match[1]) * UNITS[match[2]]


def parse(row: str, workers: str) -> None:
    report = sys.stdin.read()
    rps = re.search(r"^Requests/sec:\s+([\d.]+)", report, re.MULTILINE)
    if rps is None:
        sys.exit(f"saturation_report: no Requests/sec in wrk's report:\n{report}")
    # Socket errors and non-2xx answers would make a fast row meaningless.
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", report)
    socket_errors = re.search(r"Socket errors: (.*)", report)
    print(
        json.dumps(
            {
                "row": row,
                "workers": int(workers),
                "rps": float(rps[1]),
                "p50": latency_ms(report, "50"),
                "p99": latency_ms(report, "99"),
                "errors": (int(errors[1]) if errors else 0),
                "socket_errors": socket_errors[1] if socket_errors else "",
            }
        )
    )


def table(on_row: str = "redis spin", off_row: str = "redis no-spin") -> None:
    runs = [json.loads(line) for line in sys.stdin if line.strip()]
    groups: dict[tuple[str, int], list[dict]] = {}
    for run in runs:
        groups.setdefault((run["row"], run["workers"]), []).append(run)
    rounds = max(len(group) for group in groups.values())
    print(f"\nMedians over {rounds} runs (range in brackets):\n")
    print("| row | workers | req/s | p50 ms | p99 ms |")
    print("|---|---:|---:|---:|---:|")
    medians = {}
    for (row, workers), group in sorted(groups.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        cells = []
        for field in ("rps", "p50", "p99"):
            values = [run[field] for run in group]
            medians[row, workers, field] = statistics.median(values)
            cells.append(f"{statistics.median(values):.1f} ({min(values):.1f}-{max(values):.1f})")
        print(f"| {row} | {workers} | " + " | ".join(cells) + " |")
    print(f"\n{on_row} / {off_row}: ratio of the medians; median of the per-round pairs [range]\n")
    print("| workers | req/s | p50 | p99 |")
    print("|---:|---:|---:|---:|")
    for workers in sorted({w for _, w in groups}):
        on, off = groups.get((on_row, workers)), groups.get((off_row, workers))
        if on and off:
            cells = []
            for field in ("rps", "p50", "p99"):
                of_medians = medians[on_row, workers, field] / medians[off_row, workers, field]
                # Round i's on and off runs ran back to back, under the same load.
                pairs = [a[field] / b[field] for a, b in zip(on, off, strict=True)]
                spread = f"[{min(pairs):.2f}-{max(pairs):.2f}]"
                cells.append(f"{of_medians:.2f}; {statistics.median(pairs):.2f} {spread}")
            print(f"| {workers} | " + " | ".join(cells) + " |")
    failed = [run for run in runs if run["errors"] or run["socket_errors"]]
    if failed:
        print("\nwarning: some runs had errors:", failed)


if __name__ == "__main__":
    if sys.argv[1:2] == ["parse"]:
        parse(*sys.argv[2:4])
    elif sys.argv[1:2] == ["table"]:
        table(*sys.argv[2:4])
    else:
        sys.exit("usage: saturation_report.py parse ROW WORKERS | table [ON_ROW OFF_ROW]")
