#!/usr/bin/env bash
# The quantization results table of docs/results.md: SmolLM2-135M-Instruct on
# WikiText-2 test (gptq protocol, ctx 2048), FP vs RTN vs GPTQ at W4 g128,
# W3 g128, W2 g64, plus data-free GPTQ W4 g128. Calibration text is
# wiki.valid.raw (never the test split). Long: run by hand, not in CI.
#
#   bash bench/quant_table.sh [OUTDIR]
# Environment: WINDOWS (evaluation windows, 0 = all 148; default 32),
#   NSAMPLES / SEQLEN (calibration windows, default 128 x 512),
#   GPTQ_OPTS (extra quantize options for the GPTQ rows).
set -euo pipefail
source "$(dirname "$0")/smol_env.sh"
OUT=${1:-/tmp/gptvq-quant-table}
WINDOWS=${WINDOWS:-32}
NSAMPLES=${NSAMPLES:-128}
SEQLEN=${SEQLEN:-512}
GPTQ_OPTS=${GPTQ_OPTS:-}
mkdir -p "$OUT"

ppl() { "$G" ppl "$1" "$TEST" --protocol gptq --ctx 2048 --max-windows "$WINDOWS" --quiet | tail -1; }
row() { # label, file, seconds
    local r; r=$(ppl "$2")
    printf '| %s | %s | %s |\n' "$1" "$(sed -n 's/^ppl=\([0-9.]*\) .*/\1/p' <<<"$r")" "$3" | tee -a "$OUT/table.md"
    echo "    $r" >&2
}
quant() { # name, options...
    local name=$1; shift
    local t0=$SECONDS
    "$G" quantize "$M" -o "$OUT/$name.gguf" --quiet "$@" >"$OUT/$name.log" 2>&1
    echo $((SECONDS - t0))
}

: >"$OUT/table.md"
echo "| model | ppl (first $WINDOWS windows) | quantize s |" | tee -a "$OUT/table.md"
echo "| --- | --- | --- |" | tee -a "$OUT/table.md"
row "source (Q4_1 GGUF)" "$M" -
for cfg in "4 128" "3 128" "2 64"; do
    set -- $cfg
    s=$(quant "rtn-w$1g$2" --method rtn --wbits "$1" --group-size "$2")
    row "RTN W$1 g$2" "$OUT/rtn-w$1g$2.gguf" "$s"
    s=$(quant "gptq-w$1g$2" --method gptq --wbits "$1" --group-size "$2" --calib "$CAL" \
        --nsamples "$NSAMPLES" --seqlen "$SEQLEN" $GPTQ_OPTS)
    row "GPTQ W$1 g$2" "$OUT/gptq-w$1g$2.gguf" "$s"
    rm -f "$OUT/rtn-w$1g$2.gguf" "$OUT/gptq-w$1g$2.gguf"
done
s=$(quant "gptq-df-w4g128" --method gptq --wbits 4 --group-size 128 --nsamples "$NSAMPLES" --seqlen "$SEQLEN" $GPTQ_OPTS)
row "GPTQ W4 g128, data-free" "$OUT/gptq-df-w4g128.gguf" "$s"
rm -f "$OUT/gptq-df-w4g128.gguf"
echo "table: $OUT/table.md; logs and JSON reports: $OUT/" >&2
