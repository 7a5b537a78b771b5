#!/usr/bin/env bash
# Requests that wait: CONNECTIONS (512) connections on a handler that waits 10 ms, with corgi.sleep and with
# asyncio.sleep through corgi.await_, on one corgi (1 io thread carrying its lane, --fibers above the
# connection count); ROUNDS paired rounds, the ratio asyncio / corgi.sleep of each and their median.
#   bench/await_sleep.sh            DURATION=5 CONNECTIONS=512 ROUNDS=3 CORGI=build/bin/corgi
set -euo pipefail
cd "$(dirname "$0")/.."
CORGI=${CORGI:-build/bin/corgi}
DURATION=${DURATION:-5}
CONNECTIONS=${CONNECTIONS:-512}
ROUNDS=${ROUNDS:-3}
PY=/usr/bin/python3.11
export PYTHONDONTWRITEBYTECODE=1
ulimit -n "$(ulimit -Hn)"
tmp=$(mktemp -d)
server=
cleanup() {
    [ -n "$server" ] && kill "$server" 2>/dev/null && wait "$server" 2>/dev/null
    rm -rf "$tmp"
}
trap cleanup EXIT
port=$($PY -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$CORGI" --http "127.0.0.1:$port" --io-threads 1 --fibers $((CONNECTIONS + 64)) --disable-logging \
    --max-connections $((CONNECTIONS * 2)) --pythonpath bench/apps --wsgi waiting_wsgi:application >"$tmp/corgi.log" 2>&1 &
server=$!
for _ in $(seq 300); do curl -fs -o /dev/null "http://127.0.0.1:$port/asyncio" && break; sleep 0.1; done
rps() {
    wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s" "http://127.0.0.1:$port$1" 2>&1 | awk '/Requests\/sec/{print $2}'
}
echo "wrk -t1 -c$CONNECTIONS -d${DURATION}s, 10 ms wait per request, 1 io thread carrying its lane"
printf '%-6s %14s %14s %8s\n' round corgi.sleep asyncio.sleep ratio
ratios=()
for round in $(seq "$ROUNDS"); do
    a=$(rps /corgi); b=$(rps /asyncio)
    r=$(awk -v a="$a" -v b="$b" 'BEGIN{printf "%.3f", b/a}')
    ratios+=("$r")
    printf '%-6s %14s %14s %8s\n' "$round" "$a" "$b" "$r"
done
median=$(printf '%s\n' "${ratios[@]}" | sort -n | awk '{v[NR]=$1} END{print v[int((NR+1)/2)]}')
echo "median asyncio.sleep / corgi.sleep: $median (goal >= 0.80)"
