#!/usr/bin/env bash
# The direction of dependence (docs/architecture.md), checked three ways:
#  1. every #include "..." of a file in src/<layer>/ names a file of its own
#     layer or of a lower one (or the public gptvq.h);
#  2. every symbol an object of the library takes from another object is
#     defined in its own layer or a lower one (calls declared by hand included);
#  3. no circle between the library's files (tsort over who calls whom);
# plus no source file over MAX_LINES lines.
set -u
cd "$(dirname "$0")/.."
B=${B:-build}
# The layers, bottom up. A file may use its own layer and those left of it.
LAYERS="util io format kern backend model quant eval"
MAX_LINES=1500
fail=0
rank() {
    local i=0 l
    for l in $LAYERS; do [ "$l" = "$1" ] && { echo $i; return; }; i=$((i + 1)); done
    echo -1
}

# 1. includes
for f in src/*/*.[ch] src/*/*.cu src/*/*.cuh; do
    [ -e "$f" ] || continue
    from=$(basename "$(dirname "$f")")
    rf=$(rank "$from")
    [ "$rf" -ge 0 ] || { echo "FAIL: $f: folder '$from' is not a layer ($LAYERS)"; fail=1; continue; }
    while IFS= read -r inc; do
        [ "$inc" = gptvq.h ] && continue
        case "$inc" in
            */*) path=$(realpath -m --relative-to=src "src/$inc")
                 [ -e "src/$path" ] || path=$(realpath -m --relative-to=src "$(dirname "$f")/$inc") ;;
            *) path="$from/$inc" ;;
        esac
        [ -e "src/$path" ] || { echo "FAIL: $f includes \"$inc\", which is not a file under src/"; fail=1; continue; }
        to=${path%%/*}
        rt=$(rank "$to")
        if [ "$rt" -lt 0 ] || [ "$rt" -gt "$rf" ]; then
            echo "FAIL: $f ($from) includes \"$inc\" ($to): a higher layer"
            fail=1
        fi
    done < <(sed -n 's/^[[:space:]]*#[[:space:]]*include[[:space:]]*"\([^"]*\)".*/\1/p' "$f")
done

# 2. and 3. symbols of the library's objects (built by `make`)
objs=()
for c in src/*/*.c; do
    o="$B/${c%.c}.o"
    [ -e "$o" ] || { echo "FAIL: $o missing (run make first)"; fail=1; continue; }
    objs+=("$o")
done
deps=$(mktemp)
trap 'rm -f "$deps"' EXIT
nm -A "${objs[@]}" 2>/dev/null | awk -v B="$B/src/" -v layers="$LAYERS" '
    BEGIN { n = split(layers, L, " "); for (i = 1; i <= n; i++) R[L[i]] = i }
    {
        split($1, a, ":"); obj = a[1]; sub(B, "", obj)
        if (NF == 3 && $2 ~ /^[TDBRVWC]$/) def[$3] = obj
        else if ($(NF - 1) == "U") { nu++; uo[nu] = obj; us[nu] = $NF }
    }
    END {
        bad = 0
        for (i = 1; i <= nu; i++) {
            d = def[us[i]]
            if (d == "" || d == uo[i]) continue
            split(uo[i], p, "/"); split(d, q, "/")
            if (R[q[1]] > R[p[1]]) { printf "FAIL: %s (%s) calls %s of %s (%s): a higher layer\n", uo[i], p[1], us[i], d, q[1]; bad = 1 }
            print d, uo[i] > "/dev/stderr"
        }
        exit bad
    }' 2>"$deps" || fail=1
if [ ! -s "$deps" ]; then
    echo "FAIL: no dependencies between the library's objects found (nm output not understood)"
    fail=1
elif ! sort -u "$deps" | tsort >/dev/null 2>"$deps.err"; then
    echo "FAIL: a circle between the library's files:"
    head -n 12 "$deps.err"
    fail=1
fi
rm -f "$deps.err"

# file sizes
for f in src/*/* tools/*.c include/*.h; do
    n=$(wc -l < "$f")
    [ "$n" -le $MAX_LINES ] || { echo "FAIL: $f has $n lines (at most $MAX_LINES)"; fail=1; }
done

[ $fail -eq 0 ] && echo "layers: $LAYERS (then tools): includes, calls and file sizes in order"
exit $fail
