#!/usr/bin/env bash
# Throughput at saturation: gunicorn (sync workers) serving one DRF view whose
# payload comes from a cache_result function, driven by wrk over loopback
# until the machine is saturated. Decides READ_SPIN's default: a busy-wait
# that wins a Redis hit in a tight loop burns the round trip as CPU on every
# hit, which another worker could have used.
#
# Rows, for 2 and 4 workers: Redis with READ_SPIN=0.0001 and READ_SPIN=0
# (alternated, the first of the pair swapped each round, so drift in the
# machine's load hits both alike), and as baselines the memory store and the
# uncached view. Each run: a fresh gunicorn, 1 s of warm-up, then
# DURATION seconds of wrk (-t1, CONNECTIONS connections, --latency).
# Prints per-run lines, then medians over ROUNDS rounds and the on/off ratios:
# of the medians, and the median of each round's adjacent on/off pair (the
# pair saw the same load, so it is the steadier figure on a shared machine).
#
# KIND=async measures the other speed trick instead: uvicorn (2 and 4
# workers) serving an async Django view whose payload comes from an async
# cache_result function on Redis, with LOOP_SOCKET on (the event loop reads
# the hit on its own socket) and off (a worker thread does the round trip);
# same alternation and baselines.
#
# Usage: bash benches/saturation.sh      (env: KIND=sync|async ROUNDS=3 DURATION=10
# CONNECTIONS=16 BASELINES=1; BASELINES=0 leaves out the memory and uncached rows)
# ROWS=near instead compares, with 2 workers, Redis with NEAR_CACHE on and
# off against the uncached view (the near cache's bar: >= 0.95x uncached).
# Needs wrk (Debian's package, installed here when missing and running as
# root) and gunicorn (pip-installed into .venv when missing). Everything it
# starts (redis-server on a free 127.0.0.1 port, gunicorn) stops at exit.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10}
CONNECTIONS=${CONNECTIONS:-16}
BASELINES=${BASELINES:-1}
KIND=${KIND:-sync}

./scripts/bootstrap.sh >/dev/null
.venv/bin/python -c 'import gunicorn' 2>/dev/null ||
    .venv/bin/pip install --quiet --disable-pip-version-check "gunicorn>=22"
.venv/bin/python -c 'import uvicorn' 2>/dev/null ||
    .venv/bin/pip install --quiet --disable-pip-version-check "uvicorn>=0.30"
if ! command -v wrk >/dev/null 2>&1; then
    if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null
    else
        echo "saturation.sh: wrk is missing; install it (e.g. apt-get install wrk)" >&2
        exit 1
    fi
fi

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
redis_port=$(free_port)
redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no >/dev/null &
redis_pid=$!
server_pid=
out=$(mktemp)
cleanup() {
    [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null || true
    kill "$redis_pid" 2>/dev/null || true
    wait 2>/dev/null || true
    rm -f "$out"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
redis_url="redis://127.0.0.1:$redis_port/0"

# Waits until the server answers a request (the first one fills the cache).
ready() {
    .venv/bin/python - "$1" <<'PY'
import sys, time, urllib.request
for _ in range(200):
    try:
        urllib.request.urlopen(sys.argv[1], timeout=1).read()
        sys.exit(0)
    except OSError:
        time.sleep(0.05)
sys.exit("saturation.sh: the server did not answer")
PY
}

ROWS=${ROWS:-spin}

# run ROW WORKERS BACKEND SWITCH [NEAR_CACHE]: one fresh server, warm-up, one
# wrk run. SWITCH is READ_SPIN (KIND=sync, gunicorn) or LOOP_SOCKET 1/0
# (KIND=async, uvicorn); NEAR_CACHE 1 turns the near cache on.
run() {
    local row=$1 workers=$2 backend=$3 switch=$4 near=${5:-0} port url
    port=$(free_port)
    if [ "$KIND" = async ]; then
        BENCH_BACKEND=$backend BENCH_LOOP_SOCKET=$switch BENCH_NEAR_CACHE=$near .venv/bin/uvicorn \
            --workers "$workers" --host 127.0.0.1 --port "$port" --app-dir benches \
            --log-level warning --no-access-log saturation_app:asgi_application &
        url="http://127.0.0.1:$port/apayload/"
    else
        BENCH_BACKEND=$backend BENCH_READ_SPIN=$switch BENCH_NEAR_CACHE=$near .venv/bin/gunicorn \
            --workers "$workers" --worker-class sync --bind "127.0.0.1:$port" \
            --pythonpath benches --log-level warning saturation_app:application &
        url="http://127.0.0.1:$port/payload/"
    fi
    server_pid=$!
    ready "$url"
    wrk -t1 -c"$CONNECTIONS" -d1s "$url" >/dev/null
    wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s" --latency "$url" |
        .venv/bin/python benches/saturation_report.py parse "$row" "$workers" >>"$out"
    tail -n 1 "$out"
    kill "$server_pid"
    wait "$server_pid" 2>/dev/null || true
    server_pid=
}

# The pair compared: (row, switch) on, then off.
if [ "$KIND" = async ]; then
    on_row="redis loop-socket" on=1 off_row="redis threads" off=0
else
    on_row="redis spin" on=0.0001 off_row="redis no-spin" off=0
fi
echo "load before: $(uptime)"
for round in $(seq "$ROUNDS"); do
    if [ "$ROWS" = near ]; then
        run "redis near" 2 "$redis_url" 0.0001 1
        run "uncached" 2 none 0.0001
        run "redis" 2 "$redis_url" 0.0001
        continue
    fi
    for workers in 2 4; do
        if [ $((round % 2)) = 1 ]; then
            run "$on_row" "$workers" "$redis_url" "$on"
            run "$off_row" "$workers" "$redis_url" "$off"
        else
            run "$off_row" "$workers" "$redis_url" "$off"
            run "$on_row" "$workers" "$redis_url" "$on"
        fi
        if [ "$BASELINES" = 1 ]; then
            run "memory" "$workers" memory "$off"
            run "uncached" "$workers" none "$off"
        fi
    done
done
echo "load after: $(uptime)"
.venv/bin/python benches/saturation_report.py table "$on_row" "$off_row" <"$out"
