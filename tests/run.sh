#!/usr/bin/env bash
# Runs every test binary (optimised build, then the ASan/UBSan build) from the
# repo root and prints one summary line "N passed, N failed, N skipped".
cd "$(dirname "$0")/.." || exit 1
pass=0; fail=0; skip=0; failed=()
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
for t in ${B:-build}/tests/test_* ${BA:-build-asan}/tests/test_*; do
    [ -x "$t" ] || continue
    start=$(date +%s)
    "$t" > "$t.log" 2>&1
    rc=$?
    secs=$(( $(date +%s) - start ))
    case $rc in
        0) pass=$((pass+1)); echo "PASS $t (${secs}s)";;
        77) skip=$((skip+1)); echo "SKIP $t: $(grep -m1 SKIP "$t.log")";;
        *) fail=$((fail+1)); failed+=("$t"); echo "FAIL $t (rc=$rc, ${secs}s)"; tail -n 30 "$t.log";;
    esac
done
echo "$pass passed, $fail failed, $skip skipped"
[ $fail -eq 0 ]
