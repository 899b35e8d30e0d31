#!/usr/bin/env bash
# Runs the key-building benchmark against restflow (.venv) and against
# drf-restflow 2.0.1, the older pure-Python package with the same import
# name, installed from PyPI into its own virtualenv (.venvs/drf-restflow).
# The two runs alternate, three times each; medians are compared.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/bootstrap.sh >/dev/null
if [ ! -x .venvs/drf-restflow/bin/python ]; then
    python3 -m venv .venvs/drf-restflow
    .venvs/drf-restflow/bin/pip install --quiet --disable-pip-version-check \
        "drf-restflow==2.0.1" "Django>=4.2" "djangorestframework>=3.14"
fi
out=$(mktemp)
for _ in 1 2 3; do
    (cd /tmp && "$OLDPWD/.venv/bin/python" "$OLDPWD/benches/key_building.py") >>"$out"
    (cd /tmp && "$OLDPWD/.venvs/drf-restflow/bin/python" "$OLDPWD/benches/key_building.py") >>"$out"
done
python3 - "$out" <<'PY'
import json, statistics, sys
runs = [json.loads(line) for line in open(sys.argv[1])]
by = {}
for run in runs:
    by.setdefault(run["package"], []).append(run)
new, old = by["restflow-cache"], by["drf-restflow"]
med = lambda rows, key: statistics.median(r[key] for r in rows)
print("| package | generate_key ns | get_cache_key ns | cached call (hit) ns | key |")
print("|---|---:|---:|---:|---|")
for name, rows in (("restflow-cache", new), ("drf-restflow 2.0.1", old)):
    gk = med(rows, "get_cache_key_ns") if "get_cache_key_ns" in rows[0] else float("nan")
    print(f"| {name} | {med(rows, 'generate_key_ns'):.0f} | {gk:.0f} | {med(rows, 'hit_ns'):.0f} | `{rows[0]['key']}` |")
print(f"\ngenerate_key: drf-restflow / restflow = {med(old, 'generate_key_ns') / med(new, 'generate_key_ns'):.1f}x")
print(f"cached call hit: drf-restflow / restflow = {med(old, 'hit_ns') / med(new, 'hit_ns'):.1f}x")
PY
rm -f "$out"
