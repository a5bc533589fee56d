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
#   device:  run(command="bash bench/device_check.sh run", carry=["build/device"], timeout_s=420)
#            run(command="bash bench/device_check.sh run-smol", carry=["build/smol-b"], timeout_s=480)
# Results come back in $OUT. run-smol needs what run unpacked (same warm machine).
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
    timeout 120 "$X/test_backend" >"$O/test_backend.log" 2>&1
    echo "test_backend rc=$?" | tee -a "$O/test_backend.log"
    timeout 60 "$X/bench_gpu_gemv" 200 >"$O/gemv.txt" 2>&1
    echo "bench_gpu_gemv rc=$?" | tee -a "$O/gemv.txt"
    GPTVQ=$G MAKE_SYNTH=$X/make_synth_model TEMPLATE=$GQ_DATA/models/stories260K/stories260K.gguf \
        CALIB=$GQ_DATA/wikitext-2-raw/wiki.valid.raw SHAPE=7b BLOCKS=1 NSAMPLES=128 SEQLEN=2048 CONFIGS=gptq \
        DEVICE=cuda THREADS=16 TIMEOUT=100 bash bench/synth_stack.sh /tmp/gq-synth >"$O/synth7b.txt" 2>&1
    cp /tmp/gq-synth/gptq.log /tmp/gq-synth/gptq.gguf.report.json "$O/" 2>/dev/null
    BENCH_DEVICE=cuda BENCH_MODEL=7b BENCH_CONFIGS=2d,4d BENCH_TOKENS=8192 timeout 100 "$X/bench_gptvq_layer" \
        >"$O/block7b.txt" 2>&1
    echo "bench_gptvq_layer rc=$?" | tee -a "$O/block7b.txt"
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
    Q=(quantize $T/smol.gguf --method gptvq --vq-dim 2 --bpv 2.125 --calib $W/wiki.valid.raw --nsamples 32
       --seqlen 512 --device cuda --threads 16 --quiet)
    L=$O/smol.txt
    {
        echo "== GPTVQ 2D 2.125 on the GPU"
        t0=$SECONDS
        timeout 200 "$G" "${Q[@]}" -o $T/vq2.gguf
        echo "quantize rc=$? wall $((SECONDS - t0)) s"
        echo "== the same, stopped after 15 blocks, then resumed"
        timeout 150 "$G" "${Q[@]}" -o $T/vq2r.gguf --stop-after 15; echo "stop rc=$? (3 = stopped)"
        timeout 150 "$G" "${Q[@]}" -o $T/vq2r.gguf; echo "resume rc=$?"
        cmp $T/vq2.gguf $T/vq2r.gguf && echo "resume: byte-identical"
        # ppl: the last lines of its output (the result, or the error)
        ppl() { timeout "$1" "$G" ppl "$2" $W/wiki.test.raw --max-windows "$3" --device "$4" --quiet 2>&1 | tail -n 2 | tr '\n' ' '; }
        echo "== perplexity (gptq protocol, ctx 2048): the GPU-quantized file, 16 windows (CPU-quantized file: 74.7593)"
        echo "vq2.gguf cuda 16: $(ppl 60 $T/vq2.gguf 16 cuda)"
        echo "== the same forward on both devices, 4 windows"
        for f in $T/vq2.gguf $T/smol.gguf; do
            for dev in cuda cpu; do echo "$(basename $f) $dev 4: $(ppl 120 $f 4 $dev)"; done
        done
        echo "== decode speed: 256 tokens after a short prompt"
        "$G" export $T/smol.gguf -o $T/f16.gguf --to f16 >/dev/null 2>&1
        "$G" export $T/smol.gguf -o $T/q4_0.gguf --to q4_0 >/dev/null 2>&1
        for f in $T/vq2.gguf $T/f16.gguf $T/q4_0.gguf $T/smol.gguf; do
            for dev in cuda cpu; do
                r=$(timeout 60 "$G" generate $f -p "The history of the city" -n 256 --ignore-eos --device $dev 2>&1 >/dev/null)
                echo "$(basename $f) $dev: $(echo "$r" | grep '^generate: prompt' || echo "$r" | tail -n 1)"
            done
        done
    } >"$L" 2>&1
    cat "$L"
    ;;
*)
    echo "usage: bash bench/device_check.sh pack|run|run-smol" >&2
    exit 2
    ;;
esac
