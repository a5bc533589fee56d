// alloc.c - bit allocation across linears under one budget (issue 24).
//
// Each item (a linear) has options (a configuration: its stored bits and the
// layer objective tr(E H Eᵀ) it reaches); one option per item is chosen to
// minimise Σ err with Σ bits <= budget. The walk: every item starts at its
// cheapest option; of the options on each item's lower convex hull in the
// (bits, err) plane, the next step with the largest err decrease per bit is
// taken while it fits; the walk stops at the first best step that does not.
// Every point of this walk minimises Σ err + λ Σ bits for some λ >= 0
// (the steps are taken in decreasing slope order), so no choice with at most
// as many bits has a lower Σ err (tests/test_gptq.c checks it against brute
// force). What it leaves unused is less than that last step.
#include "quant/quant.h"
#include "util/common.h"

// Lower convex hull of one item's options (indices into bits/err, fewest bits
// first), err strictly decreasing along it; returns its length.
static int item_hull(int n, const int64_t *bits, const double *err, int *hull) {
    int order[GQ_ALLOC_MAX_OPT];
    for (int j = 0; j < n; j++) order[j] = j;
    for (int a = 1; a < n; a++) // insertion sort by bits, then err, then index
        for (int b = a; b > 0; b--) {
            const int p = order[b - 1], q = order[b];
            if (bits[p] < bits[q] || (bits[p] == bits[q] && (err[p] < err[q] || (err[p] == err[q] && p < q)))) break;
            order[b - 1] = q, order[b] = p;
        }
    int h = 0;
    for (int a = 0; a < n; a++) {
        const int j = order[a];
        if (h > 0 && err[j] >= err[hull[h - 1]]) continue; // more bits, no gain
        // drop hull points above the chord from their predecessor to j
        while (h >= 2) {
            const int i0 = hull[h - 2], i1 = hull[h - 1];
            const double s01 = (err[i0] - err[i1]) / (double)(bits[i1] - bits[i0]);
            const double s0j = (err[i0] - err[j]) / (double)(bits[j] - bits[i0]);
            if (s0j < s01) break;
            h--;
        }
        hull[h++] = j;
    }
    return h;
}

enum gq_status gq_bit_alloc(int n_items, const int *n_opt, const int64_t *bits, const double *err, int64_t budget,
                            int *choice, int64_t *used) {
    int *hull = malloc(sizeof(int) * (size_t)(n_items > 0 ? n_items : 1) * GQ_ALLOC_MAX_OPT);
    int *hn = malloc(sizeof(int) * (size_t)(n_items > 0 ? n_items : 1)), *pos = calloc((size_t)(n_items > 0 ? n_items : 1), sizeof(int));
    size_t *off = malloc(sizeof(size_t) * (size_t)(n_items > 0 ? n_items : 1));
    enum gq_status st = GQ_OK;
    if (!hull || !hn || !pos || !off) {
        st = gq_fail(GQ_ERR_NOMEM, "bit allocation: %d items", n_items);
        goto done;
    }
    int64_t total = 0;
    for (int i = 0, o = 0; i < n_items; o += n_opt[i], i++) {
        if (n_opt[i] < 1 || n_opt[i] > GQ_ALLOC_MAX_OPT) {
            st = gq_fail(GQ_ERR_ARG, "bit allocation: item %d has %d options (1..%d)", i, n_opt[i], GQ_ALLOC_MAX_OPT);
            goto done;
        }
        for (int j = 0; j < n_opt[i]; j++)
            if (!(err[o + j] >= 0) || !isfinite(err[o + j]) || bits[o + j] < 0) {
                st = gq_fail(GQ_ERR_ARG, "bit allocation: item %d option %d: bits %lld, error %g", i, j,
                             (long long)bits[o + j], err[o + j]);
                goto done;
            }
        off[i] = (size_t)o;
        hn[i] = item_hull(n_opt[i], bits + o, err + o, hull + (size_t)i * GQ_ALLOC_MAX_OPT);
        total += bits[o + hull[(size_t)i * GQ_ALLOC_MAX_OPT]];
    }
    if (total > budget) {
        st = gq_fail(GQ_ERR_ARG, "bit allocation: the cheapest options already take %lld bits (budget %lld)",
                     (long long)total, (long long)budget);
        goto done;
    }
    for (;;) {
        int best = -1;
        double best_s = 0;
        for (int i = 0; i < n_items; i++) {
            if (pos[i] + 1 >= hn[i]) continue;
            const int *hp = hull + (size_t)i * GQ_ALLOC_MAX_OPT;
            const size_t a = off[i] + (size_t)hp[pos[i]], b = off[i] + (size_t)hp[pos[i] + 1];
            const double s = (err[a] - err[b]) / (double)(bits[b] - bits[a]);
            if (best < 0 || s > best_s) best = i, best_s = s; // ties: the first item
        }
        if (best < 0) break;
        const int *hp = hull + (size_t)best * GQ_ALLOC_MAX_OPT;
        const int64_t step = bits[off[best] + (size_t)hp[pos[best] + 1]] - bits[off[best] + (size_t)hp[pos[best]]];
        if (total + step > budget) break;
        total += step, pos[best]++;
    }
    for (int i = 0; i < n_items; i++) choice[i] = hull[(size_t)i * GQ_ALLOC_MAX_OPT + pos[i]];
    *used = total;
done:
    free(hull), free(hn), free(pos), free(off);
    return st;
}
