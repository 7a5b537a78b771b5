#!/usr/bin/env bash
# CPU time per request of each corgi thread (the Python lane, the io thread) under a keep-alive wrk load: steadier
# than requests/s on a shared machine, for A/B comparisons of builds.
#   bench/lane_cost.sh CORGI_BINARY MODULE:CALLABLE [RUNS]   e.g. bench/lane_cost.sh build/bin/corgi hello_flask:app 6
# Prints one line per run: requests/s, then µs of CPU per request for each busy thread (by name).
set -euo pipefail
cd "$(dirname "$0")/.."
bin=$1 app=$2 runs=${3:-3}
DURATION=${DURATION:-4}
PY=/usr/bin/python3.11
for _ in $(seq "$runs"); do
  port=$($PY -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  PYTHONDONTWRITEBYTECODE=1 "$bin" --http 127.0.0.1:"$port" --io-threads 1 --threads 1 --disable-logging \
    --pythonpath bench/apps --wsgi "$app" >/dev/null 2>&1 &
  pid=$!
  for _ in $(seq 50); do curl -s -o /dev/null "http://127.0.0.1:$port/" && break; sleep 0.1; done
  wrk -t1 -c64 -d2s "http://127.0.0.1:$port/" >/dev/null  # warm-up
  snapshot() { for t in /proc/$pid/task/*; do echo "$(basename "$t") $(cat "$t/comm") $(awk '{print $14+$15}' "$t/stat")"; done; }
  before=$(snapshot)
  out=$(wrk -t1 -c64 -d"${DURATION}s" "http://127.0.0.1:$port/")
  after=$(snapshot)
  kill "$pid"; wait "$pid" 2>/dev/null || true
  n=$(awk '/requests in/{print $1}' <<<"$out")
  hz=$(getconf CLK_TCK)
  printf '%s req/s' "$(awk '/Requests\/sec/{print $2}' <<<"$out")"
  join <(sort <<<"$before") <(sort <<<"$after") |
    awk -v n="$n" -v hz="$hz" '{ticks = $5 - $3; if (ticks > 0) printf "  %s %.1f us", $2, ticks * 1e6 / hz / n}'
  echo
done
