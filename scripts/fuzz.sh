#!/usr/bin/env bash
# Runs the fuzz harnesses (tests/fuzz) with libFuzzer: `make fuzz`, or directly
#   FUZZ_SECONDS=600 FUZZ_TARGETS=qmp,certs scripts/fuzz.sh
# Each harness runs FUZZ_SECONDS (default 60) on a working copy of its seed corpus in
# build-fuzz/corpus/NAME (the repo's corpus is never written; what the run finds accumulates
# there across runs), with its regressions replayed too. A crash or broken property is saved to
# build-fuzz/crashes/NAME/; reproduce it with `build-fuzz/tests/fuzz/fuzz-NAME FILE`, then add
# it to tests/fuzz/regressions/NAME/ with the fix. Prints, per harness, executions per second
# and coverage (libFuzzer's cov: edges and ft: features); exits non-zero if any harness found
# something.
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
secs=${FUZZ_SECONDS:-60}
all=qmp,firmware,certs,session,multiboot,linux,decoder,snapshot,migration,ghcb
targets=${FUZZ_TARGETS:-$all}
build=${FUZZ_BUILD:-build-fuzz}
IFS=, read -r -a names <<< "$targets"
for t in "${names[@]}"; do
  if [ ! -f "tests/fuzz/fuzz_$t.cpp" ]; then
    echo "fuzz: no harness '$t' (harnesses: $all)" >&2
    exit 2
  fi
done

if [ ! -f "$build/build.ninja" ]; then
  cxx=$(command -v clang++-14 || command -v clang++ || true)
  if [ -z "$cxx" ]; then
    echo "fuzz: clang++ not found (scripts/deps.sh --fuzz installs it)" >&2
    exit 2
  fi
  CXX=$cxx meson setup "$build" -Dfuzzing=true || exit 2
fi
if ! meson configure "$build" | grep -Eq '^ *fuzzing +true'; then
  echo "fuzz: $build was not configured with -Dfuzzing=true" >&2
  exit 2
fi
ninja -C "$build" $(printf 'tests/fuzz/fuzz-%s ' "${names[@]}") || exit 2

# The harnesses' platform directories (fuzz_fixed.h) go to a tmpfs directory of this run.
scratch=$(mktemp -d "${TMPDIR:-/tmp}/sevemu-fuzz.XXXXXX")
[ -d /dev/shm ] && scratch_shm=$(mktemp -d /dev/shm/sevemu-fuzz.XXXXXX) || scratch_shm=$scratch
trap 'rm -rf "$scratch" "$scratch_shm"' EXIT
export SEVEMU_FUZZ_TMP=$scratch_shm
# The certs harness also checks the real AMD certificates beside the project, when present.
if [ -z "${SEVEMU_VECTORS:-}" ] && [ -d ../shared/vectors ]; then
  SEVEMU_VECTORS=$(cd ../shared/vectors && pwd)
  export SEVEMU_VECTORS
fi
export ASAN_OPTIONS=${ASAN_OPTIONS:-abort_on_error=1:detect_leaks=1:symbolize=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}

found=0
summary=()
for t in "${names[@]}"; do
  work="$build/corpus/$t"
  crashes="$build/crashes/$t"
  mkdir -p "$work" "$crashes"
  cp -n tests/fuzz/corpus/"$t"/* "$work"/ 2>/dev/null
  extra=()
  [ -d "tests/fuzz/regressions/$t" ] && extra+=("tests/fuzz/regressions/$t")
  log="$build/fuzz-$t.log"
  before=$(ls "$crashes" | wc -l)
  echo "fuzz: $t for ${secs}s (log $log)"
  "$build/tests/fuzz/fuzz-$t" -max_total_time="$secs" -print_final_stats=1 -timeout=30 -rss_limit_mb=4096 \
    -artifact_prefix="$crashes/" "$work" "${extra[@]}" > "$log" 2>&1
  rc=$?
  after=$(ls "$crashes" | wc -l)
  execs=$(grep -o 'stat::average_exec_per_sec: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1)
  runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1)
  cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | grep -o '[0-9]*')
  ft=$(grep -o 'ft: [0-9]*' "$log" | tail -1 | grep -o '[0-9]*')
  corp=$(ls "$work" | wc -l)
  if [ "$rc" -ne 0 ] || [ "$after" -gt "$before" ]; then
    found=1
    status="FOUND $((after - before)) (exit $rc): $(grep -m1 -E 'fuzz property failed|ERROR: (AddressSanitizer|libFuzzer|LeakSanitizer)|runtime error' "$log")"
  else
    status="ok"
  fi
  summary+=("$(printf '%-10s %8s exec/s %10s runs  cov %6s  ft %7s  corpus %5s  %s' "$t" "${execs:-?}" "${runs:-?}" "${cov:-?}" "${ft:-?}" "$corp" "$status")")
done
echo
echo "fuzz summary (${secs}s each; crashes in $build/crashes/NAME):"
printf '  %s\n' "${summary[@]}"
exit $found
