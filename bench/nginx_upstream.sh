#!/usr/bin/env bash
# Behind nginx, in one run and under the same wrk load: nginx -> corgi over uwsgi vs nginx -> uWSGI over uwsgi
# (the same WSGI app, 1 process / 1 lane, 1 nginx worker), plus corgi's other proxy protocols, the C++ handler
# behind nginx, and HTTP direct (no nginx). Prints requests/s and p99 for each, then the ratios.
#   bench/nginx_upstream.sh               DURATION=10 CONNECTIONS=64 THREADS=1 to change the load
#   CORGI=build/bin/corgi (default)       the binary to measure (build Release: `make run` builds build/)
#   KEEP_TMP=1                            keep the temporary directory (configs, logs) for inspection
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/nginx_conf.sh
CORGI=${CORGI:-build/bin/corgi}
# Where corgi's lane runs: true (on its io thread, what a Python-only corgi does by default) or false (a lane
# thread of its own, what a corgi with C++ routes does; this map has one, so it is given explicitly).
PYTHON_ON_IO_THREADS=${PYTHON_ON_IO_THREADS:-true}
PY=/usr/bin/python3.11
DURATION=${DURATION:-10}
CONNECTIONS=${CONNECTIONS:-64}
THREADS=${THREADS:-1}
APP_DIR=$PWD/bench/apps
tmp=$(mktemp -d)
pids=()
cleanup() {
    [ -n "${KEEP_TMP:-}" ] && { echo "kept $tmp" >&2; tmp=/nonexistent; }
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$tmp"
}
trap cleanup EXIT

for tool in wrk /usr/sbin/nginx uwsgi "$CORGI"; do
    command -v "$tool" >/dev/null || { echo "missing: $tool" >&2; exit 2; }
done

free_port() { $PY -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_http() {
    for _ in $(seq 150); do
        curl -fs -o /dev/null "http://127.0.0.1:$1$2" && return 0
        sleep 0.1
    done
    echo "nothing answers on http://127.0.0.1:$1$2" >&2
    return 1
}
start() {  # start LOGNAME cmd... : background process, pid in $last_pid
    local log=$1; shift
    "$@" >"$tmp/$log.log" 2>&1 &
    last_pid=$!
    pids+=("$last_pid")
}
stop() { kill "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; }

results=$tmp/results
: >"$results"
# measure NAME PORT PATH: one wrk run (keep-alive between wrk and the front), one result row.
measure() {
    local name=$1 port=$2 path=$3 out rps p99 errors
    out=$(wrk -t"$THREADS" -c"$CONNECTIONS" -d"${DURATION}s" --latency "http://127.0.0.1:$port$path" 2>&1)
    rps=$(awk '/Requests\/sec/{print $2}' <<<"$out")
    p99=$(awk '$1=="99%"{v=$2; if (v ~ /us$/) {sub(/us/,"",v); v=v/1000} else if (v ~ /ms$/) {sub(/ms/,"",v)} else if (v ~ /s$/) {sub(/s/,"",v); v=v*1000}; print v}' <<<"$out")
    errors=$(awk '/Non-2xx|Socket errors/{print}' <<<"$out" | tr '\n' ' ')
    printf '%-44s %10s %9s  %s\n' "$name" "${rps:-0}" "${p99:-?}" "$errors"
    printf '%s\t%s\t%s\n' "$name" "${rps:-0}" "${p99:-?}" >>"$results"
}

# --- backends -------------------------------------------------------------------------------------------------
export PYTHONDONTWRITEBYTECODE=1
uwsgi_app=$(free_port)       # uWSGI, uwsgi protocol, hello_wsgi
corgi_uwsgi=$(free_port)     # corgi, uwsgi protocol, hello_wsgi at / and C++ at /plaintext
corgi_fcgi=$(free_port)
corgi_scgi=$(free_port)
corgi_http=$(free_port)
corgi_unix=$tmp/corgi-uwsgi.sock

routes=$tmp/routes.json
cat >"$routes" <<JSON
{"routes": [{"rule": "/plaintext", "endpoint": "plaintext", "handler": "plaintext"},
            {"mount": "/", "wsgi": "hello_wsgi:application"}]}
JSON

start uwsgi uwsgi --plugin python3 --uwsgi-socket "127.0.0.1:$uwsgi_app" --processes 1 --threads 1 \
    --disable-logging --pythonpath "$APP_DIR" --wsgi-file "$APP_DIR/hello_wsgi.py"
start corgi "$CORGI" --config "$routes" --pythonpath "$APP_DIR" --io-threads 1 --threads 1 --disable-logging \
    --python-on-io-threads "$PYTHON_ON_IO_THREADS" --socket "127.0.0.1:$corgi_uwsgi" --socket "unix:$corgi_unix" --fastcgi-socket "127.0.0.1:$corgi_fcgi" \
    --scgi-socket "127.0.0.1:$corgi_scgi" --http "127.0.0.1:$corgi_http"
corgi_pid=$last_pid
wait_http "$corgi_http" /plaintext
# A corgi built without the WSGI layer serves the C++ rows only.
wsgi=1
curl -fs -o /dev/null "http://127.0.0.1:$corgi_http/" || wsgi=0
[ "$wsgi" = 1 ] || echo "note: corgi answered / with an error (built without WSGI?): WSGI rows skipped" >&2

# --- nginx: one server block per backend ------------------------------------------------------------------------
declare -A front
servers=""
add_front() {  # add_front NAME LOCATION-BODY
    local port; port=$(free_port)
    front[$1]=$port
    servers+="  server { listen 127.0.0.1:$port; location / { $2 } }"$'\n'
}
add_front uwsgi_uwsgi "include uwsgi_params; uwsgi_pass 127.0.0.1:$uwsgi_app;"
add_front corgi_uwsgi "include uwsgi_params; uwsgi_pass 127.0.0.1:$corgi_uwsgi;"
add_front corgi_uwsgi_unix "include uwsgi_params; uwsgi_pass unix:$corgi_unix;"
add_front corgi_fastcgi "include fastcgi_params; fastcgi_pass corgi_fastcgi; fastcgi_keep_conn on;"
add_front corgi_scgi "include scgi_params; scgi_pass 127.0.0.1:$corgi_scgi;"
add_front corgi_http "proxy_pass http://corgi_http; proxy_http_version 1.1; proxy_set_header Connection \"\";"
for f in uwsgi_params fastcgi_params scgi_params; do ln -s "/etc/nginx/$f" "$tmp/$f"; done
{ nginx_conf_start "$tmp"; cat <<NGINX
  upstream corgi_fastcgi { server 127.0.0.1:$corgi_fcgi; keepalive 32; }
  upstream corgi_http { server 127.0.0.1:$corgi_http; keepalive 32; }
$servers}
NGINX
} >"$tmp/nginx.conf"
start nginx /usr/sbin/nginx -p "$tmp" -e "$tmp/nginx-error.log" -c "$tmp/nginx.conf"
for name in "${!front[@]}"; do wait_http "${front[$name]}" /plaintext || wait_http "${front[$name]}" /; done

# --- runs -------------------------------------------------------------------------------------------------------
echo "wrk -t$THREADS -c$CONNECTIONS -d${DURATION}s; 1 nginx worker; backends: 1 process / 1 io thread / 1 lane (corgi's on its io thread: $PYTHON_ON_IO_THREADS)"
printf '%-44s %10s %9s\n' "path" "req/s" "p99_ms"
if [ "$wsgi" = 1 ]; then
    measure "nginx -> uWSGI (uwsgi) wsgi hello" "${front[uwsgi_uwsgi]}" /
    measure "nginx -> corgi (uwsgi) wsgi hello" "${front[corgi_uwsgi]}" /
    measure "nginx -> corgi (uwsgi, unix) wsgi hello" "${front[corgi_uwsgi_unix]}" /
    measure "nginx -> corgi (fastcgi keep-conn) wsgi hello" "${front[corgi_fastcgi]}" /
    measure "nginx -> corgi (scgi) wsgi hello" "${front[corgi_scgi]}" /
    measure "nginx -> corgi (http keep-alive) wsgi hello" "${front[corgi_http]}" /
    measure "corgi http direct wsgi hello" "$corgi_http" /
fi
measure "nginx -> corgi (uwsgi) C++ plaintext" "${front[corgi_uwsgi]}" /plaintext
measure "nginx -> corgi (http keep-alive) C++ plaintext" "${front[corgi_http]}" /plaintext
measure "corgi http direct C++ plaintext" "$corgi_http" /plaintext

echo
echo "ratios (req/s; > 1 means the first is faster):"
$PY - "$results" <<'PYEOF'
import sys
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1]) if l.strip()]
rps = {r[0]: float(r[1] or 0) for r in rows}
p99 = {r[0]: r[2] for r in rows}
pairs = [
    ("corgi / uWSGI, both behind nginx over uwsgi", "nginx -> corgi (uwsgi) wsgi hello", "nginx -> uWSGI (uwsgi) wsgi hello"),
    ("corgi uwsgi unix / tcp", "nginx -> corgi (uwsgi, unix) wsgi hello", "nginx -> corgi (uwsgi) wsgi hello"),
    ("corgi fastcgi / uwsgi", "nginx -> corgi (fastcgi keep-conn) wsgi hello", "nginx -> corgi (uwsgi) wsgi hello"),
    ("corgi scgi / uwsgi", "nginx -> corgi (scgi) wsgi hello", "nginx -> corgi (uwsgi) wsgi hello"),
    ("corgi http keep-alive / uwsgi (behind nginx)", "nginx -> corgi (http keep-alive) wsgi hello", "nginx -> corgi (uwsgi) wsgi hello"),
    ("behind nginx (uwsgi) / direct, wsgi", "nginx -> corgi (uwsgi) wsgi hello", "corgi http direct wsgi hello"),
    ("behind nginx (uwsgi) / direct, C++", "nginx -> corgi (uwsgi) C++ plaintext", "corgi http direct C++ plaintext"),
]
for label, a, b in pairs:
    if rps.get(a) and rps.get(b):
        print(f"  {label:48s} {rps[a] / rps[b]:6.2f}   (p99 {p99[a]} ms vs {p99[b]} ms)")
PYEOF
stop "$corgi_pid"
