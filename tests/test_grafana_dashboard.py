"""docs/grafana-dashboard.json (issue 15 item 6): it loads, and every query
uses only the metric names restflow exposes to Prometheus (a histogram's
series are its ``_bucket``, ``_sum`` and ``_count``), so a renamed metric
cannot leave the dashboard silently empty."""

from __future__ import annotations

import json
import re
from pathlib import Path

DASHBOARD = Path(__file__).resolve().parent.parent / "docs" / "grafana-dashboard.json"

COUNTERS = {"restflow_cache_requests_total", "restflow_cache_store_errors_total"}
HISTOGRAMS = {"restflow_cache_compute_seconds", "restflow_cache_lookup_seconds"}
ALLOWED = COUNTERS | {f"{h}_{part}" for h in HISTOGRAMS for part in ("bucket", "sum", "count")}

#: PromQL's own words, which look like metric names to the pattern below.
PROMQL = {"sum", "by", "rate", "histogram_quantile", "le", "label_values"}


def queries(node):
    """Every PromQL string in the dashboard: panel targets and variables."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("expr", "definition") and isinstance(value, str):
                yield value
            elif key == "query" and isinstance(value, str) and "(" in value:
                yield value
            else:
                yield from queries(value)
    elif isinstance(node, list):
        for item in node:
            yield from queries(item)


def metric_names(query: str) -> set[str]:
    # Drop label matchers, strings and durations, then take the identifiers.
    bare = re.sub(r'\{[^}]*\}|"[^"]*"|\[[^\]]*\]', " ", query)
    words = set(re.findall(r"[A-Za-z_:][A-Za-z0-9_:]*", bare))
    return {w for w in words if w not in PROMQL and w not in {"function", "backend", "status"}}


def test_the_dashboard_loads_and_has_panels():
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["title"] == "restflow cache"
    assert len(dashboard["panels"]) >= 6
    assert all(panel["targets"] for panel in dashboard["panels"])


def test_only_restflows_metric_names_are_queried():
    dashboard = json.loads(DASHBOARD.read_text())
    found = set()
    for query in queries(dashboard):
        names = metric_names(query)
        assert names <= ALLOWED, f"{query!r} uses {sorted(names - ALLOWED)}"
        found |= names
    # And each metric is on the dashboard.
    assert {name for name in found if name in COUNTERS} == COUNTERS
    for histogram in HISTOGRAMS:
        assert any(name.startswith(histogram) for name in found), histogram
