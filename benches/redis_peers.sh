#!/usr/bin/env bash
# Redis hit latency of restflow against drf-restflow 2.0.1 (on django-redis,
# in its own virtualenv) and dogpile.cache's Redis backend, each with the
# redis-py floor (GET + pickle.loads) measured in the same process, against
# one redis-server this script starts on a free loopback port.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/bootstrap.sh >/dev/null
.venv/bin/pip install --quiet --disable-pip-version-check "dogpile.cache>=1.3"
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
    (cd /tmp && "$OLDPWD/.venv/bin/python" "$OLDPWD/benches/redis_peer.py" restflow "$url") >>"$out"
    (cd /tmp && "$OLDPWD/.venvs/drf-restflow/bin/python" "$OLDPWD/benches/redis_peer.py" drf-restflow "$url") >>"$out"
    (cd /tmp && "$OLDPWD/.venv/bin/python" "$OLDPWD/benches/redis_peer.py" dogpile "$url") >>"$out"
done
python3 - "$out" <<'PY'
import json, statistics, sys
rows = {}
for line in open(sys.argv[1]):
    run = json.loads(line)
    rows.setdefault(run["contender"], []).append(run)
print("| contender | hit us | floor us (same process) | x floor |")
print("|---|---:|---:|---:|")
for name in ("restflow", "drf-restflow", "dogpile"):
    runs = rows[name]
    hit = statistics.median(r["hit_us"] for r in runs)
    floor = statistics.median(r["floor_us"] for r in runs)
    label = {"drf-restflow": "drf-restflow 2.0.1 + django-redis", "dogpile": "dogpile.cache (redis)"}.get(name, "restflow-cache")
    print(f"| {label} | {hit:.1f} | {floor:.1f} | {hit / floor:.2f} |")
PY
rm -f "$out"
