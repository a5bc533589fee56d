#!/usr/bin/env bash
# Builds llama.cpp's llama-bench from the llama.cpp vendored in the PyPI
# llama-cpp-python sdist, outside the repository (benchmarks only, never CI):
#   [LLAMA_CPU=native|avx2] bash bench/build_llamacpp.sh [DIR]      (default /tmp/gptvq-llamacpp)
# (and llama-perplexity, llama-quantize and llama-imatrix beside it) prints the
# path of llama-bench. Takes ~10 minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
D=${1:-/tmp/gptvq-llamacpp}
mkdir -p "$D"
if ! ls "$D"/llama_cpp_python-*.tar.gz >/dev/null 2>&1; then
    .venv/bin/pip download -q --no-deps --no-binary :all: llama-cpp-python -d "$D"
fi
cd "$D"
[ -d "$(ls -d llama_cpp_python-*/ 2>/dev/null | head -1)" ] || tar xzf llama_cpp_python-*.tar.gz
cd llama_cpp_python-*/vendor/llama.cpp
# LLAMA_CPU=native (default): -march=native. avx2: AVX2 + FMA + F16C only (the
# kernels gptvq itself has); needed where the CPU reports AMX but the kernel
# does not grant its tile state (here: llama-perplexity dies in
# ggml_backend_amx_mul_mat at ldtilecfg with the native build).
cpu=${LLAMA_CPU:-native}
bd=build; flags=(-DGGML_NATIVE=ON)
if [ "$cpu" = avx2 ]; then
    bd=build-avx2; flags=(-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON)
fi
[ -d $bd ] || cmake -B $bd -DCMAKE_BUILD_TYPE=Release -DLLAMA_CURL=OFF "${flags[@]}" -DLLAMA_BUILD_SERVER=OFF >/dev/null
cmake --build $bd --target llama-bench llama-perplexity llama-quantize llama-imatrix -j"$(nproc)" >/dev/null 2>&1
echo "$PWD/$bd/bin/llama-bench"
