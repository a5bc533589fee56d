#!/usr/bin/env bash
# Writes test fixtures derived from the models into build/fixtures/ (or $1):
# tokenizer.json files for SmolLM2 and stories260K built by the independent
# Python reference (tests/reference/ref_tokenizer.py, HF tokenizers).
# Idempotent: a fixture is rebuilt only when missing or older than its inputs.
cd "$(dirname "$0")/.." || exit 1
out=${1:-build/fixtures}
py=${PYTHON:-.venv/bin/python}
data=${GQ_DATA:-../shared/data}
mkdir -p "$out"
[ -x "$py" ] || { echo "setup_fixtures: no $py, skipping tokenizer.json fixtures" >&2; exit 0; }
make_json() { # gguf dest
    local gguf=$1 dest=$2
    [ -f "$gguf" ] || return 0
    if [ -f "$dest" ] && [ "$dest" -nt "$gguf" ] && [ "$dest" -nt tests/reference/ref_tokenizer.py ]; then return 0; fi
    "$py" - "$gguf" "$dest" <<'PY' || { echo "setup_fixtures: failed to write $dest" >&2; rm -f "$dest"; return 1; }
import sys
sys.path.insert(0, "tests/reference")
from ref_tokenizer import build_hf_tokenizer
import json, os
from ref_tokenizer import GGUFVocab
tok = build_hf_tokenizer(sys.argv[1])
# tokenizer_config.json beside it, as a Hugging Face model directory has:
# BOS/EOS/add_bos from the GGUF metadata.
v = GGUFVocab(sys.argv[1])
cfg = {"add_bos_token": v.add_bos}
if v.bos is not None: cfg["bos_token"] = v.tokens[v.bos]
if v.eos is not None: cfg["eos_token"] = v.tokens[v.eos]
d = os.path.dirname(sys.argv[2])
with open(os.path.join(d, "tokenizer_config.json"), "w") as f:
    json.dump(cfg, f)
tmp = sys.argv[2] + ".tmp"
tok.save(tmp)
os.replace(tmp, sys.argv[2])
PY
}
# Small GGUFs with broken tokenizer metadata (written by the gguf package).
make_bad_ggufs() {
    local dir=$1
    [ -f "$dir/tok_bad_pre.gguf" ] && [ "$dir/tok_bad_pre.gguf" -nt tests/setup_fixtures.sh ] && return 0
    "$py" - "$dir" <<'PY' || { echo "setup_fixtures: failed to write the hostile GGUFs" >&2; return 1; }
import sys, os
from gguf import GGUFWriter
d = sys.argv[1]
def write(name, model, tokens, types=None, merges=None, pre=None, bos=None, scores=None):
    w = GGUFWriter(os.path.join(d, name), arch="llama")
    if model is not None: w.add_tokenizer_model(model)
    if pre is not None: w.add_tokenizer_pre(pre)
    w.add_token_list(tokens)
    if types is not None: w.add_token_types(types)
    if scores is not None: w.add_token_scores(scores)
    if merges is not None: w.add_token_merges(merges)
    if bos is not None: w.add_bos_token_id(bos)
    w.write_header_to_file(); w.write_kv_data_to_file(); w.write_tensors_to_file(); w.close()
toks = ["a", "b", "ab"]
write("tok_bad_pre.gguf", "gpt2", toks, [1, 1, 1], ["a b"], pre="frobnicate")
write("tok_bad_types.gguf", "llama", toks, [1, 1], scores=[0.0, 0.0, 0.0])
write("tok_bad_scores.gguf", "llama", toks, [1, 1, 1], scores=[0.0, 0.0])
write("tok_bad_bos.gguf", "llama", toks, [1, 1, 1], scores=[0.0, 0.0, 0.0], bos=99)
write("tok_bad_model.gguf", "bert", toks, [1, 1, 1])
write("tok_bad_merge.gguf", "gpt2", toks, [1, 1, 1], ["ab"], pre="gpt-2")
write("tok_no_merges.gguf", "gpt2", toks, [1, 1, 1], pre="gpt-2")
write("tok_bad_type_value.gguf", "llama", toks, [1, 9, 1], scores=[0.0, 0.0, 0.0])
write("tok_no_model.gguf", None, toks, [1, 1, 1])
PY
}
# SmolLM2's vocab with a Llama-3-style pre-tokenizer (Split(regex) +
# ByteLevel(use_regex=false)), and the ids HF tokenizers gives for the whole
# wiki.test.raw with it: exercises the tokenizer.json Split path and PCRE2 on
# lookaheads, \p{N}{1,3} and (?i:...).
make_llama3pre() {
    local gguf=$1 dir=$2
    [ -f "$gguf" ] && [ -f "$data/wikitext-2-raw/wiki.test.raw" ] || return 0
    [ -f "$dir/wiki_test_ids.i32" ] && [ "$dir/wiki_test_ids.i32" -nt tests/setup_fixtures.sh ] && return 0
    "$py" - "$gguf" "$dir" "$data/wikitext-2-raw/wiki.test.raw" <<'PY' || { echo "setup_fixtures: llama3-pre fixture failed" >&2; return 1; }
import sys, os
import numpy as np
sys.path.insert(0, "tests/reference")
from ref_tokenizer import build_hf_tokenizer
from tokenizers import pre_tokenizers, Regex
tok = build_hf_tokenizer(sys.argv[1])
pat = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
       r"|\s*[\r\n]+|\s+(?!\S)|\s+")
tok.pre_tokenizer = pre_tokenizers.Sequence([
    pre_tokenizers.Split(Regex(pat), behavior="isolated", invert=False),
    pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=False)])
tok.encode_special_tokens = True
text = open(sys.argv[3], encoding="utf-8").read()
ids = np.array(tok.encode(text, add_special_tokens=False).ids, dtype="<i4")
d = sys.argv[2]
tok.save(os.path.join(d, "tokenizer.json"))
# Byte end offsets of the pre-tokenizer pieces (HF gives character offsets).
cum = np.concatenate([[0], np.cumsum([len(c.encode("utf-8")) for c in text])])
ends = np.array([cum[e] for _, (_, e) in tok.pre_tokenizer.pre_tokenize_str(text)], dtype="<i4")
ends.tofile(os.path.join(d, "wiki_test_pre_ends.i32"))
ids.tofile(os.path.join(d, "wiki_test_ids.i32.tmp"))
os.replace(os.path.join(d, "wiki_test_ids.i32.tmp"), os.path.join(d, "wiki_test_ids.i32"))
PY
}
rc=0
mkdir -p "$out/smollm2_llama3pre"
make_llama3pre models/SmolLM2-135M-Instruct.Q4_1.gguf "$out/smollm2_llama3pre" || rc=1
mkdir -p "$out/hostile"
make_bad_ggufs "$out/hostile" || rc=1
mkdir -p "$out/smollm2" "$out/stories260k"
make_json models/SmolLM2-135M-Instruct.Q4_1.gguf "$out/smollm2/tokenizer.json" || rc=1
make_json "$data/models/stories260K/stories260K.gguf" "$out/stories260k/tokenizer.json" || rc=1
# Hugging Face model directories of stories260K (F32 single file, F16 sharded),
# written with the safetensors package: test_readers loads them.
"$py" tests/reference/make_hf_dir.py "$out" || rc=1
exit $rc
