#!/usr/bin/env bash
# Async hit latency: restflow (memory and Redis, against its own sync path),
# cashews (memory and Redis) and drf-restflow 2.0.1's async path (LocMem and
# django-redis, in its own virtualenv), against one redis-server on loopback.
set -euo pipefail
# shellcheck source=benches/peer_setup.sh
. "$(dirname "$0")/peer_setup.sh"
.venv/bin/pip install --quiet --disable-pip-version-check "cashews[redis]>=7"
out=$(mktemp)
for _ in 1 2 3; do
    (cd /tmp && "$OLDPWD/.venv/bin/python" "$OLDPWD/benches/async_peer.py" restflow "$url") >>"$out"
    (cd /tmp && "$OLDPWD/.venv/bin/python" "$OLDPWD/benches/async_peer.py" cashews "$url") >>"$out"
    (cd /tmp && "$OLDPWD/.venvs/drf-restflow/bin/python" "$OLDPWD/benches/async_peer.py" drf-restflow "$url") >>"$out"
done
python3 - "$out" <<'PY'
import json, statistics, sys
rows = {}
for line in open(sys.argv[1]):
    run = json.loads(line)
    rows.setdefault(run["package"], []).append(run)
med = lambda name, key: statistics.median(r[key] for r in rows[name])
base_memory, base_redis = med("restflow", "sync_memory_us"), med("restflow", "sync_redis_us")
print("| async hit | memory us | x restflow sync | Redis us | x restflow sync |")
print("|---|---:|---:|---:|---:|")
print(f"| restflow sync path (baseline) | {base_memory:.2f} | 1.00 | {base_redis:.1f} | 1.00 |")
for name, label in (("restflow", "restflow async"), ("cashews", "cashews"), ("drf-restflow", "drf-restflow 2.0.1 async")):
    m, r = med(name, "memory_us"), med(name, "redis_us")
    print(f"| {label} | {m:.2f} | {m / base_memory:.2f} | {r:.1f} | {r / base_redis:.2f} |")
PY
rm -f "$out"
