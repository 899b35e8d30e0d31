# Sourced by the peer benchmarks: the project's .venv, drf-restflow 2.0.1
# (same import name, so its own virtualenv, with django-redis), and a
# redis-server on a free loopback port, stopped when the script exits.
# Sets $url.
cd "$(dirname "${BASH_SOURCE[0]}")/.."
./scripts/bootstrap.sh >/dev/null
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
