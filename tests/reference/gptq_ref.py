#!/usr/bin/env python3
"""numpy port of GPTQ's fasterquant (IST-DASLab/gptq, gptq.py + quant.py) to
cross-check src/quant/gptq.c against the published algorithm (Cholesky of the
inverse Hessian, lazy batches, static groups with act-order), independently of
the column-by-column reference inside tests/test_gptq.c.

Writes tests/golden/gptq_ref.bin, read by tests/test_gptq.c:
  int32 n_cases, then per case
  int32 rows, cols, wbits, group_size (-1: per row), sym, mse, act_order, block_size
  float32 W (rows*cols), H (cols*cols), Q (rows*cols)   little endian, row-major.

Semantics shared with the C code (see src/quant/quant.h):
- arithmetic in float64 (GPTQ: float32); the scale is rounded to float32 before
  use, the dequantized value scale*(q-zero) is rounded to float32;
- sym: xmin = -xmax always (GPTQ keeps xmin = 0 for a group without negative
  entries; random data never has such a group of 16 here);
- groups start at block starts in every case below (group_size divides
  block_size), where GPTQ's find_params(W[:, i:i+g]) sees fully updated
  weights; the C code also handles the misaligned case exactly.

Usage (repo root): .venv/bin/python tests/reference/gptq_ref.py
"""
import os
import struct
import sys

import numpy as np

F32 = np.float32


def find_params(x, wbits, sym, mse):
    """Quantizer.find_params(x, weight=True): one (scale, zero) per row of x."""
    maxq = 2**wbits - 1
    xmin = np.minimum(x.min(1), 0)
    xmax = np.maximum(x.max(1), 0)
    if sym:
        xmax = np.maximum(np.abs(xmin), xmax)
        xmin = -xmax
    tmp = (xmin == 0) & (xmax == 0)
    xmin[tmp] = -1
    xmax[tmp] = 1
    scale = ((xmax - xmin) / maxq).astype(F32)
    zero = np.full_like(xmin, (maxq + 1) / 2) if sym else np.round(-xmin / scale)
    if mse:
        best = np.full(x.shape[0], np.inf)
        for i in range(int(0.8 * 100)):
            p = 1 - i / 100
            xmin1, xmax1 = p * xmin, p * xmax
            scale1 = ((xmax1 - xmin1) / maxq).astype(F32)
            zero1 = np.round(-xmin1 / scale1) if not sym else zero
            q = quantize(x, scale1[:, None], zero1[:, None], maxq)
            err = (np.abs(q - x) ** 2.4).sum(1)
            t = err < best
            best[t], scale[t], zero[t] = err[t], scale1[t], zero1[t]
    return scale, zero


def quantize(x, scale, zero, maxq):
    q = np.clip(np.round(x / scale.astype(np.float64)) + zero, 0, maxq)
    return (scale.astype(np.float64) * (q - zero)).astype(F32).astype(np.float64)


def fasterquant(W0, H0, wbits, groupsize, sym, mse, actorder, blocksize, percdamp=0.01):
    W = W0.astype(np.float64).copy()
    H = H0.astype(np.float64).copy()
    rows, columns = W.shape
    maxq = 2**wbits - 1
    scale, zero = find_params(W, wbits, sym, mse)  # per row; replaced per group below
    dead = np.diag(H) == 0
    H[dead, dead] = 1
    W[:, dead] = 0
    if groupsize == -1:
        scale, zero = find_params(W, wbits, sym, mse)
    groups = []
    if actorder:  # static_groups=True
        for i in range(0, columns, groupsize):
            groups.append(find_params(W[:, i:i + groupsize], wbits, sym, mse))
        perm = np.argsort(-np.diag(H), kind="stable")
        W = W[:, perm]
        H = H[perm][:, perm]
        invperm = np.argsort(perm)
    Q = np.zeros_like(W)
    damp = percdamp * np.mean(np.diag(H))
    H[np.arange(columns), np.arange(columns)] += damp
    L = np.linalg.cholesky(H)
    Linv = np.linalg.inv(L)
    Hinv = Linv.T @ Linv                      # torch.cholesky_inverse
    Hinv = np.linalg.cholesky(Hinv).T         # torch.linalg.cholesky(upper=True)
    for i1 in range(0, columns, blocksize):
        i2 = min(i1 + blocksize, columns)
        count = i2 - i1
        W1 = W[:, i1:i2].copy()
        Q1 = np.zeros_like(W1)
        Err1 = np.zeros_like(W1)
        Hinv1 = Hinv[i1:i2, i1:i2]
        for i in range(count):
            w = W1[:, i]
            d = Hinv1[i, i]
            if groupsize != -1:
                if not actorder:
                    if (i1 + i) % groupsize == 0:
                        scale, zero = find_params(W[:, (i1 + i):(i1 + i + groupsize)], wbits, sym, mse)
                else:
                    scale, zero = groups[perm[i1 + i] // groupsize]
            q = quantize(w[:, None], scale[:, None], zero[:, None], maxq).flatten()
            Q1[:, i] = q
            err1 = (w - q) / d
            W1[:, i:] -= np.outer(err1, Hinv1[i, i:])
            Err1[:, i] = err1
        Q[:, i1:i2] = Q1
        W[:, i2:] -= Err1 @ Hinv[i1:i2, i2:]
    if actorder:
        Q = Q[:, invperm]
    return Q.astype(F32)


def main():
    rng = np.random.default_rng(20240601)
    cases = [  # rows, cols, wbits, group, sym, mse, act, block
        (16, 64, 3, -1, 0, 0, 0, 16),
        (16, 64, 4, 16, 0, 0, 0, 16),
        (16, 64, 2, 16, 1, 1, 0, 16),
        (16, 64, 3, 16, 0, 0, 1, 16),
        (12, 80, 4, 32, 0, 1, 1, 32),
    ]
    out = bytearray(struct.pack("<i", len(cases)))
    for rows, cols, wbits, g, sym, mse, act, bs in cases:
        A = rng.standard_normal((cols, cols)) + 2 * np.eye(cols)
        X = (rng.standard_normal((4 * cols, cols)) @ A) * np.exp(0.8 * rng.standard_normal(cols))
        X[:, 5] = 0  # one dead input
        H = (2.0 / X.shape[0] * X.T @ X).astype(F32)
        W = (0.05 * rng.standard_normal((rows, cols))).astype(F32)
        Q = fasterquant(W, H, wbits, g, bool(sym), bool(mse), bool(act), bs)
        out += struct.pack("<8i", rows, cols, wbits, g, sym, mse, act, bs)
        out += W.astype("<f4").tobytes() + H.astype("<f4").tobytes() + Q.astype("<f4").tobytes()
    root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "golden")
    with open(os.path.join(root, "gptq_ref.bin"), "wb") as f:
        f.write(out)
    with open(os.path.join(root, "gptq_ref.txt"), "w") as f:
        f.write("gptq_ref.bin: written by tests/reference/gptq_ref.py with numpy %s, python %s\n"
                % (np.__version__, sys.version.split()[0]))
    print("wrote %d cases, %d bytes" % (len(cases), len(out)))


if __name__ == "__main__":
    main()
