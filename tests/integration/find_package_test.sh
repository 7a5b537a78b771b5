#!/bin/sh
# find_package(corgi) works for a user's own program: install this build into a temporary prefix, configure and
# build examples/find_package against it alone, then run the program and ask it for a page.
# Usage: find_package_test.sh BUILD_DIR SOURCE_DIR
set -eu
build_dir=$1
source_dir=$2
work=$(mktemp -d /tmp/corgi-find-package.XXXXXX)
pid=
cleanup() {
    [ -n "$pid" ] && kill "$pid" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT INT TERM

cmake --install "$build_dir" --prefix "$work/prefix" >"$work/install.log"
# Only the prefix: the user's project must not see the build tree.
cmake -S "$source_dir/examples/find_package" -B "$work/user" -DCMAKE_BUILD_TYPE=Release \
    -DCMAKE_PREFIX_PATH="$work/prefix" -DCMAKE_CXX_COMPILER="${CXX:-c++}" >"$work/configure.log" 2>&1 ||
    { cat "$work/configure.log"; exit 1; }
cmake --build "$work/user" -j2 >"$work/build.log" 2>&1 || { tail -n 40 "$work/build.log"; exit 1; }

"$work/user/hello_world" 127.0.0.1:0 2>"$work/server.log" &
pid=$!
address=
for _ in $(seq 50); do
    address=$(sed -n 's/^hello_world: serving on //p' "$work/server.log")
    [ -n "$address" ] && break
    sleep 0.1
done
[ -n "$address" ] || { echo "hello_world did not start:"; cat "$work/server.log"; exit 1; }
body=$(curl -sS --max-time 5 "http://$address/hello/package")
echo "GET /hello/package -> $body"
case "$body" in
    *package*) ;;
    *) echo "unexpected body"; exit 1 ;;
esac
kill -TERM "$pid"
for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || { pid=; break; }; sleep 0.1; done
[ -z "$pid" ] || { echo "hello_world did not stop on SIGTERM"; exit 1; }
echo "find_package(corgi) example built and served"
