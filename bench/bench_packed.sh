#!/usr/bin/env bash
# Decode speed of SmolLM2-135M in every weight format of our engine, one run,
# same threads: F16, Q8_0, Q4_0 (exported from the source model with
# llama.cpp's reference rounding), the source Q4_1, and packed GPTVQ 2D 2.125,
# 2D 2.25, 4D 2.125, 2D 3.125. Prints decode tokens/s and peak RSS as ratios
# to Q4_0, and each format's GEMV bandwidth as a fraction of the copy
# bandwidth measured in the same process (bench/bench_packed.c).
#
#   bash bench/bench_packed.sh [WORKDIR] [HESSDIR]
#
# WORKDIR (default /tmp/gptvq-bench-packed) keeps the converted models
# between runs. The VQ models only need the right format (d, k, l): they are
# quantized with --em-iters 5 --cb-update none from HESSDIR (saved Hessians,
# see docs/results.md) or, without it, from a short data-free calibration;
# their quality is not what this measures. With LLAMA_BENCH=path/to/llama-bench
# (bench/build_llamacpp.sh builds one) llama.cpp decodes the same F16 / Q8_0 /
# Q4_0 files in the same run (64 tokens, same threads), as ratios to our Q4_0.
set -euo pipefail
cd "$(dirname "$0")/.."
make -s bench
G=build/gptvq
M=models/SmolLM2-135M-Instruct.Q4_1.gguf
W=${1:-/tmp/gptvq-bench-packed}
H=${2:-}
THREADS=${THREADS:-$(nproc)}
export OMP_WAIT_POLICY=PASSIVE
mkdir -p "$W"
for t in f16 q8_0 q4_0; do
    [ -s "$W/$t.gguf" ] || "$G" export "$M" -o "$W/$t.gguf" --to "$t" >/dev/null 2>"$W/$t.err"
done
calib=(--nsamples 8 --seqlen 128)
[ -n "$H" ] && calib=(--load-hessians "$H")
vq() { # name, options
    local name=$1; shift
    [ -s "$W/$name.gguf" ] ||
        "$G" quantize "$M" -o "$W/$name.gguf" --quiet --method gptvq --em-iters 5 --cb-update none "${calib[@]}" "$@" \
            >/dev/null 2>"$W/$name.err"
}
vq vq2d-2.125 --vq-dim 2 --bpv 2.125
vq vq2d-2.25 --vq-dim 2 --bpv 2.25
vq vq4d-2.125 --vq-dim 4 --bpv 2.125
vq vq2d-3.125 --vq-dim 2 --bpv 3.125

# ROUNDS rounds over all formats (this machine's speed wanders by ±20 % over
# minutes): per format the round with the best decode speed is kept (each
# round is itself the best of 3 passes), and the best kernel GB/s.
ROUNDS=${ROUNDS:-3}
declare -A tps rss line kgbs
for ((round = 1; round <= ROUNDS; round++)); do
    for f in f16 q8_0 q4_0 source vq2d-2.125 vq2d-2.25 vq4d-2.125 vq2d-3.125; do
        path=$W/$f.gguf
        [ "$f" = source ] && path=$M
        l=$(build/bench/bench_packed "$path" --threads "$THREADS" --decode 64)
        t=$(sed -n 's/.*decode_tps=\([0-9.]*\).*/\1/p' <<<"$l")
        k=$(sed -n 's/.*kernel_gbs=\([0-9.]*\).*/\1/p' <<<"$l")
        if [ -z "${tps[$f]:-}" ] || awk "BEGIN{exit !($t > ${tps[$f]})}"; then
            line[$f]=$l tps[$f]=$t rss[$f]=$(sed -n 's/.*rss_mb=\([0-9.]*\).*/\1/p' <<<"$l")
        fi
        if [ -z "${kgbs[$f]:-}" ] || awk "BEGIN{exit !($k > ${kgbs[$f]})}"; then kgbs[$f]=$k; fi
    done
done
for f in "${!line[@]}"; do # the best kernel GB/s of all rounds into the kept line
    line[$f]=$(sed "s/kernel_gbs=[0-9.]*/kernel_gbs=${kgbs[$f]}/" <<<"${line[$f]}")
done
printf '\n| format | file MB | weight MB/token | decode tok/s | vs Q4_0 | peak RSS MB | vs Q4_0 | GEMV GB/s | of copy bw |\n'
printf '| --- | --- | --- | --- | --- | --- | --- | --- | --- |\n'
for f in f16 q8_0 q4_0 source vq2d-2.125 vq2d-2.25 vq4d-2.125 vq2d-3.125; do
    l=${line[$f]}
    v() { sed -n "s/.* $1=\([0-9.]*\).*/\1/p" <<<"$l"; }
    printf '| %s | %s | %s | %s | %.2f | %s | %.2f | %s | %s |\n' "$f" "$(v file_mb)" "$(v weight_mb)" "${tps[$f]}" \
        "$(awk "BEGIN{print ${tps[$f]}/${tps[q4_0]}}")" "${rss[$f]}" "$(awk "BEGIN{print ${rss[$f]}/${rss[q4_0]}}")" \
        "$(v kernel_gbs)" "$(awk "BEGIN{printf \"%.3f\", $(v kernel_gbs) / $(v copy_gbs)}")"
done
echo "threads $THREADS; copy bandwidth $(sed -n 's/.*copy_gbs=\([0-9.]*\).*/\1/p' <<<"${line[q4_0]}") GB/s (read + write)"

if [ -n "${LLAMA_BENCH:-}" ]; then
    printf '\n| llama.cpp (llama-bench tg64) | decode tok/s | vs our Q4_0 |\n| --- | --- | --- |\n'
    for f in f16 q8_0 q4_0; do
        t=$("$LLAMA_BENCH" -m "$W/$f.gguf" -p 0 -n 64 -t "$THREADS" -o csv 2>/dev/null |
            awk -F, 'NR == 1 {for (i = 1; i <= NF; i++) {h = $i; gsub(/"/, "", h); if (h == "avg_ts") c = i}}
                     NR > 1 && c {v = $c; gsub(/"/, "", v)} END {print v}')
        printf '| %s | %s | %.2f |\n' "$f" "$t" "$(awk "BEGIN{print ($t + 0) / ${tps[q4_0]}}")"
    done
fi
