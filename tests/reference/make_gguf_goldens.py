#!/usr/bin/env python3
"""Goldens for tests/test_gguf.c, written with the reference gguf-py writer and
gguf.quants (de)quantizers.

Writes
  tests/golden/gguf_types.gguf   one tensor per supported ggml type + KVs of every value type
  tests/golden/gguf_types.ref    the expected KVs and dequantized f32 values (text, see below)
  tests/golden/gguf_smollm2.ref  tensor counts of the real models and the first 2 rows of
                                 SmolLM2's blk.0.attn_q.weight dequantized by gguf-py
  tests/fuzz/corpus/gguf/*.gguf  tiny valid seeds for the fuzzer

.ref format (whitespace-separated tokens, '#' lines are comments):
  kv  KEY TYPE VALUE             ints in decimal, float32/float64 as hex IEEE bits,
                                 bool 0/1, string as hex of its UTF-8 bytes ("-" if empty)
  kva KEY ELEMTYPE N V1 .. VN    same encodings per element
  tensor NAME TYPE N_DIMS NE0 .. NE{N_DIMS-1} N   then N hex f32 bit patterns
  count FILE N_TENSORS N_F32     (gguf_smollm2.ref)

Run: .venv/bin/python tests/reference/make_gguf_goldens.py   (from the repo root)
"""
import os
import struct
import sys

import numpy as np
import gguf
from gguf import GGMLQuantizationType as QT, GGUFValueType as VT

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
GOLD = os.path.join(ROOT, "tests", "golden")
SEEDS = os.path.join(ROOT, "tests", "fuzz", "corpus", "gguf")


def pkg_version(name):
    from importlib.metadata import version
    return version(name)


def f32hex(x):
    return "%08x" % struct.unpack("<I", struct.pack("<f", float(x)))[0]


def f64hex(x):
    return "%016x" % struct.unpack("<Q", struct.pack("<d", float(x)))[0]


def enc(vt, v):
    if vt == VT.FLOAT32:
        return f32hex(v)
    if vt == VT.FLOAT64:
        return f64hex(v)
    if vt == VT.BOOL:
        return "1" if v else "0"
    if vt == VT.STRING:
        b = v.encode("utf-8")
        return b.hex() if b else "-"
    return str(int(v))


# Quantizers gguf-py implements (the others are written as random valid blocks).
QUANTIZABLE = [QT.BF16, QT.Q4_0, QT.Q4_1, QT.Q5_0, QT.Q5_1, QT.Q8_0]
# K-quants: byte offsets of the f16 super-block scales inside a block.
KQUANT_F16 = {QT.Q2_K: [80, 82], QT.Q3_K: [108], QT.Q4_K: [0, 2], QT.Q5_K: [0, 2], QT.Q6_K: [208]}


def random_kquant(rng, qt, n_rows, n_cols):
    bs, ts = gguf.GGML_QUANT_SIZES[qt]
    nb = n_rows * n_cols // bs
    raw = rng.integers(0, 256, size=(nb, ts), dtype=np.uint8)
    for off in KQUANT_F16[qt]:
        # finite scales with mixed signs and magnitudes, a few subnormal
        s = (rng.standard_normal(nb) * 0.05).astype(np.float16)
        s[0] = np.float16(3e-6)  # f16 subnormal
        raw[:, off:off + 2] = s.view(np.uint8).reshape(nb, 2)
    return raw.reshape(n_rows, n_cols // bs * ts)


def make_tensors(rng, n_rows, n_cols, kquant_cols):
    """Returns [(name, raw array for the writer, raw_dtype or None, ggml type, expected f32)]."""
    out = []
    x = rng.standard_normal((n_rows, n_cols)).astype(np.float32)
    out.append(("t.f32", x, None, QT.F32, x.copy()))
    h = (rng.standard_normal((n_rows, n_cols)) * 2).astype(np.float16)
    h.flat[:4] = np.array([6.0e-8, -0.0, 65504.0, -1.0e-5], dtype=np.float16)  # subnormal, -0, max
    out.append(("t.f16", h, None, QT.F16, gguf.quants.dequantize(h.view(np.uint8), QT.F16).reshape(n_rows, n_cols)))
    for qt in QUANTIZABLE:
        data = (rng.standard_normal((n_rows, n_cols)) * 0.1).astype(np.float32)
        q = gguf.quants.quantize(data, qt)
        out.append((f"t.{qt.name.lower()}", q, qt, qt, gguf.quants.dequantize(q, qt)))
    for qt in KQUANT_F16:
        q = random_kquant(rng, qt, n_rows, kquant_cols)
        out.append((f"t.{qt.name.lower()}", q, qt, qt, gguf.quants.dequantize(q, qt)))
    return out


KVS = [
    ("test.u8", VT.UINT8, 200), ("test.i8", VT.INT8, -100), ("test.u16", VT.UINT16, 60000),
    ("test.i16", VT.INT16, -30000), ("test.u32", VT.UINT32, 4000000000), ("test.i32", VT.INT32, -2000000000),
    ("test.f32", VT.FLOAT32, 3.14159), ("test.bool_t", VT.BOOL, True), ("test.bool_f", VT.BOOL, False),
    ("test.str", VT.STRING, "héllo wörld ✓"), ("test.u64", VT.UINT64, 18000000000000000000),
    ("test.i64", VT.INT64, -9000000000000000000), ("test.f64", VT.FLOAT64, -2.718281828459045),
    ("test.small_u64", VT.UINT64, 42),
]
ARRAYS = [
    ("test.arr_i32", VT.INT32, [1, -2, 3, -2147483648, 2147483647]),
    ("test.arr_str", VT.STRING, ["a", "bc", "", "ünï", "<0x0A>"]),
    ("test.arr_f32", VT.FLOAT32, [0.5, -1.25, 1e-30]),
    ("test.arr_u8", VT.UINT8, [0, 1, 255]),
    ("test.arr_bool", VT.BOOL, [True, False, True]),
    ("test.arr_u64", VT.UINT64, [1, 18446744073709551615]),
    ("test.arr_f64", VT.FLOAT64, [1.0 / 3.0]),
]


def write_gguf(path, tensors, alignment, kvs=KVS, arrays=ARRAYS):
    w = gguf.GGUFWriter(path, "llama")
    if alignment != 32:
        w.add_custom_alignment(alignment)
    for k, vt, v in kvs:
        w.add_key_value(k, v, vt)
    for k, vt, v in arrays:
        w.add_key_value(k, v, VT.ARRAY, sub_type=vt)
    for name, raw, raw_dtype, _, _ in tensors:
        w.add_tensor(name, raw, raw_dtype=raw_dtype)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def write_ref(path, tensors, alignment):
    with open(path, "w") as f:
        f.write("# expected contents of gguf_types.gguf (tests/reference/make_gguf_goldens.py)\n")
        f.write(f"# gguf {pkg_version('gguf')} numpy {np.__version__}\n")
        f.write(f"kv general.architecture {int(VT.STRING)} {enc(VT.STRING, 'llama')}\n")
        if alignment != 32:
            f.write(f"kv general.alignment {int(VT.UINT32)} {alignment}\n")
        for k, vt, v in KVS:
            f.write(f"kv {k} {int(vt)} {enc(vt, v)}\n")
        for k, vt, v in ARRAYS:
            f.write(f"kva {k} {int(vt)} {len(v)} " + " ".join(enc(vt, e) for e in v) + "\n")
        for name, _, _, qt, ref in tensors:
            ne = list(reversed(ref.shape))
            vals = ref.astype(np.float32).ravel()
            f.write(f"tensor {name} {int(qt)} {len(ne)} " + " ".join(map(str, ne)) + f" {vals.size}\n")
            bits = vals.view(np.uint32)
            for i in range(0, bits.size, 8):
                f.write(" ".join("%08x" % b for b in bits[i:i + 8]) + "\n")


def main():
    rng = np.random.default_rng(1234)
    os.makedirs(GOLD, exist_ok=True)
    os.makedirs(SEEDS, exist_ok=True)

    tensors = make_tensors(rng, 2, 512, 512)
    # one 3-D tensor to exercise n_dims > 2: numpy (2, 3, 32) -> ne = [32, 3, 2]
    x3 = rng.standard_normal((2, 3, 32)).astype(np.float32)
    tensors.append(("t.f32_3d", x3, None, QT.F32, x3.copy()))
    path = os.path.join(GOLD, "gguf_types.gguf")
    write_gguf(path, tensors, alignment=64)
    write_ref(os.path.join(GOLD, "gguf_types.ref"), tensors, alignment=64)
    # round-trip sanity with gguf-py's own reader
    rd = gguf.GGUFReader(path)
    assert len(rd.tensors) == len(tensors)

    # fuzz seeds: one row of each type (32 or 256 columns), default alignment
    seed = make_tensors(np.random.default_rng(7), 1, 32, 256)
    write_gguf(os.path.join(SEEDS, "types_small.gguf"), seed, 32)
    write_gguf(os.path.join(SEEDS, "meta_only.gguf"), [], 32)
    write_gguf(os.path.join(SEEDS, "f32_align8.gguf"), seed[:2], 8, kvs=KVS[:3], arrays=ARRAYS[:2])

    # real models
    with open(os.path.join(GOLD, "gguf_smollm2.ref"), "w") as f:
        f.write("# real-model facts read with gguf-py GGUFReader (tests/reference/make_gguf_goldens.py)\n")
        f.write(f"# gguf {pkg_version('gguf')} numpy {np.__version__}\n")
        for rel in ["models/SmolLM2-135M-Instruct.Q4_1.gguf", "../shared/data/models/stories260K/stories260K.gguf"]:
            p = os.path.join(ROOT, rel)
            if not os.path.exists(p):
                print(f"warning: {rel} missing, skipped", file=sys.stderr)
                continue
            r = gguf.GGUFReader(p)
            n_f32 = sum(1 for t in r.tensors if t.tensor_type == QT.F32)
            f.write(f"count {os.path.basename(rel)} {len(r.tensors)} {n_f32}\n")
            if "SmolLM2" in rel:
                t = next(t for t in r.tensors if t.name == "blk.0.attn_q.weight")
                rows = np.asarray(t.data)[:2]  # raw bytes, (rows, bytes per row)
                ref = gguf.quants.dequantize(rows, t.tensor_type)
                ne = [int(n) for n in t.shape]
                vals = ref.astype(np.float32).ravel()
                f.write(f"tensor {t.name} {int(t.tensor_type)} 2 {ne[0]} 2 {vals.size}\n")
                bits = vals.view(np.uint32)
                for i in range(0, bits.size, 8):
                    f.write(" ".join("%08x" % b for b in bits[i:i + 8]) + "\n")


if __name__ == "__main__":
    main()
