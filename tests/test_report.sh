#!/usr/bin/env bash
# gptvq report (issue 25) on stories260K: the source GGUF and GPTVQ / GPTQ /
# RTN files quantized from it, perplexity on tinystories_sample.txt (ctx 256).
# Checks, with Python's own XML parser (an independent reader):
#   - report.md names every file, with the perplexity `gptvq ppl` prints for
#     it, the ratio to the source, the bits per value the quantizer reported
#     (GPTVQ), the command that made each quantized file;
#   - ppl_vs_size.svg and error_N.svg parse as SVG, name their series
#     (source / GPTVQ / GPTQ / RTN; the seven matrix kinds), and every point
#     sits where its data put it: pixel x affine in the value, pixel y affine
#     in log10 of the value (a log axis), inside the frame; the plotted values
#     are the files' sizes and perplexities, and the errors of the metadata;
#   - a file that is not GGUF is refused with one error line and no folder.
set -u
cd "$(dirname "$0")/.."
G=${B:-build}/gptvq
D=${GQ_DATA:-../shared/data}
S=$D/models/stories260K/stories260K.gguf
TXT=$D/tinystories/tinystories_sample.txt
CAL=$D/wikitext-2-raw/wiki.valid.raw
PY=${PYTHON:-.venv/bin/python}
command -v "$PY" >/dev/null 2>&1 || PY=python3
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
fail=0
q() { "$G" quantize "$S" -o "$T/$1.gguf" --calib "$CAL" --nsamples 8 --seqlen 128 --quiet "${@:2}" >/dev/null 2>"$T/err" ||
    { echo "FAIL: quantize $*"; cat "$T/err"; fail=1; }; }
q vq --method gptvq --bpv 2.125 --vq-dim 2
q gptq --method gptq --wbits 4 --group-size 32
q rtn --method rtn --wbits 4 --group-size 32
"$G" report "$S" "$T/vq.gguf" "$T/gptq.gguf" "$T/rtn.gguf" -o "$T/x/y/rep" --text "$TXT" --ctx 256 --quiet >"$T/out" 2>"$T/err" ||
    { echo "FAIL: report"; cat "$T/err"; fail=1; }
for f in "$S" "$T/vq.gguf" "$T/gptq.gguf" "$T/rtn.gguf"; do
    "$G" ppl "$f" "$TXT" --ctx 256 --quiet 2>/dev/null | sed -n 's/^ppl=\([0-9.]*\) .*/\1/p'
done >"$T/ppl.txt"
bpv=$(sed -n 's/.*"bpv_achieved":[[:space:]]*\([0-9.]*\).*/\1/p' "$T/vq.gguf.report.json")
"$PY" - "$T/x/y/rep" "$T/ppl.txt" "$bpv" "$S" "$T/vq.gguf" "$T/gptq.gguf" "$T/rtn.gguf" <<'PY' || fail=1
import math, os, re, sys
import xml.etree.ElementTree as ET
rep, ppl_file, bpv = sys.argv[1], sys.argv[2], float(sys.argv[3])
files = sys.argv[4:]
ppl = [float(x) for x in open(ppl_file).read().split()]
md = open(os.path.join(rep, "report.md")).read()
bad = 0
def check(ok, what):
    global bad
    print(("ok: " if ok else "FAIL: ") + what)
    bad += not ok
# the table: one row per file with its perplexity and ratio to the source
rows = {}
for line in md.splitlines():
    c = [x.strip() for x in line.strip("|").split("|")]
    if len(c) == 6 and c[0].endswith(".gguf"):
        rows.setdefault(c[0], c)
for f, p in zip(files, ppl):
    r = rows.get(os.path.basename(f))
    check(r is not None and abs(float(r[4]) - p) <= 5e-4 * p, f"{os.path.basename(f)}: report ppl {r and r[4]} = gptvq ppl {p}")
    check(r is not None and abs(float(r[5]) - p / ppl[0]) < 2e-3, f"{os.path.basename(f)}: ratio {r and r[5]} = {p / ppl[0]:.3f}")
vq = rows.get("vq.gguf")
check(vq is not None and abs(float(vq[3]) - bpv) < 2e-3, f"GPTVQ bits per value {vq and vq[3]} = quantizer's {bpv}")
check(md.count("Made by: `gptvq quantize") == 3, "the command of each quantized file")
check("No per-linear errors are recorded" in md, "the source has no recorded errors, and says so")

def svg(name):
    root = ET.parse(os.path.join(rep, name)).getroot()
    assert root.tag == "{http://www.w3.org/2000/svg}svg", root.tag
    ns = "{http://www.w3.org/2000/svg}"
    frame = next(e for e in root.iter(ns + "rect") if e.get("class") == "frame")
    x0, y0 = float(frame.get("x")), float(frame.get("y"))
    x1, y1 = x0 + float(frame.get("width")), y0 + float(frame.get("height"))
    series = {}
    for g in root.iter(ns + "g"):
        if g.get("class") != "series":
            continue
        pts = []
        for e in g:
            if e.get("data-x") is None:
                continue
            if e.tag == ns + "circle":
                px, py = float(e.get("cx")), float(e.get("cy"))
            elif e.tag == ns + "rect":
                px, py = float(e.get("x")) + float(e.get("width")) / 2, float(e.get("y")) + float(e.get("height")) / 2
            else:  # triangle and diamond markers start at their top, 5 px above the point
                v = [float(t) for t in re.findall(r"-?[0-9.]+", e.get("d"))]
                px, py = v[0], v[1] + 5
            pts.append((float(e.get("data-x")), float(e.get("data-y")), px, py))
        series[g.get("data-name")] = pts
    return series, (x0, y0, x1, y1)

def geometry(name, series, frame):
    pts = [p for s in series.values() for p in s]
    lx = [(p[0], p[2]) for p in pts]
    ly = [(math.log10(p[1]), p[3]) for p in pts]
    def affine(pairs):
        (a0, b0), (a1, b1) = min(pairs), max(pairs)
        if a1 == a0:
            return all(abs(b - b0) < 0.05 for _, b in pairs)
        k = (b1 - b0) / (a1 - a0)
        return all(abs(b0 + k * (a - a0) - b) < 0.05 for a, b in pairs)
    check(affine(lx) and affine(ly), f"{name}: {len(pts)} points at x affine in the value, y affine in log10")
    x0, y0, x1, y1 = frame
    check(all(x0 <= p[2] <= x1 and y0 <= p[3] <= y1 for p in pts), f"{name}: every point inside the frame")

s, fr = svg("ppl_vs_size.svg")
check(sorted(s) == ["GPTQ", "GPTVQ", "RTN", "source"], f"ppl_vs_size.svg series {sorted(s)}")
sizes = {os.path.basename(f): os.path.getsize(f) / 1e6 for f in files}
want = {("source", sizes[os.path.basename(files[0])], ppl[0]), ("GPTVQ", sizes["vq.gguf"], ppl[1]),
        ("GPTQ", sizes["gptq.gguf"], ppl[2]), ("RTN", sizes["rtn.gguf"], ppl[3])}
got = {(k, x, y) for k, v in s.items() for x, y, _, _ in v}
check(all(any(k == g[0] and abs(g[1] - x) < 1e-6 and abs(g[2] - y) < 5e-4 * y for g in got) for k, x, y in want),
      "ppl_vs_size.svg plots each file's size and perplexity")
geometry("ppl_vs_size.svg", s, fr)
kinds = ["attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down"]
for i in (2, 3, 4):
    s, fr = svg(f"error_{i}.svg")
    check(sorted(s) == sorted(kinds) and all(len(v) == 5 for v in s.values()), f"error_{i}.svg: 7 kinds x 5 layers")
    geometry(f"error_{i}.svg", s, fr)
check(not os.path.exists(os.path.join(rep, "error_1.svg")), "no error picture for the source")
# the plotted errors are the file's metadata (gguf-py, llama.cpp's reader)
try:
    from gguf import GGUFReader
    r = GGUFReader(files[1])
    f = r.fields
    names = [bytes(f["gptvq.layers"].parts[j]).decode() for j in f["gptvq.layers"].data]
    errs = [float(f["gptvq.rel_errors"].parts[j][0]) for j in f["gptvq.rel_errors"].data]
    meta = {(n.split(".")[2], int(n.split(".")[1])): e for n, e in zip(names, errs)}
    s, _ = svg("error_2.svg")
    check(all(abs(meta[(k, int(x))] - y) <= 1e-6 * y for k, v in s.items() for x, y, _, _ in v),
          "error_2.svg plots gptvq.rel_errors of vq.gguf")
except ImportError:
    print("note: no gguf package, metadata cross-check skipped")
sys.exit(1 if bad else 0)
PY
grep -q "| vq.gguf |" "$T/out" && echo "ok: the table is printed" || { echo "FAIL: no table on stdout"; fail=1; }
"$G" report "$TXT" -o "$T/bad" >/dev/null 2>"$T/err"
rc=$?
[ $rc -ne 0 ] && [ "$(wc -l <"$T/err")" -eq 1 ] && [ ! -e "$T/bad" ] && echo "ok: non-GGUF refused: $(cat "$T/err")" ||
    { echo "FAIL: non-GGUF input (rc $rc)"; cat "$T/err"; fail=1; }
exit $fail
