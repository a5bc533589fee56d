#!/usr/bin/env python3
"""Independent check of GPTQ / RTN output written as GGUF blocks (gptvq quantize
with --group-size 32 and 4, 5 or 8 bits): llama.cpp's own Python package gguf-py
reads BLOCKS.gguf and dequantizes its Q4_0 / Q4_1 / Q5_0 / Q5_1 / Q8_0 tensors
(gguf.quants.dequantize, numpy float32), and every one must equal, bit for bit,
the same tensor of F32.gguf, the same run written with --fake-quant. Every other
tensor must have the same type and bytes in both files.

Usage (from the repo root):
  .venv/bin/python tests/reference/check_gguf_blocks.py BLOCKS.gguf F32.gguf TYPE
TYPE: the block type every 2-D block linear whose width is a multiple of 32 must
have (e.g. Q4_1). Exit status 0 when every check passes, 1 otherwise.
"""
import sys

import numpy as np
from gguf import GGUFReader, GGMLQuantizationType as QT
from gguf.quants import dequantize

BLOCK_TYPES = {QT.Q4_0, QT.Q4_1, QT.Q5_0, QT.Q5_1, QT.Q8_0}
FTYPE = {QT.Q4_0: 2, QT.Q4_1: 3, QT.Q8_0: 7, QT.Q5_0: 8, QT.Q5_1: 9}  # llama.cpp LLAMA_FTYPE_MOSTLY_*


def main():
    if len(sys.argv) != 4:
        print(__doc__, file=sys.stderr)
        return 2
    blocks, f32, want = GGUFReader(sys.argv[1]), GGUFReader(sys.argv[2]), QT[sys.argv[3]]
    ref = {t.name: t for t in f32.tensors}
    fails, n_blocks, n_values = 0, 0, 0
    for t in blocks.tensors:
        r = ref.get(t.name)
        if r is None:
            print(f"FAIL: {t.name} is not in {sys.argv[2]}", file=sys.stderr)
            fails += 1
            continue
        linear = t.name.startswith("blk.") and len(t.shape) == 2
        if t.tensor_type in BLOCK_TYPES and linear:
            got = dequantize(t.data, t.tensor_type).reshape(-1)
            exp = np.asarray(r.data, dtype=np.float32).reshape(-1)
            if r.tensor_type != QT.F32 or got.dtype != np.float32 or got.shape != exp.shape:
                print(f"FAIL: {t.name}: {t.tensor_type.name} {got.shape} vs {r.tensor_type.name} {exp.shape}",
                      file=sys.stderr)
                fails += 1
            elif not np.array_equal(got.view(np.uint32), exp.view(np.uint32)):
                bad = np.flatnonzero(got.view(np.uint32) != exp.view(np.uint32))
                print(f"FAIL: {t.name}: {bad.size} of {got.size} values differ, first at {bad[0]}: "
                      f"{got[bad[0]]!r} vs {exp[bad[0]]!r}", file=sys.stderr)
                fails += 1
            if t.tensor_type != want:
                print(f"FAIL: {t.name} is {t.tensor_type.name}, expected {want.name}", file=sys.stderr)
                fails += 1
            n_blocks += 1
            n_values += got.size
            continue
        if linear and int(t.shape[0]) % 32 == 0:
            print(f"FAIL: {t.name} ({int(t.shape[0])} wide) is {t.tensor_type.name}, not {want.name}", file=sys.stderr)
            fails += 1
        if t.tensor_type != r.tensor_type or bytes(t.data.tobytes()) != bytes(r.data.tobytes()):
            print(f"FAIL: {t.name}: {t.tensor_type.name} differs from the F32 file's {r.tensor_type.name}",
                  file=sys.stderr)
            fails += 1
    ft = blocks.fields.get("general.file_type")
    if ft is None or int(ft.contents()) != FTYPE[want]:
        print(f"FAIL: general.file_type {None if ft is None else ft.contents()}, expected {FTYPE[want]}",
              file=sys.stderr)
        fails += 1
    fmt = blocks.fields.get("gptvq.format")
    if fmt is None or fmt.contents() != "gguf-blocks":
        print("FAIL: gptvq.format is not 'gguf-blocks'", file=sys.stderr)
        fails += 1
    print(f"check_gguf_blocks: {n_blocks} {want.name} tensors ({n_values} values) dequantized by gguf-py "
          f"equal the F32 file bit for bit; {len(blocks.tensors) - n_blocks} other tensors identical; "
          f"{fails} failures")
    return 1 if fails or n_blocks == 0 else 0


if __name__ == "__main__":
    sys.exit(main())
