// qmatmul.c - compressed-weight matrix products (contract: qmatmul.h).
//
// Layout of this file: the packed-VQ runtime view and its decode rule; then,
// per weight kind, the scalar reference GEMV and beside it the AVX2/FMA GEMV;
// then the prefill path (decode chunks of rows, sgemm) and the dispatch.
// The AVX2 functions are compiled with a target attribute and only called
// when the CPU reports AVX2, FMA and F16C.
#include "kern/qmatmul.h"
#include "util/common.h"

#include <cblas.h>
#include <cpuid.h>
#include <immintrin.h>
#include <omp.h>

#define AVX2_FN __attribute__((target("avx2,fma,f16c")))

// ---------------------------------------------------------------------------
// Packed VQ: runtime view and decode rule.

void gq_vqrt_free(struct gq_vqrt *v) {
    if (!v) return;
    free(v->ct_start), free(v->rt_start), free(v->vt_start), free(v->blk0), free(v->perm);
    memset(v, 0, sizeof *v);
}

enum gq_status gq_vqrt_init(struct gq_vqrt *v, const struct gq_vqpack *p, const char *what) {
    memset(v, 0, sizeof *v);
    struct gq_vq_tensor t; // full check of the pack (sizes, permutation, finite values)
    GQ_TRY(gq_vqpack_unpack(p, what, &t));
    v->p = *p;
    const struct gq_vqpack_hdr *h = &p->h;
    v->nv = (h->cols - h->n_out) / h->d;
    while ((1 << v->lk) < h->k) v->lk++;
    v->n_nblk = t.n_nblk;
    v->ct_start = malloc(sizeof(int) * (h->n_ct + 1)), v->rt_start = malloc(sizeof(int) * (h->n_rt + 1));
    v->blk0 = malloc(sizeof(int) * h->n_ct), v->vt_start = malloc(sizeof(int) * (h->n_ct + 1));
    if (h->has_perm) v->perm = malloc(sizeof(int32_t) * h->cols);
    if (!v->ct_start || !v->rt_start || !v->blk0 || !v->vt_start || (h->has_perm && !v->perm)) {
        gq_vq_tensor_free(&t), gq_vqrt_free(v);
        return gq_fail(GQ_ERR_NOMEM, "%s: packed matrix view", what);
    }
    memcpy(v->ct_start, t.ct_start, sizeof(int) * (h->n_ct + 1));
    memcpy(v->rt_start, t.rt_start, sizeof(int) * (h->n_rt + 1));
    if (v->perm) memcpy(v->perm, t.perm, sizeof(int32_t) * h->cols);
    for (int c = 0; c <= h->n_ct; c++) v->vt_start[c] = (v->ct_start[c] - h->n_out) / h->d;
    for (int c = 0, b = 0; c < h->n_ct; c++) {
        v->blk0[c] = b;
        if (h->norm_block) b += (v->ct_start[c + 1] - v->ct_start[c] + h->norm_block - 1) / h->norm_block;
    }
    gq_vq_tensor_free(&t);
    if (h->cb_format == GQ_CB_INT8 && h->stages == 1 && !h->norm_block && !h->svd_rank) {
        v->q8 = h->d == 2 && v->lk == 4 ? GQ_VQ_Q8_NIB2 : h->d == 4 && v->lk == 8 ? GQ_VQ_Q8_BYTE4 : 0;
        // the sign trick of the kernels needs codes in [-127, 127] (ours are)
        for (size_t i = 0; v->q8 && i < p->bytes[GQ_VQP_CB]; i++)
            if ((int8_t)p->part[GQ_VQP_CB][i] == -128) v->q8 = 0;
    }
    return GQ_OK;
}

static inline float vq_norm_scale(const struct gq_vqrt *v, int64_t g, int r, int blk) {
    struct gq_vq_norm nm = {gq_vqp_f16(v->p.part[GQ_VQP_NPAR], 2 * g), gq_vqp_f16(v->p.part[GQ_VQP_NPAR], 2 * g + 1)};
    int si = (int)gq_bits_get(v->p.part[GQ_VQP_NSINT], (int64_t)r * v->n_nblk + blk, 4);
    return gq_vq_norm_scale(nm, si);
}

static inline uint32_t vq_index(const struct gq_vqrt *v, int s, int r, int vec) {
    return gq_bits_get(v->p.part[GQ_VQP_IDX], ((int64_t)s * v->p.h.rows + r) * v->nv + vec, v->lk);
}

static int row_tile_of(const struct gq_vqrt *v, int r) {
    int lo = 0, hi = v->p.h.n_rt - 1;
    while (lo < hi) { // last tile whose start <= r
        int mid = (lo + hi + 1) / 2;
        if (v->rt_start[mid] <= r) lo = mid;
        else hi = mid - 1;
    }
    return lo;
}

// Rows [r0, r1) in position order (the decode rule of vq.h: c0 (+ c1), then
// × the normalisation scale, float arithmetic). cb: scratch of 2·k·d floats.
static void vq_decode_rows_pos(const struct gq_vqrt *v, int r0, int r1, float *out, float *cb) {
    const struct gq_vqpack_hdr *h = &v->p.h;
    const int d = h->d, kd = h->k * d, n = h->cols;
    for (int r = r0; r < r1; r++)
        for (int p = 0; p < h->n_out; p++)
            out[(size_t)(r - r0) * n + p] = gq_vqp_f16(v->p.part[GQ_VQP_OUTL], (int64_t)r * h->n_out + p);
    for (int rt = row_tile_of(v, r0); rt < h->n_rt && v->rt_start[rt] < r1; rt++) {
        const int ra = v->rt_start[rt] > r0 ? v->rt_start[rt] : r0;
        const int rb = v->rt_start[rt + 1] < r1 ? v->rt_start[rt + 1] : r1;
        for (int ct = 0; ct < h->n_ct; ct++) {
            const int64_t g = (int64_t)rt * h->n_ct + ct;
            for (int s = 0; s < h->stages; s++) gq_vqpack_codebook(&v->p, s, g, cb + (size_t)s * kd);
            const int v0 = v->vt_start[ct], v1 = v->vt_start[ct + 1];
            for (int r = ra; r < rb; r++) {
                float *q = out + (size_t)(r - r0) * n + h->n_out;
                for (int vec = v0; vec < v1; vec++) {
                    const float *c0 = cb + (size_t)vq_index(v, 0, r, vec) * d;
                    float qv[8];
                    for (int j = 0; j < d; j++) qv[j] = c0[j];
                    if (h->stages > 1) {
                        const float *c1 = cb + kd + (size_t)vq_index(v, 1, r, vec) * d;
                        for (int j = 0; j < d; j++) qv[j] = qv[j] + c1[j];
                    }
                    if (h->norm_block) {
                        float sc = vq_norm_scale(v, g, r, v->blk0[ct] + (vec - v0) / (h->norm_block / d));
                        for (int j = 0; j < d; j++) qv[j] = qv[j] * sc;
                    }
                    for (int j = 0; j < d; j++) q[(size_t)vec * d + j] = qv[j];
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Packed VQ GEMV: y = W x with xp = x in position order (xp[p] = x[perm[p]]).
// Per row tile (one OpenMP task each): outlier columns, then per column tile
// its codebook(s) decoded once to floats, and for each row of the tile the
// sum over vectors of c[idx] · xp (per normalisation block, then × its scale).

// y[r] = the outlier columns' part of row r, for the rows of tile rt.
static void vq_outliers(const struct gq_vqrt *v, const float *xp, float *y, int rt) {
    const int no = v->p.h.n_out;
    for (int r = v->rt_start[rt]; r < v->rt_start[rt + 1]; r++) {
        float acc = 0;
        for (int p = 0; p < no; p++) acc += gq_vqp_f16(v->p.part[GQ_VQP_OUTL], (int64_t)r * no + p) * xp[p];
        y[r] = acc;
    }
}

// part + Σ_j (c0[j] (+ c1[j])) · x[j · sj] for vector vec of row r (float, j
// ascending): the scalar reference's step and the AVX2 kernels' rest.
static inline float vq_vec_dot(const struct gq_vqrt *v, const float *cb, int r, int vec, const float *x, size_t sj,
                               float part) {
    const int d = v->p.h.d;
    const float *c0 = cb + (size_t)vq_index(v, 0, r, vec) * d;
    const float *c1 = v->p.h.stages > 1 ? cb + (size_t)v->p.h.k * d + (size_t)vq_index(v, 1, r, vec) * d : NULL;
    for (int j = 0; j < d; j++) part += (c1 ? c0[j] + c1[j] : c0[j]) * x[(size_t)j * sj];
    return part;
}

// Scalar reference.
static void vq_gemv_scalar(const struct gq_vqrt *v, const float *xp, float *y, float *cbs) {
    const struct gq_vqpack_hdr *h = &v->p.h;
    const int d = h->d, kd = h->k * d, nb = h->norm_block ? h->norm_block / d : 0;
#pragma omp parallel for schedule(dynamic, 1)
    for (int rt = 0; rt < h->n_rt; rt++) {
        float *cb = cbs + (size_t)omp_get_thread_num() * 2 * kd;
        vq_outliers(v, xp, y, rt);
        for (int ct = 0; ct < h->n_ct; ct++) {
            const int64_t g = (int64_t)rt * h->n_ct + ct;
            for (int s = 0; s < h->stages; s++) gq_vqpack_codebook(&v->p, s, g, cb + (size_t)s * kd);
            const int v0 = v->vt_start[ct], v1 = v->vt_start[ct + 1];
            const float *x = xp + h->n_out;
            for (int r = v->rt_start[rt]; r < v->rt_start[rt + 1]; r++) {
                float acc = 0;
                for (int b0 = v0, blk = v->blk0[ct]; b0 < v1; blk++) {
                    const int b1 = nb && b0 + nb < v1 ? b0 + nb : v1;
                    float part = 0;
                    for (int vec = b0; vec < b1; vec++) part = vq_vec_dot(v, cb, r, vec, x + (size_t)vec * d, 1, part);
                    acc += nb ? part * vq_norm_scale(v, g, r, blk) : part;
                    b0 = b1;
                }
                y[r] += acc;
            }
        }
    }
}

AVX2_FN static inline float hsum256(__m256 a) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

// Eight indices of stage s, row r, vectors vec..vec+7, as int32 lanes.
AVX2_FN static inline __attribute__((always_inline)) __m256i vq_index8(const struct gq_vqrt *v, int s, int r, int vec) {
    const int lk = v->lk;
    const int64_t bit = (((int64_t)s * v->p.h.rows + r) * v->nv + vec) * lk;
    const size_t byte = (size_t)(bit >> 3), sh = (size_t)(bit & 7);
    if (lk <= 7 && byte + 8 <= v->p.bytes[GQ_VQP_IDX]) {
        uint64_t w;
        memcpy(&w, v->p.part[GQ_VQP_IDX] + byte, 8);
        w >>= sh;
        if (lk <= 4) { // all eight in the low 32 bits
            const __m256i shifts = _mm256_mullo_epi32(_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7), _mm256_set1_epi32(lk));
            return _mm256_and_si256(_mm256_srlv_epi32(_mm256_set1_epi32((int)(uint32_t)w), shifts),
                                    _mm256_set1_epi32((1 << lk) - 1));
        }
        const uint64_t m = (1u << lk) - 1;
        return _mm256_setr_epi32((int)(w & m), (int)((w >> lk) & m), (int)((w >> 2 * lk) & m), (int)((w >> 3 * lk) & m),
                                 (int)((w >> 4 * lk) & m), (int)((w >> 5 * lk) & m), (int)((w >> 6 * lk) & m),
                                 (int)((w >> 7 * lk) & m));
    }
    int32_t ix[8];
    for (int i = 0; i < 8; i++) ix[i] = (int32_t)vq_index(v, s, r, vec + i);
    return _mm256_loadu_si256((const __m256i *)ix);
}

// Four rows r..r+3, vectors [vec, b1) in steps of 8, k <= 16 (one stage):
// codebook lookups by permutes of the (lo, hi) tables of each coordinate.
// Returns the first vector not done.
AVX2_FN static inline __attribute__((always_inline)) int vq_rows4_small(const struct gq_vqrt *v, int r, int vec,
                                                                       int b1, const int DIM, const __m256 *tlo,
                                                                       const __m256 *thi, const float *xd, __m256 *pv) {
    const int nv = v->nv;
    const bool two = v->p.h.k > 8;
    __m256 p0 = pv[0], p1 = pv[1], p2 = pv[2], p3 = pv[3];
    for (; vec + 8 <= b1; vec += 8) {
        const __m256i i0 = vq_index8(v, 0, r, vec), i1 = vq_index8(v, 0, r + 1, vec);
        const __m256i i2 = vq_index8(v, 0, r + 2, vec), i3 = vq_index8(v, 0, r + 3, vec);
        const __m256 h0 = _mm256_castsi256_ps(_mm256_slli_epi32(i0, 28)), h1 = _mm256_castsi256_ps(_mm256_slli_epi32(i1, 28));
        const __m256 h2 = _mm256_castsi256_ps(_mm256_slli_epi32(i2, 28)), h3 = _mm256_castsi256_ps(_mm256_slli_epi32(i3, 28));
        for (int j = 0; j < DIM; j++) {
            const __m256 xj = _mm256_loadu_ps(xd + (size_t)j * nv + vec);
            __m256 c0 = _mm256_permutevar8x32_ps(tlo[j], i0), c1 = _mm256_permutevar8x32_ps(tlo[j], i1);
            __m256 c2 = _mm256_permutevar8x32_ps(tlo[j], i2), c3 = _mm256_permutevar8x32_ps(tlo[j], i3);
            if (two) {
                c0 = _mm256_blendv_ps(c0, _mm256_permutevar8x32_ps(thi[j], i0), h0);
                c1 = _mm256_blendv_ps(c1, _mm256_permutevar8x32_ps(thi[j], i1), h1);
                c2 = _mm256_blendv_ps(c2, _mm256_permutevar8x32_ps(thi[j], i2), h2);
                c3 = _mm256_blendv_ps(c3, _mm256_permutevar8x32_ps(thi[j], i3), h3);
            }
            p0 = _mm256_fmadd_ps(c0, xj, p0), p1 = _mm256_fmadd_ps(c1, xj, p1);
            p2 = _mm256_fmadd_ps(c2, xj, p2), p3 = _mm256_fmadd_ps(c3, xj, p3);
        }
    }
    pv[0] = p0, pv[1] = p1, pv[2] = p2, pv[3] = p3;
    return vec;
}

// AVX2, one row tile (the OpenMP loop is outside: compilers do not all carry
// the target attribute into outlined parallel regions). Eight vectors per
// step, each coordinate j a codebook lookup (permutes for k <= 16, else a
// gather) times eight consecutive x values of coordinate j (x de-interleaved
// once per call: xd[j·nv + vec] = xp[n_out + vec·d + j]).
AVX2_FN static void vq_tile_avx2(const struct gq_vqrt *v, const float *xp, const float *xd, float *y, float *cb, int rt) {
    const struct gq_vqpack_hdr *h = &v->p.h;
    const int d = h->d, kd = h->k * d, nb = h->norm_block ? h->norm_block / d : 0, nv = v->nv;
    const int ld = d == 1 ? 0 : d == 2 ? 1 : d == 4 ? 2 : 3;
    const bool small = h->k <= 16 && h->stages == 1;
    vq_outliers(v, xp, y, rt);
    for (int ct = 0; ct < h->n_ct; ct++) {
        const int64_t g = (int64_t)rt * h->n_ct + ct;
        for (int s = 0; s < h->stages; s++) gq_vqpack_codebook(&v->p, s, g, cb + (size_t)s * kd);
        __m256 tlo[8], thi[8];
        if (small)
            for (int j = 0; j < d; j++) {
                float lo[8] = {0}, hv[8] = {0};
                for (int m = 0; m < h->k; m++) (m < 8 ? lo : hv)[m & 7] = cb[(size_t)m * d + j];
                tlo[j] = _mm256_loadu_ps(lo), thi[j] = _mm256_loadu_ps(hv);
            }
        const int v0 = v->vt_start[ct], v1 = v->vt_start[ct + 1];
        int r = v->rt_start[rt];
        // k <= 16: four rows at a time share the x loads and keep four
        // independent FMA chains; the rows left over (and k > 16) go one
        // by one with gathers below
        for (; small && r + 4 <= v->rt_start[rt + 1]; r += 4) {
            float acc[4] = {0, 0, 0, 0};
            for (int b0 = v0, blk = v->blk0[ct]; b0 < v1; blk++) {
                const int b1 = nb && b0 + nb < v1 ? b0 + nb : v1;
                __m256 pv[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
                int vec = b0;
                switch (d) { // compile-time DIM: ix, hi and pv stay in registers
                case 1: vec = vq_rows4_small(v, r, vec, b1, 1, tlo, thi, xd, pv); break;
                case 2: vec = vq_rows4_small(v, r, vec, b1, 2, tlo, thi, xd, pv); break;
                case 4: vec = vq_rows4_small(v, r, vec, b1, 4, tlo, thi, xd, pv); break;
                default: vec = vq_rows4_small(v, r, vec, b1, 8, tlo, thi, xd, pv); break;
                }
                for (int q = 0; q < 4; q++) {
                    float part = hsum256(pv[q]);
                    for (int t = vec; t < b1; t++) part = vq_vec_dot(v, cb, r + q, t, xd + t, nv, part);
                    acc[q] += nb ? part * vq_norm_scale(v, g, r + q, blk) : part;
                }
                b0 = b1;
            }
            for (int q = 0; q < 4; q++) y[r + q] += acc[q];
        }
        for (; r < v->rt_start[rt + 1]; r++) {
            float acc = 0;
            for (int b0 = v0, blk = v->blk0[ct]; b0 < v1; blk++) {
                const int b1 = nb && b0 + nb < v1 ? b0 + nb : v1;
                __m256 pv = _mm256_setzero_ps();
                int vec = b0;
                for (; vec + 8 <= b1; vec += 8) {
                    __m256i o0 = _mm256_slli_epi32(vq_index8(v, 0, r, vec), ld), o1 = o0;
                    if (h->stages > 1) o1 = _mm256_slli_epi32(vq_index8(v, 1, r, vec), ld);
                    for (int j = 0; j < d; j++) {
                        __m256 c = _mm256_i32gather_ps(cb + j, o0, 4);
                        if (h->stages > 1) c = _mm256_add_ps(c, _mm256_i32gather_ps(cb + kd + j, o1, 4));
                        pv = _mm256_fmadd_ps(c, _mm256_loadu_ps(xd + (size_t)j * nv + vec), pv);
                    }
                }
                float part = hsum256(pv);
                for (; vec < b1; vec++) part = vq_vec_dot(v, cb, r, vec, xd + vec, nv, part);
                acc += nb ? part * vq_norm_scale(v, g, r, blk) : part;
                b0 = b1;
            }
            y[r] += acc;
        }
    }
}

static void vq_gemv_avx2(const struct gq_vqrt *v, const float *xp, const float *xd, float *y, float *cbs) {
    const size_t kd = (size_t)v->p.h.k * v->p.h.d;
#pragma omp parallel for schedule(dynamic, 1)
    for (int rt = 0; rt < v->p.h.n_rt; rt++) vq_tile_avx2(v, xp, xd, y, cbs + (size_t)omp_get_thread_num() * 2 * kd, rt);
}

// ---------------------------------------------------------------------------
// Packed VQ GEMV with int8 activations (gq_vqrt.q8, contract in qmatmul.h).
// xq: x in position order rounded to int8 with scale xs[ct] per column tile;
// per row and column tile the exact int32 sum of code · xq, then
// y[r] += (float)sum · (codebook scale · xs[ct]) after the outlier columns.

// Rounds x[0..n) to int8 codes with the scale max|x| / 127 (returned).
// (Halves round away from zero; plain arithmetic, no libm calls.)
static float round_i8(const float *x, int n, int8_t *q) {
    float mx = 0;
    for (int i = 0; i < n; i++) mx = fabsf(x[i]) > mx ? fabsf(x[i]) : mx;
    const float s = mx / 127, inv = s > 0 ? 1 / s : 0;
    for (int i = 0; i < n; i++) {
        const float t = x[i] * inv;
        q[i] = (int8_t)(int)(t + (t < 0 ? -0.5f : 0.5f));
    }
    return s;
}

// Scalar reference.
static void vq_gemv_q8_scalar(const struct gq_vqrt *v, const float *xp, const int8_t *xq, const float *xs, float *y) {
    const struct gq_vqpack_hdr *h = &v->p.h;
    const int d = h->d;
#pragma omp parallel for schedule(dynamic, 1)
    for (int rt = 0; rt < h->n_rt; rt++) {
        vq_outliers(v, xp, y, rt);
        for (int ct = 0; ct < h->n_ct; ct++) {
            const int64_t g = (int64_t)rt * h->n_ct + ct;
            const int8_t *cb = (const int8_t *)v->p.part[GQ_VQP_CB] + (size_t)g * h->k * d;
            const float sc = gq_vqp_f16(v->p.part[GQ_VQP_CBS], g) * xs[ct];
            const int v0 = v->vt_start[ct], v1 = v->vt_start[ct + 1];
            const int8_t *x = xq + h->n_out;
            for (int r = v->rt_start[rt]; r < v->rt_start[rt + 1]; r++) {
                int32_t sum = 0;
                for (int vec = v0; vec < v1; vec++) {
                    const int8_t *c = cb + (size_t)vq_index(v, 0, r, vec) * d;
                    for (int j = 0; j < d; j++) sum += c[j] * x[(size_t)vec * d + j];
                }
                y[r] += (float)sum * sc;
            }
        }
    }
}

// Σ c · x over 32 byte pairs: sign trick (|x| unsigned × sign-moved
// c, pairs summed in int16: at most 2 · 127 · 127), then pairs of int16 into
// int32 lanes.
AVX2_FN static inline __m256i dot_i8(__m256i c, __m256i x, __m256i ax) {
    return _mm256_madd_epi16(_mm256_maddubs_epi16(ax, _mm256_sign_epi8(c, x)), _mm256_set1_epi16(1));
}

// x without the outlier positions in the lane order of the kernels (BYTE4:
// position order; NIB2: per block of 32 vectors (64 bytes) from the start of
// each column tile, byte H·32 + L·16 + 2i + j holds coordinate j of vector
// 16H + 2i + L), and its absolute values.
static void vq_q8_arrange(const struct gq_vqrt *v, const int8_t *xq, int8_t *xa, int8_t *xabs) {
    const struct gq_vqpack_hdr *h = &v->p.h;
    const int8_t *x = xq + h->n_out;
    memcpy(xa, x, (size_t)v->nv * h->d);
    if (v->q8 == GQ_VQ_Q8_NIB2)
        for (int ct = 0; ct < h->n_ct; ct++) {
            const int v0 = (v->ct_start[ct] - h->n_out) / 2, v1 = (v->ct_start[ct + 1] - h->n_out) / 2;
            for (int b = v0; b + 32 <= v1; b += 32)
                for (int H = 0; H < 2; H++)
                    for (int L = 0; L < 2; L++)
                        for (int i = 0; i < 8; i++)
                            for (int j = 0; j < 2; j++) xa[2 * b + H * 32 + L * 16 + 2 * i + j] = x[2 * (b + 16 * H + 2 * i + L) + j];
        }
    for (int i = 0; i < v->nv * h->d; i++) xabs[i] = (int8_t)(xa[i] < 0 ? -xa[i] : xa[i]);
}

// The 32 4-bit indices from bit 4·e of the index stream (e = the first
// vector's element number): lane 0 the even vectors' (0, 2, .., 30), lane 1
// the odd ones'.
AVX2_FN static inline __m256i nib32(const uint8_t *s, int64_t e) {
    const uint8_t *p = s + (e >> 1);
    __m128i b = _mm_loadu_si128((const __m128i *)p);
    if (e & 1) // starts at a high nibble: shift the stream down by 4 bits
        b = _mm_or_si128(_mm_and_si128(_mm_srli_epi16(b, 4), _mm_set1_epi8(0x0F)),
                         _mm_and_si128(_mm_slli_epi16(_mm_loadu_si128((const __m128i *)(p + 1)), 4), _mm_set1_epi8((char)0xF0)));
    const __m256i w = _mm256_srlv_epi64(_mm256_broadcastsi128_si256(b), _mm256_setr_epi64x(0, 0, 4, 4));
    return _mm256_and_si256(w, _mm256_set1_epi8(0x0F));
}

// Σ code · x of row r's vectors [vec, v1) (the rest of a column tile).
static int32_t vq_q8_rest(const struct gq_vqrt *v, int r, int vec, int v1, const int8_t *cb, const int8_t *xq) {
    const int d = v->p.h.d;
    int32_t sum = 0;
    for (; vec < v1; vec++) {
        const int8_t *c = cb + (size_t)vq_index(v, 0, r, vec) * d;
        for (int j = 0; j < d; j++) sum += c[j] * xq[v->p.h.n_out + (size_t)vec * d + j];
    }
    return sum;
}

// NIB2: one block of 32 vectors from index element e (8 int32 partial sums).
AVX2_FN static inline __attribute__((always_inline)) __m256i nib2_block(const uint8_t *is, int64_t e, __m256i t0,
                                                                      __m256i t1, const int8_t *xb, const int8_t *ab) {
    const __m256i ix = nib32(is, e);
    const __m256i c0 = _mm256_shuffle_epi8(t0, ix), c1 = _mm256_shuffle_epi8(t1, ix);
    return _mm256_add_epi32(
        dot_i8(_mm256_unpacklo_epi8(c0, c1), _mm256_loadu_si256((const __m256i *)xb), _mm256_loadu_si256((const __m256i *)ab)),
        dot_i8(_mm256_unpackhi_epi8(c0, c1), _mm256_loadu_si256((const __m256i *)(xb + 32)),
               _mm256_loadu_si256((const __m256i *)(ab + 32))));
}

// NIB2, rows r and r + 1 of one row tile across all column tiles (named
// accumulators: arrays indexed in a loop end up on the stack).
AVX2_FN static void vq_rows2_nib2(const struct gq_vqrt *v, int r, int rt, const int8_t *xq, const int8_t *xa,
                                  const int8_t *xabs, const __m256i *tab, const float *sc, float *y) {
    const uint8_t *is = v->p.part[GQ_VQP_IDX];
    const size_t ibytes = v->p.bytes[GQ_VQP_IDX];
    const int nct = v->p.h.n_ct;
    const int64_t e0 = (int64_t)r * v->nv, e1 = e0 + v->nv;
    __m256 f0 = _mm256_setzero_ps(), f1 = _mm256_setzero_ps();
    float rest0 = 0, rest1 = 0;
    for (int ct = 0; ct < nct; ct++) {
        const int v0 = v->vt_start[ct], v1 = v->vt_start[ct + 1], vend = v0 + ((v1 - v0) & ~31);
        const __m256i t0 = tab[2 * ct], t1 = tab[2 * ct + 1];
        __m256i a0 = _mm256_setzero_si256(), a1 = _mm256_setzero_si256();
        int vec = v0;
        for (; vec < vend && (size_t)((e1 + vec) >> 1) + 17 <= ibytes; vec += 32) {
            a0 = _mm256_add_epi32(a0, nib2_block(is, e0 + vec, t0, t1, xa + 2 * vec, xabs + 2 * vec));
            a1 = _mm256_add_epi32(a1, nib2_block(is, e1 + vec, t0, t1, xa + 2 * vec, xabs + 2 * vec));
        }
        const __m256 s = _mm256_set1_ps(sc[ct]);
        f0 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(a0), s, f0);
        f1 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(a1), s, f1);
        if (vec < v1) {
            const int8_t *cb = (const int8_t *)v->p.part[GQ_VQP_CB] + (size_t)((int64_t)rt * nct + ct) * v->p.h.k * 2;
            rest0 += (float)vq_q8_rest(v, r, vec, v1, cb, xq) * sc[ct];
            rest1 += (float)vq_q8_rest(v, r + 1, vec, v1, cb, xq) * sc[ct];
        }
    }
    y[r] += hsum256(f0) + rest0;
    y[r + 1] += hsum256(f1) + rest1;
}

// One row tile (the OpenMP loop is outside, as for vq_tile_avx2), row by
// row across all its column tiles (the index stream is read in order): per
// column tile the exact int32 sum in 8 lanes, scaled into 8 float lanes.
// tab: scratch of 2 · n_ct 32-byte tables, sc: n_ct floats.
AVX2_FN static void vq_tile_q8_avx2(const struct gq_vqrt *v, const float *xp, const int8_t *xq, const int8_t *xa,
                                    const int8_t *xabs, const float *xs, float *y, int rt, __m256i *tab, float *sc) {
    const struct gq_vqpack_hdr *h = &v->p.h;
    const int d = h->d, nv = v->nv, nct = h->n_ct;
    const unsigned step = v->q8 == GQ_VQ_Q8_NIB2 ? 32 : 8;
    const uint8_t *is = v->p.part[GQ_VQP_IDX];
    const int8_t *cbs = (const int8_t *)v->p.part[GQ_VQP_CB];
    const size_t ibytes = v->p.bytes[GQ_VQP_IDX], kd = (size_t)h->k * d;
    vq_outliers(v, xp, y, rt);
    for (int ct = 0; ct < nct; ct++) {
        const int64_t g = (int64_t)rt * nct + ct;
        sc[ct] = gq_vqp_f16(v->p.part[GQ_VQP_CBS], g) * xs[ct];
        if (v->q8 == GQ_VQ_Q8_NIB2) { // coordinate tables (k = 16), 16 entries in both lanes
            // (c0 c1) pairs of 16 centroids: even bytes to the low half of
            // each lane, then qwords (0, 2 | 1, 3): all c0, all c1
            const __m256i cb = _mm256_loadu_si256((const __m256i *)(cbs + (size_t)g * kd));
            const __m256i ev = _mm256_setr_epi8(0, 2, 4, 6, 8, 10, 12, 14, 1, 3, 5, 7, 9, 11, 13, 15, 0, 2, 4, 6, 8, 10, 12,
                                                14, 1, 3, 5, 7, 9, 11, 13, 15);
            const __m256i sp = _mm256_permute4x64_epi64(_mm256_shuffle_epi8(cb, ev), _MM_SHUFFLE(3, 1, 2, 0));
            tab[2 * ct] = _mm256_permute2x128_si256(sp, sp, 0x00);
            tab[2 * ct + 1] = _mm256_permute2x128_si256(sp, sp, 0x11);
        }
    }
    int r = v->rt_start[rt];
    if (v->q8 == GQ_VQ_Q8_NIB2) // two rows at a time share the tables and x loads
        for (; r + 2 <= v->rt_start[rt + 1]; r += 2) vq_rows2_nib2(v, r, rt, xq, xa, xabs, tab, sc, y);
    for (; r < v->rt_start[rt + 1]; r++) {
        const int64_t e0 = (int64_t)r * nv;
        __m256 accf = _mm256_setzero_ps();
        float rest = 0;
        for (int ct = 0; ct < nct; ct++) {
            const int8_t *cb = cbs + (size_t)((int64_t)rt * nct + ct) * kd;
            const int v0 = v->vt_start[ct], v1 = v->vt_start[ct + 1];
            const int vend = v0 + (int)((unsigned)(v1 - v0) & ~(step - 1)); // whole blocks end here
            __m256i acc = _mm256_setzero_si256();
            int vec = v0;
            if (v->q8 == GQ_VQ_Q8_NIB2) {
                const __m256i t0 = tab[2 * ct], t1 = tab[2 * ct + 1];
                for (; vec < vend && (size_t)((e0 + vec) >> 1) + 17 <= ibytes; vec += 32)
                    acc = _mm256_add_epi32(acc, nib2_block(is, e0 + vec, t0, t1, xa + 2 * vec, xabs + 2 * vec));
            } else {
                for (; vec < vend; vec += 8) {
                    const __m256i ix = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(is + e0 + vec)));
                    const __m256i c = _mm256_i32gather_epi32((const int *)cb, ix, 4);
                    acc = _mm256_add_epi32(acc, dot_i8(c, _mm256_loadu_si256((const __m256i *)(xa + 4 * vec)),
                                                       _mm256_loadu_si256((const __m256i *)(xabs + 4 * vec))));
                }
            }
            if (v->q8 == GQ_VQ_Q8_BYTE4 && vec < v1) { // the rest: byte indices, 4-byte centroids
                int32_t rs = 0;
                for (; vec < v1; vec++) {
                    const int8_t *c = cb + 4 * (size_t)is[e0 + vec], *xv = xa + 4 * (size_t)vec;
                    rs += c[0] * xv[0] + c[1] * xv[1] + c[2] * xv[2] + c[3] * xv[3];
                }
                rest += (float)rs * sc[ct];
            }
            accf = _mm256_fmadd_ps(_mm256_cvtepi32_ps(acc), _mm256_set1_ps(sc[ct]), accf);
            if (vec < v1) rest += (float)vq_q8_rest(v, r, vec, v1, cb, xq) * sc[ct];
        }
        y[r] += hsum256(accf) + rest;
    }
}

// x (position order) to int8 with one scale per column tile.
static void vq_q8_quantize(const struct gq_vqrt *v, const float *xp, int8_t *xq, float *xs) {
    const struct gq_vqpack_hdr *h = &v->p.h;
    for (int ct = 0; ct < h->n_ct; ct++)
        xs[ct] = round_i8(xp + v->ct_start[ct], v->ct_start[ct + 1] - v->ct_start[ct], xq + v->ct_start[ct]);
}

// ---------------------------------------------------------------------------
// ggml block types. Q8_0: 32 weights = fp16 scale + 32 int8 (34 bytes);
// Q4_0: fp16 scale + 16 bytes, low nibbles weights 0..15, high 16..31, value
// (q − 8) · scale (18 bytes); Q4_1: fp16 scale d, fp16 offset m, the nibbles
// as Q4_0, value q · d + m, so a block adds d · Σ q x + m · Σ x (20 bytes);
// F16: fp16 values. Each kernel is the dot product of one row b with x; the
// scalar reference sums a block in float, then adds block sum × scale. One
// OpenMP loop over rows (ggml_gemv) drives every kernel.
// Q8_0, Q4_0, Q4_1, Q5_0 and Q5_1 multiply in integers against x rounded to
// int8 in blocks of 32 (scale max|x| / 127 per block, as llama.cpp's Q8_0 /
// Q8_1 activations): per block the exact int32 sum of weight codes · x codes,
// then × (weight scale · x scale); Q4_1 / Q5_1 add offset · x scale · Σ x codes.
struct q8x {
    const int8_t *q;  // (cols) x codes
    const float *d;   // (cols / 32) x scales
    const int32_t *s; // (cols / 32) Σ of the codes of each block
};
typedef float (*row_dot_fn)(const uint8_t *b, const float *x, const struct q8x *xq, int cols);

static float q8_0_dot_scalar(const uint8_t *b, const float *x, const struct q8x *xq, int cols) {
    float acc = 0;
    for (int i = 0; i < cols / 32; i++, b += 34) {
        int32_t s = 0;
        for (int j = 0; j < 32; j++) s += (int8_t)b[2 + j] * xq->q[i * 32 + j];
        acc += (float)s * (gq_vqp_f16(b, 0) * xq->d[i]);
    }
    return acc;
}

// Σ w · x over 32 byte pairs, w any int8 (−128 included): |w| unsigned ×
// x with w's sign, pairs summed in int16 (at most 2 · 128 · 127), then into
// int32 lanes.
AVX2_FN static inline __m256i dot_w8(__m256i w, __m256i x) {
    return _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_sign_epi8(w, w), _mm256_sign_epi8(x, w)), _mm256_set1_epi16(1));
}

// The fp16 value at b by F16C (exact, as gq_vqp_f16, without its bit work).
AVX2_FN static inline __attribute__((always_inline)) float f16c_first(const uint8_t *b) {
    uint16_t h;
    memcpy(&h, b, 2);
    return _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(h)));
}

AVX2_FN static float q8_0_dot_avx2(const uint8_t *b, const float *x, const struct q8x *xq, int cols) {
    __m256 acc = _mm256_setzero_ps();
    for (int i = 0; i < cols / 32; i++, b += 34) {
        const __m256i p = dot_w8(_mm256_loadu_si256((const __m256i *)(b + 2)), _mm256_loadu_si256((const __m256i *)(xq->q + 32 * i)));
        acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), _mm256_set1_ps(f16c_first(b) * xq->d[i]), acc);
    }
    return hsum256(acc);
}

// Σ_j (q_j − off) · x_j of one 16-byte nibble block (low nibbles weights
// 0..15, high 16..31) in integers: scalar, and as 8 int32 partial sums.
static inline int32_t q4_block_dot_scalar(const uint8_t *q16, const int8_t *xb, int off) {
    int32_t s = 0;
    for (int j = 0; j < 16; j++) s += ((q16[j] & 15) - off) * xb[j] + ((q16[j] >> 4) - off) * xb[16 + j];
    return s;
}

AVX2_FN static inline __attribute__((always_inline)) __m256i q4_block_dot(const uint8_t *q16, const int8_t *xb, int off) {
    __m256i w = _mm256_srlv_epi64(_mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)q16)),
                                  _mm256_setr_epi64x(0, 0, 4, 4));
    w = _mm256_sub_epi8(_mm256_and_si256(w, _mm256_set1_epi8(15)), _mm256_set1_epi8((char)off));
    return dot_w8(w, _mm256_loadu_si256((const __m256i *)xb));
}

// Q5_0 / Q5_1: the nibbles as Q4, plus a u32 (little-endian) whose bit j is
// bit 4 of weight j; value (q − 16) · d (Q5_0, 22 bytes) or q · d + m (Q5_1,
// 24 bytes).
static inline int32_t q5_block_dot_scalar(const uint8_t *qh4, const int8_t *xb, int off) {
    const uint32_t qh = (uint32_t)qh4[0] | (uint32_t)qh4[1] << 8 | (uint32_t)qh4[2] << 16 | (uint32_t)qh4[3] << 24;
    const uint8_t *q16 = qh4 + 4;
    int32_t s = 0;
    for (int j = 0; j < 16; j++)
        s += ((int)((q16[j] & 15) | (qh >> j & 1) << 4) - off) * xb[j] +
             ((int)((q16[j] >> 4) | (qh >> (j + 16) & 1) << 4) - off) * xb[16 + j];
    return s;
}

// 32 bytes, byte j = 16 where bit j of the 4 bytes at qh4 is set, else 0.
AVX2_FN static inline __attribute__((always_inline)) __m256i q5_high_bits(const uint8_t *qh4) {
    uint32_t qh;
    memcpy(&qh, qh4, 4);
    // byte j of the result starts as byte j/8 of qh (shuffles stay within 128-bit lanes)
    const __m256i by = _mm256_shuffle_epi8(_mm256_set1_epi32((int)qh),
                                           _mm256_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1,
                                                            2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3));
    const __m256i bit = _mm256_set1_epi64x(0x8040201008040201ll); // byte j: 1 << (j mod 8)
    const __m256i set = _mm256_cmpeq_epi8(_mm256_and_si256(by, bit), bit);
    return _mm256_and_si256(set, _mm256_set1_epi8(16));
}

AVX2_FN static inline __attribute__((always_inline)) __m256i q5_block_dot(const uint8_t *qh4, const int8_t *xb, int off) {
    __m256i w = _mm256_srlv_epi64(_mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)(qh4 + 4))),
                                  _mm256_setr_epi64x(0, 0, 4, 4));
    w = _mm256_or_si256(_mm256_and_si256(w, _mm256_set1_epi8(15)), q5_high_bits(qh4));
    w = _mm256_sub_epi8(w, _mm256_set1_epi8((char)off));
    return dot_w8(w, _mm256_loadu_si256((const __m256i *)xb));
}

// One row of a Q4_0 / Q4_1 / Q5_0 / Q5_1 matrix: blocks of bs bytes, the
// codes at byte qo (Q5: the high bits first), code offset off, and with
// has_min the block's fp16 m as its second field (value q · d + m).
static inline __attribute__((always_inline)) float q45_dot_scalar(const uint8_t *b, const struct q8x *xq, int cols,
                                                                  int bs, int qo, int off, bool q5, bool has_min) {
    float acc = 0;
    for (int i = 0; i < cols / 32; i++, b += bs) {
        const int8_t *xb = xq->q + i * 32;
        const int32_t p = q5 ? q5_block_dot_scalar(b + qo, xb, off) : q4_block_dot_scalar(b + qo, xb, off);
        const float t = (float)p * (gq_vqp_f16(b, 0) * xq->d[i]);
        acc += has_min ? t + gq_vqp_f16(b, 1) * (xq->d[i] * (float)xq->s[i]) : t;
    }
    return acc;
}

AVX2_FN static inline __attribute__((always_inline)) float q45_dot_avx2(const uint8_t *b, const struct q8x *xq, int cols,
                                                                        int bs, int qo, int off, bool q5, bool has_min) {
    __m256 acc = _mm256_setzero_ps();
    __m128 mins = _mm_setzero_ps(); // lane 1: Σ m · (x scale · Σ x codes)
    for (int i = 0; i < cols / 32; i++, b += bs) {
        const int8_t *xb = xq->q + i * 32;
        const __m256i p = q5 ? q5_block_dot(b + qo, xb, off) : q4_block_dot(b + qo, xb, off);
        // the block's fp16 d and m (without a min: the next two bytes, unused) by F16C, times
        // (x scale, x scale · Σ x codes): the same products as the scalar kernel's
        int32_t dm;
        memcpy(&dm, b, 4);
        const float xd = xq->d[i];
        const __m128 sc = _mm_mul_ps(_mm_cvtph_ps(_mm_cvtsi32_si128(dm)), _mm_setr_ps(xd, xd * (float)xq->s[i], 0, 0));
        acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), _mm256_broadcastss_ps(sc), acc);
        if (has_min) mins = _mm_add_ps(mins, sc);
    }
    return has_min ? hsum256(acc) + _mm_cvtss_f32(_mm_shuffle_ps(mins, mins, 1)) : hsum256(acc);
}

static float q4_0_dot_scalar(const uint8_t *b, const float *x, const struct q8x *xq, int cols) {
    return q45_dot_scalar(b, xq, cols, 18, 2, 8, false, false);
}
AVX2_FN static float q4_0_dot_avx2(const uint8_t *b, const float *x, const struct q8x *xq, int cols) {
    return q45_dot_avx2(b, xq, cols, 18, 2, 8, false, false);
}
static float q4_1_dot_scalar(const uint8_t *b, const float *x, const struct q8x *xq, int cols) {
    return q45_dot_scalar(b, xq, cols, 20, 4, 0, false, true);
}
AVX2_FN static float q4_1_dot_avx2(const uint8_t *b, const float *x, const struct q8x *xq, int cols) {
    return q45_dot_avx2(b, xq, cols, 20, 4, 0, false, true);
}
static float q5_0_dot_scalar(const uint8_t *b, const float *x, const struct q8x *xq, int cols) {
    return q45_dot_scalar(b, xq, cols, 22, 2, 16, true, false);
}
AVX2_FN static float q5_0_dot_avx2(const uint8_t *b, const float *x, const struct q8x *xq, int cols) {
    return q45_dot_avx2(b, xq, cols, 22, 2, 16, true, false);
}
static float q5_1_dot_scalar(const uint8_t *b, const float *x, const struct q8x *xq, int cols) {
    return q45_dot_scalar(b, xq, cols, 24, 4, 0, true, true);
}
AVX2_FN static float q5_1_dot_avx2(const uint8_t *b, const float *x, const struct q8x *xq, int cols) {
    return q45_dot_avx2(b, xq, cols, 24, 4, 0, true, true);
}

static float f16_dot_scalar(const uint8_t *b, const float *x, const struct q8x *xq, int cols) {
    float acc = 0;
    for (int j = 0; j < cols; j++) acc += gq_vqp_f16(b, j) * x[j];
    return acc;
}

AVX2_FN static float f16_dot_avx2(const uint8_t *b, const float *x, const struct q8x *xq, int cols) {
    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
    int j = 0;
    for (; j + 16 <= cols; j += 16) {
        a0 = _mm256_fmadd_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(b + 2 * j))), _mm256_loadu_ps(x + j), a0);
        a1 = _mm256_fmadd_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(b + 2 * j + 16))),
                             _mm256_loadu_ps(x + j + 8), a1);
    }
    float acc = hsum256(_mm256_add_ps(a0, a1));
    for (; j < cols; j++) acc += gq_vqp_f16(b, j) * x[j];
    return acc;
}

// ---------------------------------------------------------------------------
// Decode and dispatch.

size_t gq_qweight_bytes(const struct gq_qweight *w) {
    if (w->kind == GQ_QW_GGML) return (size_t)w->rows * w->row_size;
    size_t b = 0;
    for (int i = 0; i < GQ_VQP_COUNT; i++) b += w->vq->p.bytes[i];
    return b;
}

static size_t vq_cb_floats(const struct gq_vqrt *v) { return (size_t)2 * v->p.h.k * v->p.h.d; }

void gq_qweight_decode_rows(const struct gq_qweight *w, int r0, int r1, float *out) {
    if (w->kind == GQ_QW_GGML) {
        for (int r = r0; r < r1; r++)
            gq_dequantize(w->type, (const uint8_t *)w->data + (size_t)r * w->row_size, out + (size_t)(r - r0) * w->cols,
                          w->cols);
        return;
    }
    const struct gq_vqrt *v = w->vq;
    const int n = w->cols;
    float *cb = malloc(sizeof(float) * vq_cb_floats(v)), *pos = v->perm ? malloc(sizeof(float) * n) : NULL;
    if (!cb || (v->perm && !pos)) { // only under memory exhaustion; zeros are visible in any result
        free(cb), free(pos);
        memset(out, 0, sizeof(float) * (size_t)(r1 - r0) * n);
        return;
    }
    vq_decode_rows_pos(v, r0, r1, out, cb);
    if (v->perm) // position order -> column order, row by row
        for (int r = r0; r < r1; r++) {
            float *q = out + (size_t)(r - r0) * n;
            memcpy(pos, q, sizeof(float) * n);
            for (int p = 0; p < n; p++) q[v->perm[p]] = pos[p];
        }
    free(cb), free(pos);
}

static int isa_cur = -1;
static bool cpu_avx2(void) {
    __builtin_cpu_init();
    unsigned a, b, c, d; // F16C: CPUID.1:ECX bit 29 (not a feature string of every compiler's builtin)
    bool f16c = __get_cpuid(1, &a, &b, &c, &d) && (c >> 29 & 1);
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && f16c;
}
enum gq_isa gq_qmatmul_isa(void) {
    if (isa_cur < 0) isa_cur = cpu_avx2() ? GQ_ISA_AVX2 : GQ_ISA_SCALAR;
    return (enum gq_isa)isa_cur;
}
enum gq_isa gq_qmatmul_set_isa(enum gq_isa isa) {
    isa_cur = isa == GQ_ISA_AVX2 && !cpu_avx2() ? GQ_ISA_SCALAR : isa;
    return (enum gq_isa)isa_cur;
}

static enum gq_status vq_gemv(const struct gq_qweight *w, const float *x, float *y) {
    const struct gq_vqrt *v = w->vq;
    const int n = w->cols, nt = omp_get_max_threads(), d = v->p.h.d, nv = v->nv, no = v->p.h.n_out;
    float *xp = malloc(sizeof(float) * n * 2), *cbs = malloc(sizeof(float) * vq_cb_floats(v) * nt);
    if (!xp || !cbs) {
        free(xp), free(cbs);
        return gq_fail(GQ_ERR_NOMEM, "qmatmul: scratch for a (%d, %d) packed matrix", w->rows, n);
    }
    for (int p = 0; p < n; p++) xp[p] = x[v->perm ? v->perm[p] : p];
    if (v->q8) {
        int8_t *xq = malloc((size_t)n * 3 + 64); // position order; arranged; |arranged|
        float *xs = malloc(sizeof(float) * v->p.h.n_ct);
        if (!xq || !xs) {
            free(xp), free(cbs), free(xq), free(xs);
            return gq_fail(GQ_ERR_NOMEM, "qmatmul: int8 activations of a (%d, %d) packed matrix", w->rows, n);
        }
        vq_q8_quantize(v, xp, xq, xs);
        if (gq_qmatmul_isa() == GQ_ISA_AVX2) {
            int8_t *xa = xq + n, *xabs = xa + n;
            vq_q8_arrange(v, xq, xa, xabs);
            const int nct = v->p.h.n_ct;
            __m256i *tab = aligned_alloc(32, (size_t)nt * nct * 2 * sizeof(__m256i));
            float *sc = malloc(sizeof(float) * (size_t)nt * nct);
            if (!tab || !sc) {
                free(xp), free(cbs), free(xq), free(xs), free(tab), free(sc);
                return gq_fail(GQ_ERR_NOMEM, "qmatmul: tables of a (%d, %d) packed matrix", w->rows, n);
            }
#pragma omp parallel for schedule(dynamic, 1)
            for (int rt = 0; rt < v->p.h.n_rt; rt++) {
                const int t = omp_get_thread_num();
                vq_tile_q8_avx2(v, xp, xq, xa, xabs, xs, y, rt, tab + (size_t)t * nct * 2, sc + (size_t)t * nct);
            }
            free(tab), free(sc);
        } else {
            vq_gemv_q8_scalar(v, xp, xq, xs, y);
        }
        free(xq), free(xs), free(xp), free(cbs);
        return GQ_OK;
    }
    if (gq_qmatmul_isa() == GQ_ISA_AVX2) {
        float *xd = xp + n;
        for (int vec = 0; vec < nv; vec++)
            for (int j = 0; j < d; j++) xd[(size_t)j * nv + vec] = xp[no + vec * d + j];
        vq_gemv_avx2(v, xp, xd, y, cbs);
    } else {
        vq_gemv_scalar(v, xp, y, cbs);
    }
    free(xp), free(cbs);
    return GQ_OK;
}

static enum gq_status ggml_gemv(const struct gq_qweight *w, const float *x, float *y) {
    const bool avx2 = gq_qmatmul_isa() == GQ_ISA_AVX2;
    row_dot_fn dot = NULL;
    switch (w->type) {
    case GQ_TYPE_Q8_0: dot = avx2 ? q8_0_dot_avx2 : q8_0_dot_scalar; break;
    case GQ_TYPE_Q4_0: dot = avx2 ? q4_0_dot_avx2 : q4_0_dot_scalar; break;
    case GQ_TYPE_Q4_1: dot = avx2 ? q4_1_dot_avx2 : q4_1_dot_scalar; break;
    case GQ_TYPE_Q5_0: dot = avx2 ? q5_0_dot_avx2 : q5_0_dot_scalar; break;
    case GQ_TYPE_Q5_1: dot = avx2 ? q5_1_dot_avx2 : q5_1_dot_scalar; break;
    case GQ_TYPE_F16: dot = avx2 ? f16_dot_avx2 : f16_dot_scalar; break;
    default: break;
    }
    if (dot) {
        struct q8x xq = {0};
        int8_t *q = NULL;
        if (w->type != GQ_TYPE_F16) { // ggml block types: cols is a multiple of 32
            const int nb = w->cols / 32;
            q = malloc((size_t)w->cols + (sizeof(float) + sizeof(int32_t)) * nb);
            if (!q) return gq_fail(GQ_ERR_NOMEM, "qmatmul: int8 activations of %d columns", w->cols);
            float *d = (float *)(q + w->cols); // w->cols is a multiple of 32: aligned
            int32_t *s = (int32_t *)(d + nb);
            for (int i = 0; i < nb; i++) {
                d[i] = round_i8(x + 32 * i, 32, q + 32 * i);
                s[i] = 0;
                for (int j = 0; j < 32; j++) s[i] += q[32 * i + j];
            }
            xq = (struct q8x){q, d, s};
        }
#pragma omp parallel for schedule(static)
        for (int r = 0; r < w->rows; r++) y[r] = dot((const uint8_t *)w->data + (size_t)r * w->row_size, x, &xq, w->cols);
        free(q);
        return GQ_OK;
    }
    // any other type: rows decoded in chunks, then a dot product per row
    enum { CH = 64 };
    const int nt = omp_get_max_threads();
    float *buf = malloc(sizeof(float) * (size_t)CH * w->cols * nt);
    if (!buf) return gq_fail(GQ_ERR_NOMEM, "qmatmul: decode buffer");
#pragma omp parallel for schedule(dynamic, 1)
    for (int r0 = 0; r0 < w->rows; r0 += CH) {
        const int r1 = r0 + CH < w->rows ? r0 + CH : w->rows;
        float *b = buf + (size_t)omp_get_thread_num() * CH * w->cols;
        gq_qweight_decode_rows(w, r0, r1, b);
        for (int r = r0; r < r1; r++) {
            float acc = 0;
            const float *br = b + (size_t)(r - r0) * w->cols;
            for (int j = 0; j < w->cols; j++) acc += br[j] * x[j];
            y[r] = acc;
        }
    }
    free(buf);
    return GQ_OK;
}

enum gq_status gq_qmatmul(float *y, const float *x, const struct gq_qweight *w, int n) {
    if (n == 1) return w->kind == GQ_QW_VQ ? vq_gemv(w, x, y) : ggml_gemv(w, x, y);
    // prefill: chunks of rows decoded to f32 (in parallel), then one sgemm each
    const int CH = 256, nt = omp_get_max_threads();
    const int nch = (w->rows + CH - 1) / CH, per = nch < nt ? nch : nt;
    float *buf = malloc(sizeof(float) * (size_t)CH * w->cols * per);
    if (!buf) return gq_fail(GQ_ERR_NOMEM, "qmatmul: decode buffer of %d x %d", CH, w->cols);
    for (int c0 = 0; c0 < nch; c0 += per) {
        const int c1 = c0 + per < nch ? c0 + per : nch;
#pragma omp parallel for schedule(static, 1)
        for (int c = c0; c < c1; c++) {
            const int r0 = c * CH, r1 = r0 + CH < w->rows ? r0 + CH : w->rows;
            gq_qweight_decode_rows(w, r0, r1, buf + (size_t)(c - c0) * CH * w->cols);
        }
        const int r0 = c0 * CH, r1 = c1 * CH < w->rows ? c1 * CH : w->rows;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, r1 - r0, w->cols, 1.0f, x, w->cols, buf, w->cols, 0.0f,
                    y + r0, w->rows);
    }
    free(buf);
    return GQ_OK;
}
