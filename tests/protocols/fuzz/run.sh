#!/bin/sh
# Runs libFuzzer binaries for a bounded time each; builds nothing.
# Usage: run.sh SECONDS FUZZER_BINARY...   e.g. run.sh 30 build-fuzz/fuzz/*_fuzz
# Each fuzzer keeps its corpus in $CORGI_FUZZ_CORPUS/<name> (default: a temporary directory) and writes any
# crashing input next to it; the script exits non-zero if any fuzzer found a crash.
set -eu
if [ $# -lt 2 ]; then
    echo "usage: $0 SECONDS FUZZER_BINARY..." >&2
    exit 2
fi
seconds=$1
shift
corpus_root=${CORGI_FUZZ_CORPUS:-$(mktemp -d /tmp/corgi-fuzz.XXXXXX)}
status=0
for fuzzer in "$@"; do
    name=$(basename "$fuzzer")
    mkdir -p "$corpus_root/$name" "$corpus_root/$name.crashes"
    echo "== $name: ${seconds}s (corpus $corpus_root/$name)"
    if ! "$fuzzer" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -max_len=70000 \
        -artifact_prefix="$corpus_root/$name.crashes/" -print_final_stats=1 "$corpus_root/$name" \
        >"$corpus_root/$name.log" 2>&1; then
        echo "!! $name failed; last lines of $corpus_root/$name.log:"
        tail -n 40 "$corpus_root/$name.log"
        status=1
    else
        grep -E "^stat::number_of_executed_units|^stat::new_units_added" "$corpus_root/$name.log" || true
    fi
done
exit $status
