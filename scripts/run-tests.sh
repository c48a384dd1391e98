#!/usr/bin/env bash
# Runs meson's tests and ends with one plain summary line ("N passed, N failed, N skipped"),
# exiting non-zero if any test failed. Arguments go to `meson test`.
set -uo pipefail
build=${BUILD_DIR:-build}
out=$(mktemp)
meson test -C "$build" --print-errorlogs "$@" 2>&1 | tee "$out"
status=${PIPESTATUS[0]}
count() { grep -E "^$1:" "$out" | tail -1 | awk '{print $NF}'; }
ok=$(count Ok); fail=$(count Fail); xfail=$(count 'Expected Fail'); upass=$(count 'Unexpected Pass')
skip=$(count Skipped); tmo=$(count Timeout)
rm -f "$out"
echo "tests: $(( ${ok:-0} + ${xfail:-0} )) passed, $(( ${fail:-0} + ${upass:-0} + ${tmo:-0} )) failed, ${skip:-0} skipped"
exit "$status"
