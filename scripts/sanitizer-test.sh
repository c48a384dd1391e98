#!/usr/bin/env bash
# The sanitizer build's test rule (meson.build: the default test setup when -Dsanitizers=true):
# runs one test so that any AddressSanitizer, LeakSanitizer or UndefinedBehaviorSanitizer
# report fails it -- also a report from a program the test starts (sevemu, sevemu-host, ...),
# which inherits the options, whatever the test makes of that program's exit status.
# Every report goes to a file in a directory of this run; the first one stops its process
# (halt_on_error, and -fno-sanitize-recover=all at compile time); afterwards the reports are
# printed and the test fails.
set -u
dir=$(mktemp -d "${TMPDIR:-/tmp}/sevemu-sanitizer.XXXXXX") || exit 1
common="halt_on_error=1:abort_on_error=1:print_stacktrace=1:print_summary=1"
export ASAN_OPTIONS="${common}:detect_leaks=1:log_path=${dir}/asan${ASAN_OPTIONS:+:${ASAN_OPTIONS}}"
export UBSAN_OPTIONS="${common}:log_path=${dir}/ubsan${UBSAN_OPTIONS:+:${UBSAN_OPTIONS}}"
export LSAN_OPTIONS="print_suppressions=0${LSAN_OPTIONS:+:${LSAN_OPTIONS}}"
"$@"
status=$?
reports=("$dir"/*)
if [ -e "${reports[0]}" ]; then
    for r in "${reports[@]}"; do
        echo "==== sanitizer report ${r##*/} ====" >&2
        cat "$r" >&2
    done
    echo "FAIL: ${#reports[@]} sanitizer report(s) during this test (exit status ${status})" >&2
    status=1
fi
rm -rf "$dir"
exit "$status"
