#!/usr/bin/env bash
# The process model, measured on loopback (every server on 127.0.0.1, started and stopped by pid):
#   1. requests/s with 1 and 2 workers: corgi's C++ /plaintext, the WSGI hello world, Flask (wrk, keep-alive);
#   2. memory per worker, RSS and PSS (/proc/PID/smaps_rollup), apps imported in the master before fork (preload)
#      vs in each worker (lazy apps), Flask with 4 workers, for corgi, Gunicorn and uWSGI;
#   3. reloads under load: the open-loop load of the tests (tests/integration/load/loadgen.py: new connections,
#      keep-alive reuse, 16 KiB POSTs, a 200 ms streamed handler) against 2 workers while the server is reloaded
#      RELOADS times, one every INTERVAL seconds, with a new version of the app each time; failed requests counted
#      and versions seen (did each reload take effect) for corgi (HUP), Gunicorn (HUP), uWSGI (--touch-reload, and
#      --touch-chain-reload with --lazy-apps).
#   nice -n 10 bench/workers.sh [throughput|memory|reload|all]   (default all)
#   DURATION=8 (wrk seconds) RELOADS=5 INTERVAL=2 RATE=60 CORGI=build/bin/corgi
set -euo pipefail
cd "$(dirname "$0")/.."
what=${1:-all}
CORGI=${CORGI:-build/bin/corgi}
PY=/usr/bin/python3.11
DURATION=${DURATION:-8}
RELOADS=${RELOADS:-5}
INTERVAL=${INTERVAL:-2}
RATE=${RATE:-60}
export PYTHONDONTWRITEBYTECODE=1
tmp=$(mktemp -d)
pids=()

# Every server's children by parent pid, then the server itself, each by its pid.
stop_tree() {
  local pid=$1 sig=${2:-TERM}
  kill -0 "$pid" 2>/dev/null || return 0
  local kids; kids=$(pgrep -P "$pid" || true)
  kill -"$sig" "$pid" 2>/dev/null || true
  for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  for k in $kids; do kill -KILL "$k" 2>/dev/null || true; done
}
cleanup() { for p in "${pids[@]}"; do stop_tree "$p" KILL; done; rm -rf "$tmp"; }
trap cleanup EXIT

free_port() { $PY -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 300); do curl -s -o /dev/null "http://127.0.0.1:$1$2" && return 0; sleep 0.1; done; echo "server on $1 did not start" >&2; return 1; }
# The workers of a master (children that are not uWSGI's or Gunicorn's helpers: they all serve here).
workers_of() { pgrep -P "$1" | sort -n; }
wait_workers() {  # wait_workers MASTER N: until the master has N children
  for _ in $(seq 300); do [ "$(workers_of "$1" | wc -l)" -ge "$2" ] && return 0; sleep 0.1; done
  echo "master $1 did not get $2 workers" >&2; return 1
}

start() {  # start NAME PORT PATH cmd... : runs cmd in the background, waits for PATH to answer; sets last_pid
  local name=$1 port=$2 path=$3; shift 3
  "$@" >"$tmp/${name//[^A-Za-z0-9]/_}.log" 2>&1 &
  last_pid=$!
  pids+=("$last_pid")
  wait_port "$port" "$path"
}

# corgi's flags for "apps imported before fork" and "apps imported in each worker": --lazy-apps when the binary
# has it (preload the default), else --preload and nothing (lazy the default).
if "$CORGI" --help 2>&1 | grep -q -- --lazy-apps; then corgi_preload=(); corgi_lazy=(--lazy-apps)
else corgi_preload=(--preload); corgi_lazy=(); fi

# ---------------------------------------------------------------------------------------------------------------
throughput() {
  echo "== requests/s, keep-alive, wrk -t2 -c64 -d${DURATION}s, each worker 1 io thread and 1 Python lane"
  printf '%-22s %8s %10s %9s\n' what workers req/s p99_ms
  local kind workers port path args
  for kind in cpp wsgi flask; do
    case $kind in
      cpp) path=/plaintext; args=() ;;
      wsgi) path=/; args=(--pythonpath bench/apps --wsgi hello_wsgi:application) ;;
      flask) path=/; args=(--pythonpath bench/apps --wsgi hello_flask:app) ;;
    esac
    for workers in 1 2; do
      port=$(free_port)
      start "corgi-$kind-$workers" "$port" "$path" "$CORGI" --http 127.0.0.1:"$port" --processes "$workers" \
        --io-threads 1 --threads 1 --disable-logging "${args[@]}"
      local pid=$last_pid
      wait_workers "$pid" "$workers"
      wrk -t2 -c64 -d2s "http://127.0.0.1:$port$path" >/dev/null 2>&1 || true  # warm-up
      local out rps p99
      out=$(wrk -t2 -c64 -d"${DURATION}s" --latency "http://127.0.0.1:$port$path" 2>&1)
      rps=$(awk '/Requests\/sec/{print $2}' <<<"$out")
      p99=$(awk '$1=="99%"{v=$2; if (v ~ /us$/) {sub(/us/,"",v); v=v/1000} else if (v ~ /ms$/) {sub(/ms/,"",v)} else if (v ~ /s$/) {sub(/s/,"",v); v=v*1000}; print v}' <<<"$out")
      printf '%-22s %8s %10s %9s  %s\n' "corgi $kind" "$workers" "$rps" "$p99" "$(grep -E 'Non-2xx|Socket errors' <<<"$out" | tr '\n' ' ')"
      stop_tree "$pid"
    done
  done
}

# ---------------------------------------------------------------------------------------------------------------
# RSS and PSS (KiB) of each worker, averaged, and of the master, after a warm-up that touches the app.
memory_row() {  # memory_row NAME MASTER_PID PORT
  local name=$1 master=$2 port=$3
  wrk -t1 -c8 -d2s "http://127.0.0.1:$port/" >/dev/null 2>&1 || true
  sleep 0.5
  $PY - "$name" "$master" <<'PYEOF'
import os, sys
name, master = sys.argv[1], int(sys.argv[2])
def rollup(pid):
    vals = {}
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            parts = line.split()
            if parts[0] in ("Rss:", "Pss:"):
                vals[parts[0][:-1]] = int(parts[1])
    return vals
kids = [int(p) for p in os.listdir("/proc") if p.isdigit() and open(f"/proc/{p}/stat").read().rsplit(")", 1)[1].split()[1] == str(master)]
w = [rollup(p) for p in kids]
m = rollup(master)
avg = lambda k: sum(x[k] for x in w) // max(1, len(w))
total_pss = sum(x["Pss"] for x in w) + m["Pss"]
print(f"{name:34s} {len(w):3d} {avg('Rss'):10d} {avg('Pss'):10d} {m['Rss']:10d} {m['Pss']:10d} {total_pss:11d}")
PYEOF
}

memory() {
  local n=4
  echo "== memory, Flask hello, $n workers, after 2 s of load (KiB; PSS shares copy-on-write pages among processes)"
  printf '%-34s %3s %10s %10s %10s %10s %11s\n' server n rss/worker pss/worker rss_master pss_master pss_total
  local port pid
  port=$(free_port)
  start corgi-preload "$port" / "$CORGI" --http 127.0.0.1:"$port" --processes "$n" --io-threads 1 --disable-logging \
    "${corgi_preload[@]}" --pythonpath bench/apps --wsgi hello_flask:app
  pid=$last_pid; wait_workers "$pid" "$n"; memory_row "corgi preload" "$pid" "$port"; stop_tree "$pid"
  port=$(free_port)
  start corgi-lazy "$port" / "$CORGI" --http 127.0.0.1:"$port" --processes "$n" --io-threads 1 --disable-logging \
    "${corgi_lazy[@]}" --pythonpath bench/apps --wsgi hello_flask:app
  pid=$last_pid; wait_workers "$pid" "$n"; memory_row "corgi lazy apps" "$pid" "$port"; stop_tree "$pid"
  port=$(free_port)
  start gunicorn-preload "$port" / gunicorn --chdir bench/apps -w "$n" --preload -b 127.0.0.1:"$port" hello_flask:app
  pid=$last_pid; wait_workers "$pid" "$n"; memory_row "gunicorn sync --preload" "$pid" "$port"; stop_tree "$pid"
  port=$(free_port)
  start gunicorn-lazy "$port" / gunicorn --chdir bench/apps -w "$n" -b 127.0.0.1:"$port" hello_flask:app
  pid=$last_pid; wait_workers "$pid" "$n"; memory_row "gunicorn sync" "$pid" "$port"; stop_tree "$pid"
  port=$(free_port)
  start uwsgi-preload "$port" / uwsgi --plugin python3 --master --processes "$n" --http11-socket 127.0.0.1:"$port" \
    --disable-logging --die-on-term --pythonpath bench/apps --module hello_flask:app
  pid=$last_pid; wait_workers "$pid" "$n"; memory_row "uwsgi (preload)" "$pid" "$port"; stop_tree "$pid"
  port=$(free_port)
  start uwsgi-lazy "$port" / uwsgi --plugin python3 --master --processes "$n" --http11-socket 127.0.0.1:"$port" \
    --disable-logging --die-on-term --lazy-apps --pythonpath bench/apps --module hello_flask:app
  pid=$last_pid; wait_workers "$pid" "$n"; memory_row "uwsgi --lazy-apps" "$pid" "$port"; stop_tree "$pid"
}

# ---------------------------------------------------------------------------------------------------------------
# reload_row NAME PORT RELOAD_COMMAND...: the load runs for RELOADS*INTERVAL+2 s; a reload every INTERVAL s, each
# after writing the next version for the app to import.
reload_row() {
  local name=$1 port=$2; shift 2
  local seconds=$((RELOADS * INTERVAL + 2))
  $PY tests/integration/load/loadgen.py --port "$port" --rate "$RATE" --seconds "$seconds" >"$tmp/load.json" &
  local load=$!
  sleep 1
  for i in $(seq "$RELOADS"); do
    echo "v$i" >"$app/version.tmp" && mv "$app/version.tmp" "$app/version.txt"
    "$@"
    sleep "$INTERVAL"
  done
  wait "$load"
  $PY - "$name" "$tmp/load.json" "$RELOADS" <<'PYEOF'
import json, sys
name, path, reloads = sys.argv[1], sys.argv[2], int(sys.argv[3])
s = json.load(open(path))
fails = {k: v for k, v in s["by_result"].items() if k != "success"}
lat = s["latency_ms_p50_p99_max"]
missing = sorted(set(f"v{i}" for i in range(reloads + 1)) - set(s["versions"]), key=lambda v: int(v[1:]))
print(f"{name:40s} {s['requests']:6d} {s['failed']:6d} {len(s['versions']) - 1:4d}/{reloads} {lat[1]!s:>8s} {lat[2]!s:>8s}  "
      + (" ".join(f"{k}={v}" for k, v in sorted(fails.items())) or "-")
      + (f"  (never served: {' '.join(missing)})" if missing else ""))
PYEOF
}

reload() {
  echo "== reloads under load: $RELOADS reloads, one every ${INTERVAL}s, 2 workers, open loop at $RATE req/s"
  echo "   (mix: 30% new connections, 30% keep-alive reuse, 20% 16 KiB POSTs, 20% 200 ms streamed; latency of the"
  echo "   requests that are not the 200 ms ones)"
  printf '%-40s %6s %6s %6s %8s %8s  %s\n' server sent failed reloaded p99_ms max_ms failures
  app=$tmp/app
  mkdir -p "$app"
  cp tests/integration/apps/stamped_app.py "$app/"
  local port pid
  echo v0 >"$app/version.txt"
  port=$(free_port)
  start corgi-reload "$port" / "$CORGI" --http 127.0.0.1:"$port" --processes 2 --io-threads 1 --disable-logging \
    --pythonpath "$app" --wsgi stamped_app
  pid=$last_pid; wait_workers "$pid" 2
  reload_row "corgi HUP" "$port" kill -HUP "$pid"; stop_tree "$pid"

  echo v0 >"$app/version.txt"
  port=$(free_port)
  start gunicorn-reload "$port" / gunicorn --chdir "$app" -w 2 -k gthread --threads 8 -b 127.0.0.1:"$port" \
    stamped_app:application
  pid=$last_pid; wait_workers "$pid" 2
  reload_row "gunicorn gthread HUP" "$port" kill -HUP "$pid"; stop_tree "$pid"

  # uWSGI on --http-socket (one request per connection, keep-alive requests reconnect): its --http11-socket
  # neither chunks a streamed answer without Content-Length nor closes after it, so the 200 ms requests would
  # wait for its 4 s socket timeout.
  echo v0 >"$app/version.txt"
  port=$(free_port)
  : >"$tmp/touch"
  start uwsgi-reload "$port" / uwsgi --plugin python3 --master --processes 2 --threads 8 \
    --http-socket 127.0.0.1:"$port" --disable-logging --die-on-term --touch-reload "$tmp/touch" \
    --pythonpath "$app" --module stamped_app:application
  pid=$last_pid; wait_workers "$pid" 2
  reload_row "uwsgi --touch-reload" "$port" touch "$tmp/touch"; stop_tree "$pid" INT

  echo v0 >"$app/version.txt"
  port=$(free_port)
  : >"$tmp/touch"
  start uwsgi-chain "$port" / uwsgi --plugin python3 --master --processes 2 --threads 8 --lazy-apps \
    --http-socket 127.0.0.1:"$port" --disable-logging --die-on-term --touch-chain-reload "$tmp/touch" \
    --pythonpath "$app" --module stamped_app:application
  pid=$last_pid; wait_workers "$pid" 2
  reload_row "uwsgi --lazy-apps --touch-chain-reload" "$port" touch "$tmp/touch"; stop_tree "$pid" INT
}

case $what in
  throughput) throughput ;;
  memory) memory ;;
  reload) reload ;;
  all) throughput; echo; memory; echo; reload ;;
  *) echo "usage: $0 [throughput|memory|reload|all]" >&2; exit 2 ;;
esac
