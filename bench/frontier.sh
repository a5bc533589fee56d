#!/usr/bin/env bash
# The size / perplexity frontier on SmolLM2-135M (issue 24): llama.cpp's own
# types, quantized by its llama-quantize with an importance matrix from its
# llama-imatrix, next to gptvq's GPTQ and GPTVQ files, all calibrated on the
# same tokens (the first CALIB_N x CALIB_LEN tokens' worth of
# wiki.valid.raw: llama-imatrix --chunks CALIB_N -c CALIB_LEN, gptvq
# quantize --calib wiki.valid.raw --nsamples CALIB_N --seqlen CALIB_LEN).
#
#   bash bench/frontier.sh OUTDIR        (hours on 2 cores; a rerun reuses files and scores)
#
# Scores of every file:
#   LC-512 wiki: llama.cpp's protocol on WikiText-2 test, 512-token chunks,
#     the first CHUNKS (100); llama-perplexity for llama.cpp's files, gptvq
#     ppl --protocol llama.cpp for ours (the two agree to ~1e-5 on the F16
#     file: both are in the table);
#   LC-512 HellaSwag: the same on the second text (bench/make_second_text.py),
#     the first HS_CHUNKS (50);
#   G-2048: the GPTQ protocol (gptvq ppl --ctx 2048, first GWIN (32)
#     windows), for the F16 source and gptvq's files (llama.cpp's types are
#     scored by llama.cpp's own protocol only).
# Then one Markdown table (OUTDIR/frontier.md) and a plot of both texts'
# LC-512 against file size (OUTDIR/frontier.svg, .png; matplotlib in the
# project's .venv, installed there if missing). Quantization times are wall
# seconds on THREADS threads (for gptvq calibration included).
#
# environment (defaults): THREADS (2) CHUNKS (100) HS_CHUNKS (50) GWIN (32) CALIB_N (128)
#   CALIB_LEN (512) BUDGETS ("2.125 3.125 4.125": gptvq --bpv, its
#   other defaults) TYPES (Q8_0 Q4_0 Q4_K_M IQ4_XS Q2_K IQ3_XXS IQ2_XS
#   IQ2_XXS IQ1_S) LLAMA_BENCH (a built llama-bench; else
#   bench/build_llamacpp.sh builds it and the tools beside it)
set -euo pipefail
cd "$(dirname "$0")/.."
W=${1:?usage: bash bench/frontier.sh OUTDIR}
mkdir -p "$W"
make -s CUDA=0 >/dev/null
G=$PWD/build/gptvq
M=models/SmolLM2-135M-Instruct.Q4_1.gguf
D=${GQ_DATA:-../shared/data}/wikitext-2-raw
HS=build/eval/hellaswag_ctx_gold.txt
[ -f "$M" ] || { echo "frontier: $M missing (bash scripts/setup.sh)" >&2; exit 1; }
[ -f "$HS" ] || python3 bench/make_second_text.py >/dev/null
T=${THREADS:-2} CHUNKS=${CHUNKS:-100} HSC=${HS_CHUNKS:-50} GWIN=${GWIN:-32} CN=${CALIB_N:-128} CL=${CALIB_LEN:-512}
TYPES=${TYPES:-Q8_0 Q4_0 Q4_K_M IQ4_XS Q2_K IQ3_XXS IQ2_XS IQ2_XXS IQ1_S}
BUDGETS=${BUDGETS:-2.125 3.125 4.125}
LB=${LLAMA_BENCH:-$(bash bench/build_llamacpp.sh | tail -1)}
LD=$(dirname "$LB")
for t in llama-perplexity llama-quantize llama-imatrix; do
    [ -x "$LD/$t" ] || { echo "frontier: $LD/$t missing (bash bench/build_llamacpp.sh)" >&2; exit 1; }
done
# each program in the environment a user has (nothing steering OpenMP, OpenBLAS or gptvq)
source bench/clean_env.sh
R=$W/results.jsonl
touch "$R"
log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
have() { grep -q "\"name\": \"$1\"" "$R"; }

# LC-512 of FILE on TEXT over N chunks: llama-perplexity (tool llama) or gptvq ppl (tool gptvq)
lc512() {
    if [ "$1" = llama ]; then
        "${clean[@]}" "$LD/llama-perplexity" -m "$2" -f "$3" -c 512 --chunks "$4" -t "$T" 2>&1 |
            sed -n 's/.*Final estimate: PPL = \([0-9.]*\).*/\1/p'
    else
        "${clean[@]}" "$G" ppl "$2" "$3" --protocol llama.cpp --ctx 512 --max-windows "$4" --threads "$T" --quiet \
            2>/dev/null | sed -n 's/^ppl=\([0-9.]*\) .*/\1/p'
    fi
}
g2048() { "${clean[@]}" "$G" ppl "$1" "$D/wiki.test.raw" --ctx 2048 --max-windows "$GWIN" --threads "$T" --quiet 2>/dev/null |
              sed -n 's/^ppl=\([0-9.]*\) .*/\1/p'; }

# score NAME KIND FILE SCORER QUANT_SECONDS BPV [SCORES]: one line of results.jsonl;
# SCORES (default "wiki hs g2048") names the ones to measure
score() {
    local name=$1 kind=$2 f=$3 tool=$4 qs=$5 bpv=$6 what=${7:-wiki hs g2048}
    have "$name" && return
    log "scoring $name ($what)"
    local w= h= g=
    case " $what " in *" wiki "*) w=$(lc512 "$tool" "$f" "$D/wiki.test.raw" "$CHUNKS") ;; esac
    case " $what " in *" hs "*) h=$(lc512 "$tool" "$f" "$HS" "$HSC") ;; esac
    case " $what " in *" g2048 "*) g=$(g2048 "$f") ;; esac
    echo "{\"name\": \"$name\", \"kind\": \"$kind\", \"file\": \"$f\", \"bytes\": $(stat -Lc %s "$f"), \"bpv\": \"$bpv\", \"scorer\": \"$tool\", \"lc512_wiki\": \"${w:--}\", \"lc512_hs\": \"${h:--}\", \"g2048\": \"${g:--}\", \"quant_s\": \"$qs\"}" >>"$R"
}
timed() { # seconds of a command (stdout/stderr to the log file $1)
    local lg=$1 t0; shift
    t0=$(date +%s.%N)
    "$@" >"$lg" 2>&1 || { echo "frontier: failed, see $lg" >&2; exit 1; }
    awk "BEGIN{printf \"%.0f\", $(date +%s.%N) - $t0}"
}

# --- llama.cpp ----------------------------------------------------------------
F16=$W/f16.gguf
[ -s "$F16" ] || "${clean[@]}" "$G" export "$M" -o "$F16" --to f16 >/dev/null
score "F16 (llama-perplexity)" llama.cpp "$F16" llama - 16
score "F16 (gptvq ppl)" gptvq "$F16" gptvq - 16 "wiki hs" # the two protocols' implementations agree
IM=$W/imatrix.gguf
if [ -n "${TYPES// }" ] && [ ! -s "$IM" ]; then
    log "llama-imatrix: $CN chunks of $CL tokens of wiki.valid.raw"
    s=$(timed "$W/imatrix.log" "${clean[@]}" "$LD/llama-imatrix" -m "$F16" -f "$D/wiki.valid.raw" -o "$IM" --chunks "$CN" \
        -c "$CL" -t "$T")
    echo "$s" >"$W/imatrix.seconds"
fi
for ty in $TYPES; do
    f=$W/llama-$ty.gguf
    if [ ! -s "$f" ]; then
        log "llama-quantize $ty"
        s=$(timed "$f.log" "${clean[@]}" "$LD/llama-quantize" --imatrix "$IM" "$F16" "$f" "$ty" "$T")
        echo "$s" >"$f.seconds"
    fi
    score "llama.cpp $ty (imatrix)" llama.cpp "$f" llama "$(( $(cat "$f.seconds") + $(cat "$W/imatrix.seconds") ))" \
        "$(python3 -c 'import sys; print("%.3f" % (8 * int(sys.argv[1]) / 134515008))' "$(stat -Lc %s "$f")")" "wiki hs"
done

# --- gptvq ----------------------------------------------------------------------
CAL=(--calib "$D/wiki.valid.raw" --nsamples "$CN" --seqlen "$CL")
ours() { # NAME FILE options... (nothing to do for a name already in the results)
    local name=$1 f=$2; shift 2
    have "$name" && return
    if [ ! -s "$f" ]; then
        log "gptvq quantize $name"
        s=$(timed "$f.log" "${clean[@]}" "$G" quantize "$M" -o "$f" --quiet --no-checkpoint --threads "$T" "${CAL[@]}" "$@")
        echo "$s" >"$f.seconds"
    fi
    local bpv=-
    [ -f "$f.report.json" ] && bpv=$(python3 -c 'import json,sys; r = json.load(open(sys.argv[1])); print("%.3f" % r["bpv_achieved"] if "bpv_achieved" in r else "-")' "$f.report.json")
    score "$name" gptvq "$f" gptvq "$(cat "$f.seconds")" "$bpv"
}
ours "gptvq GPTQ W4 g32 sym (Q4_0)" "$W/gptq-w4g32.gguf" --method gptq --wbits 4 --group-size 32 --sym
for b in $BUDGETS; do ours "gptvq GPTVQ --bpv $b" "$W/gptvq-$b.gguf" --method gptvq --bpv "$b"; done

# --- table and plot -------------------------------------------------------------
[ -x .venv/bin/python ] && .venv/bin/python -c 'import matplotlib' 2>/dev/null || .venv/bin/pip install -q matplotlib
.venv/bin/python - "$R" "$W" <<'PY'
import json, sys
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
out = sys.argv[2]
num = lambda v: float(v) if v not in ("-", "") else None
fp = next(r for r in rows if r["name"] == "F16 (llama-perplexity)")
fw, fh = num(fp["lc512_wiki"]), num(fp["lc512_hs"])
rows.sort(key=lambda r: (r["bytes"], r["name"]))
md = ["| file | MB | bpv (whole file) | LC-512 wiki | x F16 | LC-512 HellaSwag | x F16 | mean x F16 | G-2048 wiki | quantization s |",
      "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
for r in rows:
    w, h, g = num(r["lc512_wiki"]), num(r["lc512_hs"]), num(r["g2048"])
    f = lambda v: "-" if v is None else f"{v:.3f}"
    mean = (w / fw + h / fh) / 2 if w and h else None
    md.append(f"| {r['name']} | {r['bytes'] / 1e6:.1f} | {8 * r['bytes'] / 134515008:.3f} | {f(w)} | {f(w and w / fw)} | "
              f"{f(h)} | {f(h and h / fh)} | {f(mean)} | {f(g)} | {r['quant_s']} |")
open(f"{out}/frontier.md", "w").write("\n".join(md) + "\n")
print("\n".join(md))
fig, axes = plt.subplots(1, 2, figsize=(11, 4.5), sharey=False)
for ax, key, title, ref in ((axes[0], "lc512_wiki", "WikiText-2 test", fw), (axes[1], "lc512_hs", "HellaSwag text", fh)):
    # gptvq rows whose name carries a note in parentheses (earlier defaults,
    # controls, runs by hand) are drawn hollow and unlabelled
    side = lambda r: r["kind"] == "gptvq" and "(" in r["name"].replace("(Q4_0)", "")
    for kind, label, mk, hollow in (("llama.cpp", "llama.cpp (imatrix)", "o", False),
                                    ("gptvq", "gptvq (GPTQ; GPTVQ --bpv B, defaults)", "s", False),
                                    ("gptvq", "gptvq, earlier defaults / by hand", "s", True)):
        pts = [(r["bytes"] / 1e6, num(r[key]), r["name"]) for r in rows
               if r["kind"] == kind and num(r[key]) and "F16 (gptvq" not in r["name"] and side(r) == hollow]
        if not pts:
            continue
        ax.plot([p[0] for p in pts], [p[1] for p in pts], mk, label=label, mfc="none" if hollow else None,
                color="grey" if hollow else None)
        for x, y, n in ([] if hollow else pts):
            ax.annotate(n.replace("llama.cpp ", "").replace(" (imatrix)", "").replace("gptvq ", "").replace("GPTVQ --bpv ", "GPTVQ "),
                        (x, y), fontsize=6, xytext=(3, 3), textcoords="offset points")
    ax.axhline(ref, color="grey", lw=0.8, ls="--")
    ax.set_yscale("log")
    ax.set_xlabel("file size (MB)")
    ax.set_ylabel("perplexity (llama.cpp protocol, 512-token chunks)")
    ax.set_title(f"SmolLM2-135M-Instruct, {title}")
    ax.grid(True, which="both", lw=0.3)
    ax.legend(fontsize=8)
fig.tight_layout()
fig.savefig(f"{out}/frontier.svg")
fig.savefig(f"{out}/frontier.png", dpi=120)
PY
log "wrote $W/frontier.md, $W/frontier.svg and $W/frontier.png"
