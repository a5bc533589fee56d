#!/usr/bin/env python3
"""Writes real Hugging Face Llama model directories for stories260K, built from
the GGUF with the `safetensors` package, as fixtures for gptvq's safetensors /
HF-directory loader (tests/test_readers.c):

  OUTDIR/stories260K-hf-f32/           model.safetensors (F32), config.json,
                                       tokenizer.json, tokenizer_config.json
  OUTDIR/stories260K-hf-f16-sharded/   model-0000{1,2}-of-00002.safetensors (F16)
                                       + model.safetensors.index.json, same JSONs

q/k are un-permuted back to the HF (rotate-half) layout: llama.cpp's
convert_hf_to_gguf.py `permute` maps HF -> GGUF as
  w.reshape(n_head, 2, rows // n_head // 2, cols).swapaxes(1, 2).reshape(rows, cols)
(n_head = n_head_kv for k), so its inverse is
  w.reshape(n_head, rows // n_head // 2, 2, cols).swapaxes(1, 2).reshape(rows, cols).
tokenizer.json comes from the independent reference (ref_tokenizer.build_hf_tokenizer).

Usage: .venv/bin/python tests/reference/make_hf_dir.py [OUTDIR] [GGUF]
(defaults build/fixtures and ../shared/data/models/stories260K/stories260K.gguf).
Idempotent: a directory is rebuilt only when missing or older than its inputs.
"""
import json
import os
import shutil
import sys

import numpy as np
from gguf import GGUFReader
from safetensors.numpy import save_file

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)


def field(reader, key, default=None):
    f = reader.fields.get(key)
    if f is None:
        return default
    v = f.parts[f.data[0]]
    return v.tobytes().decode() if f.types and f.types[0].name == "STRING" else v.item()


def unpermute(w, n_head):
    rows, cols = w.shape
    return w.reshape(n_head, rows // n_head // 2, 2, cols).swapaxes(1, 2).reshape(rows, cols)


def hf_tensors(reader, n_head, n_kv):
    """GGUF tensors -> {HF name: f32 array} in HF layout (tied: no lm_head)."""
    g = {t.name: np.array(t.data, dtype=np.float32) for t in reader.tensors}
    n_layers = field(reader, "llama.block_count")
    out = {"model.embed_tokens.weight": g["token_embd.weight"], "model.norm.weight": g["output_norm.weight"]}
    if "output.weight" in g and not np.array_equal(g["output.weight"], g["token_embd.weight"]):
        out["lm_head.weight"] = g["output.weight"]
    for l in range(n_layers):
        b, h = f"blk.{l}.", f"model.layers.{l}."
        out[h + "self_attn.q_proj.weight"] = unpermute(g[b + "attn_q.weight"], n_head)
        out[h + "self_attn.k_proj.weight"] = unpermute(g[b + "attn_k.weight"], n_kv)
        out[h + "self_attn.v_proj.weight"] = g[b + "attn_v.weight"]
        out[h + "self_attn.o_proj.weight"] = g[b + "attn_output.weight"]
        out[h + "mlp.gate_proj.weight"] = g[b + "ffn_gate.weight"]
        out[h + "mlp.up_proj.weight"] = g[b + "ffn_up.weight"]
        out[h + "mlp.down_proj.weight"] = g[b + "ffn_down.weight"]
        out[h + "input_layernorm.weight"] = g[b + "attn_norm.weight"]
        out[h + "post_attention_layernorm.weight"] = g[b + "ffn_norm.weight"]
    return {k: np.ascontiguousarray(v) for k, v in out.items()}


def config(reader, tied):
    n_head = field(reader, "llama.attention.head_count")
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": field(reader, "llama.embedding_length"),
        "intermediate_size": field(reader, "llama.feed_forward_length"),
        "num_hidden_layers": field(reader, "llama.block_count"),
        "num_attention_heads": n_head,
        "num_key_value_heads": field(reader, "llama.attention.head_count_kv", n_head),
        "rms_norm_eps": float(np.float32(field(reader, "llama.attention.layer_norm_rms_epsilon", 1e-5))),
        "rope_theta": float(field(reader, "llama.rope.freq_base", 10000.0)),
        "rope_scaling": None,
        "max_position_embeddings": field(reader, "llama.context_length", 2048),
        "vocab_size": len(reader.fields["tokenizer.ggml.tokens"].data),
        "tie_word_embeddings": tied,
        "attention_bias": False,
        "hidden_act": "silu",
        "bos_token_id": field(reader, "tokenizer.ggml.bos_token_id"),
        "eos_token_id": field(reader, "tokenizer.ggml.eos_token_id"),
        "torch_dtype": "float32",
    }


def write_jsons(d, cfg, tok):
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    tok.save(os.path.join(d, "tokenizer.json"))
    tc = {"add_bos_token": True, "add_eos_token": False, "bos_token": "<s>", "eos_token": "</s>",
          "unk_token": "<unk>", "tokenizer_class": "LlamaTokenizer",
          "model_max_length": cfg["max_position_embeddings"]}
    with open(os.path.join(d, "tokenizer_config.json"), "w") as f:
        json.dump(tc, f, indent=2)


def up_to_date(d, inputs):
    stamp = os.path.join(d, "config.json")
    return os.path.exists(stamp) and all(os.path.getmtime(stamp) > os.path.getmtime(i) for i in inputs)


def build(outdir, gguf_path):
    from ref_tokenizer import build_hf_tokenizer

    inputs = [gguf_path, __file__, os.path.join(HERE, "ref_tokenizer.py")]
    dirs = {k: os.path.join(outdir, f"stories260K-hf-{k}") for k in ("f32", "f16-sharded")}
    if all(up_to_date(d, inputs) for d in dirs.values()):
        return
    reader = GGUFReader(gguf_path)
    n_head = field(reader, "llama.attention.head_count")
    n_kv = field(reader, "llama.attention.head_count_kv", n_head)
    ts = hf_tensors(reader, n_head, n_kv)
    cfg = config(reader, "lm_head.weight" not in ts)
    tok = build_hf_tokenizer(gguf_path)
    meta = {"format": "pt"}
    os.makedirs(outdir, exist_ok=True)
    for kind, d in dirs.items():
        tmp = d + ".tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        os.makedirs(tmp)
        if kind == "f32":
            save_file(ts, os.path.join(tmp, "model.safetensors"), metadata=meta)
        else:
            names = list(ts)
            n1 = [n for n in names if not n.startswith("model.layers.") or int(n.split(".")[2]) < 3]
            n2 = [n for n in names if n not in n1]
            shards = [("model-00001-of-00002.safetensors", n1), ("model-00002-of-00002.safetensors", n2)]
            wm, total = {}, 0
            for fn, ns in shards:
                part = {n: ts[n].astype(np.float16) for n in ns}
                save_file(part, os.path.join(tmp, fn), metadata=meta)
                total += sum(v.nbytes for v in part.values())
                wm.update({n: fn for n in ns})
            with open(os.path.join(tmp, "model.safetensors.index.json"), "w") as f:
                json.dump({"metadata": {"total_size": total}, "weight_map": dict(sorted(wm.items()))}, f, indent=2)
        write_jsons(tmp, dict(cfg, torch_dtype="float32" if kind == "f32" else "float16"), tok)
        shutil.rmtree(d, ignore_errors=True)
        os.replace(tmp, d)


if __name__ == "__main__":
    root = os.path.dirname(os.path.dirname(HERE))
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(root, "build", "fixtures")
    data = os.environ.get("GQ_DATA", os.path.join(root, "..", "shared", "data"))
    gguf = sys.argv[2] if len(sys.argv) > 2 else os.path.join(data, "models", "stories260K", "stories260K.gguf")
    build(out, gguf)
