// gemm.c - prefill products y (n, rows) = x (n, cols) · Wᵀ for n > 1 tokens
// (contract: qmatmul.h, gq_qmatmul).
//
// Weights whose values are an integer code times a scale per segment of
// columns (Q8_0, Q4_0, Q4_1, Q5_0, Q5_1: blocks of 32, plus a min; packed VQ
// with int8 codebooks, one stage, no SVD: column tiles, cut at the
// normalisation blocks, the scale = codebook scale × normalisation scale)
// multiply in integers against x rounded to int16 per token and segment
// (scale max|x| / 32767, halves away from zero: at most 1.5e-5 of the
// segment's largest |x| per value, against llama.cpp's int8 at 4e-3):
// per segment the exact int32 Σ code · x code, then × (weight scale · x
// scale), + min · x scale · Σ x codes. VQ outlier columns go in float.
//   AVX-512: panels of 16 rows decoded to int16 pairs (dword l of column
//     pair p = row l's codes 2p, 2p+1), 8 tokens at a time, vpdpwssd
//     against the token's code pair broadcast; AVX2: 8 rows, vpmaddwd.
// Everything else (F16, other types, fp16 / f32 / residual / SVD codebooks,
// and the scalar ISA): rows decoded to f32 in chunks, then sgemm.
#include "kern/kern.h"

#include <cblas.h>
#include <omp.h>

// ---------------------------------------------------------------------------
// Float path.

// F16 rows to f32 by F16C (exact, as gq_dequantize).
AVX2_FN static void f16_rows_avx2(const uint8_t *src, float *dst, size_t n) {
    size_t i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(src + 2 * i))));
    for (; i < n; i++) dst[i] = gq_vqp_f16(src, (int64_t)i);
}

// (rotated VQ: W' rows, for an x already rotated)
static void decode_rows(const struct gq_qweight *w, int r0, int r1, float *out) {
    if (w->kind == GQ_QW_VQ) gq_vq_decode_rows(w->vq, r0, r1, out);
    else if (w->kind == GQ_QW_GGML && w->type == GQ_TYPE_F16 && gq_qmatmul_isa() >= GQ_ISA_AVX2)
        f16_rows_avx2((const uint8_t *)w->data + (size_t)r0 * w->row_size, out, (size_t)(r1 - r0) * w->cols);
    else
        gq_qweight_decode_rows(w, r0, r1, out);
}

static enum gq_status gemm_f32(float *y, const float *x, const struct gq_qweight *w, int n) {
    // chunks of rows per thread as large as ~2 MiB of f32: OpenBLAS packs x
    // once per call, so fewer, larger calls
    const int nt = omp_get_max_threads();
    int CH = (int)((2u << 20) / (sizeof(float) * (size_t)w->cols));
    CH = CH < 64 ? 64 : CH > 4096 ? 4096 : CH;
    const int nch = (w->rows + CH - 1) / CH, per = nch < nt ? nch : nt;
    float *buf = gq_kscratch(GQ_SCR_GEMM_XP, sizeof(float) * (size_t)CH * w->cols * per); // (kept: no page faults per call)
    if (!buf) return gq_fail(GQ_ERR_NOMEM, "qmatmul: decode buffer of %d x %d", CH, w->cols);
    for (int c0 = 0; c0 < nch; c0 += per) {
        const int c1 = c0 + per < nch ? c0 + per : nch;
#pragma omp parallel for schedule(static, 1)
        for (int c = c0; c < c1; c++) {
            const int r0 = c * CH, r1 = r0 + CH < w->rows ? r0 + CH : w->rows;
            decode_rows(w, r0, r1, buf + (size_t)(c - c0) * CH * w->cols);
        }
        const int r0 = c0 * CH, r1 = c1 * CH < w->rows ? c1 * CH : w->rows;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, r1 - r0, w->cols, 1.0f, x, w->cols, buf, w->cols, 0.0f,
                    y + r0, w->rows);
    }
    return GQ_OK;
}

// ---------------------------------------------------------------------------
// Integer path: segments.

// Segments of position space [p0, p1) (even lengths <= 256) with their VQ
// column tile and normalisation block (-1: none); ggml: blocks of 32.
struct segs {
    int n, *p0, *ct, *blk;
    int np; // first position of the integer part (VQ: n_out)
};

static void segs_free(struct segs *s) { free(s->p0), free(s->ct), free(s->blk); }

// false: w does not take the integer path.
static bool int_path(const struct gq_qweight *w) {
    if (w->kind == GQ_QW_GGML) return gq_ggml_sb16_bytes(w->type) && w->cols % 32 == 0;
    const struct gq_vqpack_hdr *h = &w->vq->p.h;
    return h->cb_format == GQ_CB_INT8 && h->stages == 1 && !h->svd_rank;
}

static enum gq_status segs_make(const struct gq_qweight *w, struct segs *s) {
    memset(s, 0, sizeof *s);
    int cap = w->cols / 2 + 2;
    s->p0 = malloc(sizeof(int) * (cap + 1)), s->ct = malloc(sizeof(int) * cap), s->blk = malloc(sizeof(int) * cap);
    if (!s->p0 || !s->ct || !s->blk) {
        segs_free(s);
        return gq_fail(GQ_ERR_NOMEM, "qmatmul: segments");
    }
    if (w->kind == GQ_QW_GGML) {
        for (int b = 0; b < w->cols / 32; b++) s->p0[s->n] = 32 * b, s->ct[s->n] = -1, s->blk[s->n] = -1, s->n++;
        s->p0[s->n] = w->cols;
        return GQ_OK;
    }
    const struct gq_vqrt *v = w->vq;
    const struct gq_vqpack_hdr *h = &v->p.h;
    s->np = h->n_out;
    for (int ct = 0; ct < h->n_ct; ct++) {
        int blk = v->blk0[ct];
        for (int p = v->ct_start[ct]; p < v->ct_start[ct + 1];) {
            int e = v->ct_start[ct + 1];
            if (h->norm_block && p + h->norm_block < e) e = p + h->norm_block;
            for (int q = p; q < e; q += 256) { // int32 sums: at most 256 products of 32767 · 128 per lane pair
                const int qe = q + 256 < e ? q + 256 : e;
                if ((qe - q) % 2 || s->n >= cap) { // odd widths: the float path
                    segs_free(s);
                    s->n = -1;
                    return GQ_OK;
                }
                s->p0[s->n] = q, s->ct[s->n] = ct, s->blk[s->n] = h->norm_block ? blk : -1, s->n++;
            }
            p = e, blk++;
        }
    }
    s->p0[s->n] = w->cols;
    return GQ_OK;
}

// ---------------------------------------------------------------------------
// Activations: x (n, cols) in position order (VQ permutation), and for each
// block of TL tokens (TL = 16 AVX-512, 8 AVX2; past n: zeros) the int16
// code pairs of positions [np, cols) transposed, dword (pair pp, token t) at
// xt[(tb · npairs + pp) · TL + t]; per segment k the tokens' scales xs and
// scale · Σ codes xm at [(tb · nseg + k) · TL + t].

struct xblocks {
    float *xp;
    int32_t *xt;
    float *xs, *xm;
    int tl, ntb, npairs;
};
// One token: positions [np, cols) of pt rounded per segment into q (int16,
// row-major), scales and scale · Σ codes into xs[k], xm[k]. The AVX-512 and
// scalar versions do the same roundings (max exact, x · (1 / scale), ± 0.5,
// truncation): bit-identical codes.
static void quantize_tok(const struct segs *S, const float *pt, int16_t *q, float *xs, float *xm) {
    for (int k = 0; k < S->n; k++) {
        const int a = S->p0[k], e = S->p0[k + 1];
        float mx = 0;
        for (int p = a; p < e; p++) mx = fabsf(pt[p]) > mx ? fabsf(pt[p]) : mx;
        const float sc = mx / 32767, inv = sc > 0 ? 1 / sc : 0;
        int32_t sum = 0;
        for (int p = a; p < e; p++) {
            const float u = pt[p] * inv;
            const int c = (int)(u + (u < 0 ? -0.5f : 0.5f));
            q[p - S->np] = (int16_t)c, sum += c;
        }
        xs[k] = sc, xm[k] = sc * (float)sum;
    }
}

AVX512_FN static void quantize_tok_avx512(const struct segs *S, const float *pt, int16_t *q, float *xs, float *xm) {
    const __m512 sgn = _mm512_set1_ps(-0.0f), ph = _mm512_set1_ps(0.5f), nh = _mm512_set1_ps(-0.5f);
    for (int k = 0; k < S->n; k++) {
        const int a = S->p0[k], e = S->p0[k + 1];
        __m512 m = _mm512_setzero_ps();
        for (int p = a; p < e; p += 16) {
            const __mmask16 km = e - p >= 16 ? 0xFFFF : (__mmask16)((1u << (e - p)) - 1);
            m = _mm512_max_ps(m, _mm512_andnot_ps(sgn, _mm512_maskz_loadu_ps(km, pt + p)));
        }
        const float sc = _mm512_reduce_max_ps(m) / 32767, inv = sc > 0 ? 1 / sc : 0;
        const __m512 vi = _mm512_set1_ps(inv);
        __m512i sum = _mm512_setzero_si512();
        for (int p = a; p < e; p += 16) {
            const __mmask16 km = e - p >= 16 ? 0xFFFF : (__mmask16)((1u << (e - p)) - 1);
            const __m512 u = _mm512_mul_ps(_mm512_maskz_loadu_ps(km, pt + p), vi);
            const __m512i c = _mm512_cvttps_epi32(_mm512_add_ps(u, _mm512_mask_blend_ps(_mm512_cmp_ps_mask(u, _mm512_setzero_ps(), _CMP_LT_OQ), ph, nh)));
            sum = _mm512_add_epi32(sum, _mm512_maskz_mov_epi32(km, c));
            _mm512_mask_cvtsepi32_storeu_epi16(q + (p - S->np), km, c);
        }
        xs[k] = sc, xm[k] = sc * (float)_mm512_reduce_add_epi32(sum);
    }
}

static void quantize_x16(const struct gq_qweight *w, const struct segs *S, const float *x, int n, struct xblocks *X,
                         int16_t *xq, float *xsr, float *xmr, enum gq_isa isa) {
    const int cols = w->cols, width = 2 * X->npairs, tl = X->tl, nseg = S->n;
    const int32_t *perm = w->kind == GQ_QW_VQ ? w->vq->perm : NULL;
#pragma omp parallel
    {
        // each token: permuted, rounded into its row of xq (tokens past n: zeros)
#pragma omp for schedule(static)
        for (int t = 0; t < X->ntb * tl; t++) {
            int16_t *q = xq + (size_t)t * width;
            float *xs = xsr + (size_t)t * nseg, *xm = xmr + (size_t)t * nseg;
            if (t >= n) {
                memset(q, 0, sizeof(int16_t) * width);
                for (int k = 0; k < nseg; k++) xs[k] = xm[k] = 0;
                continue;
            }
            const float *xr = x + (size_t)t * cols;
            float *pt = X->xp + (size_t)t * cols;
            if (perm)
                for (int p = 0; p < cols; p++) pt[p] = xr[perm[p]];
            else
                memcpy(pt, xr, sizeof(float) * cols);
            if (isa == GQ_ISA_AVX512) quantize_tok_avx512(S, pt, q, xs, xm);
            else quantize_tok(S, pt, q, xs, xm);
        }
        // transposed per token block: code pairs and scales with the tokens in lanes
#pragma omp for schedule(static)
        for (int tb = 0; tb < X->ntb; tb++) {
            int32_t *xt = X->xt + (size_t)tb * X->npairs * tl;
            for (int t = 0; t < tl; t++) {
                const int32_t *src = (const int32_t *)(xq + (size_t)(tb * tl + t) * width);
                for (int pp = 0; pp < X->npairs; pp++) xt[(size_t)pp * tl + t] = src[pp];
                for (int k = 0; k < nseg; k++) {
                    X->xs[((size_t)tb * nseg + k) * tl + t] = xsr[(size_t)(tb * tl + t) * nseg + k];
                    X->xm[((size_t)tb * nseg + k) * tl + t] = xmr[(size_t)(tb * tl + t) * nseg + k];
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Weights: rows [r0, r0 + 16) (past the end: zeros) as int16 codes of
// positions [np, cols), row l at wr + l · (cols − np); scales sc[l · nseg + k]
// and mins mn[l · nseg + k] of each segment.

static inline int ggml_code(enum gq_ggml_type t, const uint8_t *b, int j, float *d, float *m) {
    *d = gq_vqp_f16(b, 0);
    switch (t) {
    case GQ_TYPE_Q8_0: return (int8_t)b[2 + j];
    case GQ_TYPE_Q4_0: return (j < 16 ? b[2 + j] & 15 : b[2 + j - 16] >> 4) - 8;
    case GQ_TYPE_Q4_1: *m = gq_vqp_f16(b, 1); return j < 16 ? b[4 + j] & 15 : b[4 + j - 16] >> 4;
    case GQ_TYPE_Q5_0:
    case GQ_TYPE_Q5_1: {
        const int o = t == GQ_TYPE_Q5_1 ? 4 : 2;
        if (t == GQ_TYPE_Q5_1) *m = gq_vqp_f16(b, 1);
        const uint32_t qh = (uint32_t)b[o] | (uint32_t)b[o + 1] << 8 | (uint32_t)b[o + 2] << 16 | (uint32_t)b[o + 3] << 24;
        const int lo = j < 16 ? b[o + 4 + j] & 15 : b[o + 4 + j - 16] >> 4;
        return (lo | (int)(qh >> j & 1) << 4) - (t == GQ_TYPE_Q5_0 ? 16 : 0);
    }
    default: return 0;
    }
}

// The 16-row superblocks of a repacked weight (gemv_ggml.c's layout).
static void rows16_from_repack(const struct gq_qweight *w, int g, int16_t *wr, float *sc, float *mn) {
    const enum gq_ggml_type t = w->type;
    const int nb = w->cols / 32, sbs = (int)gq_ggml_sb16_bytes(t);
    const bool q8 = t == GQ_TYPE_Q8_0, q5 = t == GQ_TYPE_Q5_0 || t == GQ_TYPE_Q5_1, min = t == GQ_TYPE_Q4_1 || t == GQ_TYPE_Q5_1;
    const int off = t == GQ_TYPE_Q4_0 ? 8 : t == GQ_TYPE_Q5_0 ? 16 : 0;
    const int om = 32, oqh = min ? 64 : 32, oqs = (q5 ? oqh + 64 : min ? 64 : 32);
    for (int b = 0; b < nb; b++) {
        const uint8_t *sb = w->rp + ((size_t)g * nb + b) * sbs;
        for (int l = 0; l < 16; l++) {
            int16_t *o = wr + (size_t)l * w->cols + 32 * b;
            sc[b * 16 + l] = gq_vqp_f16(sb, l);
            mn[b * 16 + l] = min ? gq_vqp_f16(sb + om, l) : 0;
            if (q8) {
                for (int c = 0; c < 8; c++)
                    for (int j = 0; j < 4; j++) o[4 * c + j] = (int8_t)sb[oqs + 64 * c + 4 * l + j];
                continue;
            }
            for (int i = 0; i < 4; i++)
                for (int j = 0; j < 4; j++) {
                    const uint8_t byte = sb[oqs + 64 * i + 4 * l + j];
                    int lo = byte & 15, hi = byte >> 4;
                    if (q5) {
                        const int bit = 4 * l + j;
                        lo |= (sb[oqh + 8 * i + bit / 8] >> (bit % 8) & 1) << 4;
                        hi |= (sb[oqh + 8 * (4 + i) + bit / 8] >> (bit % 8) & 1) << 4;
                    }
                    o[4 * i + j] = (int16_t)(lo - off), o[16 + 4 * i + j] = (int16_t)(hi - off);
                }
        }
    }
}

// AVX-512 versions: the same codes, by the GEMV kernels' lookups.

// Repacked superblocks: codes as in g16_avx512 (lane l = row l, 4 columns
// per register), stored, re-read by row and widened to int16.
AVX512_FN static GQ_INLINE void transpose4x16(__m512i a0, __m512i a1, __m512i a2, __m512i a3, __m512i *r) {
    // dword l of a_c -> lane L (128-bit) of r_k holds a_0..a_3's dword 4L + k: row 4L + k's 16 bytes
    const __m512i t0 = _mm512_unpacklo_epi32(a0, a1), t1 = _mm512_unpackhi_epi32(a0, a1);
    const __m512i t2 = _mm512_unpacklo_epi32(a2, a3), t3 = _mm512_unpackhi_epi32(a2, a3);
    r[0] = _mm512_unpacklo_epi64(t0, t2), r[1] = _mm512_unpackhi_epi64(t0, t2);
    r[2] = _mm512_unpacklo_epi64(t1, t3), r[3] = _mm512_unpackhi_epi64(t1, t3);
}

AVX512_FN static void rows16_from_repack_avx512(const struct gq_qweight *w, int g, int16_t *wr, float *sc, float *mn) {
    const enum gq_ggml_type t = w->type;
    const int nb = w->cols / 32, sbs = (int)gq_ggml_sb16_bytes(t), cols = w->cols;
    const bool q8 = t == GQ_TYPE_Q8_0, q5 = t == GQ_TYPE_Q5_0 || t == GQ_TYPE_Q5_1, min = t == GQ_TYPE_Q4_1 || t == GQ_TYPE_Q5_1;
    const int off = t == GQ_TYPE_Q4_0 ? 8 : t == GQ_TYPE_Q5_0 ? 16 : 0;
    const int om = 32, oqh = min ? 64 : 32, oqs = (q5 ? oqh + 64 : min ? 64 : 32);
    const __m512i m4 = _mm512_set1_epi8(15), b16 = _mm512_set1_epi8(16), vo = _mm512_set1_epi8((char)off);
    const __m512i pa = _mm512_setr_epi64(0, 1, 8, 9, 2, 3, 10, 11), pb = _mm512_setr_epi64(4, 5, 12, 13, 6, 7, 14, 15);
    for (int b = 0; b < nb; b++) {
        const uint8_t *sb = w->rp + ((size_t)g * nb + b) * sbs;
        __m512i W[8]; // lane l: row l's codes of columns 4c .. 4c + 3
        if (q8) {
            for (int c = 0; c < 8; c++) W[c] = _mm512_loadu_si512(sb + oqs + 64 * c);
        } else {
            for (int i = 0; i < 4; i++) {
                const __m512i a = _mm512_loadu_si512(sb + oqs + 64 * i);
                __m512i lo = _mm512_and_si512(a, m4), hi = _mm512_and_si512(_mm512_srli_epi16(a, 4), m4);
                if (q5) {
                    uint64_t kl, kh;
                    memcpy(&kl, sb + oqh + 8 * i, 8);
                    memcpy(&kh, sb + oqh + 8 * (4 + i), 8);
                    lo = _mm512_mask_add_epi8(lo, kl, lo, b16), hi = _mm512_mask_add_epi8(hi, kh, hi, b16);
                }
                W[i] = _mm512_sub_epi8(lo, vo), W[4 + i] = _mm512_sub_epi8(hi, vo);
            }
        }
        __m512i R[4], S[4]; // columns 0-15 / 16-31 of rows 4L + k in lane L
        transpose4x16(W[0], W[1], W[2], W[3], R);
        transpose4x16(W[4], W[5], W[6], W[7], S);
        for (int k = 0; k < 4; k++) {
            const __m512i za = _mm512_permutex2var_epi64(R[k], pa, S[k]); // rows k, 4 + k: 32 codes each
            const __m512i zb = _mm512_permutex2var_epi64(R[k], pb, S[k]); // rows 8 + k, 12 + k
            int16_t *o = wr + 32 * b;
            _mm512_storeu_si512(o + (size_t)k * cols, _mm512_cvtepi8_epi16(_mm512_castsi512_si256(za)));
            _mm512_storeu_si512(o + (size_t)(4 + k) * cols, _mm512_cvtepi8_epi16(_mm512_extracti64x4_epi64(za, 1)));
            _mm512_storeu_si512(o + (size_t)(8 + k) * cols, _mm512_cvtepi8_epi16(_mm512_castsi512_si256(zb)));
            _mm512_storeu_si512(o + (size_t)(12 + k) * cols, _mm512_cvtepi8_epi16(_mm512_extracti64x4_epi64(zb, 1)));
        }
        _mm512_storeu_ps(sc + 16 * b, _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)sb)));
        _mm512_storeu_ps(mn + 16 * b, min ? _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(sb + om))) : _mm512_setzero_ps());
    }
}

// A VQ row's codes (int8, position order from np) for the AVX-512 kernel
// kinds; false: not one of them.
AVX512_FN static bool vq_row_codes_avx512(const struct gq_vqrt *v, int r, int rtile, int8_t *o) {
    const struct gq_vqpack_hdr *h = &v->p.h;
    const int nv = v->nv, d = h->d, nct = h->n_ct;
    const uint8_t *is = v->p.part[GQ_VQP_IDX];
    const __m512i x80 = _mm512_set1_epi8((char)0x80);
    if (v->fast == GQ_VQF_NIB) {
        const uint8_t *ib = is + (size_t)r * nv / 2;
        uint8_t lo_i[64], hi_i[64];
        for (int m = 0; m < 64; m++) lo_i[m] = (uint8_t)((m & 1) * 64 + m / 2), hi_i[m] = (uint8_t)((m & 1) * 64 + 32 + m / 2);
        const __m512i ilo = _mm512_loadu_si512(lo_i), ihi = _mm512_loadu_si512(hi_i);
        for (int s = 0; s < (nv + 63) / 64; s++) {
            const int nvs = nv - 64 * s < 64 ? nv - 64 * s : 64, nb = nvs / 2;
            const __m256i raw = _mm256_maskz_loadu_epi8(nb >= 32 ? 0xFFFFFFFFu : (1u << nb) - 1, ib + 32 * s);
            const __m512i wv = _mm512_cvtepu8_epi16(raw);
            const __m512i z = _mm512_or_si512(_mm512_and_si512(wv, _mm512_set1_epi16(0x000F)),
                                              _mm512_slli_epi16(_mm512_and_si512(wv, _mm512_set1_epi16(0x00F0)), 4));
            __m512i T[2] = {_mm512_setzero_si512(), _mm512_setzero_si512()};
            for (int j = 0; j < d; j++) {
                const int h0 = v->half_ct[gq_min_i(2 * s, (nv - 1) / 32)], h1 = v->half_ct[gq_min_i(2 * s + 1, (nv - 1) / 32)];
                const uint8_t *t0 = v->tab + ((size_t)((int64_t)rtile * nct + h0) * 16 * d) + 16 * j;
                const uint8_t *t1 = v->tab + ((size_t)((int64_t)rtile * nct + h1) * 16 * d) + 16 * j;
                T[j] = _mm512_xor_si512(_mm512_inserti64x4(_mm512_castsi256_si512(_mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)t0))),
                                                           _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)t1)), 1), x80);
            }
            const __m512i c0 = _mm512_shuffle_epi8(T[0], z);
            if (d == 1) {
                _mm512_mask_storeu_epi8(o + 64 * s, nvs >= 64 ? ~0ull : (1ull << nvs) - 1, c0);
                continue;
            }
            const __m512i c1 = _mm512_shuffle_epi8(T[1], z);
            const int np2 = 2 * nvs; // positions of this step
            _mm512_mask_storeu_epi8(o + 128 * s, np2 >= 64 ? ~0ull : (1ull << np2) - 1, _mm512_permutex2var_epi8(c0, ilo, c1));
            if (np2 > 64) _mm512_mask_storeu_epi8(o + 128 * s + 64, np2 >= 128 ? ~0ull : (1ull << (np2 - 64)) - 1, _mm512_permutex2var_epi8(c0, ihi, c1));
        }
        return true;
    }
    if (v->fast == GQ_VQF_D2K64 || v->fast == GQ_VQF_D2K64H) {
        const uint8_t *ib = is + (size_t)r * nv * 3 / 4;
        const __m512i spread = _mm512_set_epi8(47, 47, 47, 46, 45, 44, 43, 42, 41, 41, 41, 40, 39, 38, 37, 36, 35, 35, 35, 34, 33,
                                               32, 31, 30, 29, 29, 29, 28, 27, 26, 25, 24, 23, 23, 23, 22, 21, 20, 19, 18, 17, 17,
                                               17, 16, 15, 14, 13, 12, 11, 11, 11, 10, 9, 8, 7, 6, 5, 5, 5, 4, 3, 2, 1, 0);
        const __m512i shifts = _mm512_set1_epi64(0x2A241E18120C0600ll);
        uint8_t lo_i[64], hi_i[64];
        for (int m = 0; m < 64; m++) lo_i[m] = (uint8_t)((m & 1) * 64 + m / 2), hi_i[m] = (uint8_t)((m & 1) * 64 + 32 + m / 2);
        const __m512i ilo = _mm512_loadu_si512(lo_i), ihi = _mm512_loadu_si512(hi_i);
        for (int ct = 0; ct < nct; ct++) {
            const uint8_t *tg = v->tab + (size_t)((int64_t)rtile * nct + ct) * 128;
            const __m512i t0 = _mm512_xor_si512(_mm512_loadu_si512(tg), x80), t1 = _mm512_xor_si512(_mm512_loadu_si512(tg + 64), x80);
            for (int vec = v->vt_start[ct]; vec < v->vt_start[ct + 1]; vec += 64) {
                const int n = gq_min_i(64, v->vt_start[ct + 1] - vec), nb = n * 3 / 4, np2 = 2 * n;
                const __m512i raw = _mm512_maskz_loadu_epi8(nb >= 64 ? ~0ull : (1ull << nb) - 1, ib + (size_t)vec * 3 / 4);
                const __m512i ix = _mm512_multishift_epi64_epi8(shifts, _mm512_permutexvar_epi8(spread, raw));
                const __m512i c0 = _mm512_permutexvar_epi8(ix, t0), c1 = _mm512_permutexvar_epi8(ix, t1);
                _mm512_mask_storeu_epi8(o + 2 * (size_t)vec, np2 >= 64 ? ~0ull : (1ull << np2) - 1, _mm512_permutex2var_epi8(c0, ilo, c1));
                if (np2 > 64)
                    _mm512_mask_storeu_epi8(o + 2 * (size_t)vec + 64, np2 >= 128 ? ~0ull : (1ull << (np2 - 64)) - 1,
                                            _mm512_permutex2var_epi8(c0, ihi, c1));
            }
        }
        return true;
    }
    if (v->fast == GQ_VQF_D2K256 || v->fast == GQ_VQF_D4K256) { // byte indices: per coordinate two 128-entry halves,
                                                                 // blended on bit 7
        const uint8_t *ib = is + (size_t)r * nv;
        uint16_t i01[32], i23[32];
        for (int m = 0; m < 32; m++) i01[m] = (uint16_t)((m & 1) * 32 + m / 2), i23[m] = (uint16_t)((m & 1) * 32 + 16 + m / 2);
        const __m512i w01 = _mm512_loadu_si512(i01), w23 = _mm512_loadu_si512(i23);
        uint8_t lo_i[64], hi_i[64];
        for (int m = 0; m < 64; m++) lo_i[m] = (uint8_t)((m & 1) * 64 + m / 2), hi_i[m] = (uint8_t)((m & 1) * 64 + 32 + m / 2);
        const __m512i ilo = _mm512_loadu_si512(lo_i), ihi = _mm512_loadu_si512(hi_i);
        for (int ct = 0; ct < nct; ct++) {
            const uint8_t *tg = v->tab + (size_t)((int64_t)rtile * nct + ct) * 256 * d;
            __m512i T[16];
            for (int i = 0; i < 4 * d; i++) T[i] = _mm512_xor_si512(_mm512_loadu_si512(tg + 64 * i), x80);
            for (int vec = v->vt_start[ct]; vec < v->vt_start[ct + 1]; vec += 64) {
                const int n = gq_min_i(64, v->vt_start[ct + 1] - vec), npos = d * n;
                const __m512i ix = _mm512_maskz_loadu_epi8(n >= 64 ? ~0ull : (1ull << n) - 1, ib + vec);
                const __mmask64 hib = _mm512_movepi8_mask(ix);
                __m512i C[4];
                for (int j = 0; j < d; j++)
                    C[j] = _mm512_mask_blend_epi8(hib, _mm512_permutex2var_epi8(T[4 * j], ix, T[4 * j + 1]),
                                                  _mm512_permutex2var_epi8(T[4 * j + 2], ix, T[4 * j + 3]));
                // pairs (c0, c1) (and (c2, c3)) of vectors 0-31 / 32-63; d 4: then the pairs interleaved as words
                const __m512i p01a = _mm512_permutex2var_epi8(C[0], ilo, C[1]), p01b = _mm512_permutex2var_epi8(C[0], ihi, C[1]);
                __m512i q[4] = {p01a, p01b};
                if (d == 4) {
                    const __m512i p23a = _mm512_permutex2var_epi8(C[2], ilo, C[3]), p23b = _mm512_permutex2var_epi8(C[2], ihi, C[3]);
                    q[0] = _mm512_permutex2var_epi16(p01a, w01, p23a), q[1] = _mm512_permutex2var_epi16(p01a, w23, p23a);
                    q[2] = _mm512_permutex2var_epi16(p01b, w01, p23b), q[3] = _mm512_permutex2var_epi16(p01b, w23, p23b);
                }
                for (int k = 0; k < d && 64 * k < npos; k++)
                    _mm512_mask_storeu_epi8(o + (size_t)d * vec + 64 * k, npos - 64 * k >= 64 ? ~0ull : (1ull << (npos - 64 * k)) - 1, q[k]);
            }
        }
        return true;
    }
    return false;
}

AVX512_FN static void widen_i8_avx512(const int8_t *a, int16_t *o, int n) {
    int i = 0;
    for (; i + 32 <= n; i += 32) _mm512_storeu_si512(o + i, _mm512_cvtepi8_epi16(_mm256_loadu_si256((const __m256i *)(a + i))));
    for (; i < n; i++) o[i] = a[i];
}

static void rows16_decode(const struct gq_qweight *w, const struct segs *S, int r0, int16_t *wr, float *sc, float *mn) {
    const int np = S->np, width = w->cols - np;
    const int nvalid = w->rows - r0 < 16 ? w->rows - r0 : 16;
    if (nvalid < 16) {
        memset(wr, 0, sizeof(int16_t) * (size_t)width * 16);
        memset(sc, 0, sizeof(float) * (size_t)S->n * 16);
        memset(mn, 0, sizeof(float) * (size_t)S->n * 16);
    }
    const bool avx512 = gq_qmatmul_isa() == GQ_ISA_AVX512;
    if (w->kind == GQ_QW_GGML && w->rp && r0 % 16 == 0 && nvalid == 16) {
        if (avx512) rows16_from_repack_avx512(w, r0 / 16, wr, sc, mn);
        else rows16_from_repack(w, r0 / 16, wr, sc, mn);
        return;
    }
    int8_t *codes = w->kind == GQ_QW_VQ && avx512 && w->vq->fast ? gq_kscratch(GQ_SCR_GEMM_B, (size_t)width + 256) : NULL;
    for (int l = 0; l < nvalid; l++) {
        const int r = r0 + l;
        int16_t *o = wr + (size_t)l * width;
        if (w->kind == GQ_QW_GGML) {
            const int nb = w->cols / 32, bs = (int)(w->row_size / (size_t)nb);
            for (int b = 0; b < nb; b++) {
                const uint8_t *blk = (const uint8_t *)w->data + (size_t)r * w->row_size + (size_t)b * bs;
                float d = 0, m = 0;
                for (int j = 0; j < 32; j++) o[32 * b + j] = (int16_t)ggml_code(w->type, blk, j, &d, &m);
                sc[b * 16 + l] = d, mn[b * 16 + l] = m;
            }
            continue;
        }
        const struct gq_vqrt *v = w->vq;
        const struct gq_vqpack_hdr *h = &v->p.h;
        const int d = h->d, k = h->k, lk = v->lk;
        int rtile = 0;
        while (rtile + 1 < h->n_rt && v->rt_start[rtile + 1] <= r) rtile++;
        if (codes && vq_row_codes_avx512(v, r, rtile, codes)) {
            widen_i8_avx512(codes, o, width);
            goto scales;
        }
        const int8_t *cbs = (const int8_t *)v->p.part[GQ_VQP_CB];
        const uint8_t *is = v->p.part[GQ_VQP_IDX];
        const size_t ibytes = v->p.bytes[GQ_VQP_IDX];
        for (int ct = 0; ct < h->n_ct; ct++) {
            const int8_t *cb = cbs + (size_t)((int64_t)rtile * h->n_ct + ct) * k * d;
            for (int vec = v->vt_start[ct]; vec < v->vt_start[ct + 1]; vec++) {
                const uint64_t bit = ((uint64_t)r * v->nv + vec) * lk;
                uint32_t ix;
                if ((bit >> 3) + 8 <= ibytes) {
                    uint64_t win;
                    memcpy(&win, is + (bit >> 3), 8);
                    ix = (uint32_t)(win >> (bit & 7)) & ((1u << lk) - 1);
                } else {
                    ix = gq_bits_get(is, (int64_t)r * v->nv + vec, lk);
                }
                const int8_t *c = cb + (size_t)ix * d;
                for (int j = 0; j < d; j++) o[vec * d + j] = c[j];
            }
        }
    scales:
        for (int s = 0; s < S->n; s++) {
            const int64_t g = (int64_t)rtile * h->n_ct + S->ct[s];
            float f = v->cbs[g];
            if (S->blk[s] >= 0) f *= v->nsc[g * 16 + (int)gq_bits_get(v->p.part[GQ_VQP_NSINT], (int64_t)r * v->n_nblk + S->blk[s], 4)];
            sc[s * 16 + l] = f;
        }
    }
}

// ---------------------------------------------------------------------------
// Microkernels: 8 rows (wr, 8 rows of width codes) × one token block ->
// tile[r · TL + t]. Per segment the exact int32 sums of code pairs ×
// token pairs (tokens in lanes, the row's pair broadcast), then
// × (x scale of the token · weight scale of the row), + min · x scale · Σ x.

#define REP8(M) M(0) M(1) M(2) M(3) M(4) M(5) M(6) M(7)

// A 16-row panel (row l's codes at wr + l · width) to column-pair order: the
// dword (pair p, row l) at wp[16 p + l], rows in lanes.
AVX512_FN static void panel_pairs_avx512(const int16_t *wr, int width, int32_t *wp) {
    const int npairs = width / 2;
    int p = 0;
    for (; p + 16 <= npairs; p += 16) {
        __m512i r[16], t[16];
        for (int l = 0; l < 16; l++) r[l] = _mm512_loadu_si512(wr + (size_t)l * width + 2 * p);
        // 16 x 16 dwords: pairs of rows, then quads, then 128-bit lanes
        for (int l = 0; l < 16; l += 2)
            t[l] = _mm512_unpacklo_epi32(r[l], r[l + 1]), t[l + 1] = _mm512_unpackhi_epi32(r[l], r[l + 1]);
        for (int l = 0; l < 16; l += 4) {
            r[l] = _mm512_unpacklo_epi64(t[l], t[l + 2]), r[l + 1] = _mm512_unpackhi_epi64(t[l], t[l + 2]);
            r[l + 2] = _mm512_unpacklo_epi64(t[l + 1], t[l + 3]), r[l + 3] = _mm512_unpackhi_epi64(t[l + 1], t[l + 3]);
        }
        // r[4g + j]: rows 4g .. 4g + 3 of pairs {j, 4 + j, 8 + j, 12 + j} (one per 128-bit lane)
        const __m512i lo = _mm512_setr_epi64(0, 1, 8, 9, 2, 3, 10, 11), hi = _mm512_setr_epi64(4, 5, 12, 13, 6, 7, 14, 15);
        for (int j = 0; j < 4; j++) {
            const __m512i a0 = _mm512_permutex2var_epi64(r[j], lo, r[4 + j]), a1 = _mm512_permutex2var_epi64(r[j], hi, r[4 + j]);
            const __m512i b0 = _mm512_permutex2var_epi64(r[8 + j], lo, r[12 + j]), b1 = _mm512_permutex2var_epi64(r[8 + j], hi, r[12 + j]);
            // a0: rows 0-7 of pairs j (lanes 0, 1), 4 + j (lanes 2, 3); b0: rows 8-15
            t[j] = _mm512_shuffle_i64x2(a0, b0, 0x44), t[4 + j] = _mm512_shuffle_i64x2(a0, b0, 0xEE);
            t[8 + j] = _mm512_shuffle_i64x2(a1, b1, 0x44), t[12 + j] = _mm512_shuffle_i64x2(a1, b1, 0xEE);
        }
        for (int j = 0; j < 16; j++) _mm512_storeu_si512(wp + (size_t)(p + j) * 16, t[j]);
    }
    for (; p < npairs; p++)
        for (int l = 0; l < 16; l++) memcpy(wp + (size_t)p * 16 + l, wr + (size_t)l * width + 2 * p, 4);
}

// 16 rows (wp: column-pair order, rows in lanes) × one block of 16 tokens,
// summed over the segments in tile (16 x 16 floats, 64-byte aligned), then
// to y (nr rows of nt tokens, token t's at y + t · ld): per token an
// accumulator, the token's code pair broadcast. The same roundings, in the
// same order, as mk_avx2 per row and token.
#define REP16(M) M(0) M(1) M(2) M(3) M(4) M(5) M(6) M(7) M(8) M(9) M(10) M(11) M(12) M(13) M(14) M(15)

AVX512_FN static void mk16_avx512(const int32_t *wp, const float *sc, const float *mn, bool has_min, const struct segs *S,
                                  const int32_t *xt, const float *xs, const float *xm, float *tile, float *y, int ld, int nr,
                                  int nt) {
    const int np = S->np;
    for (int k = 0; k < S->n; k++) {
#define DECL(t) __m512i a##t = _mm512_setzero_si512();
        REP16(DECL)
#undef DECL
        for (int q = (S->p0[k] - np) / 2; q < (S->p0[k + 1] - np) / 2; q++) {
            const __m512i wv = _mm512_loadu_si512(wp + (size_t)q * 16);
            const int32_t *xq = xt + (size_t)q * 16;
// (asm: GCC 12 copies every _mm512_dpwssd_epi32 accumulator to another
// register and back, and spills, at half the speed; here each accumulates in
// place, the token's pair an embedded broadcast)
#define DOT(t) __asm__("vpdpwssd %2%{1to16%}, %1, %0" : "+v"(a##t) : "v"(wv), "m"(xq[t]));
            REP16(DOT)
#undef DOT
        }
        const __m512 sc16 = _mm512_loadu_ps(sc + 16 * k), mn16 = _mm512_loadu_ps(mn + 16 * k);
#define FLUSH(t)                                                                                              \
    {                                                                                                         \
        __m512 f = k ? _mm512_load_ps(tile + 16 * t) : _mm512_setzero_ps();                                   \
        f = _mm512_fmadd_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(a##t), _mm512_set1_ps(xs[16 * k + t])), sc16, f); \
        if (has_min) f = _mm512_fmadd_ps(_mm512_set1_ps(xm[16 * k + t]), mn16, f);                            \
        _mm512_store_ps(tile + 16 * t, f);                                                                    \
    }
        REP16(FLUSH)
#undef FLUSH
    }
    // rows [0, nr) of tokens [0, nt) to y, once (its lines are shared with
    // the neighbouring panels' threads)
    for (int t = 0; t < nt; t++) _mm512_mask_storeu_ps(y + (size_t)t * ld, (__mmask16)((1u << nr) - 1), _mm512_load_ps(tile + 16 * t));
}

AVX2_FN static void mk_avx2(const int16_t *wr, int width, const float *sc, const float *mn, bool has_min,
                            const struct segs *S, const int32_t *xt, const float *xs, const float *xm, float *tile) {
    const int np = S->np, nseg = S->n;
    const int16_t *w0 = wr, *w1 = wr + width, *w2 = wr + 2 * width, *w3 = wr + 3 * width;
    const int16_t *w4 = wr + 4 * width, *w5 = wr + 5 * width, *w6 = wr + 6 * width, *w7 = wr + 7 * width;
#define DECL(r) __m256 f##r = _mm256_setzero_ps();
    REP8(DECL)
#undef DECL
    for (int k = 0; k < nseg; k++) {
#define DECL(r) __m256i a##r = _mm256_setzero_si256();
        REP8(DECL)
#undef DECL
        for (int q = S->p0[k] - np; q < S->p0[k + 1] - np; q += 2) {
            const __m256i xv = _mm256_loadu_si256((const __m256i *)(xt + (size_t)(q / 2) * 8));
#define DOT(r)                                                                           \
    {                                                                                    \
        int32_t ww;                                                                      \
        memcpy(&ww, w##r + q, 4);                                                        \
        a##r = _mm256_add_epi32(a##r, _mm256_madd_epi16(xv, _mm256_set1_epi32(ww)));     \
    }
            REP8(DOT)
#undef DOT
        }
        const __m256 xs8 = _mm256_loadu_ps(xs + 8 * k), xm8 = _mm256_loadu_ps(xm + 8 * k);
#define FLUSH(r)                                                                                                  \
    f##r = _mm256_fmadd_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(a##r), xs8), _mm256_set1_ps(sc[16 * k + r]), f##r); \
    if (has_min) f##r = _mm256_fmadd_ps(xm8, _mm256_set1_ps(mn[16 * k + r]), f##r);
        REP8(FLUSH)
#undef FLUSH
    }
#define STORE(r) _mm256_storeu_ps(tile + 8 * r, f##r);
    REP8(STORE)
#undef STORE
}

static enum gq_status gemm_int(float *y, const float *x, const struct gq_qweight *w, int n, enum gq_isa isa) {
    struct segs S;
    GQ_TRY(segs_make(w, &S));
    if (S.n < 0) return gemm_f32(y, x, w, n);
    const int cols = w->cols, rows = w->rows, width = cols - S.np, nblk = (rows + 15) / 16;
    const bool has_min = w->kind == GQ_QW_GGML && (w->type == GQ_TYPE_Q4_1 || w->type == GQ_TYPE_Q5_1);
    struct xblocks X = {.tl = isa == GQ_ISA_AVX512 ? 16 : 8, .npairs = width / 2};
    X.ntb = (n + X.tl - 1) / X.tl;
    const size_t ntok = (size_t)X.ntb * X.tl;
    // the calling thread's scratch, kept from call to call (fresh buffers of
    // megabytes each call cost page faults and unmaps: 5 % of a prefill)
    X.xp = gq_kscratch(GQ_SCR_GEMM_XP, sizeof(float) * (size_t)n * cols);
    X.xt = gq_kscratch(GQ_SCR_GEMM_XT, sizeof(int32_t) * ntok * X.npairs + 64);
    X.xs = gq_kscratch(GQ_SCR_GEMM_XS, sizeof(float) * ntok * S.n * 4), X.xm = X.xs ? X.xs + ntok * S.n : NULL;
    int16_t *xq = gq_kscratch(GQ_SCR_GEMM_XQ, sizeof(int16_t) * ntok * (size_t)width + 64);
    if (!X.xp || !X.xt || !X.xs || !xq) {
        segs_free(&S);
        return gq_fail(GQ_ERR_NOMEM, "qmatmul: int16 activations of %d tokens", n);
    }
    quantize_x16(w, &S, x, n, &X, xq, X.xm + ntok * S.n, X.xm + 2 * ntok * S.n, isa);
    enum gq_status err = GQ_OK;
    const size_t wr_b = (sizeof(int16_t) * ((size_t)width * 16 + 32) + 63) & ~(size_t)63, sc_b = sizeof(float) * (size_t)S.n * 16;
#pragma omp parallel
    {
        int16_t *wr = gq_kscratch(GQ_SCR_GEMM_A, 2 * wr_b + 2 * sc_b + sizeof(float) * 16 * 16 + 256);
        if (!wr) {
#pragma omp critical(gq_gemm_err)
            err = GQ_ERR_NOMEM;
        } else {
            int32_t *wp = (int32_t *)((char *)wr + wr_b); // AVX-512: the panel in column-pair order
            float *sc = (float *)((char *)wp + wr_b), *mn = sc + (size_t)S.n * 16;
            float *tile = (float *)(((uintptr_t)(mn + (size_t)S.n * 16) + 63) & ~(uintptr_t)63);
#pragma omp for schedule(dynamic, 1)
            for (int bi = 0; bi < nblk; bi++) {
                const int r0 = 16 * bi;
                rows16_decode(w, &S, r0, wr, sc, mn);
                if (isa == GQ_ISA_AVX512) {
                    panel_pairs_avx512(wr, width, wp);
                    for (int tb = 0; tb < X.ntb; tb++) {
                        const int t0 = tb * X.tl;
                        mk16_avx512(wp, sc, mn, has_min, &S, X.xt + (size_t)tb * X.npairs * X.tl, X.xs + (size_t)tb * S.n * X.tl,
                                    X.xm + (size_t)tb * S.n * X.tl, tile, y + (size_t)t0 * rows + r0, rows,
                                    rows - r0 < 16 ? rows - r0 : 16, n - t0 < X.tl ? n - t0 : X.tl);
                    }
                }
                for (int tb = 0; tb < X.ntb && isa != GQ_ISA_AVX512; tb++) {
                    const int32_t *xt = X.xt + (size_t)tb * X.npairs * X.tl;
                    const float *xs = X.xs + (size_t)tb * S.n * X.tl, *xm = X.xm + (size_t)tb * S.n * X.tl;
                    const int t0 = tb * X.tl, nt = n - t0 < X.tl ? n - t0 : X.tl;
                    for (int half = 0; half < 2; half++) {
                        const int rh = r0 + 8 * half;
                        if (rh >= rows) break;
                        const int16_t *wh = wr + (size_t)8 * half * width;
                        const float *sh = sc + 8 * half, *mh = mn + 8 * half;
                        mk_avx2(wh, width, sh, mh, has_min, &S, xt, xs, xm, tile);
                        const int nr = rows - rh < 8 ? rows - rh : 8;
                        for (int t = 0; t < nt; t++)
                            for (int r = 0; r < nr; r++) y[(size_t)(t0 + t) * rows + rh + r] = tile[r * X.tl + t];
                    }
                }
                if (S.np) { // VQ outlier columns, float
                    const struct gq_vqrt *v = w->vq;
                    for (int r = r0; r < r0 + 16 && r < rows; r++)
                        for (int t = 0; t < n; t++) {
                            float acc = 0;
                            for (int p = 0; p < S.np; p++)
                                acc += gq_vqp_f16(v->p.part[GQ_VQP_OUTL], (int64_t)r * S.np + p) * X.xp[(size_t)t * cols + p];
                            y[(size_t)t * rows + r] += acc;
                        }
                }
            }
        }
    }
    segs_free(&S);
    return err == GQ_OK ? GQ_OK : gq_fail(err, "qmatmul: rows of %d columns", cols);
}

enum gq_status gq_gemm(float *y, const float *x, const struct gq_qweight *w, int n) {
    const enum gq_isa isa = gq_qmatmul_isa();
    if (isa >= GQ_ISA_AVX2 && int_path(w)) return gemm_int(y, x, w, n, isa);
    return gemm_f32(y, x, w, n);
}
