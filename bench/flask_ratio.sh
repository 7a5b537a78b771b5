#!/usr/bin/env bash
# Flask on corgi against Flask's in-process ceiling, in paired rounds: this machine's speed drifts by ±15 % over
# minutes, so each round measures both back to back and the ratio is taken per round.
#   CORGI=build/bin/corgi bench/flask_ratio.sh [ROUNDS]   (default 5; DURATION=4 seconds of wrk per round)
set -euo pipefail
cd "$(dirname "$0")/.."
CORGI=${CORGI:-build/bin/corgi}
rounds=${1:-5}
DURATION=${DURATION:-4}
PY=/usr/bin/python3.11
port=$($PY -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
PYTHONDONTWRITEBYTECODE=1 "$CORGI" --http 127.0.0.1:"$port" --io-threads 1 --threads 1 --disable-logging \
  --pythonpath bench/apps --wsgi hello_flask:app >/dev/null 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null || true' EXIT
for _ in $(seq 50); do curl -s -o /dev/null "http://127.0.0.1:$port/" && break; sleep 0.1; done
wrk -t1 -c64 -d2s "http://127.0.0.1:$port/" >/dev/null  # warm-up
ratios=()
for round in $(seq "$rounds"); do
  served=$(wrk -t1 -c64 -d"${DURATION}s" "http://127.0.0.1:$port/" | awk '/Requests\/sec/{print $2}')
  ceiling=$($PY bench/apps/flask_ceiling.py 20000)
  ratio=$(echo "$served / $ceiling" | bc -l)
  ratios+=("$ratio")
  printf 'round %d: corgi %8.0f req/s  ceiling %6d calls/s  ratio %.2f\n' "$round" "$served" "$ceiling" "$ratio"
done
printf '%s\n' "${ratios[@]}" | sort -n |
  awk '{r[NR] = $1} END {printf "median ratio %.2f (min %.2f, max %.2f) over %d rounds\n", r[int((NR + 1) / 2)], r[1], r[NR], NR}'
