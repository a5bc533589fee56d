// gemv_vq512.c - the AVX-512 (VNNI, VBMI) decode GEMVs of packed GPTVQ
// matrices: NIB, D2K64 / D2K64H, D4K256 / D2K256 (gemv_vq.c's header
// comment describes them; contract: qmatmul.h).
#include "kern/gemv_vq.h"

// ---------------------------------------------------------------------------
// Int8 kernels: AVX-512 (VNNI, VBMI).

// gq_round_i8 on 16 lanes: the same operations, bit-identical codes and scale.
AVX512_FN static float round_i8_avx512(const float *x, int n, int8_t *q) {
    const __m512 sgn = _mm512_set1_ps(-0.0f);
    __m512 m = _mm512_setzero_ps();
    for (int i = 0; i < n; i += 16) {
        const __mmask16 k = n - i >= 16 ? 0xFFFF : (__mmask16)((1u << (n - i)) - 1);
        m = _mm512_max_ps(m, _mm512_andnot_ps(sgn, _mm512_maskz_loadu_ps(k, x + i)));
    }
    const float mx = _mm512_reduce_max_ps(m), s = mx / 127, inv = s > 0 ? 1 / s : 0;
    const __m512 vi = _mm512_set1_ps(inv), ph = _mm512_set1_ps(0.5f), nh = _mm512_set1_ps(-0.5f);
    for (int i = 0; i < n; i += 16) {
        const __mmask16 k = n - i >= 16 ? 0xFFFF : (__mmask16)((1u << (n - i)) - 1);
        const __m512 t = _mm512_mul_ps(_mm512_maskz_loadu_ps(k, x + i), vi);
        const __m512 hv = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(t, _mm512_setzero_ps(), _CMP_LT_OQ), ph, nh);
        _mm512_mask_cvtsepi32_storeu_epi8(q + i, k, _mm512_cvttps_epi32(_mm512_add_ps(t, hv)));
    }
    return s;
}

// Σ of n int8 codes (n may be 0).
AVX512_FN static int32_t sum_i8_avx512(const int8_t *q, int n) {
    __m512i acc = _mm512_setzero_si512();
    for (int i = 0; i < n; i += 64) {
        const __mmask64 k = n - i >= 64 ? ~0ull : (1ull << (n - i)) - 1;
        const __m512i z = _mm512_maskz_loadu_epi8(k, q + i);
        acc = _mm512_add_epi64(acc, _mm512_sad_epu8(_mm512_mask_add_epi8(z, k, z, _mm512_set1_epi8((char)0x80)), _mm512_setzero_si512()));
    }
    return (int32_t)(_mm512_reduce_add_epi64(acc) - 128 * (int64_t)n);
}

static inline __mmask64 mask64(int n) { return n >= 64 ? ~0ull : n <= 0 ? 0 : (1ull << n) - 1; }

// x for the AVX-512 kernels: permuted (gathers), rounded per column tile,
// the codes arranged in planes (one byte permute per plane and 64 vectors)
// and summed (per NIB half, else per column tile).
AVX512_FN void gq_vq_prep_avx512(const struct gq_vqrt *v, const float *x, struct vqx *X) {
    const struct gq_vqpack_hdr *h = &v->p.h;
    const int n = h->cols, nv = v->nv, d = h->d, no = h->n_out, nct = h->n_ct, nc = nv * d;
    float *xp = (float *)X->xp;
    if (v->perm)
        for (int p = 0; p < n; p += 16) {
            const __mmask16 k = n - p >= 16 ? 0xFFFF : (__mmask16)((1u << (n - p)) - 1);
            const __m512i ix = _mm512_maskz_loadu_epi32(k, v->perm + p);
            _mm512_mask_storeu_ps(xp + p, k, _mm512_mask_i32gather_ps(_mm512_setzero_ps(), k, ix, x, 4));
        }
    else
        memcpy(xp, x, sizeof(float) * n);
    for (int ct = 0; ct < nct; ct++)
        X->xs[ct] = round_i8_avx512(xp + v->ct_start[ct], v->ct_start[ct + 1] - v->ct_start[ct], X->xq + v->ct_start[ct]);
    const int8_t *xc = X->xq + no;
    const int nch = (nv + 63) / 64;
    const bool short_tail = v->fast == GQ_VQF_NIB && nv % 64 && nv % 64 <= 32;
    for (int c = 0; c < nch; c++) {
        const int b0 = 64 * d * c; // first code of the chunk
        const __m512i z0 = _mm512_maskz_loadu_epi8(mask64(nc - b0), xc + b0);
        const __m512i z1 = d >= 2 ? _mm512_maskz_loadu_epi8(mask64(nc - b0 - 64), xc + b0 + 64) : _mm512_setzero_si512();
        for (int j = 0; j < d; j++) {
            const __m512i id = _mm512_loadu_si512(v->pix + 64 * (short_tail && c == nch - 1 ? 4 + j : j));
            __m512i pl;
            if (d <= 2) pl = _mm512_permutex2var_epi8(z0, id, z1);
            else {
                const __m512i z2 = _mm512_maskz_loadu_epi8(mask64(nc - b0 - 128), xc + b0 + 128);
                const __m512i z3 = _mm512_maskz_loadu_epi8(mask64(nc - b0 - 192), xc + b0 + 192);
                const __m512i lo = _mm512_permutex2var_epi8(z0, id, z1), hi = _mm512_permutex2var_epi8(z2, id, z3);
                pl = _mm512_inserti64x4(lo, _mm512_castsi512_si256(hi), 1);
            }
            _mm512_storeu_si512(X->pl + (size_t)j * X->pstride + 64 * c, pl);
        }
    }
    if (X->cr) // the lanes' −128 · Σ x of every step (the correction the normalised NIB rows start from)
        for (int s = 0; s < (nv + 63) / 64; s++) {
            const __m512i one = _mm512_set1_epi8(1);
            __m512i sx = _mm512_dpbusd_epi32(_mm512_setzero_si512(), one, _mm512_loadu_si512(X->pl + 64 * s));
            if (d == 2) sx = _mm512_dpbusd_epi32(sx, one, _mm512_loadu_si512(X->pl + X->pstride + 64 * s));
            _mm512_store_si512(X->cr + 16 * s, _mm512_sub_epi32(_mm512_setzero_si512(), _mm512_slli_epi32(sx, 7)));
        }
    if (v->fast == GQ_VQF_NIB || v->fast == GQ_VQF_D2K64H)
        for (int hh = 0; hh < (nv + 31) / 32; hh++) X->sum[hh] = sum_i8_avx512(xc + 32 * d * hh, gq_min_i(32 * d, nc - 32 * d * hh));
    else
        for (int ct = 0; ct < nct; ct++) X->sum[ct] = sum_i8_avx512(X->xq + v->ct_start[ct], v->ct_start[ct + 1] - v->ct_start[ct]);
}

// One NIB step of a row: the 32 index bytes at ib (nb < 32: only nb of
// them, zeros after) expanded to 64 4-bit indices in the step's lane order:
// the bytes in both 256-bit halves, then one GF(2) affine map per qword
// keeps the low nibble of each byte (lower half) or moves its high nibble
// down (upper half).
AVX512_FN static GQ_INLINE __m512i nib_idx(const uint8_t *ib, int nb) {
    const __m512i lohi = _mm512_setr_epi64(0x0102040800000000ll, 0x0102040800000000ll, 0x0102040800000000ll,
                                           0x0102040800000000ll, 0x1020408000000000ll, 0x1020408000000000ll,
                                           0x1020408000000000ll, 0x1020408000000000ll);
    const __m256i raw = nb >= 32 ? _mm256_loadu_si256((const __m256i *)ib) : _mm256_maskz_loadu_epi8((1u << nb) - 1, ib);
    return _mm512_gf2p8affine_epi64_epi8(_mm512_broadcast_i64x4(raw), lohi, 0);
}

// Σ over the steps of a row: the exact int32 dot products of a step (both
// halves), scaled by the halves' scales into 16 float lanes.
AVX512_FN static GQ_INLINE __m512 nib_step(__m512 f, __m512i z, const __m512i *tb, __m512 sv, const int8_t *x0,
                                           const int8_t *x1, const int D) {
    __m512i a = _mm512_dpbusd_epi32(_mm512_setzero_si512(), _mm512_shuffle_epi8(tb[0], z), _mm512_loadu_si512(x0));
    if (D == 2) a = _mm512_dpbusd_epi32(a, _mm512_shuffle_epi8(tb[1], z), _mm512_loadu_si512(x1));
    return _mm512_fmadd_ps(_mm512_cvtepi32_ps(a), sv, f);
}

// Rows [ra, rb) of one row tile, two at a time (the tables, scales and x
// loads shared): y[r] (+)= Σ lanes + K + outliers.
// The short last step (<= 32 vectors) on 256 bits: both lanes the half's
// table, x in the order of nib_vec's short form.
AVX512_FN static GQ_INLINE __m512 nib_tail(__m512 f, const uint8_t *ib, int nb, __m256i t0, __m256i t1, __m256 sc,
                                           const int8_t *x0, const int8_t *x1, const int D) {
    const __m256i raw = _mm256_broadcastsi128_si256(_mm_maskz_loadu_epi8((__mmask16)((1u << nb) - 1), ib));
    const __m256i z = _mm256_and_si256(_mm256_srlv_epi64(raw, _mm256_setr_epi64x(0, 0, 4, 4)), _mm256_set1_epi8(15));
    __m256i a = _mm256_dpbusd_epi32(_mm256_setzero_si256(), _mm256_shuffle_epi8(t0, z), _mm256_loadu_si256((const __m256i *)x0));
    if (D == 2) a = _mm256_dpbusd_epi32(a, _mm256_shuffle_epi8(t1, z), _mm256_loadu_si256((const __m256i *)x1));
    return _mm512_add_ps(f, _mm512_zextps256_ps512(_mm256_mul_ps(_mm256_cvtepi32_ps(a), sc)));
}

AVX512_FN static GQ_INLINE void nib_rows_avx512(const struct gq_vqrt *v, const struct vqx *X, int ra, int rb,
                                                const __m512i *tb, const __m512 *sv, float K, const int D, float *y,
                                                bool accumulate) {
    const int nv = v->nv, nfull = nv / 64, tail = (nv % 64) / 2, rowb = nv / 2;
    const bool short_tail = tail && tail <= 16; // <= 32 vectors: a 256-bit step
    const __m256i tt0 = short_tail ? _mm512_castsi512_si256(tb[D * nfull]) : _mm256_setzero_si256();
    const __m256i tt1 = short_tail ? _mm512_castsi512_si256(tb[D * nfull + D - 1]) : tt0;
    const __m256 tsc = short_tail ? _mm512_castps512_ps256(sv[nfull]) : _mm256_setzero_ps();
    const uint8_t *is = v->p.part[GQ_VQP_IDX];
    const int8_t *p0 = X->pl, *p1 = X->pl + X->pstride;
    const bool outl = v->p.h.n_out > 0;
    int r = ra;
    for (; r + 4 <= rb; r += 4) {
        const uint8_t *ib = is + (size_t)r * rowb;
        for (int o = 0; o < 4 * rowb; o += 64) _mm_prefetch((const char *)(ib + 8 * (size_t)rowb + o), _MM_HINT_T0); // two groups ahead
        __m512 f0 = _mm512_setzero_ps(), f1 = _mm512_setzero_ps(), f2 = _mm512_setzero_ps(), f3 = _mm512_setzero_ps();
        for (int s = 0; s < nfull + (tail > 0 && !short_tail); s++) {
            const int nb = s < nfull ? 32 : tail;
            const __m512i x0 = _mm512_loadu_si512(p0 + 64 * s), x1 = D == 2 ? _mm512_loadu_si512(p1 + 64 * s) : x0;
            const __m512i t0 = tb[D * s], t1 = D == 2 ? tb[D * s + 1] : t0;
            const __m512 sc = sv[s];
#define NIB4(f, o)                                                                                              \
    {                                                                                                           \
        const __m512i z = nib_idx(ib + (o) + 32 * s, nb);                                                       \
        __m512i a = _mm512_dpbusd_epi32(_mm512_setzero_si512(), _mm512_shuffle_epi8(t0, z), x0);                \
        if (D == 2) a = _mm512_dpbusd_epi32(a, _mm512_shuffle_epi8(t1, z), x1);                                 \
        f = _mm512_fmadd_ps(_mm512_cvtepi32_ps(a), sc, f);                                                      \
    }
            NIB4(f0, 0) NIB4(f1, rowb) NIB4(f2, 2 * rowb) NIB4(f3, 3 * rowb)
#undef NIB4
        }
        if (short_tail) {
            const int8_t *xa = p0 + 64 * nfull, *xb = p1 + 64 * nfull;
            f0 = nib_tail(f0, ib + 32 * nfull, tail, tt0, tt1, tsc, xa, xb, D);
            f1 = nib_tail(f1, ib + rowb + 32 * nfull, tail, tt0, tt1, tsc, xa, xb, D);
            f2 = nib_tail(f2, ib + 2 * rowb + 32 * nfull, tail, tt0, tt1, tsc, xa, xb, D);
            f3 = nib_tail(f3, ib + 3 * rowb + 32 * nfull, tail, tt0, tt1, tsc, xa, xb, D);
        }
        float o[4];
        _mm_storeu_ps(o, _mm_add_ps(gq_hsum4_512(f0, f1, f2, f3), _mm_set1_ps(K)));
        for (int q = 0; q < 4; q++) {
            if (outl) o[q] += vq_outl(v, X->xp, r + q);
            y[r + q] = accumulate ? y[r + q] + o[q] : o[q];
        }
    }
    for (; r + 2 <= rb; r += 2) {
        const uint8_t *ib = is + (size_t)r * rowb;
        __m512 f0 = _mm512_setzero_ps(), f1 = _mm512_setzero_ps();
        int s = 0;
        for (; s < nfull; s++) {
            const __m512i z0 = nib_idx(ib + 32 * s, 32), z1 = nib_idx(ib + rowb + 32 * s, 32);
            f0 = nib_step(f0, z0, tb + D * s, sv[s], p0 + 64 * s, p1 + 64 * s, D);
            f1 = nib_step(f1, z1, tb + D * s, sv[s], p0 + 64 * s, p1 + 64 * s, D);
        }
        if (short_tail) {
            f0 = nib_tail(f0, ib + 32 * s, tail, tt0, tt1, tsc, p0 + 64 * s, p1 + 64 * s, D);
            f1 = nib_tail(f1, ib + rowb + 32 * s, tail, tt0, tt1, tsc, p0 + 64 * s, p1 + 64 * s, D);
        } else if (tail) {
            const __m512i z0 = nib_idx(ib + 32 * s, tail), z1 = nib_idx(ib + rowb + 32 * s, tail);
            f0 = nib_step(f0, z0, tb + D * s, sv[s], p0 + 64 * s, p1 + 64 * s, D);
            f1 = nib_step(f1, z1, tb + D * s, sv[s], p0 + 64 * s, p1 + 64 * s, D);
        }
        // both rows' lane sums at once: 128-bit quarters, then within them
        __m512 t = _mm512_add_ps(_mm512_shuffle_f32x4(f0, f1, _MM_SHUFFLE(1, 0, 1, 0)),
                                 _mm512_shuffle_f32x4(f0, f1, _MM_SHUFFLE(3, 2, 3, 2)));
        t = _mm512_add_ps(t, _mm512_shuffle_f32x4(t, t, _MM_SHUFFLE(2, 3, 0, 1)));
        t = _mm512_add_ps(t, _mm512_permute_ps(t, _MM_SHUFFLE(1, 0, 3, 2)));
        t = _mm512_add_ps(t, _mm512_permute_ps(t, _MM_SHUFFLE(2, 3, 0, 1)));
        float o0 = _mm512_cvtss_f32(t) + K, o1 = _mm_cvtss_f32(_mm512_extractf32x4_ps(t, 2)) + K;
        if (outl) o0 += vq_outl(v, X->xp, r), o1 += vq_outl(v, X->xp, r + 1);
        y[r] = accumulate ? y[r] + o0 : o0;
        y[r + 1] = accumulate ? y[r + 1] + o1 : o1;
    }
    for (; r < rb; r++) {
        const uint8_t *ib = is + (size_t)r * rowb;
        __m512 f = _mm512_setzero_ps();
        int s = 0;
        for (; s < nfull; s++) f = nib_step(f, nib_idx(ib + 32 * s, 32), tb + D * s, sv[s], p0 + 64 * s, p1 + 64 * s, D);
        if (short_tail) f = nib_tail(f, ib + 32 * s, tail, tt0, tt1, tsc, p0 + 64 * s, p1 + 64 * s, D);
        else if (tail) f = nib_step(f, nib_idx(ib + 32 * s, tail), tb + D * s, sv[s], p0 + 64 * s, p1 + 64 * s, D);
        float o = _mm512_reduce_add_ps(f) + K;
        if (outl) o += vq_outl(v, X->xp, r);
        y[r] = accumulate ? y[r] + o : o;
    }
}

// NIB for short row tiles (fewer than 24 rows, where building the lane
// tables above costs as much as the rows): one 64-byte table per step with
// both halves' coordinate tables (d 2: [half 0: c0 c1 | half 1: c0 c1]; d 1:
// [half 0 | half 1]), looked up by vpermb with the half's offset or'ed into
// the indices (lanes 1 and 3 hold the second half).
AVX512_FN static GQ_INLINE void nibp_rows_avx512(const struct gq_vqrt *v, const struct vqx *X, int ra, int rb,
                                                 const __m512i *tp, const __m512 *sv, float K, const int D, float *y,
                                                 bool accumulate) {
    const int nv = v->nv, nfull = nv / 64, tail = (nv % 64) / 2, rowb = nv / 2;
    const bool short_tail = tail && tail <= 16;
    const uint8_t *is = v->p.part[GQ_VQP_IDX];
    const int8_t *p0 = X->pl, *p1 = X->pl + X->pstride;
    const bool outl = v->p.h.n_out > 0;
    const __m512i shift = _mm512_setr_epi64(0, 0, 0, 0, 4, 4, 4, 4), m4 = _mm512_set1_epi8(15);
    const __m512i hl = _mm512_set_epi64(-1, 0, -1, 0, -1, 0, -1, 0); // lanes 1 and 3
    const __m512i off0 = _mm512_and_si512(hl, _mm512_set1_epi8(D == 2 ? 32 : 16)), off1 = _mm512_or_si512(off0, _mm512_set1_epi8(16));
#define NIBP_STEP(f, ib, nb)                                                                                        \
    {                                                                                                               \
        const __m256i raw = (nb) >= 32 ? _mm256_loadu_si256((const __m256i *)(ib)) : _mm256_maskz_loadu_epi8((1u << (nb)) - 1, ib); \
        const __m512i zs = _mm512_srlv_epi64(_mm512_broadcast_i64x4(raw), shift);                                   \
        __m512i a = _mm512_dpbusd_epi32(_mm512_setzero_si512(),                                                     \
                                        _mm512_permutexvar_epi8(_mm512_ternarylogic_epi32(zs, m4, off0, 0xEA), tp[s]), x0); \
        if (D == 2)                                                                                                 \
            a = _mm512_dpbusd_epi32(a, _mm512_permutexvar_epi8(_mm512_ternarylogic_epi32(zs, m4, off1, 0xEA), tp[s]), x1); \
        f = _mm512_fmadd_ps(_mm512_cvtepi32_ps(a), sv[s], f);                                                        \
    }
#define NIBP_TAIL(f, ib)                                                                                             \
    {                                                                                                                \
        const __m256i raw = _mm256_broadcastsi128_si256(_mm_maskz_loadu_epi8((__mmask16)((1u << tail) - 1), ib));   \
        const __m256i z = _mm256_and_si256(_mm256_srlv_epi64(raw, _mm256_setr_epi64x(0, 0, 4, 4)), _mm256_set1_epi8(15)); \
        const __m256i t = _mm512_castsi512_si256(tp[nfull]);                                                         \
        __m256i a = _mm256_dpbusd_epi32(_mm256_setzero_si256(), _mm256_permutexvar_epi8(z, t),                       \
                                        _mm256_loadu_si256((const __m256i *)(p0 + 64 * nfull)));                      \
        if (D == 2)                                                                                                  \
            a = _mm256_dpbusd_epi32(a, _mm256_permutexvar_epi8(_mm256_or_si256(z, _mm256_set1_epi8(16)), t),          \
                                    _mm256_loadu_si256((const __m256i *)(p1 + 64 * nfull)));                          \
        f = _mm512_add_ps(f, _mm512_zextps256_ps512(_mm256_mul_ps(_mm256_cvtepi32_ps(a), _mm512_castps512_ps256(sv[nfull])))); \
    }
    int r = ra;
    for (; r + 4 <= rb; r += 4) {
        const uint8_t *ib = is + (size_t)r * rowb;
        __m512 f0 = _mm512_setzero_ps(), f1 = _mm512_setzero_ps(), f2 = _mm512_setzero_ps(), f3 = _mm512_setzero_ps();
        int s = 0;
        for (; s < nfull + (tail > 0 && !short_tail); s++) {
            const int nb = s < nfull ? 32 : tail;
            const __m512i x0 = _mm512_loadu_si512(p0 + 64 * s), x1 = D == 2 ? _mm512_loadu_si512(p1 + 64 * s) : x0;
            NIBP_STEP(f0, ib + 32 * s, nb) NIBP_STEP(f1, ib + rowb + 32 * s, nb)
            NIBP_STEP(f2, ib + 2 * rowb + 32 * s, nb) NIBP_STEP(f3, ib + 3 * rowb + 32 * s, nb)
        }
        if (short_tail) {
            NIBP_TAIL(f0, ib + 32 * nfull) NIBP_TAIL(f1, ib + rowb + 32 * nfull)
            NIBP_TAIL(f2, ib + 2 * rowb + 32 * nfull) NIBP_TAIL(f3, ib + 3 * rowb + 32 * nfull)
        }
        float o[4];
        _mm_storeu_ps(o, _mm_add_ps(gq_hsum4_512(f0, f1, f2, f3), _mm_set1_ps(K)));
        for (int q = 0; q < 4; q++) {
            if (outl) o[q] += vq_outl(v, X->xp, r + q);
            y[r + q] = accumulate ? y[r + q] + o[q] : o[q];
        }
    }
    for (; r < rb; r++) {
        const uint8_t *ib = is + (size_t)r * rowb;
        __m512 f = _mm512_setzero_ps();
        int s = 0;
        for (; s < nfull + (tail > 0 && !short_tail); s++) {
            const int nb = s < nfull ? 32 : tail;
            const __m512i x0 = _mm512_loadu_si512(p0 + 64 * s), x1 = D == 2 ? _mm512_loadu_si512(p1 + 64 * s) : x0;
            NIBP_STEP(f, ib + 32 * s, nb)
        }
        if (short_tail) NIBP_TAIL(f, ib + 32 * nfull)
        float o = _mm512_reduce_add_ps(f) + K;
        if (outl) o += vq_outl(v, X->xp, r);
        y[r] = accumulate ? y[r] + o : o;
    }
#undef NIBP_STEP
#undef NIBP_TAIL
}

// NIB with normalisation (blocks of whole halves). Per step: the exact
// int32 sums Σ code · x of 16 lanes (the dpbusd of code + 128 started from
// cr, the lanes' −128 · Σ x), × the scale of the lane's half in this row:
// x scale · codebook scale · 2^(a s + z), looked up by the row's two codes
// (nidx: s0 | (16 | s1) << 8; lanes 4-7 and 12-15 take the high byte) in
// the step's two 16-float tables ta (first half) and tb2 (second).
AVX512_FN static GQ_INLINE __m512 nibn_step(__m512 f, __m512i z, const __m512i *tb, __m512i cr, __m512 ta, __m512 tb2,
                                            const uint16_t *w, __m512i x0, __m512i x1, const int D) {
    __m512i a = _mm512_dpbusd_epi32(cr, _mm512_shuffle_epi8(tb[0], z), x0);
    if (D == 2) a = _mm512_dpbusd_epi32(a, _mm512_shuffle_epi8(tb[1], z), x1);
    const __m512i id = _mm512_srlv_epi32(_mm512_broadcastw_epi16(_mm_loadu_si16(w)), // (from memory: no GPR transfer)
                                         _mm512_setr_epi32(0, 0, 0, 0, 8, 8, 8, 8, 0, 0, 0, 0, 8, 8, 8, 8));
    return _mm512_fmadd_ps(_mm512_cvtepi32_ps(a), _mm512_permutex2var_ps(ta, id, tb2), f);
}

// The short last step (<= 32 vectors, one half) on 256 bits, scale sc.
AVX512_FN static GQ_INLINE __m512 nibn_tail(__m512 f, const uint8_t *ib, int nb, __m256i t0, __m256i t1, __m256i cr,
                                            float sc, const int8_t *x0, const int8_t *x1, const int D) {
    const __m256i raw = _mm256_broadcastsi128_si256(_mm_maskz_loadu_epi8((__mmask16)((1u << nb) - 1), ib));
    const __m256i z = _mm256_and_si256(_mm256_srlv_epi64(raw, _mm256_setr_epi64x(0, 0, 4, 4)), _mm256_set1_epi8(15));
    __m256i a = _mm256_dpbusd_epi32(cr, _mm256_shuffle_epi8(t0, z), _mm256_loadu_si256((const __m256i *)x0));
    if (D == 2) a = _mm256_dpbusd_epi32(a, _mm256_shuffle_epi8(t1, z), _mm256_loadu_si256((const __m256i *)x1));
    return _mm512_add_ps(f, _mm512_zextps256_ps512(_mm256_mul_ps(_mm256_cvtepi32_ps(a), _mm256_set1_ps(sc))));
}

// Rows [ra, rb) of one row tile, four at a time (tables and x shared).
AVX512_FN static GQ_INLINE void nibn_rows_avx512(const struct gq_vqrt *v, const struct vqx *X, int ra, int rb,
                                                 const __m512i *tb, const __m512 *tf, const __m512i *cr, const int D,
                                                 float *y, bool accumulate) {
    const int nv = v->nv, nfull = nv / 64, tail = (nv % 64) / 2, rowb = nv / 2, nsteps = (nv + 63) / 64;
    const bool short_tail = tail && tail <= 16;
    const int nst = nfull + (tail > 0 && !short_tail); // 512-bit steps
    const __m256i tt0 = short_tail ? _mm512_castsi512_si256(tb[D * nfull]) : _mm256_setzero_si256();
    const __m256i tt1 = short_tail ? _mm512_castsi512_si256(tb[D * nfull + D - 1]) : tt0;
    const __m256i ctl = short_tail ? _mm512_castsi512_si256(cr[nfull]) : _mm256_setzero_si256();
    const float *ts = (const float *)(tf + 2 * nfull); // the short step's table
    const uint8_t *is = v->p.part[GQ_VQP_IDX];
    const int8_t *p0 = X->pl, *p1 = X->pl + X->pstride;
    const bool outl = v->p.h.n_out > 0;
    int r = ra;
    for (; r + 4 <= rb; r += 4) {
        const uint8_t *ib = is + (size_t)r * rowb;
        const uint16_t *w = v->nidx + (size_t)r * nsteps;
        for (int o = 0; o < 4 * rowb; o += 64) _mm_prefetch((const char *)(ib + 8 * (size_t)rowb + o), _MM_HINT_T0);
        __m512 f0 = _mm512_setzero_ps(), f1 = _mm512_setzero_ps(), f2 = _mm512_setzero_ps(), f3 = _mm512_setzero_ps();
#define NIBN4(s, nb)                                                                                                   \
    {                                                                                                                  \
        const __m512i x0 = _mm512_loadu_si512(p0 + 64 * (s)), x1 = D == 2 ? _mm512_loadu_si512(p1 + 64 * (s)) : x0;   \
        const __m512 ta = tf[2 * (s)], tb2 = tf[2 * (s) + 1];                                                         \
        const __m512i c = cr[s];                                                                                       \
        f0 = nibn_step(f0, nib_idx(ib + 32 * (s), nb), tb + D * (s), c, ta, tb2, w + (s), x0, x1, D);                 \
        f1 = nibn_step(f1, nib_idx(ib + rowb + 32 * (s), nb), tb + D * (s), c, ta, tb2, w + nsteps + (s), x0, x1, D); \
        f2 = nibn_step(f2, nib_idx(ib + 2 * rowb + 32 * (s), nb), tb + D * (s), c, ta, tb2, w + 2 * nsteps + (s), x0, x1, D); \
        f3 = nibn_step(f3, nib_idx(ib + 3 * rowb + 32 * (s), nb), tb + D * (s), c, ta, tb2, w + 3 * nsteps + (s), x0, x1, D); \
    }
        for (int s = 0; s < nfull; s++) NIBN4(s, 32) // (the full steps apart: no test of nb inside)
        if (nst > nfull) NIBN4(nfull, tail)
#undef NIBN4
        if (short_tail) {
            const int8_t *xa = p0 + 64 * nfull, *xb = p1 + 64 * nfull;
            f0 = nibn_tail(f0, ib + 32 * nfull, tail, tt0, tt1, ctl, ts[w[nfull] & 15], xa, xb, D);
            f1 = nibn_tail(f1, ib + rowb + 32 * nfull, tail, tt0, tt1, ctl, ts[w[nsteps + nfull] & 15], xa, xb, D);
            f2 = nibn_tail(f2, ib + 2 * rowb + 32 * nfull, tail, tt0, tt1, ctl, ts[w[2 * nsteps + nfull] & 15], xa, xb, D);
            f3 = nibn_tail(f3, ib + 3 * rowb + 32 * nfull, tail, tt0, tt1, ctl, ts[w[3 * nsteps + nfull] & 15], xa, xb, D);
        }
        float o[4];
        _mm_storeu_ps(o, gq_hsum4_512(f0, f1, f2, f3));
        for (int q = 0; q < 4; q++) {
            if (outl) o[q] += vq_outl(v, X->xp, r + q);
            y[r + q] = accumulate ? y[r + q] + o[q] : o[q];
        }
    }
    for (; r < rb; r++) {
        const uint8_t *ib = is + (size_t)r * rowb;
        const uint16_t *w = v->nidx + (size_t)r * nsteps;
        __m512 f = _mm512_setzero_ps();
        for (int s = 0; s < nst; s++) {
            const __m512i x0 = _mm512_loadu_si512(p0 + 64 * s), x1 = D == 2 ? _mm512_loadu_si512(p1 + 64 * s) : x0;
            f = nibn_step(f, nib_idx(ib + 32 * s, s < nfull ? 32 : tail), tb + D * s, cr[s], tf[2 * s], tf[2 * s + 1], w + s, x0, x1, D);
        }
        if (short_tail) f = nibn_tail(f, ib + 32 * nfull, tail, tt0, tt1, ctl, ts[w[nfull] & 15], p0 + 64 * nfull, p1 + 64 * nfull, D);
        float o = _mm512_reduce_add_ps(f);
        if (outl) o += vq_outl(v, X->xp, r);
        y[r] = accumulate ? y[r] + o : o;
    }
}

// NIB: per row tile, the step tables (coordinate j's 16-entry tables of the
// two halves' groups: lanes 0 and 2 the first half's, 1 and 3 the second's)
// and scales (int32 lanes 0-3 and 8-11 / 4-7 and 12-15), then per row 64
// vectors a step. K: the tiles' −128 · Σ x corrections.
AVX512_FN void gq_vq_nib_tile_avx512(const struct gq_vqrt *v, const struct vqx *X, int rt, int ra, int rb,
                                         __m512i *tb, __m512 *sv, float *y, bool accumulate) {
    const struct gq_vqpack_hdr *h = &v->p.h;
    const int nv = v->nv, d = h->d, nsteps = (nv + 63) / 64;
    const bool packed = v->rt_start[rt + 1] - v->rt_start[rt] < 24;
    if (v->bv) { // normalisation: tables as below, the halves' float scale tables, the lanes' corrections
        __m512 *tf = (__m512 *)(tb + 2 * nsteps);
        const __m512i *cr = (const __m512i *)X->cr;
        for (int s = 0; s < nsteps; s++) {
            const uint8_t *t[2];
            for (int hh = 0; hh < 2; hh++) {
                const int half = 2 * s + hh, hv = gq_min_i(half, (nv - 1) / 32); // past the end: the last group, x = 0
                const int ct = v->half_ct[hv];
                const int64_t g = (int64_t)rt * h->n_ct + ct;
                tf[2 * s + hh] = _mm512_mul_ps(_mm512_set1_ps(half == hv ? v->cbs[g] * X->xs[ct] : 0), _mm512_loadu_ps(v->nsc + 16 * g));
                t[hh] = v->tab + (size_t)g * 16 * d;
            }
            if (s == nv / 64 && nv % 64 <= 32) t[1] = t[0], tf[2 * s + 1] = tf[2 * s]; // the short last step
            for (int j = 0; j < d; j++)
                tb[d * s + j] = _mm512_broadcast_i64x4(
                    _mm256_inserti128_si256(_mm256_castsi128_si256(_mm_loadu_si128((const __m128i *)(t[0] + 16 * j))),
                                            _mm_loadu_si128((const __m128i *)(t[1] + 16 * j)), 1));
        }
        if (d == 1) nibn_rows_avx512(v, X, ra, rb, tb, tf, cr, 1, y, accumulate);
        else nibn_rows_avx512(v, X, ra, rb, tb, tf, cr, 2, y, accumulate);
        return;
    }
    float K = 0;
    for (int s = 0; s < nsteps; s++) {
        float sc[2];
        const uint8_t *t[2];
        for (int hh = 0; hh < 2; hh++) {
            const int half = 2 * s + hh, hv = gq_min_i(half, (nv - 1) / 32); // past the end: the last group, x = 0
            const int ct = v->half_ct[hv];
            const int64_t g = (int64_t)rt * h->n_ct + ct;
            sc[hh] = half == hv ? v->cbs[g] * X->xs[ct] : 0;
            if (half == hv) K -= 128 * sc[hh] * (float)X->sum[half];
            t[hh] = v->tab + (size_t)g * 16 * d;
        }
        if (s == nv / 64 && nv % 64 <= 32) t[1] = t[0], sc[1] = sc[0]; // the short last step: one half in both lanes
        if (packed) { // nibp_rows' one table per step
            const int tb_b = 16 * d;
            tb[s] = t[1] == t[0] + tb_b && d == 2 ? _mm512_loadu_si512(t[0])
                                                  : _mm512_inserti64x4(_mm512_castsi256_si512(d == 2 ? _mm256_loadu_si256((const __m256i *)t[0])
                                                                                                      : _mm256_inserti128_si256(_mm256_castsi128_si256(_mm_loadu_si128((const __m128i *)t[0])), _mm_loadu_si128((const __m128i *)t[1]), 1)),
                                                                       d == 2 ? _mm256_loadu_si256((const __m256i *)t[1]) : _mm256_setzero_si256(), 1);
            sv[s] = _mm512_castsi512_ps(_mm512_broadcast_i64x4(_mm256_castps_si256(
                _mm256_insertf128_ps(_mm256_castps128_ps256(_mm_set1_ps(sc[0])), _mm_set1_ps(sc[1]), 1))));
            continue;
        }
        for (int j = 0; j < d; j++)
            tb[d * s + j] = _mm512_broadcast_i64x4(
                _mm256_inserti128_si256(_mm256_castsi128_si256(_mm_loadu_si128((const __m128i *)(t[0] + 16 * j))),
                                        _mm_loadu_si128((const __m128i *)(t[1] + 16 * j)), 1));
        sv[s] = _mm512_castsi512_ps(_mm512_broadcast_i64x4(_mm256_castps_si256(
            _mm256_insertf128_ps(_mm256_castps128_ps256(_mm_set1_ps(sc[0])), _mm_set1_ps(sc[1]), 1))));
    }
    if (packed && d == 1) nibp_rows_avx512(v, X, ra, rb, tb, sv, K, 1, y, accumulate);
    else if (packed) nibp_rows_avx512(v, X, ra, rb, tb, sv, K, 2, y, accumulate);
    else if (d == 1) nib_rows_avx512(v, X, ra, rb, tb, sv, K, 1, y, accumulate);
    else nib_rows_avx512(v, X, ra, rb, tb, sv, K, 2, y, accumulate);
}

// D2K64: per row and column tile, chunks of 64 vectors: 48 index bytes
// spread to one 6-byte group per qword, 8 indices per qword by a
// multishift, looked up in the two 64-entry coordinate tables.
AVX512_FN void gq_vq_d2k64_tile_avx512(const struct gq_vqrt *v, const struct vqx *X, int rt, int ra, int rb, float *tmp) {
    const struct gq_vqpack_hdr *h = &v->p.h;
    const int nv = v->nv, nct = h->n_ct;
    const uint8_t *is = v->p.part[GQ_VQP_IDX];
    const __m512i spread = _mm512_set_epi8(47, 47, 47, 46, 45, 44, 43, 42, 41, 41, 41, 40, 39, 38, 37, 36, 35, 35, 35, 34, 33,
                                           32, 31, 30, 29, 29, 29, 28, 27, 26, 25, 24, 23, 23, 23, 22, 21, 20, 19, 18, 17, 17,
                                           17, 16, 15, 14, 13, 12, 11, 11, 11, 10, 9, 8, 7, 6, 5, 5, 5, 4, 3, 2, 1, 0);
    const __m512i shifts = _mm512_set1_epi64(0x2A241E18120C0600ll); // bytes 0, 6, 12, .., 42
    float K = 0;
    for (int ct = 0; ct < nct; ct++) K -= 128 * v->cbs[(int64_t)rt * nct + ct] * X->xs[ct] * (float)X->sum[ct];
    const int8_t *p0 = X->pl, *p1 = X->pl + X->pstride;
    for (int r = ra; r < rb; r++) {
        const uint8_t *ib = is + (size_t)r * nv * 3 / 4;
        __m512 f = _mm512_setzero_ps();
        for (int ct = 0; ct < nct; ct++) {
            const int64_t g = (int64_t)rt * nct + ct;
            const __m512i t0 = _mm512_loadu_si512(v->tab + (size_t)g * 128), t1 = _mm512_loadu_si512(v->tab + (size_t)g * 128 + 64);
            __m512i a = _mm512_setzero_si512();
            for (int vec = v->vt_start[ct]; vec < v->vt_start[ct + 1]; vec += 64) {
                const int n = gq_min_i(64, v->vt_start[ct + 1] - vec), nb = n * 3 / 4;
                const __mmask64 kb = nb == 64 ? ~0ull : (1ull << nb) - 1, kx = n == 64 ? ~0ull : (1ull << n) - 1;
                const __m512i raw = _mm512_maskz_loadu_epi8(kb, ib + (size_t)vec * 3 / 4);
                const __m512i ix = _mm512_multishift_epi64_epi8(shifts, _mm512_permutexvar_epi8(spread, raw));
                a = _mm512_dpbusd_epi32(a, _mm512_permutexvar_epi8(ix, t0), _mm512_maskz_loadu_epi8(kx, p0 + vec));
                a = _mm512_dpbusd_epi32(a, _mm512_permutexvar_epi8(ix, t1), _mm512_maskz_loadu_epi8(kx, p1 + vec));
            }
            f = _mm512_fmadd_ps(_mm512_cvtepi32_ps(a), _mm512_set1_ps(v->cbs[g] * X->xs[ct]), f);
        }
        tmp[r - ra] += _mm512_reduce_add_ps(f) + K;
    }
}

// D2K64H: D2K64 where column tiles start at multiples of 32 vectors: each
// 64-vector step meets at most two groups, one per half; per coordinate a
// two-table vpermi2b whose index bit 6 picks the half's table. Tables,
// scales and the −128 · Σ x correction per row tile, as NIB. NRM
// (normalisation in blocks of whole halves): as nibn_step, the lanes 8-15
// holding the second half.
AVX512_FN static GQ_INLINE void d2k64h_rows_avx512(const struct gq_vqrt *v, const struct vqx *X, int ra, int rb,
                                                   const __m512i *tb, const __m512 *sv, const __m512 *tf,
                                                   const __m512i *cr, float K, float *y, bool accumulate, const bool NRM) {
    const int nv = v->nv, nsteps = (nv + 63) / 64, rowb = nv * 3 / 4;
    const __m512i spread = _mm512_set_epi8(47, 47, 47, 46, 45, 44, 43, 42, 41, 41, 41, 40, 39, 38, 37, 36, 35, 35, 35, 34, 33,
                                           32, 31, 30, 29, 29, 29, 28, 27, 26, 25, 24, 23, 23, 23, 22, 21, 20, 19, 18, 17, 17,
                                           17, 16, 15, 14, 13, 12, 11, 11, 11, 10, 9, 8, 7, 6, 5, 5, 5, 4, 3, 2, 1, 0);
    const __m512i shifts = _mm512_set1_epi64(0x2A241E18120C0600ll);
    const __m512i hsel = _mm512_inserti64x4(_mm512_setzero_si512(), _mm256_set1_epi8(0x40), 1); // bytes 32-63: second table
    const __m512i m6 = _mm512_set1_epi8(0x3F);
    const __m512i nsh = _mm512_inserti64x4(_mm512_setzero_si512(), _mm256_set1_epi32(8), 1); // lanes 8-15: the high code
    const int8_t *p0 = X->pl, *p1 = X->pl + X->pstride;
    const bool outl = v->p.h.n_out > 0;
#define D2K64H_STEP(f, ib, w)                                                                                         \
    {                                                                                                                 \
        const __m512i raw = _mm512_maskz_loadu_epi8(kb, (ib) + 48 * s);                                               \
        const __m512i ix = _mm512_ternarylogic_epi32(                                                                 \
            _mm512_multishift_epi64_epi8(shifts, _mm512_permutexvar_epi8(spread, raw)), m6, hsel, 0xEA); /* a&b|c */  \
        __m512i a = _mm512_dpbusd_epi32(NRM ? cr[s] : _mm512_setzero_si512(), _mm512_permutex2var_epi8(tb[4 * s], ix, tb[4 * s + 1]), x0); \
        a = _mm512_dpbusd_epi32(a, _mm512_permutex2var_epi8(tb[4 * s + 2], ix, tb[4 * s + 3]), x1);                 \
        const __m512 sc = NRM ? _mm512_permutex2var_ps(tf[2 * s], _mm512_srlv_epi32(_mm512_set1_epi16((short)(w)), nsh), tf[2 * s + 1]) : sv[s]; \
        f = _mm512_fmadd_ps(_mm512_cvtepi32_ps(a), sc, f);                                                             \
    }
    int r = ra;
    for (; r + 4 <= rb; r += 4) {
        const uint8_t *ib = v->p.part[GQ_VQP_IDX] + (size_t)r * rowb;
        const uint16_t *w = NRM ? v->nidx + (size_t)r * nsteps : NULL;
        for (int o = 0; o < 4 * rowb; o += 64) _mm_prefetch((const char *)(ib + 8 * (size_t)rowb + o), _MM_HINT_T0);
        __m512 f0 = _mm512_setzero_ps(), f1 = _mm512_setzero_ps(), f2 = _mm512_setzero_ps(), f3 = _mm512_setzero_ps();
        for (int s = 0; s < nsteps; s++) {
            const int n = gq_min_i(64, nv - 64 * s), nb = n * 3 / 4;
            const __mmask64 kb = nb >= 64 ? ~0ull : (1ull << nb) - 1;
            const __m512i x0 = _mm512_loadu_si512(p0 + 64 * s), x1 = _mm512_loadu_si512(p1 + 64 * s);
            D2K64H_STEP(f0, ib, NRM ? w[s] : 0) D2K64H_STEP(f1, ib + rowb, NRM ? w[nsteps + s] : 0)
            D2K64H_STEP(f2, ib + 2 * rowb, NRM ? w[2 * nsteps + s] : 0) D2K64H_STEP(f3, ib + 3 * rowb, NRM ? w[3 * nsteps + s] : 0)
        }
        float o[4];
        _mm_storeu_ps(o, _mm_add_ps(gq_hsum4_512(f0, f1, f2, f3), _mm_set1_ps(K)));
        for (int q = 0; q < 4; q++) {
            if (outl) o[q] += vq_outl(v, X->xp, r + q);
            put(y, r + q, o[q], accumulate);
        }
    }
    for (; r < rb; r++) {
        const uint8_t *ib = v->p.part[GQ_VQP_IDX] + (size_t)r * rowb;
        const uint16_t *w = NRM ? v->nidx + (size_t)r * nsteps : NULL;
        __m512 f = _mm512_setzero_ps();
        for (int s = 0; s < nsteps; s++) {
            const int n = gq_min_i(64, nv - 64 * s), nb = n * 3 / 4;
            const __mmask64 kb = nb >= 64 ? ~0ull : (1ull << nb) - 1;
            const __m512i x0 = _mm512_loadu_si512(p0 + 64 * s), x1 = _mm512_loadu_si512(p1 + 64 * s);
            D2K64H_STEP(f, ib, NRM ? w[s] : 0)
        }
        float o = _mm512_reduce_add_ps(f) + K;
        if (outl) o += vq_outl(v, X->xp, r);
        put(y, r, o, accumulate);
    }
#undef D2K64H_STEP
}

AVX512_FN void gq_vq_d2k64h_tile_avx512(const struct gq_vqrt *v, const struct vqx *X, int rt, int ra, int rb,
                                           __m512i *tb, __m512 *sv, float *y, bool accumulate) {
    const struct gq_vqpack_hdr *h = &v->p.h;
    const int nv = v->nv, nsteps = (nv + 63) / 64;
    __m512 *tf = (__m512 *)(tb + 4 * nsteps); // with normalisation: 2 scale tables a step, then the corrections
    __m512i *cr = (__m512i *)(tf + 2 * nsteps);
    const __m512i one = _mm512_set1_epi8(1);
    float K = 0;
    for (int s = 0; s < nsteps; s++) {
        float sc[2];
        const uint8_t *t[2];
        for (int hh = 0; hh < 2; hh++) {
            const int half = 2 * s + hh, hv = gq_min_i(half, (nv - 1) / 32);
            const int ct = v->half_ct[hv];
            const int64_t g = (int64_t)rt * h->n_ct + ct;
            sc[hh] = half == hv ? v->cbs[g] * X->xs[ct] : 0;
            if (half == hv) K -= 128 * sc[hh] * (float)X->sum[half];
            t[hh] = v->tab + (size_t)g * 128;
            if (v->bv) tf[2 * s + hh] = _mm512_mul_ps(_mm512_set1_ps(sc[hh]), _mm512_loadu_ps(v->nsc + 16 * g));
        }
        for (int j = 0; j < 2; j++)
            tb[4 * s + 2 * j] = _mm512_loadu_si512(t[0] + 64 * j), tb[4 * s + 2 * j + 1] = _mm512_loadu_si512(t[1] + 64 * j);
        sv[s] = _mm512_insertf32x8(_mm512_set1_ps(sc[0]), _mm256_set1_ps(sc[1]), 1);
        if (v->bv)
            cr[s] = _mm512_sub_epi32(_mm512_setzero_si512(),
                                     _mm512_slli_epi32(_mm512_dpbusd_epi32(_mm512_dpbusd_epi32(_mm512_setzero_si512(), one, _mm512_loadu_si512(X->pl + 64 * s)),
                                                                           one, _mm512_loadu_si512(X->pl + X->pstride + 64 * s)), 7));
    }
    if (v->bv) d2k64h_rows_avx512(v, X, ra, rb, tb, sv, tf, cr, 0, y, accumulate, true);
    else d2k64h_rows_avx512(v, X, ra, rb, tb, sv, tf, cr, K, y, accumulate, false);
}

// D4K256 (D2K256): a group of rows at a time (4; normalised 8), and for
// them per column tile its group's 16 (8) table registers, loaded from L1,
// and the x loads shared: per row the exact int32 sum of the tile
// (bit-identical to the scalar reference), four sums reduced together.
AVX512_FN static GQ_INLINE __m128i hsum4_epi32(__m512i a0, __m512i a1, __m512i a2, __m512i a3) {
    const __m512i a = _mm512_add_epi32(_mm512_unpacklo_epi32(a0, a1), _mm512_unpackhi_epi32(a0, a1));
    const __m512i b = _mm512_add_epi32(_mm512_unpacklo_epi32(a2, a3), _mm512_unpackhi_epi32(a2, a3));
    const __m512i c = _mm512_add_epi32(_mm512_unpacklo_epi64(a, b), _mm512_unpackhi_epi64(a, b)); // (r0 r1 r2 r3) per lane
    const __m256i d = _mm256_add_epi32(_mm512_castsi512_si256(c), _mm512_extracti64x4_epi64(c, 1));
    return _mm_add_epi32(_mm256_castsi256_si128(d), _mm256_extracti128_si256(d, 1));
}

AVX512_FN static GQ_INLINE void vq_k256_tile_avx512(const struct gq_vqrt *v, const struct vqx *X, int rt, int ra, int rb, float *tmp,
                                                    const int D) {
    const struct gq_vqpack_hdr *h = &v->p.h;
    const int nv = v->nv, nct = h->n_ct, nch = v->bv ? v->ch0[nct] : 0;
    const uint8_t *is = v->p.part[GQ_VQP_IDX];
    const int8_t *p0 = X->pl, *p1 = p0 + X->pstride, *p2 = D == 4 ? p1 + X->pstride : p0, *p3 = D == 4 ? p2 + X->pstride : p0;
    const __m512i qsh = _mm512_setr_epi32(0, 0, 0, 0, 4, 4, 4, 4, 8, 8, 8, 8, 12, 12, 12, 12), one = _mm512_set1_epi8(1);
#define D4K256_ROW(a, ib)                                                                                       \
    {                                                                                                           \
        const __m512i ix = _mm512_maskz_loadu_epi8(kx, (ib) + vec);                                             \
        const __mmask64 hi = _mm512_movepi8_mask(ix);                                                           \
        a = _mm512_dpbusd_epi32(a, _mm512_mask_blend_epi8(hi, _mm512_permutex2var_epi8(T[0], ix, T[1]),         \
                                                          _mm512_permutex2var_epi8(T[2], ix, T[3])), x0);       \
        a = _mm512_dpbusd_epi32(a, _mm512_mask_blend_epi8(hi, _mm512_permutex2var_epi8(T[4], ix, T[5]),         \
                                                          _mm512_permutex2var_epi8(T[6], ix, T[7])), x1);       \
        if (D == 4) {                                                                                           \
            a = _mm512_dpbusd_epi32(a, _mm512_mask_blend_epi8(hi, _mm512_permutex2var_epi8(T[8], ix, T[9]),     \
                                                              _mm512_permutex2var_epi8(T[10], ix, T[11])), x2); \
            a = _mm512_dpbusd_epi32(a, _mm512_mask_blend_epi8(hi, _mm512_permutex2var_epi8(T[12], ix, T[13]),   \
                                                              _mm512_permutex2var_epi8(T[14], ix, T[15])), x3); \
        }                                                                                                       \
    }
#define X4()                                                                                                    \
    const int n = gq_min_i(64, v1 - vec);                                                                       \
    const __mmask64 kx = n == 64 ? ~0ull : (1ull << n) - 1;                                                     \
    const __m512i x0 = _mm512_maskz_loadu_epi8(kx, p0 + vec), x1 = _mm512_maskz_loadu_epi8(kx, p1 + vec);       \
    const __m512i x2 = D == 4 ? _mm512_maskz_loadu_epi8(kx, p2 + vec) : x0, x3 = D == 4 ? _mm512_maskz_loadu_epi8(kx, p3 + vec) : x0;
    // rows outer, column tiles inner: the rows' indices stream in order (a
    // tile's slice of a row can be under a cache line, and sweeping all rows
    // per column tile left the loads waiting on memory); the group's tables
    // reload from L1 per column tile, for G rows (normalised: 8, sharing the
    // tables, x loads and corrections; else 4)
    const int G = v->bv ? 8 : 4;
    for (int r = ra; r < rb; r += G) {
        const int nr = gq_min_i(G, rb - r);
        const uint8_t *ib = is + (size_t)r * nv;
        for (int q = G; q < 2 * G && r + q < rb; q++) // the next group's rows
            for (int o = 0; o < nv; o += 64) _mm_prefetch((const char *)(ib + (size_t)q * nv + o), _MM_HINT_T0);
        for (int ct = 0; ct < nct; ct++) {
            const int64_t g = (int64_t)rt * nct + ct;
            const uint8_t *tg = v->tab + (size_t)g * 256 * D;
            __m512i T[16];
            for (int i = 0; i < 4 * D; i++) T[i] = _mm512_loadu_si512(tg + 64 * i);
            const float sc = v->cbs[g] * X->xs[ct];
            const int v0 = v->vt_start[ct], v1 = v->vt_start[ct + 1];
            if (v->bv) { // normalisation: per 64-vector chunk the exact sums (−128 · Σ x preloaded per lane) × the
                         // scale of each 16-vector quarter's block (lanes 4q..4q+3), the row's codes in nidx
                const __m512 tbl = _mm512_mul_ps(_mm512_set1_ps(sc), _mm512_loadu_ps(v->nsc + 16 * g));
                const uint16_t *w = v->nidx + (size_t)r * nch + v->ch0[ct];
                __m512 f[8];
                for (int q = 0; q < 8; q++) f[q] = _mm512_setzero_ps();
                for (int vec = v0, c = 0; vec < v1; vec += 64, c++) {
                    X4()
                    __m512i sx = _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(_mm512_setzero_si512(), one, x0), one, x1);
                    if (D == 4) sx = _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(sx, one, x2), one, x3);
                    const __m512i cr = _mm512_sub_epi32(_mm512_setzero_si512(), _mm512_slli_epi32(sx, 7));
                    for (int q = 0; q < nr; q++) {
                        __m512i a = cr;
                        D4K256_ROW(a, ib + (size_t)q * nv)
                        const __m512 s4 = _mm512_permutexvar_ps(_mm512_srlv_epi32(_mm512_set1_epi32(w[(size_t)q * nch + c]), qsh), tbl);
                        f[q] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(a), s4, f[q]);
                    }
                }
                float o[8];
                _mm_storeu_ps(o, gq_hsum4_512(f[0], f[1], f[2], f[3]));
                if (nr > 4) _mm_storeu_ps(o + 4, gq_hsum4_512(f[4], f[5], f[6], f[7]));
                for (int q = 0; q < nr; q++) tmp[r + q - ra] += o[q];
                continue;
            }
            const int32_t corr = -128 * X->sum[ct];
            if (nr == 4) {
                __m512i a0 = _mm512_setzero_si512(), a1 = a0, a2 = a0, a3 = a0;
                for (int vec = v0; vec < v1; vec += 64) {
                    X4()
                    D4K256_ROW(a0, ib) D4K256_ROW(a1, ib + nv) D4K256_ROW(a2, ib + 2 * (size_t)nv) D4K256_ROW(a3, ib + 3 * (size_t)nv)
                }
                int32_t sum[4];
                _mm_storeu_si128((__m128i *)sum, hsum4_epi32(a0, a1, a2, a3));
                for (int q = 0; q < 4; q++) tmp[r + q - ra] += (float)(sum[q] + corr) * sc;
                continue;
            }
            for (int q = 0; q < nr; q++) {
                __m512i a = _mm512_setzero_si512();
                for (int vec = v0; vec < v1; vec += 64) {
                    X4()
                    D4K256_ROW(a, ib + (size_t)q * nv)
                }
                tmp[r + q - ra] += (float)(_mm512_reduce_add_epi32(a) + corr) * sc;
            }
        }
    }
#undef X4
#undef D4K256_ROW
}
AVX512_FN void gq_vq_d4k256_tile_avx512(const struct gq_vqrt *v, const struct vqx *X, int rt, int ra, int rb, float *tmp) {
    vq_k256_tile_avx512(v, X, rt, ra, rb, tmp, 4);
}
AVX512_FN void gq_vq_d2k256_tile_avx512(const struct gq_vqrt *v, const struct vqx *X, int rt, int ra, int rb, float *tmp) {
    vq_k256_tile_avx512(v, X, rt, ra, rb, tmp, 2);
}
