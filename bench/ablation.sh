#!/usr/bin/env bash
# Quality ablations on two texts (issue 24): each variant is one `gptvq
# quantize` of SmolLM2 (GPTVQ defaults plus the variant's options), scored by
# `gptvq ppl` (gptq protocol, ctx 2048, first WINDOWS windows) on WikiText-2
# test and on the HellaSwag text of bench/make_second_text.py, next to the
# source model. Prints one Markdown table: file size, bits per value, both
# perplexities, their ratios to the source, the mean of the two ratios and
# the quantization seconds. Quantized files are kept in OUTDIR (a rerun
# reuses them; the timings are then those of the first run).
#
# usage: bash bench/ablation.sh OUTDIR
# environment (defaults): WINDOWS (8) GPTVQ (build/gptvq)
#   MODEL (models/SmolLM2-135M-Instruct.Q4_1.gguf)
#   ONLY (a regular expression on the variant names; all by default)
#   VARIANTS: lines "name|quantize options" (default: the list below)
set -u
cd "$(dirname "$0")/.."
out=${1:?usage: bash bench/ablation.sh OUTDIR}
G=${GPTVQ:-build/gptvq} model=${MODEL:-models/SmolLM2-135M-Instruct.Q4_1.gguf} win=${WINDOWS:-8}
D=../shared/data/wikitext-2-raw
hs=build/eval/hellaswag_ctx_gold.txt
[ -f "$hs" ] || python3 bench/make_second_text.py >/dev/null || { echo "ablation: cannot write $hs" >&2; exit 1; }
W="--calib $D/wiki.valid.raw"
default_variants="\
2.125|--bpv 2.125 $W --nsamples 32 --seqlen 512
2.125-fp-target|--bpv 2.125 $W --nsamples 32 --seqlen 512 --fp-target
2.125-finetune20|--bpv 2.125 $W --nsamples 32 --seqlen 512 --finetune 20
2.125-w128x512|--bpv 2.125 $W --nsamples 128 --seqlen 512
2.125-w128x512-finetune20|--bpv 2.125 $W --nsamples 128 --seqlen 512 --finetune 20
2.125-datafree128x512|--bpv 2.125 --nsamples 128 --seqlen 512
2.125-mix64|--bpv 2.125 $W --nsamples 128 --seqlen 512 --calib-mix 64
2.125-rotate|--bpv 2.125 $W --nsamples 32 --seqlen 512 --rotate
2.125-rotate-finetune20|--bpv 2.125 $W --nsamples 32 --seqlen 512 --rotate --finetune 20
3.125|--bpv 3.125 $W --nsamples 32 --seqlen 512
3.125-rotate|--bpv 3.125 $W --nsamples 32 --seqlen 512 --rotate
4.125|--bpv 4.125 $W --nsamples 32 --seqlen 512
4.125-rotate|--bpv 4.125 $W --nsamples 32 --seqlen 512 --rotate
3.125-fp-target|--bpv 3.125 $W --nsamples 32 --seqlen 512 --fp-target
3.125-finetune20|--bpv 3.125 $W --nsamples 32 --seqlen 512 --finetune 20"
mkdir -p "$out"
ppl() { "$G" ppl "$1" "$2" --max-windows "$win" --quiet 2>/dev/null | sed -n 's/^ppl=\([0-9.]*\) .*/\1/p'; }
names=(source) files=("$model")
while IFS='|' read -r name opts; do
    [ -n "$name" ] || continue
    [[ $name =~ ${ONLY:-.} ]] || continue
    f=$out/$name.gguf
    if [ ! -f "$f" ]; then
        echo "ablation: quantizing $name: $opts" >&2
        # shellcheck disable=SC2086 # the options are words
        # the settings these variants were measured against (2D, no fine-tuning) unless one says otherwise
        "$G" quantize "$model" -o "$f" --method gptvq --vq-dim 2 --finetune 0 $opts --quiet --no-checkpoint >"$f.log" 2>&1 ||
            { echo "ablation: $name failed, see $f.log" >&2; exit 1; }
    fi
    names+=("$name") files+=("$f")
done <<<"${VARIANTS:-$default_variants}"
echo "| variant | MB | bpv (linears) | WikiText-2 ppl | x source | HellaSwag text ppl | x source | mean ratio | quantize s |"
echo "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"
w0= h0=
for i in "${!files[@]}"; do
    f=${files[$i]}
    w=$(ppl "$f" "$D/wiki.test.raw") h=$(ppl "$f" "$hs")
    [ -z "$w0" ] && w0=$w h0=$h
    python3 - "${names[$i]}" "$f" "$(stat -Lc %s "$f")" "$w" "$w0" "$h" "$h0" <<'PY'
import json, os, sys
name, f, size, w, w0, h, h0 = sys.argv[1:]
w, w0, h, h0 = map(float, (w, w0, h, h0))
bpv = secs = "-"
if os.path.exists(f + ".report.json"):
    r = json.load(open(f + ".report.json"))
    bpv, secs = "%.4f" % r["bpv_achieved"], "%.0f" % r["seconds_total"]
print(f"| {name} | {int(size) / 1e6:.1f} | {bpv} | {w:.3f} | {w / w0:.3f} | {h:.3f} | {h / h0:.3f} | {(w / w0 + h / h0) / 2:.3f} | {secs} |")
PY
done
