#!/usr/bin/env bash
# Runs every test binary (optimised build, then the ASan/UBSan build) from the
# repo root and prints one summary line "N passed, N failed, N skipped".
cd "$(dirname "$0")/.." || exit 1
pass=0; fail=0; skip=0; failed=()
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
mkdir -p "${B:-build}/tests"
for t in ${B:-build}/tests/test_* ${BA:-build-asan}/tests/test_* tests/test_*.sh; do
    [ -x "$t" ] || continue
    case "$t" in *.log) continue;; esac
    log="$t.log"; case "$t" in tests/*.sh) log="${B:-build}/tests/$(basename "$t").log";; esac
    start=$(date +%s)
    "$t" > "$log" 2>&1
    rc=$?
    secs=$(( $(date +%s) - start ))
    case $rc in
        0) pass=$((pass+1)); echo "PASS $t (${secs}s)";;
        77) skip=$((skip+1)); echo "SKIP $t: $(grep -m1 SKIP "$log")";;
        *) fail=$((fail+1)); failed+=("$t"); echo "FAIL $t (rc=$rc, ${secs}s)"; tail -n 30 "$log";;
    esac
done
echo "$pass passed, $fail failed, $skip skipped"
[ $fail -eq 0 ]
