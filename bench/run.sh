#!/usr/bin/env bash
# Runtime benchmark on the default model: prefill GFLOP/s beside OpenBLAS
# sgemm, decode tokens/s beside the memory-bandwidth bound, measured in one run.
# usage: bash bench/run.sh [MODEL] [extra bench_runtime options]
set -euo pipefail
cd "$(dirname "$0")/.."
make -s bench
MODEL=${1:-models/SmolLM2-135M-Instruct.Q4_1.gguf}
shift || true
./build/bench/bench_runtime "$MODEL" --prefill 512 --decode 64 --reps 3 "$@"
