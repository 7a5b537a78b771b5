#!/usr/bin/env bash
# How the way the interpreter is linked changes the speed of Python code: Flask's hello world called in a loop
# (bench/apps/flask_ceiling.py) by a 3-line embedding of Debian's CPython linked against libpython3.11.so, the
# static PIC archive, and the static non-PIC archive (what corgi links), and by /usr/bin/python3.11 itself.
#   bench/python_link.sh [RUNS]   prints the best and the mean calls/s of each over RUNS interleaved runs (default 8)
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-8}
PY=/usr/bin/python3.11
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
libpl=$($PY -c 'import sysconfig; print(sysconfig.get_config_var("LIBPL"))')
includes=$(/usr/bin/python3.11-config --includes)
printf '#include <Python.h>\nint main(int argc, char** argv) { return Py_BytesMain(argc, argv); }\n' >"$tmp/embed.c"
static_libs="-Wl,--export-dynamic -Wl,--no-whole-archive -lexpat -lz -lm -ldl"
gcc -O2 $includes "$tmp/embed.c" -o "$tmp/shared" -lpython3.11
gcc -O2 $includes "$tmp/embed.c" -o "$tmp/static-pic" -Wl,--whole-archive "$libpl/libpython3.11-pic.a" $static_libs
gcc -O2 -no-pie $includes "$tmp/embed.c" -o "$tmp/static" -Wl,--whole-archive "$libpl/libpython3.11.a" $static_libs
for _ in $(seq "$runs"); do
  for b in "$tmp/shared" "$tmp/static-pic" "$tmp/static" "$PY"; do
    echo "$(basename "$b") $("$b" bench/apps/flask_ceiling.py 10000)"
  done
done | awk '{if ($2 > best[$1]) best[$1] = $2; sum[$1] += $2; n[$1]++}
  END {for (k in best) printf "%-12s best %6d  mean %6d calls/s\n", k, best[k], sum[k] / n[k]}' | sort
