#!/usr/bin/env bash
# Set up (idempotent), build, write test fixtures and run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
make -j"$(nproc)" test
