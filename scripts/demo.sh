#!/usr/bin/env bash
# Runs the restflow DRF demo (examples/drf_demo) on http://127.0.0.1:$PORT
# and prints the curl lines that show every cache status.
#
#   ./scripts/demo.sh                 # port 8000
#   PORT=8123 ./scripts/demo.sh       # another port
#   SKIP_BOOTSTRAP=1 ./scripts/demo.sh  # reuse .venv as it is (no rebuild)
#
# The server runs with --noreload: restflow's cache lives in the server
# process, and the autoreloader would serve from a child process that is
# replaced (cache and all) on every code change.
set -euo pipefail
cd "$(dirname "$0")/.."

PORT=${PORT:-8000}
URL="http://127.0.0.1:${PORT}"

if [ "${SKIP_BOOTSTRAP:-0}" != "1" ]; then
    ./scripts/bootstrap.sh
fi
# shellcheck disable=SC1091
. .venv/bin/activate

cat <<BANNER

restflow DRF demo on ${URL}  (ttl 5 s, stale window 30 s; Ctrl-C stops it)

In another terminal, run these in order (copy them as they are):

  # MISS: computed (0.2 s) and stored
  curl -si ${URL}/users/1/ | grep -i '^x-cache'
  # HIT: same X-Cached-at
  curl -si ${URL}/users/1/ | grep -i '^x-cache'
  # wait past the 5 s ttl, then STALE: the old value, served while it refreshes
  sleep 6; curl -si ${URL}/users/1/ | grep -i '^x-cache'
  # HIT again, with a newer X-Cached-at (the background refresh ran)
  sleep 1; curl -si ${URL}/users/1/ | grep -i '^x-cache'
  # REFRESH: forced recompute
  curl -si '${URL}/users/1/?refresh=1' | grep -i '^x-cache'
  # BYPASS: computed live, cache untouched (no X-Cached-at)
  curl -si '${URL}/users/1/?bypass=1' | grep -i '^x-cache'

The APIView answers the same way at ${URL}/class/users/<id>/ ; both views
share one cache, so use another id there (e.g. /class/users/2/) to start at MISS.
Drop "| grep ..." to see the JSON body: its "version" goes up on each computation.
35 s after an entry was stored (ttl + stale window) it is gone: MISS again.

BANNER

exec python examples/drf_demo/manage.py runserver "127.0.0.1:${PORT}" --noreload
