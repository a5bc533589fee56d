#!/usr/bin/env bash
# The GPU checks of the CUDA backend in one call of the device tool
# (../.library/device/README.md), prepared here because a lent GPU comes with
# 15 minutes in all:
#   1. tests/test_backend: every primitive and the inference GEMVs against the CPU
#   2. bench_gpu_gemv: GB/s of VQ / Q4_0 / F16 GEMVs at Llama-2-7B shapes vs the peak
#   3. bench_gptvq_layer block mode: one Llama-2-7B block (GPTQ W3 g128, GPTVQ
#      2D 2.125 with 100 EM iterations) on the GPU, projected to 32 blocks
#
# The device image has CUDA but not OpenBLAS, LAPACKE, cJSON or PCRE2, so the
# binaries travel with the shared libraries they link (build/device, < 64 MiB):
#   here:    bash bench/device_check.sh pack
#   device:  run(command="bash bench/device_check.sh run", carry=["build/device"], timeout_s=540)
# Results come back in $OUT (device.txt, test_backend.log, gemv.txt, block7b.txt).
set -u
cd "$(dirname "$0")/.."
D=build/device
case "${1:-}" in
pack)
    make -s -j2 all build/tests/test_backend build/bench/bench_gpu_gemv build/bench/bench_gptvq_layer || exit 1
    [ -f build/libgptvq_cuda.so ] || { echo "device_check: build/libgptvq_cuda.so missing (no nvcc?)" >&2; exit 1; }
    rm -rf "$D" && mkdir -p "$D/lib"
    bins=(build/gptvq build/tests/test_backend build/bench/bench_gpu_gemv build/bench/bench_gptvq_layer)
    cp "${bins[@]}" build/libgptvq_cuda.so "$D/"
    strip "$D"/gptvq "$D"/test_backend "$D"/bench_* 2>/dev/null
    # the libraries the image lacks (glibc, libstdc++ and CUDA's are there)
    for b in "${bins[@]}"; do ldd "$b"; done | awk '/=> \// {print $3}' | sort -u |
        grep -vE '/(libc|libm|libdl|libpthread|librt|libgcc_s|libstdc\+\+|ld-linux[^/]*)\.so' |
        while read -r l; do cp -L "$l" "$D/lib/"; done
    du -sh "$D"
    ;;
run)
    O=${OUT:-/tmp/device-out}
    mkdir -p "$O"
    cuda_lib=$(dirname "$(command -v nvcc 2>/dev/null || echo /usr/local/cuda/bin/nvcc)")/../lib64
    export LD_LIBRARY_PATH=$PWD/$D/lib:$cuda_lib GPTVQ_CUDA_LIB=$PWD/$D/libgptvq_cuda.so OMP_NUM_THREADS=16
    { nvidia-smi; nvcc --version; } >"$O/device.txt" 2>&1
    timeout 150 "$D/test_backend" >"$O/test_backend.log" 2>&1
    echo "test_backend rc=$?" | tee -a "$O/test_backend.log"
    timeout 90 "$D/bench_gpu_gemv" 200 >"$O/gemv.txt" 2>&1
    echo "bench_gpu_gemv rc=$?" | tee -a "$O/gemv.txt"
    BENCH_DEVICE=cuda BENCH_MODEL=7b BENCH_CONFIGS=gptq,2d BENCH_TOKENS=8192 timeout 270 "$D/bench_gptvq_layer" \
        >"$O/block7b.txt" 2>&1
    echo "bench_gptvq_layer rc=$?" | tee -a "$O/block7b.txt"
    tail -n 30 "$O"/*.txt "$O"/*.log
    ;;
*)
    echo "usage: bash bench/device_check.sh pack|run" >&2
    exit 2
    ;;
esac
