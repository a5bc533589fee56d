#!/usr/bin/env python3
"""A second evaluation text, of another kind than WikiText (issue 24): the
HellaSwag validation contexts (ActivityNet captions and WikiHow how-to steps,
everyday procedural English) each completed with its gold ending, cleaned as
lm-evaluation-harness cleans them (" [title]" -> ". ", bracketed tags removed,
double spaces collapsed), in file order, one example a paragraph (joined with
a blank line); an example whose first sentences end the paragraph before
(ActivityNet's consecutive clips) continues it instead of repeating them.
Python standard library only.

Usage: python3 bench/make_second_text.py [OUT] [DATA_DIR]
  (defaults build/eval/hellaswag_ctx_gold.txt and ../shared/data/zeroshot)
Then e.g.: build/gptvq ppl MODEL build/eval/hellaswag_ctx_gold.txt --max-windows 8
"""
import json
import os
import re
import sys


def clean(text):
    text = text.strip().replace(" [title]", ". ")
    text = re.sub(r"\[.*?\]", "", text)
    return text.replace("  ", " ")


def overlap(prev, text):
    """Length of the longest run of whole sentences starting `text` that ends `prev` (0: none)."""
    ends = [m.end() for m in re.finditer(r"[.!?](?= |$)", text)]
    for e in reversed(ends):
        if prev.endswith(text[:e]):
            return e
    return 0


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else "build/eval/hellaswag_ctx_gold.txt"
    data = sys.argv[2] if len(sys.argv) > 2 else "../shared/data/zeroshot"
    paras = []
    merged = 0
    with open(os.path.join(data, "hellaswag", "validation.jsonl"), encoding="utf-8") as f:
        for line in f:
            ex = json.loads(line)
            ctx_a = clean(ex["ctx_a"])
            rest = clean((ex["ctx_b"].capitalize() + " " if ex["ctx_b"] else "") + ex["endings"][int(ex["label"])])
            # consecutive ActivityNet examples continue each other (an example
            # starts with sentences that end the one before): one paragraph, no repeats
            text = ctx_a + " " + rest if ctx_a else rest
            cut = overlap(paras[-1], text) if paras else 0
            if cut:
                paras[-1] += " " + text[cut:].lstrip()
                merged += 1
            else:
                paras.append(text)
    os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
    tmp = out + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write("\n\n".join(paras) + "\n")
    os.replace(tmp, out)
    print(f"wrote {out}: {len(paras)} paragraphs ({merged} examples continued the one before), "
          f"{os.path.getsize(out)} bytes")


if __name__ == "__main__":
    main()
