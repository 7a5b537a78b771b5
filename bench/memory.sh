#!/usr/bin/env bash
# Memory, measured from /proc:
#   1. an idle worker with Flask loaded (RSS after 20 requests), corgi beside uWSGI and Gunicorn;
#   2. per idle keep-alive connection: COUNT connections that have had their answer, held open
#      (C++ /plaintext and the WSGI hello world), RSS growth / COUNT;
#   3. per suspended request: COUNT requests waiting in corgi.sleep on their fibers, RSS growth /
#      COUNT, and per fiber (that minus the idle connection's share);
#   4. PSS per extra preloaded worker: Flask with 1 and with WORKERS workers, the growth of the
#      total PSS (master and workers, /proc/PID/smaps_rollup) per extra worker against the first.
#   bench/memory.sh [all|idle|connections|fibers|workers]
#   CORGI=build/bin/corgi COUNT=10000 WORKERS=4
set -euo pipefail
cd "$(dirname "$0")/.."
what=${1:-all}
CORGI=${CORGI:-build/bin/corgi}
PY=/usr/bin/python3.11
COUNT=${COUNT:-10000}
WORKERS=${WORKERS:-4}
APPS=$PWD/bench/apps
export PYTHONDONTWRITEBYTECODE=1
tmp=$(mktemp -d)
pids=()
cleanup() {
    local p c
    for p in "${pids[@]}"; do
        for c in $(pgrep -P "$p" 2>/dev/null || true); do kill "$c" 2>/dev/null || true; done
        kill "$p" 2>/dev/null || true
    done
    wait 2>/dev/null || true
    rm -rf "$tmp"
}
trap cleanup EXIT
ulimit -n "$(ulimit -Hn)"

free_port() { $PY -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() {
    for _ in $(seq 300); do curl -fs -o /dev/null "http://127.0.0.1:$1$2" && return 0; sleep 0.1; done
    echo "nothing answers on 127.0.0.1:$1$2" >&2
    return 1
}
rss_kib() { awk '/^VmRSS/{print $2}' "/proc/$1/status"; }
pss_kib() { awk '/^Pss:/{print $2}' "/proc/$1/smaps_rollup"; }
tree_pss_kib() {
    local total=0 p
    for p in "$1" $(pgrep -P "$1" || true); do total=$((total + $(pss_kib "$p"))); done
    echo "$total"
}
# start NAME PATH cmd... (PORT replaced): server pid in $server, port in $port
start() {
    local name=$1 path=$2; shift 2
    port=$(free_port)
    "${@//PORT/$port}" >"$tmp/${name//[^A-Za-z0-9]/_}.log" 2>&1 &
    server=$!
    pids+=("$server")
    wait_port "$port" "$path"
}
stop() {
    local c
    for c in $(pgrep -P "$1" || true); do kill "$c" 2>/dev/null || true; done
    kill "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
}
warm() { for _ in $(seq 20); do curl -fs -o /dev/null "http://127.0.0.1:$1$2"; done; sleep 1; }

# hold MODE PATH: COUNT connections held open (bench/hold_connections.py); the RSS growth per
# connection in KiB is printed once they are all in place.
hold() {
    local mode=$1 path=$2 before after fifo=$tmp/hold.in
    before=$(rss_kib "$server")
    rm -f "$fifo"; mkfifo "$fifo"
    $PY bench/hold_connections.py "$port" "$COUNT" "$path" "$mode" 120 <"$fifo" >"$tmp/hold.out" 2>&1 &
    local holder=$!
    exec 9>"$fifo"
    for _ in $(seq 1200); do grep -q ready "$tmp/hold.out" 2>/dev/null && break
        kill -0 "$holder" 2>/dev/null || { cat "$tmp/hold.out" >&2; return 1; }; sleep 0.1; done
    sleep 2  # the last requests reach their fibers
    after=$(rss_kib "$server")
    exec 9>&-  # the holder exits, closing them all
    wait "$holder" 2>/dev/null || true
    awk -v a="$after" -v b="$before" -v n="$COUNT" 'BEGIN{printf "%.2f", (a - b) / n}'
}

printf '%-58s %12s\n' measure value
if [ "$what" = all ] || [ "$what" = idle ]; then
    start "corgi flask" / "$CORGI" --http 127.0.0.1:PORT --io-threads 1 --disable-logging --pythonpath "$APPS" \
        --wsgi hello_flask:app
    warm "$port" /; printf '%-58s %9s KiB\n' "idle Flask worker RSS: corgi (1 io thread)" "$(rss_kib "$server")"; stop "$server"
    start "uwsgi flask" / uwsgi --plugin python3 --http11-socket 127.0.0.1:PORT --processes 1 --disable-logging \
        --pythonpath "$APPS" --module hello_flask:app
    warm "$port" /; printf '%-58s %9s KiB\n' "idle Flask worker RSS: uWSGI (1 process)" "$(rss_kib "$server")"; stop "$server"
    start "gunicorn flask" / gunicorn --chdir "$APPS" -w 1 -b 127.0.0.1:PORT hello_flask:app
    warm "$port" /
    worker=$(pgrep -P "$server" | head -1)
    printf '%-58s %9s KiB\n' "idle Flask worker RSS: Gunicorn sync (the worker)" "$(rss_kib "$worker")"; stop "$server"
fi
if [ "$what" = all ] || [ "$what" = connections ] || [ "$what" = fibers ]; then
    start "corgi cpp" /plaintext "$CORGI" --http 127.0.0.1:PORT --io-threads 1 --disable-logging
    warm "$port" /plaintext
    cpp_conn=$(hold answered /plaintext)
    printf '%-58s %9s KiB\n' "per idle keep-alive connection, C++ ($COUNT)" "$cpp_conn"
    stop "$server"
    start "corgi wsgi" / "$CORGI" --http 127.0.0.1:PORT --io-threads 1 --disable-logging --pythonpath "$APPS" \
        --wsgi hello_wsgi:application
    warm "$port" /
    wsgi_conn=$(hold answered /)
    printf '%-58s %9s KiB\n' "per idle keep-alive connection, WSGI ($COUNT)" "$wsgi_conn"
    stop "$server"
fi
if [ "$what" = all ] || [ "$what" = fibers ]; then
    start "corgi sleepy" /?0 "$CORGI" --http 127.0.0.1:PORT --io-threads 1 --disable-logging --pythonpath "$APPS" \
        --fibers "$((COUNT + 100))" --max-connections "$((COUNT + 100))" --wsgi sleepy_wsgi:application
    warm "$port" /?0
    waiting=$(hold waiting /?100)
    printf '%-58s %9s KiB\n' "per suspended request (connection + fiber, $COUNT)" "$waiting"
    printf '%-58s %9s KiB\n' "per suspended fiber (that minus an idle WSGI connection)" \
        "$(awk -v a="$waiting" -v b="$wsgi_conn" 'BEGIN{printf "%.2f", a - b}')"
    stop "$server"
fi
if [ "$what" = all ] || [ "$what" = workers ]; then
    for n in 1 "$WORKERS"; do
        start "corgi w$n" / "$CORGI" --http 127.0.0.1:PORT --workers "$n" --io-threads 1 --disable-logging \
            --pythonpath "$APPS" --wsgi hello_flask:app
        for _ in $(seq 100); do [ "$(pgrep -P "$server" | wc -l)" -ge "$n" ] && break; sleep 0.1; done
        for _ in $(seq $((n * 10))); do curl -fs -o /dev/null "http://127.0.0.1:$port/"; done
        sleep 1
        eval "pss_$n=$(tree_pss_kib "$server")"
        master_pss=$(pss_kib "$server")
        printf '%-58s %9s KiB (master %s)\n' "total PSS, Flask, $n worker(s)" "$(tree_pss_kib "$server")" "$master_pss"
        [ "$n" = 1 ] && first=$(( pss_1 - master_pss ))
        stop "$server"
    done
    per_extra=$(( (pss_$WORKERS - pss_1) / (WORKERS - 1) ))
    printf '%-58s %9s KiB = %s of the first worker (%s KiB; goal <= 0.40)\n' "PSS per extra preloaded worker" \
        "$per_extra" "$(awk -v a="$per_extra" -v b="$first" 'BEGIN{printf "%.2f", a / b}')" "$first"
fi
