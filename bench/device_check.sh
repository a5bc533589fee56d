#!/usr/bin/env bash
# The GPU checks of the CUDA backend, prepared here because a lent GPU comes
# with 15 minutes in all (../.library/device/README.md). Two calls of the
# device tool, the second right after the first (a machine stays warm 30 s):
#   run       1. tests/test_backend: every primitive, the GEMVs and the prefill
#                product, calibration on the device and the decoder forward
#                against the CPU
#             2. bench_gpu_gemv: GB/s of VQ / Q4_0 / F16 GEMVs at Llama-2-7B shapes vs the peak
#             3. bench/synth_stack.sh: one synthetic Llama-2-7B-shaped block (random
#                weights, stories260K's tokenizer) through `gptvq quantize --device
#                cuda`, GPTQ W3 g128 with 128 x 2048 calibration tokens: the
#                calibration forward and the quantization per block, end to end
#             4. bench_gptvq_layer block mode: one Llama-2-7B block (GPTVQ 2D and 4D
#                2.125 with 100 EM iterations) on the GPU
#   run-smol  SmolLM2-135M end to end: GPTVQ 2D 2.125 quantized on the GPU (time),
#             killed half way and resumed (byte-identical output), its perplexity on
#             the GPU and the CPU, decode tokens/s on the GPU for VQ, F16, Q4_0 and
#             the Q4_1 source
#
# A call carries at most 64 MiB and the device image has CUDA but not
# OpenBLAS, LAPACKE, cJSON or PCRE2, nor ../shared, nor the 98 MB model. So:
#   here:    bash bench/device_check.sh pack
#            (build/device: bundle.tar.xz with the binaries, the shared libraries
#            they link and the data files; smol.a = the model's first 48 MB;
#            build/smol-b/smol.b = the rest)
#   device:  run(command="bash bench/device_check.sh run", carry=["build/device"], timeout_s=330)
#            run(command="bash bench/device_check.sh run-smol", carry=["build/smol-b"], timeout_s=450)
# Results come back in $OUT. run-smol needs what run unpacked (same warm machine).
#
# Time: 15 device minutes in all, the machine's start (1-2 min) included. Each
# phase has a budget (BUDGET seconds: run 300, run-smol 420) and every step's
# timeout is the smaller of its own cap and what is left of the budget, steps
# in order of importance; a step that finds under 15 s left is skipped and
# says so. So the two calls end inside 5 + 7 minutes whatever the GPU's speed.
set -u
cd "$(dirname "$0")/.."
D=build/device
X=$D/x # unpacked bundle
MODEL=models/SmolLM2-135M-Instruct.Q4_1.gguf
SPLIT=48000000
setup_env() {
    cuda_lib=$(dirname "$(command -v nvcc 2>/dev/null || echo /usr/local/cuda/bin/nvcc)")/../lib64
    export LD_LIBRARY_PATH=$PWD/$X/lib:$cuda_lib GPTVQ_CUDA_LIB=$PWD/$X/libgptvq_cuda.so OMP_NUM_THREADS=16
    export GQ_DATA=$PWD/$X/data
    G=$X/gptvq
}
# Seconds for the next step: min(cap, what is left of the phase's budget);
# returns 1 (skip) under 15 s.
T0=$SECONDS
BUDGET=${BUDGET:-}
left() {
    local l=$((T0 + BUDGET - SECONDS))
    if [ "$l" -lt 15 ]; then echo "device_check: $2 skipped (budget of $BUDGET s spent)" >&2; return 1; fi
    echo $((l < $1 ? l : $1))
}
case "${1:-}" in
pack)
    make -s -j2 all build/tests/test_backend build/bench/bench_gpu_gemv build/bench/bench_gptvq_layer \
        build/bench/make_synth_model || exit 1
    [ -f build/libgptvq_cuda.so ] || { echo "device_check: build/libgptvq_cuda.so missing (no nvcc?)" >&2; exit 1; }
    [ -f "$MODEL" ] || { echo "device_check: $MODEL missing (bash scripts/setup.sh)" >&2; exit 1; }
    rm -rf "$D" build/smol-b && mkdir -p "$X/lib" "$X/data/models/stories260K" "$X/data/tinystories" \
        "$X/data/wikitext-2-raw" build/smol-b
    bins=(build/gptvq build/tests/test_backend build/bench/bench_gpu_gemv build/bench/bench_gptvq_layer
          build/bench/make_synth_model)
    cp "${bins[@]}" build/libgptvq_cuda.so "$X/"
    strip "$X"/gptvq "$X"/test_backend "$X"/bench_* 2>/dev/null
    # the libraries the image lacks (glibc, libstdc++ and CUDA's are there)
    for b in "${bins[@]}"; do ldd "$b"; done | awk '/=> \// {print $3}' | sort -u |
        grep -vE '/(libc|libm|libdl|libpthread|librt|libgcc_s|libstdc\+\+|ld-linux[^/]*)\.so' |
        while read -r l; do cp -L "$l" "$X/lib/"; done
    S=../shared/data
    cp $S/models/stories260K/stories260K.gguf "$X/data/models/stories260K/"
    cp $S/tinystories/tinystories_sample.txt "$X/data/tinystories/"
    cp $S/wikitext-2-raw/wiki.test.raw $S/wikitext-2-raw/wiki.valid.raw "$X/data/wikitext-2-raw/"
    tar -C "$D" -cJf "$D/bundle.tar.xz" x && rm -rf "$X"
    head -c $SPLIT "$MODEL" >"$D/smol.a"
    tail -c +$((SPLIT + 1)) "$MODEL" >build/smol-b/smol.b
    sha256sum "$MODEL" | cut -d' ' -f1 >"$D/smol.sha256"
    du -sb "$D" build/smol-b
    ;;
run)
    O=${OUT:-/tmp/device-out}
    mkdir -p "$O"
    # python's tarfile: the image may lack xz
    rm -rf "$X" && python3 -c "import tarfile; tarfile.open('$D/bundle.tar.xz').extractall('$D')" || exit 1
    setup_env
    { nvidia-smi; nvcc --version; } >"$O/device.txt" 2>&1
    BUDGET=${BUDGET:-300}
    if t=$(left 110 test_backend); then
        timeout "$t" "$X/test_backend" >"$O/test_backend.log" 2>&1
        echo "test_backend rc=$? (timeout $t s)" | tee -a "$O/test_backend.log"
    fi
    if t=$(left 45 bench_gpu_gemv); then
        timeout "$t" "$X/bench_gpu_gemv" 200 >"$O/gemv.txt" 2>&1
        echo "bench_gpu_gemv rc=$? (timeout $t s)" | tee -a "$O/gemv.txt"
    fi
    if t=$(left 75 bench_gptvq_layer); then
        BENCH_DEVICE=cuda BENCH_MODEL=7b BENCH_CONFIGS=2d,4d BENCH_TOKENS=8192 timeout "$t" "$X/bench_gptvq_layer" \
            >"$O/block7b.txt" 2>&1
        echo "bench_gptvq_layer rc=$? (timeout $t s)" | tee -a "$O/block7b.txt"
    fi
    # synth_stack's TIMEOUT is per configuration; making the model comes first
    if t=$(left 90 synth_stack); then
        GPTVQ=$G MAKE_SYNTH=$X/make_synth_model TEMPLATE=$GQ_DATA/models/stories260K/stories260K.gguf \
            CALIB=$GQ_DATA/wikitext-2-raw/wiki.valid.raw SHAPE=7b BLOCKS=1 NSAMPLES=128 SEQLEN=2048 CONFIGS=gptq \
            DEVICE=cuda THREADS=16 TIMEOUT=$((t > 30 ? t - 20 : 10)) timeout "$t" bash bench/synth_stack.sh /tmp/gq-synth \
            >"$O/synth7b.txt" 2>&1
        echo "synth_stack rc=$? (timeout $t s)" >>"$O/synth7b.txt"
        cp /tmp/gq-synth/gptq.log /tmp/gq-synth/gptq.gguf.report.json "$O/" 2>/dev/null
    fi
    echo "run: $((SECONDS - T0)) s of $BUDGET"
    tail -n 25 "$O"/*.txt "$O"/*.log
    ;;
run-smol)
    O=${OUT:-/tmp/device-out}
    mkdir -p "$O"
    [ -x "$X/gptvq" ] && [ -f "$D/smol.a" ] || { echo "run-smol: run first on the same warm machine" >&2; exit 1; }
    setup_env
    T=/tmp/gq-smol
    mkdir -p $T
    cat "$D/smol.a" build/smol-b/smol.b >$T/smol.gguf
    [ "$(sha256sum $T/smol.gguf | cut -d' ' -f1)" = "$(cat "$D/smol.sha256")" ] || { echo "run-smol: model damaged" >&2; exit 1; }
    W=$GQ_DATA/wikitext-2-raw
    Q=(quantize $T/smol.gguf --method gptvq --vq-dim 2 --bpv 2.125 --finetune 0 --calib $W/wiki.valid.raw --nsamples 32
       --seqlen 512 --device cuda --threads 16 --quiet)
    L=$O/smol.txt
    BUDGET=${BUDGET:-420}
    {
        echo "== GPTVQ 2D 2.125 on the GPU"
        if t=$(left 170 quantize); then
            t0=$SECONDS
            timeout "$t" "$G" "${Q[@]}" -o $T/vq2.gguf
            echo "quantize rc=$? wall $((SECONDS - t0)) s (timeout $t s)"
        fi
        # ppl: the last lines of its output (the result, or the error)
        ppl() { timeout "$1" "$G" ppl "$2" $W/wiki.test.raw --max-windows "$3" --device "$4" --quiet 2>&1 | tail -n 2 | tr '\n' ' '; }
        echo "== perplexity (gptq protocol, ctx 2048): the GPU-quantized file, 16 windows (CPU-quantized file: 74.7593)"
        if t=$(left 60 ppl-16) && [ -f $T/vq2.gguf ]; then echo "vq2.gguf cuda 16: $(ppl "$t" $T/vq2.gguf 16 cuda)"; fi
        echo "== the same, stopped after 15 blocks, then resumed"
        if t=$(left 100 stop) && [ -f $T/vq2.gguf ]; then
            timeout "$t" "$G" "${Q[@]}" -o $T/vq2r.gguf --stop-after 15; echo "stop rc=$? (3 = stopped)"
            if t=$(left 100 resume); then
                timeout "$t" "$G" "${Q[@]}" -o $T/vq2r.gguf; echo "resume rc=$?"
                cmp $T/vq2.gguf $T/vq2r.gguf && echo "resume: byte-identical"
            fi
        fi
        echo "== the same forward on both devices, 4 windows"
        for f in $T/vq2.gguf $T/smol.gguf; do
            for dev in cuda cpu; do
                if t=$(left 40 "ppl $dev") && [ -f "$f" ]; then echo "$(basename $f) $dev 4: $(ppl "$t" $f 4 $dev)"; fi
            done
        done
        echo "== decode speed: 256 tokens after a short prompt"
        "$G" export $T/smol.gguf -o $T/f16.gguf --to f16 >/dev/null 2>&1
        "$G" export $T/smol.gguf -o $T/q4_0.gguf --to q4_0 >/dev/null 2>&1
        for f in $T/vq2.gguf $T/f16.gguf $T/q4_0.gguf $T/smol.gguf; do
            for dev in cuda cpu; do
                t=$(left 25 "generate $dev") && [ -f "$f" ] || continue
                r=$(timeout "$t" "$G" generate $f -p "The history of the city" -n 256 --ignore-eos --device $dev 2>&1 >/dev/null)
                echo "$(basename $f) $dev: $(echo "$r" | grep '^generate: prompt' || echo "$r" | tail -n 1)"
            done
        done
        echo "run-smol: $((SECONDS - T0)) s of $BUDGET"
    } >"$L" 2>&1
    cat "$L"
    ;;
*)
    echo "usage: bash bench/device_check.sh pack|run|run-smol" >&2
    exit 2
    ;;
esac
