#!/usr/bin/env bash
# The GPTVQ tables of docs/results.md: SmolLM2-135M-Instruct, WikiText-2 test
# (gptq protocol, ctx 2048, first WINDOWS windows), GPTVQ at 2.125 / 2.25 /
# 3.125 bpv next to RTN and GPTQ at equal bpv, then the ablations. Long: run
# by hand, not in CI.
#
#   bash bench/vq_table.sh HESSDIR [OUTDIR] [main|svd|ablations|all]
#
# HESSDIR holds the Hessians of one calibration pass (gptvq quantize
# --save-hessians; docs/results.md: GPTQ W8 g128 on 128 x 512 tokens of
# wiki.valid.raw, i.e. the inputs of the unquantized model up to 8-bit
# rounding). Every method below loads the SAME Hessians, so the rows differ
# only in the quantizer. Environment: WINDOWS (default 32), ABL_WINDOWS
# (ablations, default 8), VQ_OPTS (extra options for every GPTVQ row), ONLY
# (a regex of row names to run, e.g. ONLY='abl-em50|abl-em75').
set -euo pipefail
source "$(dirname "$0")/smol_env.sh"
H=${1:?usage: vq_table.sh HESSDIR [OUTDIR] [main|svd|ablations|all]}
OUT=${2:-/tmp/gptvq-vq-table}
WHAT=${3:-all}
WINDOWS=${WINDOWS:-32}
ABL_WINDOWS=${ABL_WINDOWS:-8}
VQ_OPTS=${VQ_OPTS:-}
mkdir -p "$OUT"

ppl() { "$G" ppl "$1" "$TEST" --protocol gptq --ctx 2048 --max-windows "$2" --quiet | tail -1 |
    sed -n 's/^ppl=\([0-9.]*\) .*/\1/p'; }
# name, windows, label, quantize options...: one table row with bpv and time
row() {
    local name=$1 win=$2 label=$3; shift 3
    [[ -z "${ONLY:-}" || "$name" =~ ^(${ONLY})$ ]] || return 0
    local t0=$SECONDS
    local hess=(--load-hessians "$H")
    [ "$2" = rtn ] && hess=() # "--method rtn" (after the shift): no Hessians
    if ! "$G" quantize "$M" -o "$OUT/$name.gguf" --quiet "${hess[@]}" "$@" >"$OUT/$name.log" 2>&1; then
        echo "| $label | failed: $(tail -1 "$OUT/$name.log") | | |" | tee -a "$OUT/table.md"
        return
    fi
    local secs=$((SECONDS - t0)) bpv
    bpv=$(sed -n 's/.*= \([0-9.]*\) bpv achieved.*/\1/p' "$OUT/$name.log")
    [ -n "$bpv" ] || bpv=-
    printf '| %s | %s | %s | %s |\n' "$label" "$(ppl "$OUT/$name.gguf" "$win")" "$bpv" "$secs" | tee -a "$OUT/table.md"
    rm -f "$OUT/$name.gguf" # keep the report and log, not 500 MB of F32 per row
}
header() {
    printf '\n%s (ppl over the first %s windows)\n\n| model | ppl | bpv achieved | quantize s |\n| --- | --- | --- | --- |\n' \
        "$1" "$2" | tee -a "$OUT/table.md"
}

if [ "$WHAT" = main ] || [ "$WHAT" = all ]; then
    header "Main table" "$WINDOWS"
    printf '| source (Q4_1 GGUF) | %s | - | - |\n' "${SOURCE_PPL:-$(ppl "$M" "$WINDOWS")}" | tee -a "$OUT/table.md"
    # 2.125 bpv: W2 g128 (one fp16 scale + zero per 128 = 0.25 for asymmetric;
    # the paper counts W2@g128 as 2.125, i.e. scale only) vs VQ at 2.125
    row rtn-w2g128 "$WINDOWS" "RTN W2 g128 (2.125)" --method rtn --wbits 2 --group-size 128
    row gptq-w2g128 "$WINDOWS" "GPTQ W2 g128 (2.125)" --method gptq --wbits 2 --group-size 128
    row vq1d-2.125 "$WINDOWS" "GPTVQ 1D 2.125" --method gptvq --vq-dim 1 --bpv 2.125 $VQ_OPTS
    row vq2d-2.125 "$WINDOWS" "GPTVQ 2D 2.125" --method gptvq --vq-dim 2 --bpv 2.125 $VQ_OPTS
    row rtn-w2g64 "$WINDOWS" "RTN W2 g64 (2.25)" --method rtn --wbits 2 --group-size 64
    row gptq-w2g64 "$WINDOWS" "GPTQ W2 g64 (2.25)" --method gptq --wbits 2 --group-size 64
    row vq1d-2.25 "$WINDOWS" "GPTVQ 1D 2.25" --method gptvq --vq-dim 1 --bpv 2.25 $VQ_OPTS
    row vq2d-2.25 "$WINDOWS" "GPTVQ 2D 2.25" --method gptvq --vq-dim 2 --bpv 2.25 $VQ_OPTS
    row vq4d-2.25 "$WINDOWS" "GPTVQ 4D 2.25" --method gptvq --vq-dim 4 --bpv 2.25 $VQ_OPTS
    row rtn-w3g128 "$WINDOWS" "RTN W3 g128 (3.125)" --method rtn --wbits 3 --group-size 128
    row gptq-w3g128 "$WINDOWS" "GPTQ W3 g128 (3.125)" --method gptq --wbits 3 --group-size 128
    row vq1d-3.125 "$WINDOWS" "GPTVQ 1D 3.125" --method gptvq --vq-dim 1 --bpv 3.125 $VQ_OPTS
    row vq2d-3.125 "$WINDOWS" "GPTVQ 2D 3.125" --method gptvq --vq-dim 2 --bpv 3.125 $VQ_OPTS
fi

if [ "$WHAT" = svd ] || [ "$WHAT" = all ]; then
    # Paper Table 15 / App. H: codebook compression at equal overhead (1D 2.125)
    header "Codebook compression at equal overhead, GPTVQ 1D 2.125 (k 4)" "$WINDOWS"
    B="--method gptvq --vq-dim 1 --bpv 2.125 $VQ_OPTS"
    row svd-int8 "$WINDOWS" "int8 codebooks, l 256 (default)" $B
    row svd-fp16 "$WINDOWS" "fp16 codebooks, l 512" $B --cb-format fp16
    row svd-r4 "$WINDOWS" "codebook SVD rank 4 = k (int8 U, l 256)" $B --cb-svd 4
    row svd-r2 "$WINDOWS" "codebook SVD rank 2 (int8 U, l 128)" $B --cb-svd 2
    row svd-r2-none "$WINDOWS" "codebook SVD rank 2, truncation only (no ALS)" $B --cb-svd 2 --cb-update none
fi

if [ "$WHAT" = ablations ] || [ "$WHAT" = all ]; then
    A="--method gptvq --vq-dim 2 --bpv 2.125 $VQ_OPTS"
    header "Ablations, GPTVQ 2D 2.125 (defaults: EM 100 Mahalanobis, exact update, int8, no normalisation)" "$ABL_WINDOWS"
    row abl-base "$ABL_WINDOWS" "defaults (EM 100, exact update)" $A
    row abl-upd-none "$ABL_WINDOWS" "codebook update none" $A --cb-update none
    row abl-upd-gd "$ABL_WINDOWS" "codebook update gd (25 steps)" $A --cb-update gd
    for it in 10 30; do row "abl-em$it" "$ABL_WINDOWS" "EM iterations $it" $A --em-iters $it; done
    row abl-kpp "$ABL_WINDOWS" "k-means++ seeds" $A --em-init kmeans++
    # equal overhead: fp16 codebooks need twice the group size of int8 ones
    row abl-fp16 "$ABL_WINDOWS" "fp16 codebooks, l 4096 (equal overhead)" $A --cb-format fp16 --group-size 4096
    row abl-norm "$ABL_WINDOWS" "normalisation, blocks of 64 (l doubles)" $A --norm-block 64
    row abl-res1 "$ABL_WINDOWS" "2D 2.25, one stage (k 16, l 1024)" --method gptvq --vq-dim 2 --bpv 2.25 $VQ_OPTS
    row abl-res2 "$ABL_WINDOWS" "2D 2.25, residual: 2 stages of k 4 (l 512)" --method gptvq --vq-dim 2 --bpv 2.25 --residual 2 $VQ_OPTS
    row abl-fbdiag "$ABL_WINDOWS" "feedback diag (reference code)" $A --feedback diag
    row abl-full "$ABL_WINDOWS" "full sub-Hessian assignment" $A --full-subhessian
    for it in 50 75; do row "abl-em$it" "$ABL_WINDOWS" "EM iterations $it" $A --em-iters $it; done
    row abl-noact "$ABL_WINDOWS" "no act-order" $A --no-act-order
    row abl-outl "$ABL_WINDOWS" "outliers 1% fp16 (adds ~0.15 bpv)" $A --outlier-frac 0.01
fi
