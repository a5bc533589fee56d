#!/usr/bin/env bash
# Builds llama.cpp's llama-bench from the llama.cpp vendored in the PyPI
# llama-cpp-python sdist, outside the repository (benchmarks only, never CI):
#   bash bench/build_llamacpp.sh [DIR]      (default /tmp/gptvq-llamacpp)
# (and llama-perplexity beside it) prints the path of llama-bench. Takes ~10 minutes on 2 cores.
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
[ -d build ] || cmake -B build -DCMAKE_BUILD_TYPE=Release -DLLAMA_CURL=OFF -DGGML_NATIVE=ON -DLLAMA_BUILD_SERVER=OFF >/dev/null
cmake --build build --target llama-bench llama-perplexity -j"$(nproc)" >/dev/null
echo "$PWD/build/bin/llama-bench"
