#!/usr/bin/env bash
# Two corgi builds side by side, in paired rounds (this machine drifts by ±15 % over minutes, so each round
# measures both back to back, alternating which goes first, and the ratio is taken per round): C++ /plaintext,
# the WSGI hello world and Flask, keep-alive, one io thread and one lane each. For "this change costs nothing on
# the hot path": new / old per round, then the median.
#   bench/compare_builds.sh OLD_BINARY NEW_BINARY [ROUNDS]   (default 5; DURATION=4 seconds of wrk per run)
set -euo pipefail
cd "$(dirname "$0")/.."
old=$1 new=$2 rounds=${3:-5}
DURATION=${DURATION:-4}
PY=/usr/bin/python3.11
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT
free_port() { $PY -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# serve BINARY PATH_ARGS... -> prints "PID PORT" of a server that answers
serve() {
  local bin=$1; shift
  local port; port=$(free_port)
  PYTHONDONTWRITEBYTECODE=1 "$bin" --http 127.0.0.1:"$port" --io-threads 1 --threads 1 --disable-logging \
    --pythonpath bench/apps "$@" >/dev/null 2>&1 &
  local pid=$!
  for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$port/plaintext" && break; sleep 0.1; done
  echo "$pid $port"
}
rps() { wrk -t1 -c64 -d"${DURATION}s" "http://127.0.0.1:$1$2" | awk '/Requests\/sec/{print $2}'; }

for kind in cpp wsgi flask; do
  case $kind in
    cpp) args=(); path=/plaintext ;;
    wsgi) args=(--mount /w=hello_wsgi:application); path=/w/ ;;
    flask) args=(--mount /f=hello_flask:app); path=/f/ ;;
  esac
  read -r opid oport < <(serve "$old" "${args[@]}"); pids+=("$opid")
  read -r npid nport < <(serve "$new" "${args[@]}"); pids+=("$npid")
  wrk -t1 -c64 -d2s "http://127.0.0.1:$oport$path" >/dev/null  # warm-up
  wrk -t1 -c64 -d2s "http://127.0.0.1:$nport$path" >/dev/null
  ratios=()
  for round in $(seq "$rounds"); do
    if (( round % 2 )); then o=$(rps "$oport" "$path"); n=$(rps "$nport" "$path")
    else n=$(rps "$nport" "$path"); o=$(rps "$oport" "$path"); fi
    ratio=$(echo "$n / $o" | bc -l)
    ratios+=("$ratio")
    printf '%-5s round %d: old %8.0f  new %8.0f req/s  new/old %.3f\n' "$kind" "$round" "$o" "$n" "$ratio"
  done
  printf '%s\n' "${ratios[@]}" | sort -n |
    awk -v k="$kind" '{r[NR] = $1} END {printf "%-5s median new/old %.3f (min %.3f, max %.3f) over %d rounds\n", k, r[int((NR + 1) / 2)], r[1], r[NR], NR}'
  kill "$opid" "$npid" 2>/dev/null || true
done
