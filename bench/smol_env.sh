# bench/smol_env.sh - sourced by the SmolLM2 table scripts (quant_table.sh,
# vq_table.sh, gguf_blocks.sh): the repository root as working folder, the
# binary G (built if missing), the model M, the data folder D and WikiText's
# calibration (CAL, validation split) and evaluation (TEST) files.
cd "$(dirname "${BASH_SOURCE[0]}")/.."
G=${G:-build/gptvq}
M=models/SmolLM2-135M-Instruct.Q4_1.gguf
D=${GQ_DATA:-../shared/data}
CAL=$D/wikitext-2-raw/wiki.valid.raw
TEST=$D/wikitext-2-raw/wiki.test.raw
[ -x "$G" ] || make -j"$(nproc)"
[ -f "$M" ] || { echo "$M missing (bash scripts/setup.sh)" >&2; exit 1; }
