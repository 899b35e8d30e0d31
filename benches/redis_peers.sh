#!/usr/bin/env bash
# Redis hit latency of restflow against drf-restflow 2.0.1 (on django-redis,
# in its own virtualenv) and dogpile.cache's Redis backend, each with the
# redis-py floor (GET + pickle.loads) measured in the same process, against
# one redis-server this script starts on a free loopback port.
set -euo pipefail
# shellcheck source=benches/peer_setup.sh
. "$(dirname "$0")/peer_setup.sh"
.venv/bin/pip install --quiet --disable-pip-version-check "dogpile.cache>=1.3"
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
