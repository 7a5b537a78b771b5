#!/usr/bin/env bash
# Side-by-side benchmark on loopback: every server gets the same wrk load in one run, one core (1 worker / 1 io
# thread / 1 lane), with keep-alive and with `Connection: close`. Prints requests/s, p99 latency, RSS and ratios.
#   bench/run.sh [cpp|wsgi|all] (default all); DURATION=10 CONNECTIONS=64 to change the load.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/nginx_conf.sh
what=${1:-all}
CORGI=${CORGI:-build/bin/corgi}
PY=/usr/bin/python3.11
DURATION=${DURATION:-10}
CONNECTIONS=${CONNECTIONS:-64}
tmp=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$tmp"; }
trap cleanup EXIT

free_port() { $PY -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$1$2" && return 0; sleep 0.1; done; echo "server on $1 did not start" >&2; return 1; }
rss_kib() { local total=0; for p in $(pgrep -P "$1") "$1"; do total=$((total + $(awk '/VmRSS/{print $2}' /proc/$p/status 2>/dev/null || echo 0))); done; echo $total; }

# run_wrk NAME PORT PATH MODE(ka|close) PID -> appends "name mode rps p99ms rss" to results
results=$tmp/results
run_wrk() {
  local name=$1 port=$2 path=$3 mode=$4 pid=$5 extra=()
  [ "$mode" = close ] && extra=(-H "Connection: close")
  local out
  out=$(wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s" --latency "${extra[@]}" "http://127.0.0.1:$port$path" 2>&1)
  local rps p99 errors
  rps=$(awk '/Requests\/sec/{print $2}' <<<"$out")
  p99=$(awk '$1=="99%"{v=$2; if (v ~ /us$/) {sub(/us/,"",v); v=v/1000} else if (v ~ /ms$/) {sub(/ms/,"",v)} else if (v ~ /s$/) {sub(/s/,"",v); v=v*1000}; print v}' <<<"$out")
  errors=$(awk '/Non-2xx|Socket errors/{print}' <<<"$out" | tr '\n' ' ')
  local rss; rss=$(rss_kib "$pid")
  printf '%-34s %-6s %10s %9s %9s  %s\n' "$name" "$mode" "${rps:-0}" "${p99:-?}" "$rss" "$errors"
  printf '%s\t%s\t%s\t%s\t%s\n' "$name" "$mode" "${rps:-0}" "${p99:-?}" "$rss" >>"$results"
}

start() {  # start NAME PORT PATH cmd... : runs cmd in the background, waits for PATH to answer
  local name=$1 port=$2 path=$3; shift 3
  "$@" >"$tmp/${name//[^A-Za-z0-9]/_}.log" 2>&1 &
  pids+=($!)
  last_pid=$!
  wait_port "$port" "$path"
}

bench_server() {  # bench_server NAME PATH cmd-with-PORT... (PORT replaced)
  local name=$1 path=$2; shift 2
  local port; port=$(free_port)
  local args=("${@//PORT/$port}")
  start "$name" "$port" "$path" "${args[@]}"
  local pid=$last_pid
  # Warm-up, the same for every server: CPython specialises its bytecode on first use, caches fill.
  wrk -t1 -c"$CONNECTIONS" -d2s "http://127.0.0.1:$port$path" >/dev/null 2>&1 || true
  for mode in ka close; do run_wrk "$name" "$port" "$path" "$mode" "$pid"; done
  kill "$pid"; wait "$pid" 2>/dev/null || true
}

printf '%-34s %-6s %10s %9s %9s\n' server mode req/s p99_ms rss_kib
: >"$results"

if [ "$what" = cpp ] || [ "$what" = all ]; then
  { nginx_conf_start "$tmp"; cat <<NGINX
  server { listen 127.0.0.1:PORT; location / { default_type text/plain; return 200 "Hello, World!"; } }
}
NGINX
  } >"$tmp/nginx.conf"
  port=$(free_port); sed -i "s/PORT/$port/" "$tmp/nginx.conf"
  start nginx "$port" / /usr/sbin/nginx -p "$tmp" -c "$tmp/nginx.conf"; pid=$last_pid
  for mode in ka close; do run_wrk "nginx return 200" "$port" / "$mode" "$pid"; done
  kill "$pid"; wait "$pid" 2>/dev/null || true
  bench_server "corgi C++ /plaintext" /plaintext "$CORGI" --http 127.0.0.1:PORT --io-threads 1 --disable-logging
fi

if [ "$what" = wsgi ] || [ "$what" = all ]; then
  export PYTHONDONTWRITEBYTECODE=1
  bench_server "corgi wsgi hello" / "$CORGI" --http 127.0.0.1:PORT --io-threads 1 --threads 1 --disable-logging \
    --pythonpath bench/apps --wsgi hello_wsgi:application
  bench_server "uwsgi --http-socket hello" / uwsgi --plugin python3 --http-socket 127.0.0.1:PORT --processes 1 \
    --disable-logging --pythonpath bench/apps --wsgi-file bench/apps/hello_wsgi.py
  bench_server "uwsgi --http11-socket hello" / uwsgi --plugin python3 --http11-socket 127.0.0.1:PORT --processes 1 \
    --disable-logging --pythonpath bench/apps --wsgi-file bench/apps/hello_wsgi.py
  bench_server "gunicorn sync hello" / gunicorn --chdir bench/apps -w 1 -b 127.0.0.1:PORT hello_wsgi:application
  bench_server "gunicorn gthread(4) hello" / gunicorn --chdir bench/apps -w 1 -k gthread --threads 4 -b 127.0.0.1:PORT hello_wsgi:application
  bench_server "corgi flask hello" / "$CORGI" --http 127.0.0.1:PORT --io-threads 1 --threads 1 --disable-logging \
    --pythonpath bench/apps --wsgi hello_flask:app
  bench_server "uwsgi --http11-socket flask" / uwsgi --plugin python3 --http11-socket 127.0.0.1:PORT --processes 1 \
    --disable-logging --pythonpath bench/apps --module hello_flask:app
  bench_server "gunicorn sync flask" / gunicorn --chdir bench/apps -w 1 -b 127.0.0.1:PORT hello_flask:app
  # The best of five runs: a ceiling is what Flask can do, not what it did while the machine was busy.
  ceiling=$(for _ in 1 2 3 4 5; do $PY bench/apps/flask_ceiling.py 10000; done | sort -n | tail -1)
  echo "flask in-process ceiling (best of 5): $ceiling calls/s"
  printf 'flask ceiling\tka\t%s\t-\t-\n' "$ceiling" >>"$results"
fi

echo
echo "ratios:"
$PY - "$results" <<'PYEOF'
import sys
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1]) if l.strip()]
rps = {(r[0], r[1]): float(r[2] or 0) for r in rows}
def best(prefix, mode):
    vals = [v for (n, m), v in rps.items() if n.startswith(prefix) and m == mode]
    return max(vals) if vals else 0
for mode in ("ka", "close"):
    pairs = [("corgi C++ / nginx", best("corgi C++", mode), best("nginx", mode)),
             ("corgi WSGI hello / corgi C++", best("corgi wsgi hello", mode), best("corgi C++", mode)),
             ("corgi WSGI hello / best uWSGI hello", best("corgi wsgi hello", mode), max(best("uwsgi --http-socket hello", mode), best("uwsgi --http11-socket hello", mode))),
             ("corgi WSGI hello / best Gunicorn hello", best("corgi wsgi hello", mode), best("gunicorn", mode) and max(v for (n, m), v in rps.items() if n.startswith("gunicorn") and n.endswith("hello") and m == mode)),
             ("corgi Flask / Flask in-process ceiling", best("corgi flask", mode), best("flask ceiling", "ka")),
             ("corgi Flask / uWSGI Flask", best("corgi flask", mode), best("uwsgi --http11-socket flask", mode))]
    for name, a, b in pairs:
        if a and b:
            print(f"  {name:42s} ({mode:5s}): {a / b:6.2f}")
PYEOF
