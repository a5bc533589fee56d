#!/usr/bin/env bash
# One quantization, one process × T threads against mpirun -np N × 1 thread,
# alternately (ROUNDS rounds), on the same machine: wall time, the engine's
# calibration-forward and quantization seconds (rank 0's report), peak RSS
# of every process, and whether the files are byte-identical. They are by
# construction with the same threads per process; with 2 threads against 1,
# OpenBLAS's dsyrk can round differently at some widths (172: stories260K's
# FFN; not 576, 1536 or 7B's), which may reach a float of H.
#
# usage: bash bench/mpi_scale.sh OUTDIR
# environment (defaults): MODEL (models/SmolLM2-135M-Instruct.Q4_1.gguf)
#   NP (2) THREADS (NP: the one process gets as many threads as there are
#   ranks) ROUNDS (1) ARGS (the main job's GPTVQ 2D 2.125 with --norm-block 64
#   on 32 x 512 tokens of wiki.valid.raw) GPTVQ (build/gptvq)
set -u
cd "$(dirname "$0")/.."
out=${1:?usage: bash bench/mpi_scale.sh OUTDIR}
model=${MODEL:-models/SmolLM2-135M-Instruct.Q4_1.gguf} np=${NP:-2} threads=${THREADS:-${NP:-2}} rounds=${ROUNDS:-1}
G=${GPTVQ:-build/gptvq}
D=../shared/data/wikitext-2-raw
read -r -a args <<<"${ARGS:---method gptvq --bpv 2.125 --vq-dim 2 --norm-block 64 --calib $D/wiki.valid.raw --nsamples 32 --seqlen 512}"
command -v mpirun >/dev/null || { echo "mpi_scale: no mpirun (bash scripts/setup.sh)" >&2; exit 1; }
"$G" version | grep -q "^mpi: none" && { echo "mpi_scale: $G has no MPI (rebuild after setup)" >&2; exit 1; }
[ -x /usr/bin/time ] || { echo "mpi_scale: /usr/bin/time needed (apt-get install time)" >&2; exit 1; }
[ "$(id -u)" = 0 ] && export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
mkdir -p "$out"
report() { # report.json -> "forward quant"
    python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print("%.1f %.1f" % (d["seconds_calibration_forward"], d["seconds_quantization"]))' "$1"
}
echo "mpi_scale: $model, ${args[*]}"
echo "| round | run | wall s | forward s | quantization s | peak RSS per process (MiB) | file |"
echo "| --- | --- | --- | --- | --- | --- | --- |"
for r in $(seq 1 "$rounds"); do
    for how in one mpi; do
        f=$out/$how.gguf
        rm -rf "$f" "$f.report.json" "$f.ckpt" "$out/$how".rss.*
        t0=$(date +%s.%N)
        if [ $how = one ]; then
            /usr/bin/time -f "%M" -o "$out/$how.rss.0" "$G" quantize "$model" -o "$f" "${args[@]}" --threads "$threads" \
                --quiet --no-checkpoint >"$out/$how.log" 2>&1
        else
            mpirun -np "$np" --oversubscribe sh -c '/usr/bin/time -f "%M" -o "$0.$OMPI_COMM_WORLD_RANK" "$@"' \
                "$out/$how.rss" "$G" quantize "$model" -o "$f" "${args[@]}" --threads 1 --quiet --no-checkpoint \
                >"$out/$how.log" 2>&1
        fi
        rc=$?
        wall=$(python3 -c "import sys; print(float(sys.argv[2]) - float(sys.argv[1]))" "$t0" "$(date +%s.%N)")
        [ $rc -eq 0 ] || { echo "mpi_scale: $how failed (rc $rc), $out/$how.log:" >&2; tail -5 "$out/$how.log" >&2; exit 1; }
        rss=$(for x in "$out/$how".rss.*; do echo $(( $(tail -1 "$x") / 1024 )); done | paste -sd/)
        read -r fw qu <<<"$(report "$f.report.json")"
        label="1 process x $threads threads"; [ $how = mpi ] && label="mpirun -np $np x 1 thread"
        same="-"; [ $how = mpi ] && { cmp -s "$out/one.gguf" "$f" && same="cmp-identical to the 1-process file" || same="DIFFERS"; }
        printf "| %d | %s | %.1f | %s | %s | %s | %s |\n" "$r" "$label" "$wall" "$fw" "$qu" "$rss" "$same"
    done
done
