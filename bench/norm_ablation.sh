#!/usr/bin/env bash
# Normalisation (--norm-block 64) at every budget, on two texts (issue 24):
# GPTVQ 2D 2.125, 2D 3.125 and 1D 4.125 on SmolLM2, each without and with
# normalisation, calibrated as the main job (32 x 512 tokens of
# wiki.valid.raw), scored by `gptvq ppl` (gptq protocol, ctx 2048, first
# WINDOWS windows) on WikiText-2 test and on the HellaSwag text of
# bench/make_second_text.py, next to the source model. Prints one Markdown
# table: file size, bits per value, both perplexities, their ratios to the
# source and the mean of the two ratios. Quantized files are kept in OUTDIR
# (a rerun reuses them).
#
# usage: bash bench/norm_ablation.sh OUTDIR
# environment (defaults): WINDOWS (8) GPTVQ (build/gptvq)
#   MODEL (models/SmolLM2-135M-Instruct.Q4_1.gguf) CONFIGS ("2:2.125 2:3.125 1:4.125")
set -u
cd "$(dirname "$0")/.."
out=${1:?usage: bash bench/norm_ablation.sh OUTDIR}
G=${GPTVQ:-build/gptvq} model=${MODEL:-models/SmolLM2-135M-Instruct.Q4_1.gguf} win=${WINDOWS:-8}
D=../shared/data/wikitext-2-raw
hs=build/eval/hellaswag_ctx_gold.txt
[ -f "$hs" ] || python3 bench/make_second_text.py >/dev/null || { echo "norm_ablation: cannot write $hs" >&2; exit 1; }
mkdir -p "$out"
ppl() { "$G" ppl "$1" "$2" --max-windows "$win" --quiet 2>/dev/null | sed -n 's/^ppl=\([0-9.]*\) .*/\1/p'; }
files=("$model")
for c in ${CONFIGS:-2:2.125 2:3.125 1:4.125}; do
    d=${c%%:*} b=${c##*:}
    for nb in 0 64; do
        f=$out/vq${d}d-$b-norm$nb.gguf
        if [ ! -f "$f" ]; then
            echo "norm_ablation: quantizing $f" >&2
            "$G" quantize "$model" -o "$f" --method gptvq --vq-dim "$d" --bpv "$b" --norm-block "$nb" \
                --calib "$D/wiki.valid.raw" --nsamples 32 --seqlen 512 --quiet --no-checkpoint >"$f.log" 2>&1 ||
                { echo "norm_ablation: $f failed, see $f.log" >&2; exit 1; }
        fi
        files+=("$f")
    done
done
echo "| file | MB | bpv (linears) | WikiText-2 ppl | x source | HellaSwag text ppl | x source | mean ratio |"
echo "| --- | --- | --- | --- | --- | --- | --- | --- |"
w0= h0=
for f in "${files[@]}"; do
    w=$(ppl "$f" "$D/wiki.test.raw") h=$(ppl "$f" "$hs")
    [ -z "$w0" ] && w0=$w h0=$h
    bpv=-
    [ -f "$f.report.json" ] && bpv=$(python3 -c 'import json,sys; print("%.4f" % json.load(open(sys.argv[1]))["bpv_achieved"])' "$f.report.json")
    python3 - "$f" "$(stat -Lc %s "$f")" "$bpv" "$w" "$w0" "$h" "$h0" <<'PY'
import sys
f, size, bpv, w, w0, h, h0 = sys.argv[1:]
w, w0, h, h0 = map(float, (w, w0, h, h0))
print(f"| {f.split('/')[-1]} | {int(size) / 1e6:.1f} | {bpv} | {w:.3f} | {w / w0:.3f} | {h:.3f} | {h / h0:.3f} | {(w / w0 + h / h0) / 2:.3f} |")
PY
done
