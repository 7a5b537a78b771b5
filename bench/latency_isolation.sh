#!/usr/bin/env bash
# Latency isolation: the p99 of a C++ route while Python requests saturate every lane, against its
# p99 with the lanes idle, in one corgi (1 io thread, LANES lanes). The Python route spends CPU_MS
# of CPU per request (bench/apps/cpu_wsgi.py) under PY_CONNECTIONS connections; the C++ route gets
# CPP_CONNECTIONS connections, as fast as they go (CPP_PACED=1: a request every millisecond each).
#   bench/latency_isolation.sh                 CORGI=build/bin/corgi DURATION=8 ROUNDS=3 LANES=1
#   EXTRA="--lane-nice 0"                      more corgi flags (to compare configurations)
set -euo pipefail
cd "$(dirname "$0")/.."
CORGI=${CORGI:-build/bin/corgi}
PY=/usr/bin/python3.11
DURATION=${DURATION:-8}
ROUNDS=${ROUNDS:-3}
LANES=${LANES:-1}
CPU_MS=${CPU_MS:-2}
PY_CONNECTIONS=${PY_CONNECTIONS:-64}
CPP_CONNECTIONS=${CPP_CONNECTIONS:-64}
CPP_PACED=${CPP_PACED:-0}
read -r -a extra <<<"${EXTRA:-}"
tmp=$(mktemp -d)
pid=
cleanup() {
    [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
    rm -rf "$tmp"
}
trap cleanup EXIT
export PYTHONDONTWRITEBYTECODE=1 CPU_MS

port=$($PY -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat >"$tmp/routes.json" <<JSON
{"routes": [{"rule": "/plaintext", "endpoint": "plaintext", "handler": "plaintext"},
            {"mount": "/", "wsgi": "cpu_wsgi:application"}]}
JSON
echo "function delay() return 1 end" >"$tmp/pace.lua"
"$CORGI" --config "$tmp/routes.json" --pythonpath bench/apps --http "127.0.0.1:$port" --io-threads 1 \
    --threads "$LANES" --disable-logging "${extra[@]}" >"$tmp/corgi.log" 2>&1 &
pid=$!
for _ in $(seq 150); do curl -fs -o /dev/null "http://127.0.0.1:$port/plaintext" && break; sleep 0.1; done
curl -fs -o /dev/null "http://127.0.0.1:$port/" || { cat "$tmp/corgi.log" >&2; exit 1; }

p99_ms() {  # wrk --latency output -> p99 in ms
    awk '$1=="99%"{v=$2; if (v ~ /us$/) {sub(/us/,"",v); v=v/1000} else if (v ~ /ms$/) {sub(/ms/,"",v)} else if (v ~ /s$/) {sub(/s/,"",v); v=v*1000}; print v}'
}
pace=()
[ "$CPP_PACED" = 1 ] && pace=(-s "$tmp/pace.lua")
cpp_run() {
    wrk -t1 -c"$CPP_CONNECTIONS" -d"${DURATION}s" --latency "${pace[@]}" "http://127.0.0.1:$port/plaintext" 2>&1
}
echo "corgi 1 io thread, $LANES lane(s) ${extra[*]}; Python: ${CPU_MS} ms CPU/request, $PY_CONNECTIONS connections"
printf '%-6s %12s %12s %8s %14s\n' round idle_p99_ms busy_p99_ms ratio python_req/s
ratios=()
for round in $(seq "$ROUNDS"); do
    idle=$(cpp_run | p99_ms)
    wrk -t1 -c"$PY_CONNECTIONS" -d"$((DURATION + 2))s" "http://127.0.0.1:$port/" >"$tmp/py.out" 2>&1 &
    load=$!
    sleep 1
    busy=$(cpp_run | p99_ms)
    wait "$load"
    py_rps=$(awk '/Requests\/sec/{print $2}' "$tmp/py.out")
    ratio=$(awk -v a="$busy" -v b="$idle" 'BEGIN{printf "%.2f", a / b}')
    ratios+=("$ratio")
    printf '%-6s %12s %12s %8s %14s\n' "$round" "$idle" "$busy" "$ratio" "$py_rps"
done
printf '%s\n' "${ratios[@]}" | sort -n | awk '{a[NR]=$1} END{printf "median busy/idle p99: %s (goal <= 2)\n", a[int((NR+1)/2)]}'
