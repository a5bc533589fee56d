#!/usr/bin/env python3
"""Independent check of a GGUF file written by gptvq's writer (src/io/gguf_write.c),
using the reference reader gguf-py (GGUFReader), not our C reader.

Usage (from the repo root):
  .venv/bin/python tests/reference/check_gguf_write.py FILE [--same-as SRC]
        [--ignore-key KEY ...] [--expect EXPECT_FILE] [--quiet]

Always checks: the file parses, version 3, tensor names unique and < 64 bytes,
every tensor's data offset a multiple of general.alignment (default 32), data
inside the file and not overlapping, n_bytes == elements x type size / block size.
Prints the KVs (abbreviated) and the tensor table.

--same-as SRC   every KV of SRC (except general.alignment and --ignore-key keys) is
                in FILE with the same type and contents, and vice versa; tensors are
                the same (order, name, type, shape) with identical data bytes.
--expect FILE   lines (written by tests/test_gguf_write.c from the values it gave
                the writer):
                  kv KEY TYPE LITERAL     TYPE a GGUFValueType name, or ARRAY/ELEMTYPE;
                                          LITERAL a Python literal (ast.literal_eval)
                                          compared with the field's contents()
                  tensor NAME TYPE NE0,NE1,.. FNV64HEX   ggml type name, shape (ne0 first),
                                          FNV-1a 64 of the data bytes
                  n_kv N / n_tensors N
Exit status 0 when every check passes, 1 otherwise (messages on stderr).
"""
import argparse
import ast
import math
import os
import sys

import numpy as np
from gguf import GGUFReader, GGUFValueType as VT, GGMLQuantizationType as QT
from gguf.constants import GGML_QUANT_SIZES

failures = 0


def fail(msg):
    global failures
    failures += 1
    print(f"FAIL: {msg}", file=sys.stderr)


def fnv64(b):
    h = 1469598103934665603
    for x in b:
        h = ((h ^ x) * 1099511628211) & 0xFFFFFFFFFFFFFFFF
    return h


def fnv64_np(a):
    # Vectorising FNV is awkward; tensors in the tests are small, models use --same-as.
    return fnv64(a.tobytes())


def field_type(f):
    if f.types[0] == VT.ARRAY:
        # parts: key length, key, value type, element type, count, ...; the element
        # type is read from the file because f.types omits it for empty arrays.
        return "ARRAY/" + VT(int(f.parts[3][0])).name
    return f.types[0].name


def field_value(f):
    v = f.contents()
    return v


def user_fields(r):
    # GGUFReader adds synthetic GGUF.* fields for the header.
    return {k: f for k, f in r.fields.items() if not k.startswith("GGUF.")}


def same_value(a, b):
    if isinstance(a, float) and isinstance(b, float):
        return a == b or (math.isnan(a) and math.isnan(b))
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same_value(x, y) for x, y in zip(a, b))
    return type(a) == type(b) and a == b


def validate(path, r, quiet):
    size = os.path.getsize(path)
    version = int(r.fields["GGUF.version"].parts[-1][0])
    if version != 3:
        fail(f"{path}: version {version}, expected 3")
    align = 32
    if "general.alignment" in r.fields:
        f = r.fields["general.alignment"]
        if field_type(f) != "UINT32":
            fail(f"general.alignment has type {field_type(f)}")
        align = int(f.contents())
    spans = []
    names = set()
    for t in r.tensors:
        if t.name in names:
            fail(f"duplicate tensor {t.name}")
        names.add(t.name)
        if len(t.name.encode()) >= 64:
            fail(f"tensor name {t.name!r} has {len(t.name.encode())} bytes (>= 64)")
        rel = t.data_offset - r.data_offset
        if rel % align:
            fail(f"tensor {t.name}: offset {rel} not a multiple of {align}")
        bs, ts = GGML_QUANT_SIZES[t.tensor_type]
        if int(t.shape[0]) % bs:
            fail(f"tensor {t.name}: ne0 {int(t.shape[0])} not a multiple of block {bs}")
        nb = t.n_elements * ts // bs
        if nb != t.n_bytes or t.data.nbytes != nb:
            fail(f"tensor {t.name}: {t.data.nbytes} data bytes, expected {nb}")
        if t.data_offset + nb > size:
            fail(f"tensor {t.name}: data [{t.data_offset}, {t.data_offset + nb}) past end ({size})")
        spans.append((t.data_offset, t.data_offset + nb, t.name))
    spans.sort()
    for a, b in zip(spans, spans[1:]):
        if b[0] < a[1]:
            fail(f"tensor {b[2]} overlaps {a[2]}")
    if r.data_offset % align:
        fail(f"data section at {r.data_offset} not aligned to {align}")
    if not quiet:
        print(f"{path}: GGUF v{version}, {len(user_fields(r))} KVs, {len(r.tensors)} tensors, "
              f"alignment {align}, data at {r.data_offset}, size {size}")
        for k, f in user_fields(r).items():
            v = f.contents()
            s = repr(v)
            if isinstance(v, list) and len(v) > 4:
                s = repr(v[:4])[:-1] + f", ... ({len(v)} items)]"
            if len(s) > 100:
                s = s[:97] + "..."
            print(f"  kv {k} {field_type(f)} {s}")
        for t in r.tensors:
            print(f"  tensor {t.name} {t.tensor_type.name} {[int(x) for x in t.shape]} "
                  f"off {t.data_offset - r.data_offset} bytes {t.n_bytes}")
    return align


def compare_same(r, s, ignore):
    fa, fb = user_fields(r), user_fields(s)
    skip = set(ignore) | {"general.alignment"}
    ka = [k for k in fa if k not in skip]
    kb = [k for k in fb if k not in skip]
    if set(ka) != set(kb):
        fail(f"KV keys differ: only in file {sorted(set(ka) - set(kb))}, "
             f"only in source {sorted(set(kb) - set(ka))}")
    n_kv = 0
    for k in ka:
        if k not in fb:
            continue
        if field_type(fa[k]) != field_type(fb[k]):
            fail(f"KV {k}: type {field_type(fa[k])}, source {field_type(fb[k])}")
        elif not same_value(fa[k].contents(), fb[k].contents()):
            fail(f"KV {k}: value differs from the source")
        else:
            n_kv += 1
    if len(r.tensors) != len(s.tensors):
        fail(f"{len(r.tensors)} tensors, source has {len(s.tensors)}")
    n_t = 0
    nbytes = 0
    for a, b in zip(r.tensors, s.tensors):
        if (a.name, a.tensor_type, list(a.shape)) != (b.name, b.tensor_type, list(b.shape)):
            fail(f"tensor {a.name} {a.tensor_type.name} {list(a.shape)} vs source "
                 f"{b.name} {b.tensor_type.name} {list(b.shape)}")
        elif a.data.tobytes() != b.data.tobytes():
            fail(f"tensor {a.name}: data bytes differ from the source")
        else:
            n_t += 1
            nbytes += a.n_bytes
    print(f"same-as: {n_kv} KVs and {n_t} tensors ({nbytes} data bytes) identical to the source")


def check_expect(r, path):
    fields = user_fields(r)
    tensors = {t.name: t for t in r.tensors}
    n = 0
    with open(path, encoding="utf-8") as fp:
        for line in fp:
            line = line.rstrip("\n")
            if not line or line.startswith("#"):
                continue
            parts = line.split(" ", 3)
            if parts[0] == "n_kv":
                if len(fields) != int(parts[1]):
                    fail(f"{len(fields)} KVs, expected {parts[1]}")
            elif parts[0] == "n_tensors":
                if len(r.tensors) != int(parts[1]):
                    fail(f"{len(r.tensors)} tensors, expected {parts[1]}")
            elif parts[0] == "kv":
                _, key, typ, lit = parts
                f = fields.get(key)
                if f is None:
                    fail(f"missing KV {key}")
                    continue
                want = ast.literal_eval(lit)
                got = f.contents()
                if field_type(f) != typ:
                    fail(f"KV {key}: type {field_type(f)}, expected {typ}")
                elif not same_value(got, want):
                    fail(f"KV {key}: {got!r}, expected {want!r}")
            elif parts[0] == "tensor":
                name, typ, shape, h = line.split(" ")[1:]
                t = tensors.get(name)
                if t is None:
                    fail(f"missing tensor {name}")
                    continue
                shape = [int(x) for x in shape.split(",")]
                if t.tensor_type != QT[typ] or [int(x) for x in t.shape] != shape:
                    fail(f"tensor {name}: {t.tensor_type.name} {[int(x) for x in t.shape]}, "
                         f"expected {typ} {shape}")
                elif fnv64_np(t.data) != int(h, 16):
                    fail(f"tensor {name}: data hash {fnv64_np(t.data):016x}, expected {h}")
            else:
                fail(f"bad expect line: {line!r}")
                continue
            n += 1
    print(f"expect: {n} expectations checked")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("file")
    ap.add_argument("--same-as")
    ap.add_argument("--ignore-key", action="append", default=[])
    ap.add_argument("--expect")
    ap.add_argument("--quiet", action="store_true")
    a = ap.parse_args()
    try:
        r = GGUFReader(a.file)
    except Exception as e:  # gguf-py raises assorted exception types on bad files
        print(f"FAIL: gguf-py cannot read {a.file}: {e}", file=sys.stderr)
        return 1
    validate(a.file, r, a.quiet)
    if a.same_as:
        compare_same(r, GGUFReader(a.same_as), a.ignore_key)
    if a.expect:
        check_expect(r, a.expect)
    print(f"check_gguf_write: {a.file}: {'OK' if failures == 0 else f'{failures} failures'} "
          f"(gguf-py, numpy {np.__version__})")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
