"""Regenerates the tokenizer, forward and perplexity goldens in tests/golden/.

Run from the repo root:  .venv/bin/python tests/reference/make_goldens.py [tok] [fwd] [ppl] [check] [zs]
(no argument: check tok fwd ppl; the zero-shot golden "zs" only when named).
See tests/reference/README.md for the file formats.
"""
import hashlib
import json
import os
import struct
import sys
import time
import platform

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from ref_tokenizer import RefTokenizer  # noqa: E402
from llama_ref import LlamaRef, log_softmax_at  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(HERE))
GOLDEN = os.path.join(ROOT, "tests", "golden")
DATA = os.path.join(ROOT, "..", "shared", "data")
SMOL = os.path.join(ROOT, "models", "SmolLM2-135M-Instruct.Q4_1.gguf")
STORIES = os.path.join(DATA, "models", "stories260K", "stories260K.gguf")
WIKI_TEST = os.path.join(DATA, "wikitext-2-raw", "wiki.test.raw")
TINY = os.path.join(DATA, "tinystories", "tinystories_sample.txt")
GREEDY = os.path.join(DATA, "models", "stories260K", "greedy_t0_tokens.txt")

FWD_MAGIC = b"GQFWDREF"
FWD_VERSION = 1
COL_SEED = 1234


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for b in iter(lambda: f.read(1 << 20), b""):
            h.update(b)
    return h.hexdigest()


def versions():
    import gguf, tokenizers, sentencepiece, google.protobuf  # noqa: E401
    from importlib.metadata import version
    return {"python": platform.python_version(), "numpy": np.__version__,
            "gguf": version("gguf"), "tokenizers": tokenizers.__version__,
            "sentencepiece": sentencepiece.__version__,
            "protobuf": google.protobuf.__version__}


def read_text(path):
    with open(path, "rb") as f:
        return f.read().decode("utf-8")


def out(name):
    return os.path.join(GOLDEN, name)


# ---------------------------------------------------------------------------
# Tokenizer goldens

MISC = [
    "Hello world",
    "12345",
    "I'm sure they'll say we've done it, didn't they? DON'T I'M 'Tis",
    "multiple   spaces    here  ",
    "   leading and trailing   ",
    "line1\nline2\n\n\nline3\n",
    "\ttab\tseparated\t\t value",
    "h\u00e9llo na\u00efve caf\u00e9 \u2014 \u201cquotes\u201d \u2013 \u65e5\u672c\u8a9e\u306e\u30c6\u30ad\u30b9\u30c8 \u4e2d\u6587",
    "\u0395\u03bb\u03bb\u03b7\u03bd\u03b9\u03ba\u03ac \u0627\u0644\u0639\u0631\u0628\u064a\u0629 \u041f\u0440\u0438\u0432\u0435\u0442",
    "emoji \U0001F600\U0001F44D\U0001F3FD \U0001F1EB\U0001F1F7 family \U0001F468\u200d\U0001F469\u200d\U0001F467",
    "Price: $3.14, 1,000,000 and 2024-01-01 at 10:30pm",
    "x = f(y) + 42; // \u00f1\r\nreturn 0;",
    "<|im_start|>user\nHi there<|im_end|>\n",
    " ",
    "\n",
    "",
]


def write_ids(path, ids, src, extra=""):
    arr = np.asarray(ids, dtype="<i4")
    arr.tofile(path)
    with open(path[:-4] + ".txt", "w") as f:
        f.write(f"file: {os.path.basename(path)} (little-endian int32, no header)\n")
        f.write(f"count: {len(arr)}\n")
        f.write(f"input: {os.path.relpath(src, ROOT)} sha256 {sha256(src)}\n")
        f.write(extra)
        f.write(f"sha256 of this .i32: {sha256(path)}\n")
        f.write(f"versions: {json.dumps(versions())}\n")


def write_misc(path, tok, cases):
    with open(path, "w", encoding="utf-8") as f:
        for text, add_bos, parse_special in cases:
            ids = tok.encode(text, add_bos=add_bos, parse_special=parse_special)
            rt = tok.decode([i for i in ids if not (add_bos and i == tok.vocab.bos)])
            if rt != text:
                print(f"  note: {os.path.basename(path)} {text!r} decodes back as {rt!r}")
            f.write(json.dumps({"text": text, "add_bos": add_bos, "parse_special": parse_special,
                                "ids": ids}, ensure_ascii=False) + "\n")


def make_tok():
    t0 = time.time()
    smol = RefTokenizer(SMOL)
    wiki = read_text(WIKI_TEST)
    ids = smol.encode(wiki)
    assert smol.decode(ids) == wiki, "SmolLM2 reference does not round-trip wiki.test.raw"
    write_ids(out("tok_smollm2_wikitext_test.i32"), ids, WIKI_TEST,
              f"tokenizer: {os.path.basename(SMOL)} sha256 {sha256(SMOL)}\n"
              "mode: add_bos=false parse_special=false, HF tokenizers byte-level BPE "
              "(Digits(individual)+ByteLevel regex)\n")
    print(f"tok smollm2 wiki.test.raw: {len(ids)} tokens, round-trip ok ({time.time() - t0:.1f}s)")
    cases = [(s, False, False) for s in MISC] + [(MISC[12], False, True), ("Hello", True, False)]
    write_misc(out("tok_smollm2_misc.txt"), smol, cases)

    st = RefTokenizer(STORIES)
    tiny = read_text(TINY)
    ids = st.encode(tiny)
    assert st.decode(ids) == tiny, "SentencePiece reference does not round-trip the TinyStories sample"
    hf = st.hf.encode(tiny, add_special_tokens=False).ids
    print(f"tok stories260K tinystories: {len(ids)} tokens, sentencepiece round-trip ok, "
          f"HF tokenizers BPE(byte_fallback) agrees: {hf == ids}")
    write_ids(out("tok_stories260k_tinystories.i32"), ids, TINY,
              f"tokenizer: stories260K.gguf sha256 {sha256(STORIES)}\n"
              "mode: add_bos=false, SentencePiece BPE (byte_fallback, add_dummy_prefix, "
              "identity normalizer, remove_extra_whitespaces=false)\n"
              f"HF tokenizers equivalent agrees: {hf == ids}\n")
    cases = [(s, False, False) for s in MISC] + [("Once upon a time", True, False)]
    write_misc(out("tok_stories260k_misc.txt"), st, cases)
    n_dis = 0
    for s in MISC:
        a = st.encode(s)
        b = st.hf.encode(s, add_special_tokens=False).ids
        if a != b:
            n_dis += 1
            print(f"  stories misc HF/SPM disagree on {s!r}: spm {a} hf {b}")
    print(f"tok stories260K misc: HF vs sentencepiece disagreements: {n_dis}/{len(MISC)}")


# ---------------------------------------------------------------------------
# Forward goldens

def write_fwd(path, model, tokens, full_pos, cols):
    T, V = len(tokens), model.n_vocab
    argmax = np.empty(T, np.int32)
    maxabs = np.empty(T, np.float32)
    full = np.empty((len(full_pos), V), np.float32)
    colv = np.empty((T, len(cols)), np.float32)
    gmax = 0.0
    fidx = {p: i for i, p in enumerate(full_pos)}
    for s, L in model.logits_chunks(tokens):
        for r in range(L.shape[0]):
            p = s + r
            argmax[p] = int(L[r].argmax())
            maxabs[p] = np.abs(L[r]).max()
            if p in fidx:
                full[fidx[p]] = L[r]
        colv[s:s + L.shape[0]] = L[:, cols]
        gmax = max(gmax, float(np.abs(L).max()))
    with open(path, "wb") as f:
        f.write(FWD_MAGIC)
        f.write(struct.pack("<5I", FWD_VERSION, T, V, len(full_pos), len(cols)))
        f.write(struct.pack("<I", 0))
        f.write(struct.pack("<d", gmax))
        f.write(np.asarray(tokens, "<i4").tobytes())
        f.write(argmax.astype("<i4").tobytes())
        f.write(maxabs.astype("<f4").tobytes())
        f.write(np.asarray(full_pos, "<i4").tobytes())
        f.write(full.astype("<f4").tobytes())
        f.write(np.asarray(cols, "<i4").tobytes())
        f.write(colv.astype("<f4").tobytes())
    return gmax, argmax


def fwd_sidecar(path, model_path, src, desc, gmax):
    with open(path[:-4] + ".txt", "w") as f:
        f.write(f"file: {os.path.basename(path)} (layout GQFWDREF v{FWD_VERSION}, see tests/reference/README.md)\n")
        f.write(f"model: {os.path.basename(model_path)} sha256 {sha256(model_path)}\n")
        f.write(f"text: {os.path.relpath(src, ROOT)} sha256 {sha256(src)}\n")
        f.write(desc)
        f.write(f"reference: tests/reference/llama_ref.py, numpy float64 forward, logits stored as float32\n")
        f.write(f"global max|logit|: {gmax:.6f}\n")
        f.write(f"sha256 of this .bin: {sha256(path)}\n")
        f.write(f"versions: {json.dumps(versions())}\n")


def make_fwd():
    t0 = time.time()
    wiki_ids = np.fromfile(out("tok_smollm2_wikitext_test.i32"), "<i4")
    m = LlamaRef(SMOL)
    tokens = [int(x) for x in wiki_ids[:512]]
    rng = np.random.default_rng(COL_SEED)
    cols = np.sort(rng.choice(m.n_vocab, 256, replace=False)).astype(np.int32)
    path = out("fwd_smollm2_wikitext512.bin")
    gmax, am = write_fwd(path, m, tokens, [0, 1, 100, 255, 511], cols)
    fwd_sidecar(path, SMOL, WIKI_TEST,
                "tokens: first 512 of tok_smollm2_wikitext_test.i32, no BOS, one sequence at positions 0..511\n"
                f"columns: 256 vocab ids, np.random.default_rng({COL_SEED}).choice({m.n_vocab}, 256, replace=False), sorted\n",
                gmax)
    acc = float(np.mean(am[:-1] == np.asarray(tokens[1:])))
    print(f"fwd smollm2 512: global max|logit| {gmax:.4f}, next-token argmax accuracy {acc:.3f} "
          f"({time.time() - t0:.1f}s)")
    del m

    st = LlamaRef(STORIES)
    tiny_ids = np.fromfile(out("tok_stories260k_tinystories.i32"), "<i4")
    tokens = [st.bos] + [int(x) for x in tiny_ids[:256]]
    path = out("fwd_stories260k_tinystories256.bin")
    gmax, am = write_fwd(path, st, tokens, list(range(len(tokens))), np.zeros(0, np.int32))
    fwd_sidecar(path, STORIES, TINY,
                "tokens: BOS=1 then the first 256 of tok_stories260k_tinystories.i32 (257 positions)\n"
                "full rows: every position; columns: none (n_cols = 0)\n", gmax)
    acc = float(np.mean(am[:-1] == np.asarray(tokens[1:])))
    print(f"fwd stories260K 257: global max|logit| {gmax:.4f}, next-token argmax accuracy {acc:.3f}")


# ---------------------------------------------------------------------------
# Perplexity goldens

def wikitext_join(raw):
    """gptq protocol preprocessing: the HF datasets rows (each line keeps its
    '\\n'; a whitespace-only line is the empty row) joined with '\\n\\n'."""
    rows = ["" if line.strip() == "" else line for line in raw.splitlines(keepends=True)]
    return "\n\n".join(rows)


def ppl_run(model, windows, first_scored):
    """windows: list of token lists (each already with any BOS replacement).
    Scores logits at positions first_scored..ctx-2 against tokens first_scored+1..ctx-1."""
    nll_all, per_window = [], []
    for w in windows:
        tgt = np.asarray(w[first_scored + 1:])
        lp = []
        for s, L in model.logits_chunks(w):
            lo, hi = max(s, first_scored), min(s + L.shape[0], len(w) - 1)
            if lo < hi:
                lp.append(log_softmax_at(L[lo - s:hi - s], tgt[lo - first_scored:hi - first_scored]))
        nll = -np.concatenate(lp)
        assert len(nll) == len(w) - 1 - first_scored
        nll_all.append(nll)
        per_window.append(float(nll.mean()))
        print(f"    window {len(per_window)}: mean NLL {per_window[-1]:.6f}", flush=True)
    nll = np.concatenate(nll_all)
    mean = float(nll.mean())
    # llama.cpp's estimate of the standard error of the mean NLL.
    var = float((nll * nll).mean() - mean * mean)
    stderr = float(np.sqrt(var / (len(nll) - 1))) if var > 0 else 0.0
    return mean, stderr, len(nll), per_window


def write_ppl(name, model_path, text_path, info, mean, stderr, n_scored, per_window):
    d = {"ppl": float(np.exp(mean)), "nll_mean": mean, "nll_stderr": stderr, "n_scored": n_scored}
    d.update(info)
    d.update({"window_nll_mean": per_window,
              "model": os.path.basename(model_path), "model_sha256": sha256(model_path),
              "text": os.path.relpath(text_path, ROOT), "text_sha256": sha256(text_path),
              "reference": "tests/reference/llama_ref.py numpy float64", "versions": versions()})
    with open(out(name), "w") as f:
        json.dump(d, f, indent=1)
        f.write("\n")
    print(f"  {name}: ppl {d['ppl']:.6f} nll {mean:.6f} n_scored {n_scored} windows {info['n_windows']}")


def ppl_gptq(model, tok, model_path, text_path, ctx, max_windows, name):
    raw = read_text(text_path)
    wikitext = os.path.basename(text_path).startswith("wiki.") and text_path.endswith(".raw")
    text = wikitext_join(raw) if wikitext else raw
    ids = tok.encode(text, add_bos=tok.vocab.add_bos)
    n_total = len(ids) // ctx
    n = n_total if max_windows == 0 else min(max_windows, n_total)
    windows = [ids[i * ctx:(i + 1) * ctx] for i in range(n)]
    mean, se, ns, pw = ppl_run(model, windows, 0)
    write_ppl(name, model_path, text_path,
              {"protocol": "gptq", "ctx": ctx, "n_windows": n, "n_windows_total": n_total,
               "max_windows": max_windows, "wikitext_join": wikitext, "add_bos": tok.vocab.add_bos,
               "n_tokens_text": len(ids)}, mean, se, ns, pw)


def ppl_llamacpp(model, tok, model_path, text_path, ctx, max_windows, name, replace_bos):
    raw = read_text(text_path)
    ids = tok.encode(raw, add_bos=tok.vocab.add_bos)
    n_total = len(ids) // ctx
    n = n_total if max_windows == 0 else min(max_windows, n_total)
    windows = []
    for i in range(n):
        w = list(ids[i * ctx:(i + 1) * ctx])
        if replace_bos:
            w[0] = tok.vocab.bos
        windows.append(w)
    mean, se, ns, pw = ppl_run(model, windows, ctx // 2)
    write_ppl(name, model_path, text_path,
              {"protocol": "llama.cpp", "ctx": ctx, "n_windows": n, "n_windows_total": n_total,
               "max_windows": max_windows, "add_bos": tok.vocab.add_bos,
               "first_token_replaced_by_bos": replace_bos, "first_scored_logit_pos": ctx // 2,
               "n_tokens_text": len(ids)}, mean, se, ns, pw)


def make_ppl():
    t0 = time.time()
    st, stt = LlamaRef(STORIES), RefTokenizer(STORIES)
    ppl_gptq(st, stt, STORIES, TINY, 256, 0, "ppl_stories260k_tinystories_gptq_ctx256.json")
    sm, smt = LlamaRef(SMOL), RefTokenizer(SMOL)
    # llama.cpp (perplexity.cpp, ggml-org/llama.cpp 050fc7f) replaces a window's first
    # token by BOS only when the vocab's add_bos is true; SmolLM2's is false.
    ppl_llamacpp(sm, smt, SMOL, WIKI_TEST, 512, 4, "ppl_smollm2_wikitext_llamacpp_ctx512.json",
                 replace_bos=smt.vocab.add_bos)
    # The older (2023) llama.cpp replaced the first token by BOS unconditionally.
    ppl_llamacpp(sm, smt, SMOL, WIKI_TEST, 512, 4, "ppl_smollm2_wikitext_llamacpp_ctx512_bosfirst.json",
                 replace_bos=True)
    ppl_gptq(sm, smt, SMOL, WIKI_TEST, 2048, 2, "ppl_smollm2_wikitext_gptq_ctx2048.json")
    print(f"ppl done ({time.time() - t0:.1f}s)")


def check_greedy():
    st = LlamaRef(STORIES)
    gold = [int(x) for x in read_text(GREEDY).split()]
    seq = [st.bos]
    for _ in range(len(gold)):
        seq.append(int(st.logits(seq)[-1].argmax()))
    got = seq[1:]
    k = next((i for i in range(len(gold)) if got[i] != gold[i]), len(gold))
    print(f"check stories260K greedy from BOS: {k}/{len(gold)} tokens match greedy_t0_tokens.txt")
    assert k >= 32


# ---------------------------------------------------------------------------
# Zero-shot golden (part "zs", not in the default set: about 3-4 minutes more)

ZS_N = 50


def make_zs():
    import zeroshot_ref as zs
    t0 = time.time()
    res = zs.run(SMOL, ZS_N, jobs=2)
    secs = time.time() - t0
    assert res["n_decode_mismatch"] == 0, "a request's tokens do not decode back to its text"
    records = res["records"]
    name = f"zeroshot_smollm2_first{ZS_N}"
    path = out(name + ".jsonl")
    with open(path, "w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")
    summ = zs.summarize(records)
    with open(out(name + ".txt"), "w") as f:
        f.write(f"file: {name}.jsonl (JSON lines, one example each; fields in tests/reference/README.md, Zero-shot)\n")
        f.write(f"model: {os.path.basename(SMOL)} sha256 {sha256(SMOL)}\n")
        f.write(f"examples: first {ZS_N} of each task in file order; {len(records)} lines; "
                f"{sum(len(r['ll']) for r in records)} requests\n")
        f.write("reference: tests/reference/zeroshot_ref.py (lm-eval-harness v0.4.x conventions), "
                "llama_ref.py numpy float64 forward, one fresh forward per request\n")
        f.write("per task (stderr = sqrt(p(1-p)/(n-1))):\n")
        for task, s in summ.items():
            line = f"  {task:14s} n {s['n']}  acc {s['acc']:.4f} +- {s['acc_stderr']:.4f}"
            if "acc_norm" in s:
                line += f"  acc_norm {s['acc_norm']:.4f} +- {s['acc_norm_stderr']:.4f}"
            if "ppl" in s:
                line += f"  ppl {s['ppl']:.6f} (exp(-mean ll))"
            f.write(line + "\n")
        f.write(f"checks: decode(ctx + cont) == context + continuation for every request "
                f"(mismatches {res['n_decode_mismatch']}); enc(context) not a prefix of "
                f"enc(context + continuation): {res['n_prefix_mismatch']} requests (information); "
                f"truncated to 2049 tokens: {res['n_truncated']}\n")
        f.write("data (../shared/data/zeroshot/):\n")
        for task in zs.TASKS:
            for rel in zs.DATA_FILES[task]:
                f.write(f"  {rel} sha256 {sha256(os.path.join(zs.ZS_DATA, rel))}\n")
        f.write("regenerate: .venv/bin/python tests/reference/make_goldens.py zs\n")
        f.write("runtime (worker seconds per task): "
                + ", ".join(f"{t} {v:.0f}s" for t, v in res["seconds"].items())
                + f"; wall {secs:.0f}s with model loads, 2 worker processes x 1 BLAS thread\n")
        f.write(f"sha256 of the .jsonl: {sha256(path)}\n")
        f.write(f"versions: {json.dumps(versions())}\n")
    print(f"zs done: {len(records)} examples ({secs:.1f}s)")


def main():
    what = set(sys.argv[1:]) or {"check", "tok", "fwd", "ppl"}
    os.makedirs(GOLDEN, exist_ok=True)
    print("versions:", versions())
    if "check" in what:
        check_greedy()
    if "tok" in what:
        make_tok()
    if "fwd" in what:
        make_fwd()
    if "ppl" in what:
        make_ppl()
    if "zs" in what:
        make_zs()


if __name__ == "__main__":
    main()
