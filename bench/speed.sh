#!/usr/bin/env bash
# Runtime speed of gptvq beside llama.cpp on SmolLM2-135M, measured fairly:
#
#   bash bench/speed.sh [WORKDIR]        (default /tmp/gptvq-speed; ~15 minutes)
#
# - decode (tg128) and prompt (pp512) speed: `gptvq bench` and llama.cpp's
#   `llama-bench` with the same -p 512 -n 128 -t T -r 3, on the same F16 and
#   Q4_0 files (exported from the shipped model with llama.cpp's reference
#   rounding), plus gptvq alone on packed GPTVQ files (2D 2.125, 2D 2.25, 4D
#   2.125 k 256, 2D 3.125 k 64, 1D 4.125 k 16, 2D 4.125 k 256 (what --bpv
#   4.125 gives by default); quantized for speed only: --em-iters 5
#   --cb-update none, data-free 8 x 128 tokens; GPTVQ's defaults otherwise:
#   normalisation, rotation);
# - perplexity throughput: `gptvq ppl --protocol llama.cpp --ctx 512
#   --max-windows 8` (its windows' time) and `llama-perplexity -c 512
#   --chunks 8` (its seconds per pass), every logit scored;
# - the roofline: bytes a decoded token reads (block linears + head + norms,
#   as gptvq bench reports them) / the read bandwidth measured just before
#   each gptvq run (bench/readbw: a read-only stream of 1 GiB; on this
#   machine it moves between ~34 and ~56 GB/s from one minute to the next).
# ROUNDS rounds (default 3) alternate the two programs (gptvq first in odd
# rounds, llama.cpp first in even ones); the tables give the median over the
# rounds. Every command runs in the environment a user has: the variables
# that steer OpenMP, OpenBLAS or gptvq's kernels are removed from it (env -u),
# none is set. THREADS (default: gptvq's default, the physical cores) is
# passed as -t to both. LLAMA_BENCH=path/to/llama-bench (llama-perplexity
# beside it) skips building llama.cpp (bench/build_llamacpp.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
W=${1:-/tmp/gptvq-speed}
ROUNDS=${ROUNDS:-3}
mkdir -p "$W"
make -s bench >/dev/null
G=build/gptvq
M=models/SmolLM2-135M-Instruct.Q4_1.gguf
TXT=${GQ_DATA:-../shared/data}/wikitext-2-raw/wiki.test.raw
[ -f "$M" ] || { echo "$M missing (bash scripts/setup.sh)" >&2; exit 1; }
LB=${LLAMA_BENCH:-$(bash bench/build_llamacpp.sh | tail -1)}
LP=$(dirname "$LB")/llama-perplexity
[ -x "$LB" ] && [ -x "$LP" ] || { echo "llama-bench / llama-perplexity not found beside '$LB'" >&2; exit 1; }
source bench/clean_env.sh
T=${THREADS:-$("${clean[@]}" build/bench/readbw -m 1 -r 1 | sed -n 's/.*threads=\([0-9]*\).*/\1/p')}

for t in f16 q4_0; do
    [ -s "$W/$t.gguf" ] || "${clean[@]}" "$G" export "$M" -o "$W/$t.gguf" --to "$t" >/dev/null 2>"$W/$t.err"
done
vq() { # name, options
    local name=$1; shift
    [ -s "$W/$name.gguf" ] || "${clean[@]}" "$G" quantize "$M" -o "$W/$name.gguf" --quiet --method gptvq --em-iters 5 \
        --cb-update none --finetune 0 --nsamples 8 --seqlen 128 "$@" >"$W/$name.log" 2>&1
}
vq vq2d-2.125 --vq-dim 2 --bpv 2.125
vq vq2d-2.25 --vq-dim 2 --bpv 2.25
vq vq4d-2.125 --vq-dim 4 --bpv 2.125
vq vq2d-3.125 --vq-dim 2 --bpv 3.125
vq vq1d-4.125 --vq-dim 1 --bpv 4.125
vq vq2d-4.125 --vq-dim 2 --bpv 4.125
FILES=(f16 q4_0 vq2d-2.125 vq2d-2.25 vq4d-2.125 vq2d-3.125 vq1d-4.125 vq2d-4.125)
PEER=(f16 q4_0)

R=$W/results.jsonl
: >"$R"
ours_bench() { # the read bandwidth just before (this machine's bandwidth changes by tens of percent over minutes)
    local bw
    bw=$("${clean[@]}" build/bench/readbw -m 1024 -t "$T" | sed -n 's/.*gbs=\([0-9.]*\).*/\1/p')
    "${clean[@]}" "$G" bench "$W/$1.gguf" -p 512 -n 128 -t "$T" -r 3 -o json 2>/dev/null |
        sed "s/^{/{\"round\": $2, \"tool\": \"gptvq\", \"file\": \"$1\", \"readbw\": $bw, /" >>"$R"
}
peer_bench() { "${clean[@]}" "$LB" -m "$W/$1.gguf" -p 512 -n 128 -t "$T" -r 3 -o jsonl 2>/dev/null |
                   sed "s/^{/{\"round\": $2, \"tool\": \"llama.cpp\", \"file\": \"$1\", /" >>"$R"; }
ours_ppl() {
    local s
    s=$("${clean[@]}" "$G" ppl "$W/$1.gguf" "$TXT" --protocol llama.cpp --ctx 512 --max-windows 8 --threads "$T" --json \
        2>/dev/null | sed -n 's/.*"tokens_per_second": \([0-9.]*\).*/\1/p')
    echo "{\"round\": $2, \"tool\": \"gptvq\", \"file\": \"$1\", \"test\": \"ppl512x8\", \"avg_ts\": $s}" >>"$R"
}
peer_ppl() { # seconds per pass (4 chunks of 512 per pass) from its log
    local sp
    sp=$("${clean[@]}" "$LP" -m "$W/$1.gguf" -f "$TXT" -c 512 --chunks 8 -t "$T" 2>&1 |
         sed -n 's/.* \([0-9.]*\) seconds per pass.*/\1/p' | head -1)
    echo "{\"round\": $2, \"tool\": \"llama.cpp\", \"file\": \"$1\", \"test\": \"ppl512x8\", \"avg_ts\": $(awk "BEGIN{print 2048 / $sp}")}" >>"$R"
}
for ((round = 1; round <= ROUNDS; round++)); do
    echo "round $round / $ROUNDS ..." >&2
    for f in "${FILES[@]}"; do
        peer=false
        for p in "${PEER[@]}"; do [ "$p" = "$f" ] && peer=true; done
        if $peer && ((round % 2 == 0)); then peer_bench "$f" "$round"; peer_ppl "$f" "$round"; fi
        ours_bench "$f" "$round"; ours_ppl "$f" "$round"
        if $peer && ((round % 2 == 1)); then peer_bench "$f" "$round"; peer_ppl "$f" "$round"; fi
    done
done
.venv/bin/python - "$R" "$T" <<'EOF'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
for r in rows: # llama-bench names no test: pp<n_prompt> / tg<n_gen>
    if "test" not in r and "n_prompt" in r: r["test"] = f"pp{r['n_prompt']}" if r["n_prompt"] else f"tg{r['n_gen']}"
med = statistics.median
bw = med([r["readbw"] for r in rows if r["tool"] == "gptvq" and "readbw" in r])
def pick(tool, f, test):
    v = [r["avg_ts"] for r in rows if r["tool"] == tool and r.get("file") == f and r.get("test") == test]
    return (med(v), min(v), max(v)) if v else None
bpt = {r["file"]: r["bytes_per_token"] for r in rows if r["tool"] == "gptvq" and "bytes_per_token" in r}
files = []
for r in rows:
    if r["tool"] == "gptvq" and r["file"] not in files: files.append(r["file"])
lq = pick("llama.cpp", "q4_0", "tg128")
print(f"\nthreads {sys.argv[2]}; read bandwidth (1 GiB read-only stream, before each gptvq run) median {bw:.2f} GB/s; medians over "
      f"{len({r['round'] for r in rows})} rounds (min-max)\n")
print("| file | MB read / token | gptvq tg128 t/s | llama.cpp tg128 t/s | gptvq / llama.cpp Q4_0 | roofline t/s (median bw) | gptvq / roofline (per run) |")
print("| --- | --- | --- | --- | --- | --- | --- |")
for f in files:
    o, p = pick("gptvq", f, "tg128"), pick("llama.cpp", f, "tg128")
    # roofline of each measurement with the bandwidth read just before it; the median fraction
    fr = [r["avg_ts"] / (r["readbw"] * 1e9 / bpt[f]) for r in rows
          if r["tool"] == "gptvq" and r.get("file") == f and r.get("test") == "tg128"]
    roof = med([r["readbw"] for r in rows if r["tool"] == "gptvq" and r.get("file") == f and r.get("test") == "tg128"]) * 1e9 / bpt[f]
    ps = f"{p[0]:.1f} ({p[1]:.0f}-{p[2]:.0f})" if p else "-"
    print(f"| {f} | {bpt[f]/1e6:.1f} | {o[0]:.1f} ({o[1]:.0f}-{o[2]:.0f}) | {ps} | {o[0]/lq[0]:.2f} | {roof:.0f} | "
          f"{med(fr):.2f} ({min(fr):.2f}-{max(fr):.2f}) |")
print("\n| file | gptvq pp512 t/s | llama.cpp pp512 t/s | ratio | gptvq ppl t/s | llama-perplexity t/s | ratio |")
print("| --- | --- | --- | --- | --- | --- | --- |")
lp_q4 = pick("llama.cpp", "q4_0", "ppl512x8")
for f in files:
    o, p = pick("gptvq", f, "pp512"), pick("llama.cpp", f, "pp512")
    oq, pq = pick("gptvq", f, "ppl512x8"), pick("llama.cpp", f, "ppl512x8")
    r1 = f"{o[0]/p[0]:.2f}" if p else "-"
    r2 = f"{oq[0]/pq[0]:.2f}" if pq else f"{oq[0]/lp_q4[0]:.2f} (vs Q4_0)"
    print(f"| {f} | {o[0]:.1f} | {p[0]:.1f} | {r1} | {oq[0]:.1f} | {pq[0]:.1f} | {r2} |" if p else
          f"| {f} | {o[0]:.1f} | - | - | {oq[0]:.1f} | - | {r2} |")
EOF
