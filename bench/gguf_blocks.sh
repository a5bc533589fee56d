#!/usr/bin/env bash
# GPTQ / RTN written as GGUF blocks (docs/results.md, "GPTQ and RTN as GGUF
# blocks"): SmolLM2-135M-Instruct quantized at 4 and 5 bits in groups of 32,
# each file's size, bits per weight of its block linears and WikiText-2 test
# perplexity (gptq protocol, ctx 2048), next to the source and llama.cpp's own
# rounding of the same weights to Q4_0 (`gptvq export --to q4_0` uses
# llama.cpp's reference quantize_row_q4_0). With LLAMA_PPL=path/to/llama-
# perplexity (bench/build_llamacpp.sh builds it), llama.cpp itself also runs
# the source, the Q4_0 export and the GPTQ Q4_0 / Q4_1 / Q5_1 files (its
# protocol: ctx 512, second half of each window scored), side by side with
# `gptvq ppl --protocol llama.cpp` on the same windows (LLAMA_ONLY=1: only
# that, on the files an earlier run left in OUTDIR). Build llama.cpp with
# LLAMA_CPU=avx2 where the native build dies on AMX. Long: by hand, not in CI.
#
#   bash bench/gguf_blocks.sh [OUTDIR]
# Environment: WINDOWS (gptq-protocol windows, default 16 of 148), CHUNKS
#   (llama.cpp windows of 512, default 64), NSAMPLES / SEQLEN (calibration,
#   default 128 x 512 of wiki.valid.raw), THREADS (default nproc).
set -euo pipefail
source "$(dirname "$0")/smol_env.sh"
OUT=${1:-/tmp/gptvq-gguf-blocks}
WINDOWS=${WINDOWS:-16}
CHUNKS=${CHUNKS:-64}
NSAMPLES=${NSAMPLES:-128}
SEQLEN=${SEQLEN:-512}
THREADS=${THREADS:-$(nproc)}
mkdir -p "$OUT"

ppl() { "$G" ppl "$1" "$TEST" --protocol gptq --ctx 2048 --max-windows "$WINDOWS" --threads "$THREADS" --quiet | tail -1 |
    sed -n 's/^ppl=\([0-9.]*\) .*/\1/p'; }
# bits per weight of the block linears (blk.*, 2-D), from gptvq inspect's tensor table
bpw() { "$G" inspect "$1" 2>/dev/null | awk '$2 ~ /^blk\..*weight$/ && $4 ~ /x/ {
    split($4, s, "x"); n += s[1] * s[2]; b += $5 } END { printf "%.3f", 8 * b / n }'; }
row() { # label, file, quantize seconds
    printf '| %s | %s | %s | %s | %s |\n' "$1" "$(bpw "$2")" "$(stat -L -c %s "$2")" "$(ppl "$2")" "$3" | tee -a "$OUT/table.md"
}
quant() { # name, options...
    local name=$1 t0=$SECONDS; shift
    "$G" quantize "$M" -o "$OUT/$name.gguf" --calib "$CAL" --nsamples "$NSAMPLES" --seqlen "$SEQLEN" \
        --threads "$THREADS" --quiet --no-checkpoint "$@" >"$OUT/$name.log" 2>&1
    echo $((SECONDS - t0))
}

if [ -z "${LLAMA_ONLY:-}" ]; then
{
    echo "SmolLM2-135M-Instruct, WikiText-2 test, gptq protocol, ctx 2048, first $WINDOWS windows;"
    echo "calibration $NSAMPLES x $SEQLEN tokens of wiki.valid.raw; $THREADS threads"
    echo
    echo "| model | block linears bits/weight | file bytes | ppl | quantize s |"
    echo "| --- | --- | --- | --- | --- |"
} | tee "$OUT/table.md"
row "source (llama.cpp Q4_1, Q8_0 embeddings/head)" "$M" "-"
"$G" export "$M" -o "$OUT/export_q4_0.gguf" --to q4_0 >/dev/null 2>&1
row "llama.cpp rounding to Q4_0 (export --to q4_0)" "$OUT/export_q4_0.gguf" "-"
t=$(quant rtn_q4_0 --method rtn --wbits 4 --group-size 32 --sym); row "RTN W4 g32 sym -> Q4_0" "$OUT/rtn_q4_0.gguf" "$t"
t=$(quant gptq_q4_0 --method gptq --wbits 4 --group-size 32 --sym); row "GPTQ W4 g32 sym -> Q4_0" "$OUT/gptq_q4_0.gguf" "$t"
t=$(quant rtn_q4_1 --method rtn --wbits 4 --group-size 32); row "RTN W4 g32 -> Q4_1" "$OUT/rtn_q4_1.gguf" "$t"
t=$(quant gptq_q4_1 --method gptq --wbits 4 --group-size 32); row "GPTQ W4 g32 -> Q4_1" "$OUT/gptq_q4_1.gguf" "$t"
t=$(quant gptq_q5_1 --method gptq --wbits 5 --group-size 32); row "GPTQ W5 g32 -> Q5_1" "$OUT/gptq_q5_1.gguf" "$t"
fi # LLAMA_ONLY=1: only the llama.cpp comparison, on the files of an earlier run in OUTDIR

if [ -n "${LLAMA_PPL:-}" ]; then
    {
        echo
        echo "llama.cpp's perplexity tool on the same files (ctx 512, first $CHUNKS chunks, second halves scored)"
        echo "next to gptvq ppl --protocol llama.cpp --ctx 512 --max-windows $CHUNKS:"
        echo
        echo "| file | llama.cpp | gptvq |"
        echo "| --- | --- | --- |"
    } | tee -a "$OUT/table.md"
    for f in "$M" "$OUT"/export_q4_0.gguf "$OUT"/gptq_q4_0.gguf "$OUT"/gptq_q4_1.gguf "$OUT"/gptq_q5_1.gguf; do
        n=$(basename "$f" .gguf)
        rc=0
        "$LLAMA_PPL" -m "$f" -f "$TEST" -c 512 --chunks "$CHUNKS" -t "$THREADS" >"$OUT/$n.llama.log" 2>&1 || rc=$?
        l=$(sed -n 's/.*Final estimate: PPL = \([0-9.]*\).*/\1/p' "$OUT/$n.llama.log")
        o=$("$G" ppl "$f" "$TEST" --protocol llama.cpp --ctx 512 --max-windows "$CHUNKS" --threads "$THREADS" \
            --quiet | tail -1 | sed -n 's/^ppl=\([0-9.]*\) .*/\1/p')
        printf '| %s | %s | %s |\n' "$n" "${l:-failed, exit $rc (see $OUT/$n.llama.log)}" "$o" | tee -a "$OUT/table.md"
    done
fi
