#!/usr/bin/env bash
# Zero-shot table: `gptvq eval` of each MODEL on each task, one process per
# (model, task) so that finished tasks are kept when a long run is stopped
# (rerunning skips the JSON files that exist), then a markdown table of acc,
# acc_norm and their standard errors, time and examples/s.
#
#   bash bench/eval_table.sh OUTDIR MODEL [MODEL ...]
#
# Environment: TASKS (default all seven, smallest first), LIMIT (first N
# examples per task; default all), THREADS, EVAL_OPTS (e.g. --dequantize: f32
# weights; since the batched scoring slower than the compressed kernels,
# 15.6 against 22.4 examples/s on PIQA with the VQ 2D 2.125 file).
# Several invocations on the same OUTDIR share the work: each (model, task) is
# claimed with a lock directory OUTDIR/NAME.TASK....json.lock while it runs
# (a killed run leaves it behind: remove it to redo that pair).
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 2 ] || { echo "usage: bash bench/eval_table.sh OUTDIR MODEL [MODEL ...]" >&2; exit 2; }
out=$1; shift
mkdir -p "$out"
make -s build/gptvq
TASKS=${TASKS:-winogrande,arc_challenge,piqa,arc_easy,boolq,lambada,hellaswag}
lim=(); [ -n "${LIMIT:-}" ] && lim=(--limit "$LIMIT")
thr=(); [ -n "${THREADS:-}" ] && thr=(--threads "$THREADS")
for m in "$@"; do
    name=$(basename "$m" .gguf)
    for t in ${TASKS//,/ }; do
        j=$out/$name.$t${LIMIT:+.limit$LIMIT}.json
        [ -s "$j" ] && continue
        mkdir "$j.lock" 2>/dev/null || { echo "eval: $name $t claimed by another run, skipped" >&2; continue; }
        echo "eval: $name $t" >&2
        # shellcheck disable=SC2086
        build/gptvq eval "$m" --tasks "$t" "${lim[@]}" "${thr[@]}" --json "$j" ${EVAL_OPTS:-} >/dev/null
        rmdir "$j.lock"
    done
done
.venv/bin/python - "$out" "$TASKS" "${LIMIT:-}" "$@" <<'EOF'
import json, math, os, sys
out, tasks, limit, models = sys.argv[1], sys.argv[2].split(","), sys.argv[3], sys.argv[4:]
print("| model | " + " | ".join(tasks) + " | mean acc |")
print("| --- |" + " --- |" * (len(tasks) + 1))
for m in models:
    name = os.path.basename(m)[:-5] if m.endswith(".gguf") else os.path.basename(m)
    cells, accs, ses = [], [], []
    for t in tasks:
        p = f"{out}/{name}.{t}" + (f".limit{limit}" if limit else "") + ".json"
        if not os.path.exists(p):
            cells.append("–")
            continue
        r = json.load(open(p))["results"][t]
        c = f"{r['acc']:.4f} ± {r['acc_stderr']:.4f}"
        if "acc_norm" in r:
            c += f" (norm {r['acc_norm']:.4f} ± {r['acc_norm_stderr']:.4f})"
        if "ppl" in r:
            c += f" (ppl {r['ppl']:.2f})"
        c += f" [n {r['n']}, {r['seconds']:.0f} s]"
        cells.append(c)
        accs.append(r["acc"]); ses.append(r["acc_stderr"])
    mean = f"{sum(accs)/len(accs):.4f} ± {math.sqrt(sum(s*s for s in ses))/len(ses):.4f}" if accs and len(accs) == len(tasks) else "–"
    print(f"| {name} | " + " | ".join(cells) + f" | {mean} |")
EOF
