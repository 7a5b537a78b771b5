#!/usr/bin/env bash
# Cost per request: the server's CPU time (every process and thread it has: utime + stime of the
# process tree, from /proc) divided by the requests it served, under the same wrk load, for corgi
# and its peers side by side. This is the figure that holds on a small machine, where requests/s
# depend on how the cores are shared with the load generator.
#   bench/cpu_per_request.sh [all|cpp|wsgi|flask|uwsgi]
#                              uwsgi: behind nginx (uwsgi_pass over TCP, a connection per request),
#                              the backend's CPU only: corgi against uWSGI, the WSGI hello
#   CORGI=build/bin/corgi      the binary to measure (Release: `make run` builds build/)
#   DURATION=5 CONNECTIONS=64  the measured wrk run (after a 1 s warm-up), wrk -t1
#   RATE=0                     0: as fast as each server goes; N: paced to about N requests/s in
#                              total (wrk's delay() per connection), the same load for every server
#   ROUNDS=1                   measured runs per server (each row printed; the ratios use medians)
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/nginx_conf.sh
what=${1:-all}
CORGI=${CORGI:-build/bin/corgi}
PY=/usr/bin/python3.11
DURATION=${DURATION:-5}
CONNECTIONS=${CONNECTIONS:-64}
RATE=${RATE:-0}
ROUNDS=${ROUNDS:-1}
APPS=$PWD/bench/apps
HZ=$(getconf CLK_TCK)
tmp=$(mktemp -d)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$tmp"
}
trap cleanup EXIT
for tool in wrk /usr/sbin/nginx uwsgi "$CORGI"; do
    command -v "$tool" >/dev/null || { echo "missing: $tool" >&2; exit 2; }
done
export PYTHONDONTWRITEBYTECODE=1

free_port() { $PY -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() {
    for _ in $(seq 150); do curl -fs -o /dev/null "http://127.0.0.1:$1$2" && return 0; sleep 0.1; done
    echo "nothing answers on 127.0.0.1:$1$2" >&2
    return 1
}
# The process and its descendants (uWSGI's and nginx's workers).
tree() {
    local p=$1 c
    echo "$p"
    for c in $(pgrep -P "$p" || true); do tree "$c"; done
}
# Clock ticks of CPU (user + system, all threads, the dead ones included) used by the tree.
tree_ticks() {
    local total=0 p t
    for p in $(tree "$1"); do
        # Fields after the command name, which may hold spaces: utime and stime are the 12th and 13th.
        t=$(sed 's/^.*) //' "/proc/$p/stat" 2>/dev/null | awk '{print $12 + $13}') || t=0
        total=$((total + ${t:-0}))
    done
    echo "$total"
}

pace=()
if [ "$RATE" -gt 0 ]; then
    delay_ms=$(( CONNECTIONS * 1000 / RATE ))
    [ "$delay_ms" -ge 1 ] || delay_ms=1
    echo "function delay() return $delay_ms end" >"$tmp/pace.lua"
    pace=(-s "$tmp/pace.lua")
fi

results=$tmp/results
: >"$results"
# measure NAME PORT PATH PID: warm-up, then ROUNDS measured runs, one row each.
measure() {
    local name=$1 port=$2 path=$3 pid=$4 round out rps reqs t0 t1 us
    wrk -t1 -c"$CONNECTIONS" -d1s "${pace[@]}" "http://127.0.0.1:$port$path" >/dev/null 2>&1 || true
    for round in $(seq "$ROUNDS"); do
        t0=$(tree_ticks "$pid")
        out=$(wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s" "${pace[@]}" "http://127.0.0.1:$port$path" 2>&1)
        t1=$(tree_ticks "$pid")
        rps=$(awk '/Requests\/sec/{print $2}' <<<"$out")
        reqs=$(awk '/requests in/{print $1}' <<<"$out")
        us=$(awk -v t="$((t1 - t0))" -v hz="$HZ" -v n="${reqs:-0}" 'BEGIN{ if (n > 0) printf "%.2f", t * 1e6 / hz / n; else print "nan" }')
        printf '%-40s %10s %12s  %s\n' "$name" "${rps:-0}" "$us" "$(awk '/Non-2xx|Socket errors/' <<<"$out" | tr '\n' ' ')"
        printf '%s\t%s\t%s\n' "$name" "${rps:-0}" "$us" >>"$results"
    done
}
# bench NAME PATH cmd... (PORT in the arguments is replaced by a free port)
bench() {
    local name=$1 path=$2 port pid; shift 2
    port=$(free_port)
    "${@//PORT/$port}" >"$tmp/${name//[^A-Za-z0-9]/_}.log" 2>&1 &
    pid=$!
    pids+=("$pid")
    wait_port "$port" "$path"
    measure "$name" "$port" "$path" "$pid"
    kill "$pid"; wait "$pid" 2>/dev/null || true
}

echo "wrk -t1 -c$CONNECTIONS -d${DURATION}s, $( [ "$RATE" -gt 0 ] && echo "paced to ~$RATE req/s" || echo "unpaced"); 1 worker / 1 io thread / 1 process each"
printf '%-40s %10s %12s\n' server req/s cpu_us/req

if [ "$what" = all ] || [ "$what" = cpp ]; then
    { nginx_conf_start "$tmp"; cat <<NGINX
  server { listen 127.0.0.1:@P@; location / { default_type text/plain; return 200 "Hello, World!"; } }
}
NGINX
    } >"$tmp/nginx.conf"
    # The port goes into the file (bench substitutes arguments only).
    bench "nginx return 200" / sh -c "sed 's/@P@/PORT/' '$tmp/nginx.conf' >'$tmp/nginx-run.conf' &&
        exec /usr/sbin/nginx -p '$tmp' -c '$tmp/nginx-run.conf'"
    bench "corgi C++ /plaintext" /plaintext "$CORGI" --http 127.0.0.1:PORT --io-threads 1 --disable-logging
fi
if [ "$what" = all ] || [ "$what" = wsgi ]; then
    bench "corgi wsgi hello" / "$CORGI" --http 127.0.0.1:PORT --io-threads 1 --disable-logging \
        --pythonpath "$APPS" --wsgi hello_wsgi:application
    bench "corgi wsgi hello, lane thread" / "$CORGI" --http 127.0.0.1:PORT --io-threads 1 --threads 1 \
        --python-on-io-threads false --disable-logging --pythonpath "$APPS" --wsgi hello_wsgi:application
    bench "uwsgi --http11-socket hello" / uwsgi --plugin python3 --http11-socket 127.0.0.1:PORT --processes 1 \
        --disable-logging --pythonpath "$APPS" --wsgi-file "$APPS/hello_wsgi.py"
    bench "uwsgi --http-socket hello" / uwsgi --plugin python3 --http-socket 127.0.0.1:PORT --processes 1 \
        --disable-logging --pythonpath "$APPS" --wsgi-file "$APPS/hello_wsgi.py"
fi
if [ "$what" = all ] || [ "$what" = flask ]; then
    bench "corgi flask hello" / "$CORGI" --http 127.0.0.1:PORT --io-threads 1 --disable-logging \
        --pythonpath "$APPS" --wsgi hello_flask:app
    bench "uwsgi --http11-socket flask" / uwsgi --plugin python3 --http11-socket 127.0.0.1:PORT --processes 1 \
        --disable-logging --pythonpath "$APPS" --module hello_flask:app
    ceiling=$(for _ in 1 2 3 4 5; do $PY "$APPS/flask_ceiling.py" 10000; done | sort -n | tail -1)
    echo "flask in-process (best of 5): $ceiling calls/s, $(awk -v c="$ceiling" 'BEGIN{printf "%.2f", 1e6 / c}') us/call"
    printf 'flask in-process\t%s\t%s\n' "$ceiling" "$(awk -v c="$ceiling" 'BEGIN{printf "%.2f", 1e6 / c}')" >>"$results"
fi

if [ "$what" = all ] || [ "$what" = uwsgi ]; then
    corgi_port=$(free_port); uwsgi_port=$(free_port); front_corgi=$(free_port); front_uwsgi=$(free_port)
    "$CORGI" --socket "127.0.0.1:$corgi_port" --http "127.0.0.1:$(free_port)" --io-threads 1 --disable-logging \
        --pythonpath "$APPS" --wsgi hello_wsgi:application >"$tmp/corgi-uwsgi.log" 2>&1 &
    corgi_pid=$!; pids+=("$corgi_pid")
    uwsgi --plugin python3 --uwsgi-socket "127.0.0.1:$uwsgi_port" --processes 1 --threads 1 --disable-logging \
        --pythonpath "$APPS" --wsgi-file "$APPS/hello_wsgi.py" >"$tmp/uwsgi-uwsgi.log" 2>&1 &
    uwsgi_pid=$!; pids+=("$uwsgi_pid")
    ln -sf /etc/nginx/uwsgi_params "$tmp/uwsgi_params"
    { nginx_conf_start "$tmp"; cat <<NGINX
  server { listen 127.0.0.1:$front_corgi; location / { include uwsgi_params; uwsgi_pass 127.0.0.1:$corgi_port; } }
  server { listen 127.0.0.1:$front_uwsgi; location / { include uwsgi_params; uwsgi_pass 127.0.0.1:$uwsgi_port; } }
}
NGINX
    } >"$tmp/nginx-uwsgi.conf"
    /usr/sbin/nginx -p "$tmp" -c "$tmp/nginx-uwsgi.conf" >"$tmp/nginx-uwsgi.log" 2>&1 &
    pids+=("$!")
    wait_port "$front_corgi" /
    wait_port "$front_uwsgi" /
    measure "nginx -> corgi (uwsgi) hello" "$front_corgi" / "$corgi_pid"
    measure "nginx -> uWSGI (uwsgi) hello" "$front_uwsgi" / "$uwsgi_pid"
fi

echo
echo "cost per request (CPU us / request; the goal in brackets):"
$PY - "$results" <<'PYEOF'
import statistics, sys
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1]) if l.strip()]
cpu = {}
for name, _, us in rows:
    try:
        cpu.setdefault(name, []).append(float(us))
    except ValueError:
        pass
med = {k: statistics.median(v) for k, v in cpu.items()}
def show(label, a, b, goal):
    if a in med and b in med and med[b] > 0:
        print(f"  {label:48s} {med[a]:7.2f} / {med[b]:7.2f} = {med[a] / med[b]:5.2f}  ({goal})")
uwsgi = [k for k in ("uwsgi --http11-socket hello", "uwsgi --http-socket hello") if k in med]
best_uwsgi = min(uwsgi, key=lambda k: med[k]) if uwsgi else None
show("corgi C++ / nginx", "corgi C++ /plaintext", "nginx return 200", "<= 0.8")
if best_uwsgi:
    show(f"corgi WSGI hello / {best_uwsgi}", "corgi wsgi hello", best_uwsgi, "<= 0.25")
    show(f"corgi WSGI hello, lane thread / {best_uwsgi}", "corgi wsgi hello, lane thread", best_uwsgi, "")
show("corgi Flask / uWSGI Flask", "corgi flask hello", "uwsgi --http11-socket flask", "")
show("behind nginx over uwsgi: corgi / uWSGI", "nginx -> corgi (uwsgi) hello", "nginx -> uWSGI (uwsgi) hello", "")
if "corgi flask hello" in med and "flask in-process" in med:
    d = med["corgi flask hello"] - med["flask in-process"]
    print(f"  {'corgi Flask minus Flask in-process':48s} {med['corgi flask hello']:7.2f} - {med['flask in-process']:7.2f} = {d:5.2f} us  (<= 10 us)")
PYEOF
