#!/usr/bin/env bash
# Quantizing from a Hugging Face directory (issue 25) on the stories260K HF
# fixtures (tests/reference/make_hf_dir.py: the GGUF's weights un-permuted to
# the HF layout, F32 single file and F16 in two shards):
#   - GPTVQ 2D (packed) and GPTQ W4 g32 (GGUF blocks) from the F32 directory
#     and from stories260K.gguf give identical quantized tensors (read by
#     llama.cpp's gguf-py) and the same perplexity;
#   - --head-bpv on the tied F32 directory packs the token embedding (the head);
#   - the F16 sharded directory quantizes, gguf-py lists the output with the
#     architecture and tokenizer carried over, and ppl / generate / inspect run it;
#   - `gptvq export HF_DIR -o F.gguf` (no --to) gives the directory's own
#     perplexity, also with llama3 RoPE scaling (rope_freqs written as
#     llama.cpp's converter does) and with a byte-level BPE tokenizer carried
#     through tokenizer.ggml.* alone (test_tokenizer: SmolLM2 written and read back);
#   - a malformed directory (missing shard, I32 weights, config/shape mismatch,
#     NaN weight) is refused with one error line, exit != 0, nothing left behind;
#   - SIGTERM during the run removes the temporary GGUF.
set -u
cd "$(dirname "$0")/.."
G=${B:-build}/gptvq
D=${GQ_DATA:-../shared/data}
S=$D/models/stories260K/stories260K.gguf
TXT=$D/tinystories/tinystories_sample.txt
FX=${B:-build}/fixtures
PY=${PYTHON:-.venv/bin/python}
HF=$FX/stories260K-hf-f32
HF16=$FX/stories260K-hf-f16-sharded
[ -d "$HF" ] && [ -d "$HF16" ] && [ -x "$PY" ] || { echo "SKIP: no HF fixtures (tests/setup_fixtures.sh)"; exit 77; }
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
fail=0
ok() { echo "ok: $1"; }
bad() { echo "FAIL: $1"; fail=1; }
ppl() { "$G" ppl "$1" "$TXT" --ctx 256 --quiet 2>/dev/null | sed -n 's/^ppl=\([0-9.]*\) .*/\1/p'; }
quant() { # src out options...
    local src=$1 out=$2; shift 2
    "$G" quantize "$src" -o "$out" --nsamples 8 --seqlen 128 --threads 2 --quiet "$@" >/dev/null 2>"$T/err" ||
        { bad "quantize $src $*"; cat "$T/err"; }
}
# same_tensors A B: every tensor of A also in B has the same type, shape and bytes
same_tensors() {
    "$PY" - "$1" "$2" <<'PY'
import sys
import numpy as np
from gguf import GGUFReader
a, b = GGUFReader(sys.argv[1]), GGUFReader(sys.argv[2])
tb = {t.name: t for t in b.tensors}
n = 0
for t in a.tensors:
    u = tb.get(t.name)
    if u is None:
        continue
    if t.tensor_type != u.tensor_type or list(t.shape) != list(u.shape) or \
            not np.array_equal(np.asarray(t.data).view(np.uint8), np.asarray(u.data).view(np.uint8)):
        sys.exit(f"tensor {t.name} differs")
    n += 1
print(f"{n} tensors identical")
sys.exit(0 if n >= 5 * 7 else "too few tensors in common")
PY
}

# 1. the same quantized tensors and perplexity from HF and from GGUF
for m in "gptvq --bpv 2.125 --vq-dim 2" "gptq --wbits 4 --group-size 32"; do
    set -- $m
    quant "$HF" "$T/hf_$1.gguf" --method $m
    quant "$S" "$T/gg_$1.gguf" --method $m
    if msg=$(same_tensors "$T/hf_$1.gguf" "$T/gg_$1.gguf" 2>&1); then ok "$1: $msg (HF vs GGUF source)"; else bad "$1: $msg"; fi
    a=$(ppl "$T/hf_$1.gguf"); b=$(ppl "$T/gg_$1.gguf")
    [ -n "$a" ] && [ "$a" = "$b" ] && ok "$1: ppl $a from HF = $b from GGUF" || bad "$1: ppl $a (HF) vs $b (GGUF)"
    [ -e "$T/hf_$1.gguf.hf-source.gguf" ] && bad "$1: temporary GGUF left behind"
done
grep -q '"method":[[:space:]]*"gptvq"' "$T/hf_gptvq.gguf.report.json" && ok "report written for the HF source" || bad "no report"

# 2. F16 shards: quantize, then gguf-py, ppl, generate, inspect
quant "$HF16" "$T/hf16.gguf" --method gptvq --bpv 2.125 --vq-dim 2
if "$PY" - "$T/hf16.gguf" <<'PY'
import sys
from gguf import GGUFReader
r = GGUFReader(sys.argv[1])
f = lambda k: r.fields[k].parts[r.fields[k].data[0]]
arch = bytes(f("general.architecture")).decode()
assert arch == "llama", arch
assert int(f("llama.block_count")[0]) == 5
assert len(r.fields["tokenizer.ggml.tokens"].data) == 512
assert bytes(f("gptvq.method")).decode() == "gptvq"
assert "tokenizer.huggingface.json" in r.fields
assert any(t.name == "blk.0.attn_q.weight.vq_idx" for t in r.tensors)
print(f"gguf-py lists {len(r.tensors)} tensors, arch {arch}")
PY
then ok "gguf-py reads the file quantized from F16 shards"; else bad "gguf-py on the F16-sourced file"; fi
p16=$(ppl "$T/hf16.gguf"); p32=$(ppl "$T/hf_gptvq.gguf"); fp16=$(ppl "$HF16"); fp=$(ppl "$HF")
awk -v a="$p16" -v b="$p32" -v f="$fp16" 'BEGIN { exit !(a != "" && a > f && a < 2 * b) }' &&
    ok "F16-sourced GPTVQ ppl $p16: above its source's $fp16, near the F32-sourced $p32" ||
    bad "F16-sourced ppl '$p16' vs F32-sourced $p32, source $fp16"
"$G" generate "$T/hf16.gguf" -p "Once upon a time" -n 8 --temp 0 >"$T/gen" 2>/dev/null && [ -s "$T/gen" ] &&
    ok "generate runs the HF-sourced file" || bad "generate on the HF-sourced file"
"$G" inspect "$T/hf16.gguf" >/dev/null 2>&1 && ok "inspect runs" || bad "inspect on the HF-sourced file"

# 2b. a tied head (this directory has no lm_head): --head-bpv packs the token
# embedding, which serves as both; the kernels and f32 decoding agree.
quant "$HF" "$T/tied.gguf" --method gptvq --bpv 2.125 --vq-dim 2 --head-bpv 4.125
"$PY" - "$T/tied.gguf" <<'PY' && ok "tied head: token_embd.weight packed, no output.weight" || bad "tied head file"
import sys
from gguf import GGUFReader
names = {t.name for t in GGUFReader(sys.argv[1]).tensors}
assert "token_embd.weight.vq_idx" in names and "token_embd.weight" not in names and not any(n.startswith("output.weight") for n in names)
PY
a=$(ppl "$T/tied.gguf"); b=$("$G" ppl "$T/tied.gguf" "$TXT" --ctx 256 --quiet --dequantize 2>/dev/null | sed -n 's/^ppl=\([0-9.]*\) .*/\1/p')
awk -v a="$a" -v b="$b" -v p="$p32" 'BEGIN { exit !(a != "" && a < 1.001 * b && a > 0.999 * b && a < 1.2 * p) }' &&
    ok "tied head: ppl $a (kernels) = $b (f32), near $p32 without it" || bad "tied head: ppl $a vs $b (f32), $p32 without"
"$G" quantize "$HF" -o "$T/tied2.gguf" --method gptvq --head-bpv 4 --embed-type q8_0 --nsamples 2 --seqlen 32 >/dev/null 2>"$T/err"
[ $? -ne 0 ] && [ ! -e "$T/tied2.gguf" ] && [ ! -e "$T/tied2.gguf.hf-source.gguf" ] && grep -q "tied" "$T/err" &&
    ok "tied head: --head-bpv with --embed-type refused: $(grep error "$T/err")" || { bad "tied --head-bpv + --embed-type"; cat "$T/err"; }

# 3. export HF -> GGUF keeps the directory's perplexity (plain, llama3 RoPE scaling, BPE vocab)
for d in "$HF" "$HF16"; do
    "$G" export "$d" -o "$T/conv.gguf" >/dev/null 2>"$T/err" || { bad "export $d"; cat "$T/err"; }
    a=$(ppl "$d"); b=$(ppl "$T/conv.gguf")
    [ -n "$a" ] && [ "$a" = "$b" ] && ok "export ${d##*/}: ppl $b = the HF directory's" || bad "export ${d##*/}: ppl $b vs HF $a"
done
mkdir -p "$T/l3"
for f in "$HF"/*; do ln -s "$(realpath "$f")" "$T/l3/"; done
rm "$T/l3/config.json"
"$PY" -c '
import json, sys
c = json.load(open(sys.argv[1]))
c["rope_scaling"] = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                     "original_max_position_embeddings": 64}
json.dump(c, open(sys.argv[2], "w"))' "$HF/config.json" "$T/l3/config.json"
"$G" export "$T/l3" -o "$T/l3.gguf" >/dev/null 2>"$T/err" || { bad "export llama3-scaled"; cat "$T/err"; }
a=$(ppl "$T/l3"); b=$(ppl "$T/l3.gguf"); p=$(ppl "$HF")
awk -v a="$a" -v b="$b" -v p="$p" 'BEGIN { d = a - b; if (d < 0) d = -d; exit !(a != "" && d <= 1e-4 * a && a != p) }' &&
    ok "llama3 RoPE scaling: ppl $b through rope_freqs = $a from config.json (unscaled $p)" ||
    bad "llama3 RoPE scaling: GGUF $b vs HF $a (unscaled $p)"

# 4. malformed directories: one error line, exit != 0, nothing left behind
refuse() { # name dir
    local out="$T/bad_${2##*/}.gguf"
    "$G" quantize "$2" -o "$out" --method gptvq --bpv 2.125 --vq-dim 2 --nsamples 4 --seqlen 64 >/dev/null 2>"$T/err"
    local rc=$? n
    n=$(wc -l <"$T/err")
    if [ $rc -ne 0 ] && [ "$n" -eq 1 ] && ! ls "$out"* >/dev/null 2>&1; then
        ok "$1 refused: $(cat "$T/err")"
    else
        bad "$1: rc $rc, $n stderr lines, left: $(ls "$out"* 2>/dev/null)"; cat "$T/err"
    fi
}
linkdir() { mkdir -p "$2"; for f in "$1"/*; do ln -s "$(realpath "$f")" "$2/"; done; }
linkdir "$HF16" "$T/noshard"; rm "$T/noshard/model-00002-of-00002.safetensors"
refuse "missing shard" "$T/noshard"
linkdir "$HF" "$T/shape"; rm "$T/shape/config.json"
sed 's/"intermediate_size": *[0-9]*/"intermediate_size": 176/' "$HF/config.json" >"$T/shape/config.json"
refuse "config/shape mismatch" "$T/shape"
for kind in i32 nan; do
    linkdir "$HF" "$T/$kind"; rm "$T/$kind/model.safetensors"
    "$PY" - "$HF/model.safetensors" "$T/$kind/model.safetensors" "$kind" <<'PY'
import sys
import numpy as np
from safetensors.numpy import load_file, save_file
d = load_file(sys.argv[1])
k = "model.layers.2.mlp.up_proj.weight"
if sys.argv[3] == "i32":
    d[k] = d[k].astype(np.int32)
else:
    d[k][3, 5] = np.nan
save_file(d, sys.argv[2])
PY
done
refuse "I32 weights" "$T/i32"
refuse "NaN weight" "$T/nan"

# 5. SIGTERM (as Ctrl-C's SIGINT, which a script's background job ignores)
# while quantizing an HF directory: the temporary GGUF goes too (the
# checkpoint of finished blocks stays, for a rerun to continue).
"$G" quantize "$HF" -o "$T/int.gguf" --method gptvq --nsamples 256 --seqlen 256 --quiet >/dev/null 2>&1 &
pid=$!
for _ in $(seq 100); do [ -e "$T/int.gguf.hf-source.gguf" ] && break; sleep 0.1; done
seen=$([ -e "$T/int.gguf.hf-source.gguf" ] && echo yes || echo no)
kill -TERM $pid 2>/dev/null
wait $pid
rc=$?
[ "$seen" = yes ] && [ $rc -ne 0 ] && [ ! -e "$T/int.gguf.hf-source.gguf" ] && [ ! -e "$T/int.gguf" ] &&
    ok "SIGTERM: the temporary GGUF is removed (exit $rc)" || bad "SIGTERM: temporary seen=$seen, rc $rc, left: $(ls "$T"/int.gguf* 2>/dev/null)"

exit $fail
