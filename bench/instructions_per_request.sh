#!/usr/bin/env bash
# Instructions per request of two corgi builds, counted by valgrind (callgrind): a figure that does not drift with
# the machine's load, for "this change costs at most N % on the hot path" where wall-clock ratios scatter more than N.
# Each binary serves with one io thread and one lane; curl sends keep-alive requests on one connection (URL
# globbing); the count of a short run is subtracted from a long one, so start-up cancels out:
#   (Ir(long) - Ir(short)) / (long - short requests).
#   bench/instructions_per_request.sh OLD_BINARY NEW_BINARY        (SHORT=500 LONG=3000 requests per kind)
set -euo pipefail
cd "$(dirname "$0")/.."
old=$1 new=$2
SHORT=${SHORT:-500} LONG=${LONG:-3000}
PY=/usr/bin/python3.11
out=$(mktemp -d)
pid=
cleanup() { [[ -n $pid ]] && kill "$pid" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$out"; }
trap cleanup EXIT
free_port() { $PY -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# count BINARY REQUESTS PATH ARGS... -> total instructions of the server process (all threads)
count() {
  local bin=$1 n=$2 path=$3; shift 3
  local port; port=$(free_port)
  PYTHONDONTWRITEBYTECODE=1 valgrind --tool=callgrind --callgrind-out-file="$out/cg.%p" --dump-line=no \
    --compress-strings=no "$bin" --http 127.0.0.1:"$port" --io-threads 1 --threads 1 --disable-logging \
    --pythonpath bench/apps "$@" >/dev/null 2>"$out/err" &
  pid=$!
  for _ in $(seq 600); do curl -s -o /dev/null "http://127.0.0.1:$port$path" && break; sleep 0.1; done
  curl -s -o /dev/null "http://127.0.0.1:$port$path?[1-$n]"
  # Dump the counts now (start-up and the requests) rather than at exit: the shutdown is not what
  # is measured, and under valgrind it can take long.
  callgrind_control -d "$pid" >/dev/null 2>&1
  for _ in $(seq 300); do [[ -s $out/cg.$pid.1 ]] && grep -q '^totals:' "$out/cg.$pid.1" && break; sleep 0.1; done
  kill -KILL "$pid"; wait "$pid" 2>/dev/null || true
  local total
  total=$(awk '/^totals:/{s += $2} END {print s}' "$out/cg.$pid.1"); pid=
  rm -f "$out"/cg.*
  echo "$total"
}

for kind in cpp wsgi flask; do
  case $kind in
    cpp) args=(); path=/plaintext ;;
    wsgi) args=(--mount /w=hello_wsgi:application); path=/w/ ;;
    flask) args=(--mount /f=hello_flask:app); path=/f/ ;;
  esac
  declare -A per
  for which in old new; do
    bin=${!which}
    s=$(count "$bin" "$SHORT" "$path" "${args[@]}")
    l=$(count "$bin" "$LONG" "$path" "${args[@]}")
    per[$which]=$(( (l - s) / (LONG - SHORT) ))
  done
  printf '%-5s instructions/request: old %d  new %d  new/old %.3f\n' "$kind" "${per[old]}" "${per[new]}" \
    "$(echo "${per[new]} / ${per[old]}" | bc -l)"
done
