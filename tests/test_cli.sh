#!/usr/bin/env bash
# CLI behaviour on bad input: exactly one error line, naming the file and the
# problem, exit != 0 (informational lines such as "model: ..." may precede it),
# and --help that works for every command.
set -u
cd "$(dirname "$0")/.."
G=${B:-build}/gptvq
D=${GQ_DATA:-../shared/data}
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
fail=0
expect_error() { # desc, grep-pattern, command...
    local desc=$1 pat=$2; shift 2
    "$@" >"$T/out" 2>"$T/err"
    local rc=$?
    local lines; lines=$(grep -c "error:" "$T/err")
    if [ $rc -eq 0 ] || [ "$lines" -ne 1 ] || ! grep "error:" "$T/err" | grep -q -- "$pat"; then
        echo "FAIL: $desc: rc=$rc, stderr ($lines lines):"; cat "$T/err"; fail=1
    else
        echo "ok: $desc: $(grep "error:" "$T/err")"
    fi
}
expect_ok() {
    local desc=$1; shift
    if "$@" >"$T/out" 2>"$T/err"; then echo "ok: $desc"; else echo "FAIL: $desc"; cat "$T/err"; fail=1; fi
}

expect_error "missing model" "nope.gguf" $G ppl nope.gguf "$D/tinystories/tinystories_sample.txt"
head -c 1000 "$D/models/stories260K/stories260K.gguf" >"$T/trunc.gguf"
expect_error "truncated gguf" "trunc.gguf" $G ppl "$T/trunc.gguf" "$D/tinystories/tinystories_sample.txt"
printf 'GGUF\x63\x00\x00\x00' >"$T/v99.gguf"; head -c 100 /dev/zero >>"$T/v99.gguf"
expect_error "bad gguf version" "v99.gguf" $G inspect "$T/v99.gguf"
printf 'NOPE' >"$T/bad.gguf"; head -c 100 /dev/zero >>"$T/bad.gguf"
expect_error "wrong magic" "bad.gguf" $G generate "$T/bad.gguf" -n 4
head -c 5000 "$D/models/stories260K/stories260K.bin" >"$T/trunc.bin"
cp "$D/models/stories260K/tok512.bin" "$T/tokenizer.bin"
expect_error "truncated llama2.c" "trunc.bin" $G generate "$T/trunc.bin" -n 4
expect_error "missing text" "missing.txt" $G ppl "$D/models/stories260K/stories260K.gguf" "$T/missing.txt"
expect_error "bad option value" "--ctx" $G ppl "$D/models/stories260K/stories260K.gguf" x --ctx abc
expect_error "unknown option" "--bogus" $G generate "$D/models/stories260K/stories260K.gguf" --bogus
expect_error "unknown device" "expected cpu or cuda" $G ppl "$D/models/stories260K/stories260K.gguf" \
    "$D/tinystories/tinystories_sample.txt" --device tpu
# --device cuda runs where a GPU is (test_backend compares it with the CPU), else one error line
for cmd in ppl generate; do
    args=("$D/models/stories260K/stories260K.gguf"); [ $cmd = ppl ] && args+=("$D/tinystories/tinystories_sample.txt")
    $G $cmd "${args[@]}" --device cuda >"$T/out" 2>"$T/err"; rc=$?
    if [ $rc -eq 0 ]; then echo "ok: $cmd --device cuda ran (a GPU is present)"
    elif [ $rc -eq 2 ] && [ "$(grep -c "error:" "$T/err")" -eq 1 ] && grep -q "error: $cmd: --device cuda: " "$T/err"; then
        echo "ok: $cmd --device cuda without a usable GPU: $(cat "$T/err")"
    else echo "FAIL: $cmd --device cuda (rc=$rc)"; cat "$T/err"; fail=1; fi
done
expect_error "text shorter than a window" "tinystories_sample.txt: .*fewer than one window" $G ppl "$D/models/stories260K/stories260K.gguf" "$D/tinystories/tinystories_sample.txt" --ctx 100000 --quiet
S=$D/models/stories260K/stories260K.gguf
expect_error "eval: unknown task" "unknown task 'mmlu'" $G eval "$S" --tasks piqa,mmlu
expect_error "eval: task twice" "'boolq' given twice" $G eval "$S" --tasks boolq,boolq
expect_error "eval: --limit 0" "--limit" $G eval "$S" --limit 0
expect_error "eval: missing data" "$T/nodata/boolq/validation.jsonl" $G eval "$S" --tasks boolq --data-dir "$T/nodata" --quiet
mkdir -p "$T/zs/winogrande"
printf '{"sentence": "A _ b.", "option1": "x", "option2": "y", "answer": "1"}\n{"sentence": "no blank", "option1": "x", "option2": "y", "answer": "1"}\n' >"$T/zs/winogrande/validation.jsonl"
expect_error "eval: bad example" "validation.jsonl:2: sentence has no \"_\"" $G eval "$S" --tasks winogrande --data-dir "$T/zs" --json "$T/zs.json" --quiet
[ -e "$T/zs.json" ] && { echo "FAIL: eval left $T/zs.json behind"; fail=1; }
mkdir -p "$T/zs1/boolq"
printf '{"question": "is it", "passage": "It is.", "answer": true}\n' >"$T/zs1/boolq/validation.jsonl"
expect_error "eval: offset past the end" "1 examples, none after the first 1" $G eval "$S" --tasks boolq --data-dir "$T/zs1" --offset 1 --quiet
expect_ok "eval on stories260K" $G eval "$S" --tasks winogrande,lambada --limit 3 --quiet --json "$T/ok.json" --samples "$T/ok.jsonl"
[ "$(wc -l <"$T/ok.jsonl")" -eq 6 ] && grep -q '"mean_acc"' "$T/ok.json" || { echo "FAIL: eval outputs"; fail=1; }
for c in ppl generate inspect eval bench; do expect_ok "$c --help" $G $c --help; done
# bench: the llama-bench-shaped table (a pp and a tg row), and JSON lines with every repetition
expect_ok "bench md" $G bench "$S" -p 16 -n 8 -r 2 -t 1
grep -Eq '^\| llama .* \| +1 \| +pp16 \| +[0-9.]+ ± [0-9.]+ \|$' "$T/out" && grep -Eq '\| +tg8 \| +[0-9.]+ ± [0-9.]+ \|$' "$T/out" ||
    { echo "FAIL: bench table"; cat "$T/out"; fail=1; }
expect_ok "bench json" $G bench "$S" -p 0 -n 8 -r 3 -o json
.venv/bin/python -c 'import json,sys; d=[json.loads(l) for l in open(sys.argv[1])]; assert len(d)==1 and d[0]["test"]=="tg8" and len(d[0]["samples_ts"])==3 and d[0]["bytes_per_token"]>0' "$T/out" 2>/dev/null ||
    { echo "FAIL: bench json"; cat "$T/out"; fail=1; }
expect_error "bench: nothing to measure" "nothing to measure" $G bench "$S" -p 0 -n 0
expect_error "bench: bad -o" "md, csv or json" $G bench "$S" -o xml
expect_ok "inspect gguf" $G inspect "$D/models/stories260K/stories260K.gguf"
grep -q "blk.0.attn_q.weight" "$T/out" || { echo "FAIL: inspect lists no tensors"; fail=1; }
expect_ok "generate from .bin" $G generate "$D/models/stories260K/stories260K.bin" -n 16 --ids --ignore-eos
[ "$(head -3 "$T/out")" = "$(head -3 "$D/models/stories260K/greedy_t0_tokens.txt")" ] || { echo "FAIL: CLI greedy ids differ"; fail=1; }
exit $fail
