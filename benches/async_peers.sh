#!/usr/bin/env bash
# Async hit latency: restflow (memory and Redis, against its own sync path),
# cashews (memory and Redis) and drf-restflow 2.0.1's async path (LocMem and
# django-redis, in its own virtualenv), against one redis-server on loopback.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/bootstrap.sh >/dev/null
.venv/bin/pip install --quiet --disable-pip-version-check "cashews[redis]>=7"
if [ ! -x .venvs/drf-restflow/bin/python ]; then
    python3 -m venv .venvs/drf-restflow
fi
.venvs/drf-restflow/bin/pip install --quiet --disable-pip-version-check \
    "drf-restflow==2.0.1" "Django>=4.2" "djangorestframework>=3.14" "django-redis>=5.4" "redis>=5"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no >/dev/null &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
sleep 0.5
url="redis://127.0.0.1:$port/0"
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
