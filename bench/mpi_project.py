"""Llama-2-70B quantized by `mpirun -np N gptvq quantize`: a projection (a
cost model, not a measurement) from the report of a measured Llama-2-7B-shaped
run (bench/synth_stack.sh: OUTDIR/CONFIG.gguf.report.json).

Per block, at 128 x 2048 calibration tokens:
  forward      the 70B calibration forward (bench/cost_model.py) of this
               rank's share of the windows: ceil(128 / N) of 128
  Hessians     each input group's exact sum (24 bytes per upper-triangle
               entry: three int64 limbs) all-reduced: a ring moves
               2 (N-1)/N of it through each rank's link
  quantization per input group, the slowest rank: each linear goes to one
               rank (largest first, to the least loaded: the engine's rule),
               so a group takes its largest linear's time at best
  results      each quantized linear broadcast as f32 (rows x cols x 4 bytes)
The same hardware per rank as the measured run (its threads), links of
--link GB/s. Also printed, marked as such: a row-tile split (each linear's
rows divided between the ranks, not implemented) would divide the
quantization by N.

usage: python3 bench/mpi_project.py REPORT.json [--np 8] [--blocks 1] [--link 12.5]
"""
import argparse
import json
import math
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cost_model import GROUP, INPUT_WIDTH_70B, SHAPES_70B, forward_70b_seconds, kind, linear_70b_seconds  # noqa: E402


def owners(sizes, n):
    """quant/engine.c assign_owners: largest first, each to the least loaded rank."""
    load, own = [0.0] * n, [0] * len(sizes)
    for i in sorted(range(len(sizes)), key=lambda i: -sizes[i]):
        r = min(range(n), key=lambda j: load[j])
        own[i] = r
        load[r] += sizes[i]
    return own


def project(report, blocks, n, link):
    fw = forward_70b_seconds(report, blocks) * math.ceil(128 / n) / 128
    lin = {}
    for l in report["layers"][: len(report["layers"]) // blocks]:
        lin[kind(l)] = linear_70b_seconds(l)
    groups = {}
    for k in SHAPES_70B:
        groups.setdefault(GROUP[k], []).append(k)
    quant = 0.0
    for g, ks in groups.items():
        own = owners([SHAPES_70B[k][0] * SHAPES_70B[k][1] for k in ks], n)
        quant += max(sum(lin[k] for k, o in zip(ks, own) if o == r) for r in range(n))
    hess_bytes = sum(24 * w * (w + 1) / 2 for w in INPUT_WIDTH_70B.values())
    allreduce = 2 * (n - 1) / n * hess_bytes / (link * 1e9) if n > 1 else 0.0
    bcast = sum(R * C * 4 for R, C in SHAPES_70B.values()) / (link * 1e9) if n > 1 else 0.0
    return fw, allreduce, quant, bcast, sum(lin.values()) / n


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("report")
    ap.add_argument("--np", type=int, default=8)
    ap.add_argument("--blocks", type=int, default=1, help="blocks in the measured run")
    ap.add_argument("--link", type=float, default=12.5, help="GB/s per rank (12.5: 100 Gb/s InfiniBand)")
    a = ap.parse_args()
    r = json.load(open(a.report))
    print(f"Llama-2-70B, 80 blocks, 128 x 2048 calibration tokens, from {a.report} "
          f"({r['method']}, {len(r['layers']) // a.blocks} linears per block): a cost model, not a measurement")
    print("| ranks | forward s | Hessian all-reduce s | quantization s | result broadcast s | per block s | 80 blocks h |"
          " with a row split (not implemented) h |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for n in sorted({1, 2, a.np}):
        fw, ar, q, bc, q_rows = project(r, a.blocks, n, a.link)
        tot = fw + ar + q + bc
        print(f"| {n} | {fw:.0f} | {ar:.1f} | {q:.0f} | {bc:.1f} | {tot:.0f} | {tot * 80 / 3600:.1f} |"
              f" {(fw + ar + q_rows + bc) * 80 / 3600:.1f} |")


if __name__ == "__main__":
    main()
