#!/usr/bin/env bash
# mpirun -np N gptvq quantize (Open MPI, N ranks on this machine with
# --oversubscribe) against the one-process run on stories260K, cmp for cmp:
#   RTN W4 g32 (Q4_1 blocks), GPTQ W4 g32 sym (Q4_0), GPTQ W3 g64 (F32),
#   GPTVQ 2D, 4D, normalisation, outliers, residual, 1D codebook SVD, with
#   -np 2 and -np 3 (16 windows of 512 tokens: 4 Hessian units of 4 windows,
#   split 2/2 and, unevenly, 1/1/2), data-free calibration, the head
#   (--head-bpv), saved Hessians;
# resume with another rank count: -np 2 --stop-after 2 (exit 3), -np 3
#   --stop-after 4, then one process: the same file;
# a rank killed with SIGKILL: nonzero exit, no output file, the finished
#   blocks kept; the rerun with -np 3 gives the same file;
# an error that strikes every rank is printed once; a Hugging Face directory
#   (rank 0 writes it as GGUF) gives the one-process file, a broken one one
#   error line; a build without MPI (B0=its gptvq) is refused with one line.
set -u
cd "$(dirname "$0")/.."
G=${B:-build}/gptvq
D=${GQ_DATA:-../shared/data}
S=$D/models/stories260K/stories260K.gguf
CAL=$D/wikitext-2-raw/wiki.valid.raw
if ! command -v mpirun >/dev/null; then echo "SKIP: no mpirun (Open MPI: bash scripts/setup.sh)"; exit 77; fi
if "$G" version | grep -q "^mpi: none"; then echo "SKIP: $G was built without MPI"; exit 77; fi
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
# Open MPI refuses root unless told; CI containers run as root
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_btl_vader_single_copy_mechanism=none
unset OMP_NUM_THREADS
fail=0
ok() { echo "ok: $1"; }
bad() { echo "FAIL: $1"; fail=1; }
MPI() { local n=$1; shift; mpirun -np "$n" --oversubscribe "$G" "$@"; }
base="--nsamples 16 --seqlen 512 --quiet"

# The exact Hessians' digests (JSON report), one per linear.
digests() { python3 -c 'import json,sys; print(" ".join(l.get("hessian_digest", "-") for l in json.load(open(sys.argv[1]))["layers"]))' "$1"; }
# The linears' errors (JSON report): GPTVQ's are sums over slabs in slab order.
errors() { python3 -c 'import json,sys; print(" ".join(repr(l["rel_error"]) for l in json.load(open(sys.argv[1]))["layers"]))' "$1"; }
# one case: one process, then -np 2 and -np 3, one thread each (OpenBLAS's
# dsyrk may round differently with another thread count for some widths:
# stories260K's FFN, 172)
same() { # name, options...
    local name=$1; shift
    "$G" quantize "$S" -o "$T/$name.1.gguf" $base --threads 1 "$@" >"$T/$name.1.log" 2>&1 || { bad "$name: one process failed"; cat "$T/$name.1.log"; return; }
    for n in 2 3; do
        MPI $n quantize "$S" -o "$T/$name.$n.gguf" $base --threads 1 "$@" >"$T/$name.$n.log" 2>&1 ||
            { bad "$name: -np $n failed"; tail -5 "$T/$name.$n.log"; continue; }
        if cmp -s "$T/$name.1.gguf" "$T/$name.$n.gguf"; then ok "$name: -np $n = one process"; else bad "$name: -np $n differs"; fi
        if [ "$(digests "$T/$name.1.gguf.report.json")" = "$(digests "$T/$name.$n.gguf.report.json")" ]; then
            ok "$name: -np $n: the same exact Hessians ($(digests "$T/$name.$n.gguf.report.json" | wc -w) digests)"
        else
            bad "$name: -np $n: Hessian digests differ"
        fi
        [ "$(errors "$T/$name.1.gguf.report.json")" = "$(errors "$T/$name.$n.gguf.report.json")" ] &&
            ok "$name: -np $n: the same reported errors" || bad "$name: -np $n: reported errors differ"
    done
}
same rtn4 --method rtn --wbits 4 --group-size 32
# GPTQ and GPTVQ: stories260K's matrices (64 to 172 rows) are one slab each
# at the default --row-slab 256, so most cases take smaller slabs: the ranks
# then split linears by rows (slabs() below checks that they do). vq2d (the
# default --finetune 20 at 2 index bits per value) and vqres (residual
# codebooks) fine-tune each block, every rank on all windows; the other GPTVQ
# cases leave it out (--finetune 0) to keep the test short.
same gptq4 --calib "$CAL" --method gptq --wbits 4 --group-size 32 --sym --row-slab 32
same gptq3 --calib "$CAL" --method gptq --wbits 3 --group-size 64 --row-slab 16
same vq2d --calib "$CAL" --method gptvq --vq-dim 2 --bpv 2.125
same vq2dslab --calib "$CAL" --method gptvq --vq-dim 2 --bpv 2.5 --norm-block 0 --row-slab 16 --finetune 0
same vq4d --calib "$CAL" --method gptvq --vq-dim 4 --bpv 2.25 --group-size 2048 --row-slab 16 --finetune 0
same vqnorm --calib "$CAL" --method gptvq --vq-dim 2 --bpv 2.25 --norm-block 32 --row-slab 32 --finetune 0
same vqout --calib "$CAL" --method gptvq --vq-dim 2 --bpv 2.25 --outlier-frac 0.02 --row-slab 32 --finetune 0
same vqres --calib "$CAL" --method gptvq --vq-dim 2 --bpv 3.125 --residual 2 --row-slab 32
# the fine-tuning reads only its first 32 of 48 windows (2 steps of 4, a keep
# check on 32): the ranks gather just those (-np 2: rank 1 holds windows
# 16-47 and gives 16-31; -np 3: rank 2 holds 32-47 and gives none)
same ftpart --calib "$CAL" --method gptvq --vq-dim 2 --bpv 2.125 --nsamples 48 --seqlen 128 --finetune 2 --ft-batch 4
# slabs of the 35 linears in a report, and the most of one linear
slabs() { python3 -c 'import json,sys; L=json.load(open(sys.argv[1]))["layers"]; print(sum(l["slabs"] for l in L), max(l["slabs"] for l in L))' "$1"; }
for c in gptq4:60 gptq3:100 vq2dslab:150 vq4d:90 vqnorm:80 vqout:60 vqres:50; do
    read -r total most < <(slabs "$T/${c%%:*}.1.gguf.report.json")
    [ "$total" -ge "${c##*:}" ] && [ "$most" -ge 2 ] && ok "${c%%:*}: $total slabs (up to $most per linear)" || bad "${c%%:*}: only $total slabs ($most per linear)"
done
same vqsvd --calib "$CAL" --method gptvq --vq-dim 1 --bpv 3.125 --cb-svd 4 --finetune 0
same head --calib "$CAL" --method gptvq --vq-dim 2 --bpv 2.125 --head-bpv 3.125 --finetune 0
same datafree --method gptq --wbits 4 --group-size 32 --nsamples 8

# saved Hessians: the same files from -np 3 as from one process (one thread
# each, as in same(): OpenBLAS 0.3.21's sgemm on its Haswell kernels, which
# it picks for Zen 4, rounds differently with 1 and 2 threads)
"$G" quantize "$S" -o "$T/h1.gguf" $base --threads 1 --calib "$CAL" --method gptq --save-hessians "$T/h1" >/dev/null 2>&1
MPI 3 quantize "$S" -o "$T/h3.gguf" $base --threads 1 --calib "$CAL" --method gptq --save-hessians "$T/h3" >/dev/null 2>&1
if [ "$(ls "$T/h3" | wc -l)" -eq 20 ] && diff -r "$T/h1" "$T/h3" >/dev/null; then ok "-np 3 saves the same 20 Hessians"; else bad "saved Hessians differ"; fi

# resume across rank counts
R="$T/r.gguf"; ro="--calib $CAL --method gptvq --vq-dim 2 --bpv 2.25 --norm-block 32 --row-slab 32 --finetune 0 --threads 1"
MPI 2 quantize "$S" -o "$R" $base $ro --stop-after 2 >"$T/r2.log" 2>&1; rc=$?
[ $rc -ne 0 ] && [ -f "$R.ckpt/blk.1.ckpt" ] && [ ! -f "$R.ckpt/blk.2.ckpt" ] && [ ! -e "$R" ] && ok "-np 2 --stop-after 2: 2 blocks kept, no file (exit $rc)" || bad "-np 2 stop (exit $rc)"
MPI 3 quantize "$S" -o "$R" $base $ro --stop-after 4 >"$T/r3.log" 2>&1
[ -f "$R.ckpt/blk.3.ckpt" ] && [ ! -e "$R" ] && ok "-np 3 --stop-after 4 resumes to 4 blocks" || bad "-np 3 resume"
"$G" quantize "$S" -o "$R" $base $ro >"$T/r1.log" 2>&1
cmp -s "$R" "$T/vqnorm.1.gguf" && [ ! -e "$R.ckpt" ] && ok "finished by one process: the uninterrupted file" || bad "resumed file differs"

# a rank killed with SIGKILL once block 0 is checkpointed (4 of 5 blocks to go)
K="$T/k.gguf"; ko="--calib $CAL --nsamples 32 --seqlen 512 --method gptvq --vq-dim 4 --bpv 2.25 --finetune 0 --threads 1 --quiet"
"$G" quantize "$S" -o "$T/k1.gguf" $ko >/dev/null 2>&1
MPI 2 quantize "$S" -o "$K" $ko >"$T/k.log" 2>&1 &
mp=$!
for _ in $(seq 1 1500); do [ -f "$K.ckpt/blk.0.ckpt" ] && break; sleep 0.01; done
killed=0
for p in $(pgrep -f "gptvq quantize.*$K"); do
    if tr '\0' '\n' <"/proc/$p/environ" 2>/dev/null | grep -qx "OMPI_COMM_WORLD_RANK=1"; then kill -9 "$p" && killed=1; fi
done
wait $mp; rc=$?
if [ $killed = 1 ] && [ $rc -ne 0 ] && [ ! -e "$K" ] && [ -f "$K.ckpt/blk.0.ckpt" ] && ! ls "$T" | grep -q "k.gguf.tmp"; then
    ok "rank 1 killed: exit $rc, no output file, $(ls "$K.ckpt" | grep -c blk) blocks kept"
else
    bad "kill: killed=$killed rc=$rc"; cat "$T/k.log"
fi
MPI 3 quantize "$S" -o "$K" $ko >"$T/k3.log" 2>&1
cmp -s "$K" "$T/k1.gguf" && ok "rerun with -np 3 after the kill: the one-process file" || { bad "rerun after kill differs"; tail -3 "$T/k3.log"; }

# errors
MPI 2 quantize "$S" -o "$T/e.gguf" --calib "$T/none.txt" --method gptq --quiet >"$T/e.log" 2>&1; rc=$?
n=$(grep -c "error:" "$T/e.log")
[ $rc -ne 0 ] && [ "$n" -eq 1 ] && [ ! -e "$T/e.gguf" ] && grep -q "rank 0 of 2: .*none.txt" "$T/e.log" &&
    ok "an error on every rank: one line ($(grep error: "$T/e.log"))" || { bad "error on every rank: rc=$rc, $n lines"; cat "$T/e.log"; }
# a Hugging Face directory: rank 0 writes it as GGUF, every rank reads that
HF=${B:-build}/fixtures/stories260K-hf-f32
if [ -d "$HF" ]; then
    "$G" quantize "$HF" -o "$T/f1.gguf" $base --calib "$CAL" --method gptvq --threads 1 >/dev/null 2>&1
    MPI 2 quantize "$HF" -o "$T/f2.gguf" $base --calib "$CAL" --method gptvq --threads 1 >"$T/f2.log" 2>&1; rc=$?
    [ $rc -eq 0 ] && cmp -s "$T/f1.gguf" "$T/f2.gguf" && [ ! -e "$T/f2.gguf.hf-source.gguf" ] &&
        ok "a Hugging Face directory with -np 2: the one-process file, no converted GGUF left" || { bad "directory source: rc=$rc"; tail -5 "$T/f2.log"; }
    mkdir -p "$T/hfbad"; echo '{}' >"$T/hfbad/config.json"
    MPI 2 quantize "$T/hfbad" -o "$T/f3.gguf" --quiet >"$T/f3.log" 2>&1; rc=$?
    [ $rc -ne 0 ] && [ ! -e "$T/f3.gguf" ] && [ ! -e "$T/f3.gguf.hf-source.gguf" ] && [ "$(grep -c "error:" "$T/f3.log")" -eq 1 ] &&
        ok "a broken directory with -np 2: one error line ($(grep error: "$T/f3.log"))" || { bad "broken directory: rc=$rc"; cat "$T/f3.log"; }
else
    echo "(no HF fixture $HF: tests/setup_fixtures.sh; directory cases skipped)"
fi
if [ -x "${B0:-}" ]; then # a build without MPI (B0=path), under mpirun
    mpirun -np 2 --oversubscribe "$B0" quantize "$S" -o "$T/n.gguf" --method rtn --quiet >"$T/n.log" 2>&1; rc=$?
    [ $rc -ne 0 ] && [ ! -e "$T/n.gguf" ] && grep -q "built without MPI" "$T/n.log" && ok "a build without MPI refuses mpirun -np 2" || { bad "no-MPI build: rc=$rc"; cat "$T/n.log"; }
fi
[ $fail = 0 ] && echo "test_mpi: all passed" || echo "test_mpi: FAILED"
exit $fail
