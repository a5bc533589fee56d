#!/usr/bin/env bash
# End to end at Llama-2-7B / 70B shapes without the model: a synthetic GGUF of
# BLOCKS decoder blocks (bench/make_synth_model: real shapes, random weights,
# correlated heavy-tailed embeddings, SmolLM2's tokenizer) quantized by the
# real `gptvq quantize` with --calib text: calibration forward, Hessians,
# quantization, streaming and the memory estimate all run as for a real model.
# Prints, per configuration, seconds per block for the calibration forward
# (also scaled to the paper's 128 x 2048 calibration tokens: it is linear in
# the tokens) and for the quantization, and the projection to the whole model
# (32 blocks for 7B, 80 for 70B), beside the paper's runtimes on one H100.
# From a 7B run it also projects Llama-2-70B with a cost model (each part of
# each linear's time scaled by what it grows with; printed as such).
#
# usage: bash bench/synth_stack.sh OUTDIR
# environment (defaults): SHAPE (7b) BLOCKS (2) CONFIGS ("gptq 2d 4d")
#   NSAMPLES (4) SEQLEN (2048) EM_ITERS (100) DEVICE (cpu) THREADS (all cores)
#   GPTVQ (build/gptvq) MAKE_SYNTH (build/bench/make_synth_model)
#   TEMPLATE (models/SmolLM2-135M-Instruct.Q4_1.gguf) CALIB
#   (../shared/data/wikitext-2-raw/wiki.valid.raw) TIMEOUT (seconds per
#   configuration, 0 = none)
# A configuration is gptq (W3 g128, act-order), 2d or 4d (GPTVQ 2.125 bpv).
# Files: OUTDIR/synth-SHAPE-BLOCKS.gguf (kept for reruns), OUTDIR/CONFIG.log,
# OUTDIR/CONFIG.gguf.report.json; the quantized files are deleted.
set -u
cd "$(dirname "$0")/.."
out=${1:?usage: bash bench/synth_stack.sh OUTDIR}
shape=${SHAPE:-7b} blocks=${BLOCKS:-2} ns=${NSAMPLES:-4} sl=${SEQLEN:-2048} em=${EM_ITERS:-100}
dev=${DEVICE:-cpu} threads=${THREADS:-$(nproc)} to=${TIMEOUT:-0}
G=${GPTVQ:-build/gptvq} MS=${MAKE_SYNTH:-build/bench/make_synth_model}
tpl=${TEMPLATE:-models/SmolLM2-135M-Instruct.Q4_1.gguf} calib=${CALIB:-../shared/data/wikitext-2-raw/wiki.valid.raw}
py=$(command -v python3) || { echo "synth_stack: python3 needed to read the reports" >&2; exit 1; }
case $shape in 7b) full=32 ;; 70b) full=80 ;; *) echo "synth_stack: SHAPE=$shape: 7b or 70b" >&2; exit 2 ;; esac
mkdir -p "$out"
model=$out/synth-$shape-$blocks.gguf
if [ ! -f "$model" ]; then
    "$MS" "$tpl" "$model" --shape "$shape" --blocks "$blocks" || exit 1
fi
echo "synth_stack: $shape shape, $blocks blocks, $ns x $sl calibration tokens, device $dev, $threads threads"
for cfg in ${CONFIGS:-gptq 2d 4d}; do
    case $cfg in
    gptq) args=(--method gptq --wbits 3 --group-size 128) ;;
    2d) args=(--method gptvq --vq-dim 2 --bpv 2.125 --em-iters "$em") ;;
    4d) args=(--method gptvq --vq-dim 4 --bpv 2.125 --em-iters "$em") ;;
    *) echo "synth_stack: unknown configuration $cfg (gptq, 2d, 4d)" >&2; continue ;;
    esac
    q=$out/$cfg.gguf
    rm -f "$q" "$q.report.json"
    t0=$SECONDS
    tcmd=()
    [ "$to" -gt 0 ] && tcmd=(timeout "$to")
    tm=()
    [ -x /usr/bin/time ] && tm=(/usr/bin/time -f "peak RSS %M KB")
    OMP_WAIT_POLICY=PASSIVE "${tm[@]}" "${tcmd[@]}" "$G" quantize "$model" -o "$q" "${args[@]}" \
        --calib "$calib" --nsamples "$ns" --seqlen "$sl" --threads "$threads" --device "$dev" --no-checkpoint \
        >"$out/$cfg.log" 2>&1 # with the progress lines: a run cut by TIMEOUT still shows its finished linears
    rc=$?
    rm -f "$q"
    if [ $rc -ne 0 ] || [ ! -f "$q.report.json" ]; then
        echo "  $cfg: failed (rc $rc after $((SECONDS - t0)) s), last lines of $out/$cfg.log:"
        tr '\r' '\n' <"$out/$cfg.log" | grep -v '^$' | tail -n 4 | sed 's/^/    /'
        continue
    fi
    rss=$(grep -o 'peak RSS [0-9]* KB' "$out/$cfg.log" | awk '{print $3}') # empty without /usr/bin/time
    "$py" - "$q.report.json" "$cfg" "$blocks" "$full" "$rss" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
cfg, blocks, full = sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
rss = f"{int(sys.argv[5]) / 1048576:.2f} GiB" if sys.argv[5] else "?"
fw = r["seconds_calibration_forward"] / blocks
qt = r["seconds_quantization"] / blocks
scale = 128 * 2048 / r["calib_tokens"]
per_block = fw * scale + qt
err = sum(l["rel_error"] for l in r["layers"]) / len(r["layers"])
print(f"  {cfg}: per block forward {fw:.1f} s ({fw * scale:.1f} s at 128 x 2048 tokens) + quantization {qt:.1f} s"
      f" = {per_block:.1f} s; x {full} blocks = {per_block * full / 3600:.2f} h"
      f" (total {r['seconds_total']:.1f} s, peak RSS {rss}, mean rel error {err:.5f})")
if full == 32:  # 7B measured: Llama-2-70B by a cost model (bench/cost_model.py), not measured
    sys.path.insert(0, "bench")
    from cost_model import linear_70b_seconds, forward_70b_seconds
    q70 = sum(linear_70b_seconds(l) for l in r["layers"]) / blocks
    fw70 = forward_70b_seconds(r, blocks)
    print(f"  {cfg}: Llama-2-70B by a cost model (not measured): forward {fw70:.0f} s + quantization {q70:.0f} s"
          f" per block at 128 x 2048 tokens, x 80 blocks = {(fw70 + q70) * 80 / 3600:.1f} h")
PY
done
echo "paper (one H100): Llama-2-7B 30-60 min (Table 12: 2D 1335-2195 s with codebook update), Llama-2-70B 3-11 h"
