"""Reference zero-shot scoring in the lm-evaluation-harness (v0.4.x) conventions.

Independent of the C code: tasks are read from the JSON lines in
../shared/data/zeroshot/, text is tokenized with ref_tokenizer.RefTokenizer,
and every request is one fresh float64 forward of llama_ref.LlamaRef.

Conventions, written out (see tests/reference/README.md, "Zero-shot"):

* Each example is a list of requests (context, continuation). Multiple-choice
  tasks join them with the target delimiter " ": continuation = " " + choice.
    piqa          "Question: " + goal + "\\nAnswer:", choices [sol1, sol2], gold from valid-labels.lst
    arc_*         query as given, choices as given, gold field
    hellaswag     preprocess(activity_label + ": " + ctx_a + " " + ctx_b.capitalize()),
                  choices [preprocess(e) for e in endings], gold int(label)
    winogrande    partial scoring: i = sentence.index("_"); contexts sentence[:i] + option1/2,
                  shared continuation " " + sentence[i+1:].strip(); gold int(answer) - 1
    boolq         passage + "\\nQuestion: " + question + "?\\nAnswer:", choices ["no", "yes"],
                  gold 1 if answer else 0
    lambada       (lambada_openai) words = text.split(" "); context " ".join(words[:-1]),
                  continuation " " + words[-1] (no delimiter added); one request
* HFLM._encode_pair: trailing whitespace of the context moves to the front of
  the continuation; whole = enc(context + continuation), ctx = enc(context),
  cont = whole[len(ctx):]. enc = encode(add_bos = the model's add_bos,
  parse_special = False). An empty context is [EOS id].
* ll = sum over continuation tokens of log_softmax(logits at p-1)[token p] of
  the sequence ctx + cont (last 2049 tokens if longer); is_greedy = every
  continuation token is the argmax at its preceding position.
* acc = argmax(ll) == gold; acc_norm = argmax(ll / choice_chars) == gold, where
  choice_chars = len(choice) without the delimiter (numpy argmax: first on ties).
  winogrande / lambada report acc only; their acc_norm field equals acc
  (winogrande: both requests share the continuation, choice_chars = its length;
  lambada: acc = is_greedy). lambada perplexity = exp(-mean(ll)).

Run standalone:  .venv/bin/python tests/reference/zeroshot_ref.py [--n 50] [--tasks piqa,boolq] [--jobs 2]
(prints per-task accuracies; the golden is written by make_goldens.py zs).
"""
import json
import math
import os
import re
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from ref_tokenizer import RefTokenizer  # noqa: E402
from llama_ref import LlamaRef, log_softmax_at  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(HERE))
ZS_DATA = os.path.join(ROOT, "..", "shared", "data", "zeroshot")
SMOL = os.path.join(ROOT, "models", "SmolLM2-135M-Instruct.Q4_1.gguf")

TASKS = ["piqa", "arc_easy", "arc_challenge", "hellaswag", "winogrande", "boolq", "lambada"]
DATA_FILES = {
    "piqa": ["piqa/valid.jsonl", "piqa/valid-labels.lst"],
    "arc_easy": ["arc_easy/test.jsonl"],
    "arc_challenge": ["arc_challenge/test.jsonl"],
    "hellaswag": ["hellaswag/validation.jsonl"],
    "winogrande": ["winogrande/validation.jsonl"],
    "boolq": ["boolq/validation.jsonl"],
    "lambada": ["lambada/lambada_test.jsonl"],
}
MAX_LEN = 2048  # HFLM default max_length; inputs keep the last MAX_LEN + 1 tokens
DELIM = " "


# ---------------------------------------------------------------------------
# Tasks -> requests

def _jsonl(rel, n):
    out = []
    with open(os.path.join(ZS_DATA, rel), encoding="utf-8") as f:
        for line in f:
            if n is not None and len(out) >= n:
                break
            out.append(json.loads(line))
    return out


def hellaswag_preprocess(text):
    text = text.strip()
    text = text.replace(" [title]", ". ")
    text = re.sub("\\[.*?\\]", "", text)
    text = text.replace("  ", " ")
    return text


def _mc(idx, context, choices, gold):
    return {"idx": idx, "gold": gold,
            "requests": [(context, DELIM + c) for c in choices],
            "choice_chars": [len(c) for c in choices]}


def load_task(task, n=None):
    """First n examples (file order) of a task as dicts
    {idx, gold, requests: [(context, continuation)], choice_chars: [int]}."""
    ex = []
    if task == "piqa":
        docs = _jsonl("piqa/valid.jsonl", n)
        with open(os.path.join(ZS_DATA, "piqa/valid-labels.lst")) as f:
            labels = [int(x) for x in f.read().split()]
        for i, d in enumerate(docs):
            ex.append(_mc(i, "Question: " + d["goal"] + "\nAnswer:", [d["sol1"], d["sol2"]], labels[i]))
    elif task in ("arc_easy", "arc_challenge"):
        for i, d in enumerate(_jsonl(task + "/test.jsonl", n)):
            ex.append(_mc(i, d["query"], d["choices"], int(d["gold"])))
    elif task == "hellaswag":
        for i, d in enumerate(_jsonl("hellaswag/validation.jsonl", n)):
            ctx = d["ctx_a"] + " " + d["ctx_b"].capitalize()
            ex.append(_mc(i, hellaswag_preprocess(d["activity_label"] + ": " + ctx),
                          [hellaswag_preprocess(e) for e in d["endings"]], int(d["label"])))
    elif task == "winogrande":
        for i, d in enumerate(_jsonl("winogrande/validation.jsonl", n)):
            s = d["sentence"]
            k = s.index("_")
            target = s[k + 1:].strip()
            ex.append({"idx": i, "gold": int(d["answer"]) - 1,
                       "requests": [(s[:k] + d["option1"], DELIM + target),
                                    (s[:k] + d["option2"], DELIM + target)],
                       "choice_chars": [len(target), len(target)]})
    elif task == "boolq":
        for i, d in enumerate(_jsonl("boolq/validation.jsonl", n)):
            ex.append(_mc(i, d["passage"] + "\nQuestion: " + d["question"] + "?\nAnswer:",
                          ["no", "yes"], 1 if d["answer"] else 0))
    elif task == "lambada":
        for i, d in enumerate(_jsonl("lambada/lambada_test.jsonl", n)):
            words = d["text"].split(" ")
            ex.append({"idx": i, "gold": 0,
                       "requests": [(" ".join(words[:-1]), " " + words[-1])],
                       "choice_chars": [len(words[-1])]})
    else:
        raise ValueError(f"unknown task {task!r}")
    return ex


# ---------------------------------------------------------------------------
# Tokenization and scoring

def encode_pair(tok, add_bos, context, continuation):
    """HFLM._encode_pair (and loglikelihood's empty-context case)."""
    if context == "":
        return [tok.vocab.eos], tok.encode(continuation, add_bos=False, parse_special=False)
    n_spaces = len(context) - len(context.rstrip())
    if n_spaces > 0:
        continuation = context[-n_spaces:] + continuation
        context = context[:-n_spaces]
    whole = tok.encode(context + continuation, add_bos=add_bos, parse_special=False)
    ctx = tok.encode(context, add_bos=add_bos, parse_special=False)
    return ctx, whole[len(ctx):]


class Scorer:
    def __init__(self, model_path):
        self.model = LlamaRef(model_path)
        self.tok = RefTokenizer(model_path)
        self.add_bos = self.tok.vocab.add_bos
        self.n_truncated = 0

    def score(self, ctx, cont):
        """(ll, is_greedy) of cont after ctx, one fresh forward of (ctx + cont)[:-1]
        (the last token is never an input), last MAX_LEN + 1 tokens kept."""
        full = (ctx + cont)[-(MAX_LEN + 1):]
        if len(full) < len(ctx) + len(cont):
            self.n_truncated += 1
        inp = full[:-1]
        first = len(inp) - len(cont)  # logit row that predicts cont[0]
        key = tuple(inp)
        if key not in self._cache:
            self._cache[key] = self.model.hidden(inp)
        h = self._cache[key][first:]
        logits = h @ self.model.output.T
        tgt = np.asarray(cont, dtype=np.int64)
        lp = log_softmax_at(logits, tgt)
        ll = float(np.sum(lp))
        greedy = bool(np.all(logits.argmax(axis=1) == tgt))
        return ll, greedy

    def run_example(self, task, ex):
        """Scores one example; returns the golden record (see README)."""
        self._cache = {}  # forwards shared inside one example (same input tokens)
        rec = {"task": task, "idx": ex["idx"], "gold": ex["gold"],
               "ctx_ntok": [], "cont_ntok": [], "choice_chars": list(ex["choice_chars"]),
               "ll": [], "is_greedy": []}
        cont_ids, ctx_last, bad = [], [], []
        for context, continuation in ex["requests"]:
            ctx, cont = encode_pair(self.tok, self.add_bos, context, continuation)
            # Information only: does enc(context) prefix enc(context + continuation)?
            # (The harness uses ctx + whole[len(ctx):] either way.)
            c2, k2 = context, continuation
            sp = len(c2) - len(c2.rstrip())
            if sp:
                c2, k2 = c2[:-sp], c2[-sp:] + k2
            if self.tok.encode(c2 + k2, add_bos=self.add_bos)[:len(ctx)] != ctx:
                bad.append(("prefix", context, continuation))
            # Sanity: the token sequence decodes back to the request's text.
            ids = [t for t in ctx + cont if not (self.add_bos and t == self.tok.vocab.bos)]
            if self.tok.decode(ids) != context + continuation:
                bad.append(("decode", context, continuation))
            ll, greedy = self.score(ctx, cont)
            rec["ctx_ntok"].append(len(ctx))
            rec["cont_ntok"].append(len(cont))
            rec["ll"].append(ll)
            rec["is_greedy"].append(greedy)
            cont_ids.append([int(t) for t in cont])
            ctx_last.append([int(t) for t in ctx[-8:]])
        self._cache = {}
        if task == "lambada":
            rec["acc"] = rec["acc_norm"] = int(rec["is_greedy"][0])
        else:
            lls = np.asarray(rec["ll"], dtype=np.float64)
            rec["acc"] = int(int(np.argmax(lls)) == ex["gold"])
            norm = lls / np.asarray(rec["choice_chars"], dtype=np.float64)
            rec["acc_norm"] = int(int(np.argmax(norm)) == ex["gold"])
        rec["cont_ids"] = cont_ids
        rec["ctx_last_ids"] = ctx_last
        return rec, bad


def stderr(p, n):
    return math.sqrt(p * (1.0 - p) / (n - 1)) if n > 1 else float("nan")


def summarize(records):
    """Per task: n, acc, acc_stderr, acc_norm, acc_norm_stderr (lambada: ppl, not acc_norm)."""
    out = {}
    for task in TASKS:
        rs = [r for r in records if r["task"] == task]
        if not rs:
            continue
        n = len(rs)
        acc = sum(r["acc"] for r in rs) / n
        s = {"n": n, "acc": acc, "acc_stderr": stderr(acc, n)}
        if task == "lambada":
            s["ppl"] = math.exp(-sum(r["ll"][0] for r in rs) / n)
        elif task != "winogrande":
            an = sum(r["acc_norm"] for r in rs) / n
            s["acc_norm"] = an
            s["acc_norm_stderr"] = stderr(an, n)
        out[task] = s
    return out


_SCORER = None


def _worker_init(model_path):
    global _SCORER
    _SCORER = Scorer(model_path)


def _worker(item):
    task, ex = item
    t0 = time.time()
    n0 = _SCORER.n_truncated
    rec, bad = _SCORER.run_example(task, ex)
    return rec, bad, _SCORER.n_truncated - n0, time.time() - t0


def run(model_path, n, tasks=TASKS, jobs=2, log=print):
    """Scores the first n examples of each task. Returns a dict: records (task
    order, file order), n_decode_mismatch, n_prefix_mismatch (information only),
    seconds (per task, summed over workers), n_truncated.

    jobs > 1: that many worker processes (spawned, each with its own model and
    single-threaded BLAS: OpenBLAS threads spin badly when the cores are shared),
    examples handed out one at a time; results do not depend on jobs."""
    items = [(task, ex) for task in tasks for ex in load_task(task, n)]
    if jobs > 1:
        import multiprocessing as mp
        saved = {k: os.environ.get(k) for k in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS")}
        os.environ.update({k: "1" for k in saved})  # inherited by the spawned workers
        try:
            pool = mp.get_context("spawn").Pool(jobs, _worker_init, (model_path,))
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
        results = pool.imap(_worker, items)
    else:
        pool = None
        _worker_init(model_path)
        results = map(_worker, items)
    records, n_bad, n_prefix, n_trunc, secs = [], 0, 0, 0, {}
    try:
        for (task, ex), (rec, bad, trunc, dt) in zip(items, results):
            for kind, c, k in bad:
                if kind == "prefix":
                    n_prefix += 1
                    log(f"  note: {task} #{ex['idx']} enc(context) is not a prefix of "
                        f"enc(context + continuation): {c[-40:]!r} + {k[:40]!r}")
                else:
                    n_bad += 1
                    log(f"  MISMATCH decode {task} #{ex['idx']}: {c[-60:]!r} + {k!r}")
            records.append(rec)
            n_trunc += trunc
            secs[task] = secs.get(task, 0.0) + dt
            if len(records) == len(items) or items[len(records)][0] != task:  # task's last example
                s = summarize([r for r in records if r["task"] == task])[task]
                extra = f" ppl {s['ppl']:.4f}" if "ppl" in s else (
                    f" acc_norm {s['acc_norm']:.4f}" if "acc_norm" in s else "")
                log(f"  {task:14s} n {s['n']} acc {s['acc']:.4f}{extra} ({secs[task]:.1f}s)")
    finally:
        if pool is not None:
            pool.close()
            pool.join()
    if n_trunc:
        log(f"  note: {n_trunc} requests truncated to the last {MAX_LEN + 1} tokens")
    return {"records": records, "n_decode_mismatch": n_bad, "n_prefix_mismatch": n_prefix,
            "seconds": secs, "n_truncated": n_trunc}


def main():
    import argparse
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=SMOL)
    ap.add_argument("--n", type=int, default=50, help="first N examples per task (0: all)")
    ap.add_argument("--tasks", default=",".join(TASKS))
    ap.add_argument("--jsonl", help="also write the per-example records here")
    ap.add_argument("--jobs", type=int, default=2, help="worker processes (1: in this process)")
    a = ap.parse_args()
    t0 = time.time()
    res = run(a.model, a.n or None, a.tasks.split(","), a.jobs)
    records = res["records"]
    if a.jsonl:
        with open(a.jsonl, "w") as f:
            for r in records:
                f.write(json.dumps(r) + "\n")
    print(json.dumps(summarize(records), indent=1))
    print(f"decode mismatches: {res['n_decode_mismatch']}, context-prefix mismatches "
          f"(information): {res['n_prefix_mismatch']}; {time.time() - t0:.1f}s")


if __name__ == "__main__":
    main()
