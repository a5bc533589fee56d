"""Llama-2-70B quantized by `mpirun -np N gptvq quantize`: a projection (a
cost model, not a measurement) from the report of a measured Llama-2-7B-shaped
run (bench/synth_stack.sh: OUTDIR/CONFIG.gguf.report.json).

Per block, at 128 x 2048 calibration tokens:
  forward      the 70B calibration forward (bench/cost_model.py) of this
               rank's share of the windows: ceil(128 / N) of 128
  Hessians     each input group's exact sum (24 bytes per upper-triangle
               entry: three int64 limbs) all-reduced: a ring moves
               2 (N-1)/N of it through each rank's link
  quantization per input group, the slowest rank. The units are slabs of
               --row-slab rows (256: a 70B FFN gate has 112), the heaviest
               first to the least loaded rank (quant/group.c assign_slabs); a
               rank pays the row part of its slabs, plus, once per linear it
               has a slab of, the part that does not shrink with the rows
               (damping, Cholesky, inverse: cost_model.py)
  results      GPTVQ: the compressed tensors merged by a bytewise-OR
               all-reduce (a ring: 2 (N-1)/N of the 2-byte indices per vector
               and the 1-byte normalisation codes per 64 weights), every rank
               decodes; GPTQ: the f32 weights and group scales, OR-ed the same way
The same hardware per rank as the measured run (its threads), links of
--link GB/s. Also printed: the quantization divided by N (an ideal split).

usage: python3 bench/mpi_project.py REPORT.json [--np 8] [--blocks 1] [--link 12.5]
"""
import argparse
import json
import math
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cost_model import GROUP, INPUT_WIDTH_70B, SHAPES_70B, forward_70b_seconds, kind, linear_70b_parts  # noqa: E402


def slab_group(ks, parts, n, slab_rows):
    """The slowest rank's seconds for one input group of GPTVQ linears split in slabs."""
    units = []
    for i, k in enumerate(ks):
        ns = min(max(1, math.ceil(SHAPES_70B[k][0] / slab_rows)), 256)
        w = SHAPES_70B[k][0] * SHAPES_70B[k][1] / ns
        units += [(w, i, s, parts[k][0] / ns) for s in range(ns)]
    load, secs, touched = [0.0] * n, [0.0] * n, [set() for _ in range(n)]
    for w, i, s, t in sorted(units, key=lambda u: (-u[0], u[1], u[2])):
        r = min(range(n), key=lambda j: load[j])
        load[r] += w
        secs[r] += t
        touched[r].add(i)
    return max(secs[r] + sum(parts[ks[i]][1] for i in touched[r]) for r in range(n))


def project(report, blocks, n, link, slab_rows):
    fw = forward_70b_seconds(report, blocks) * math.ceil(128 / n) / 128
    vq = report["method"] == "gptvq"
    parts = {}
    for l in report["layers"][: len(report["layers"]) // blocks]:
        parts[kind(l)] = linear_70b_parts(l)
    groups = {}
    for k in SHAPES_70B:
        groups.setdefault(GROUP[k], []).append(k)
    quant = 0.0
    for g, ks in groups.items():
        quant += slab_group(ks, parts, n, slab_rows)
    hess_bytes = sum(24 * w * (w + 1) / 2 for w in INPUT_WIDTH_70B.values())
    allreduce = 2 * (n - 1) / n * hess_bytes / (link * 1e9) if n > 1 else 0.0
    if vq:
        d = report.get("vq_dim", 2)
        res_bytes = 2 * (n - 1) / n * sum(R * C * (2 / d + 1 / 64) for R, C in SHAPES_70B.values())
    else:  # f32 weights and the f16-valued scales, OR-ed the same way
        res_bytes = 2 * (n - 1) / n * sum(R * C * (4 + 8 / 32) for R, C in SHAPES_70B.values())
    bcast = res_bytes / (link * 1e9) if n > 1 else 0.0
    return fw, allreduce, quant, bcast, sum(sum(p) for p in parts.values()) / n


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("report")
    ap.add_argument("--np", type=int, default=8)
    ap.add_argument("--blocks", type=int, default=1, help="blocks in the measured run")
    ap.add_argument("--link", type=float, default=12.5, help="GB/s per rank (12.5: 100 Gb/s InfiniBand)")
    ap.add_argument("--row-slab", type=int, default=256, help="GPTVQ rows per slab (gptvq quantize --row-slab)")
    a = ap.parse_args()
    r = json.load(open(a.report))
    print(f"Llama-2-70B, 80 blocks, 128 x 2048 calibration tokens, from {a.report} "
          f"({r['method']}, {len(r['layers']) // a.blocks} linears per block): a cost model, not a measurement")
    print("| ranks | forward s | Hessian all-reduce s | quantization s | results exchange s | per block s | 80 blocks h |"
          " with the quantization / ranks h |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for n in sorted({1, 2, a.np}):
        fw, ar, q, bc, q_ideal = project(r, a.blocks, n, a.link, a.row_slab)
        tot = fw + ar + q + bc
        print(f"| {n} | {fw:.0f} | {ar:.1f} | {q:.0f} | {bc:.1f} | {tot:.0f} | {tot * 80 / 3600:.1f} |"
              f" {(fw + ar + q_ideal + bc) * 80 / 3600:.1f} |")


if __name__ == "__main__":
    main()
