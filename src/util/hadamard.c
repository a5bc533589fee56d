// hadamard.c - randomized Hadamard rotations (hadamard.h).
#include "util/hadamard.h"
#include <math.h>

#pragma GCC diagnostic ignored "-Wpsabi" // v16 values below live in always-inlined code only

#define MAX_M 64 // largest Paley order used (the m × m product per chunk, 4 · 16 floats)
#define PAD(m) (((m) + 15) / 16 * 16) // a row of the stored dense matrices

static bool is_prime(int q) {
    if (q < 2) return false;
    for (int f = 2; f * f <= q; f++)
        if (q % f == 0) return false;
    return true;
}

// The Legendre symbol of a mod q (q an odd prime): 0, 1 or -1.
static int legendre(int a, int q) {
    a = ((a % q) + q) % q;
    if (!a) return 0;
    long r = 1, b = a;
    for (int e = (q - 1) / 2; e; e >>= 1, b = b * b % q)
        if (e & 1) r = r * b % q;
    return r == 1 ? 1 : -1;
}

static bool pow2(int m) { return m > 0 && !(m & (m - 1)); }
static bool paley1(int m) { return m > 2 && is_prime(m - 1) && (m - 1) % 4 == 3; }
static bool paley2(int m) { return m % 2 == 0 && m / 2 - 1 > 2 && is_prime(m / 2 - 1) && (m / 2 - 1) % 4 == 1; }
static bool order_ok(int m) { return pow2(m) || (m <= MAX_M && (paley1(m) || paley2(m))); }

enum gq_status gq_hadamard_matrix(int m, int8_t *H) {
    if (pow2(m)) {
        for (int i = 0; i < m; i++)
            for (int j = 0; j < m; j++) H[i * m + j] = __builtin_popcount((unsigned)(i & j)) & 1 ? -1 : 1;
        return GQ_OK;
    }
    if (paley1(m)) { // I + [[0, 1ᵀ], [-1, Q]], Q_ij = χ(j - i)
        const int q = m - 1;
        for (int i = 0; i < m; i++)
            for (int j = 0; j < m; j++)
                H[i * m + j] = (int8_t)(i == j ? 1 : !i ? 1 : !j ? -1 : legendre(j - i, q));
        return GQ_OK;
    }
    if (paley2(m)) { // S = [[0, 1ᵀ], [1, Q]]: 0 -> [[1, -1], [-1, -1]], ±1 -> ±[[1, 1], [1, -1]]
        const int q = m / 2 - 1, n = q + 1;
        for (int i = 0; i < n; i++)
            for (int j = 0; j < n; j++) {
                const int s = i == j ? 0 : !i || !j ? 1 : legendre(j - i, q);
                for (int a = 0; a < 2; a++)
                    for (int b = 0; b < 2; b++)
                        H[(2 * i + a) * m + 2 * j + b] =
                            (int8_t)(s ? s * (a && b ? -1 : 1) : (!a && !b ? 1 : -1));
            }
        return GQ_OK;
    }
    return gq_fail(GQ_ERR_ARG, "no Hadamard matrix of order %d in this construction", m);
}

// The dense factor of a block of size b = m · 2^a: the smallest Paley order
// m, or for a power of two min(b, 16) (Sylvester), so that the butterflies
// between chunks run over contiguous spans of at least m floats; 0: none.
static int block_order(int b) {
    if (pow2(b)) return b < 16 ? b : 16;
    for (int p = b & -b; p >= 1; p >>= 1)
        if (!pow2(b / p) && order_ok(b / p)) return b / p;
    return 0;
}

void gq_rot_free(struct gq_rot *r) {
    if (!r) return;
    for (int b = 0; b < r->nblk; b++) free(r->had[b]);
    free(r->sign);
    memset(r, 0, sizeof *r);
}

enum gq_status gq_rot_init(struct gq_rot *r, int n, uint64_t seed) {
    memset(r, 0, sizeof *r);
    if (n <= 0) return gq_fail(GQ_ERR_ARG, "rotation of size %d", n);
    r->n = n, r->seed = seed;
    int8_t *H = malloc((size_t)MAX_M * MAX_M);
    if (!H) return gq_fail(GQ_ERR_NOMEM, "out of memory");
    for (int o = 0; o < n;) { // one block, else the largest sizes first
        if (r->nblk == GQ_ROT_MAX_BLOCKS) return free(H), gq_rot_free(r), gq_fail(GQ_ERR_ARG, "rotation of size %d: too many blocks", n);
        int b = n - o;
        while (!block_order(b)) b--;
        const int m = block_order(b);
        const int mp = PAD(m);
        float *f = calloc(2 * (size_t)m * mp, sizeof(float)); // H, then Hᵀ: m rows of mp floats each
        if (!f) return free(H), gq_rot_free(r), gq_fail(GQ_ERR_NOMEM, "out of memory");
        gq_hadamard_matrix(m, H);
        for (int i = 0; i < m; i++)
            for (int j = 0; j < m; j++) f[i * mp + j] = f[(size_t)m * mp + j * mp + i] = H[i * m + j];
        r->off[r->nblk] = o, r->m[r->nblk] = m, r->had[r->nblk] = f;
        r->nblk++, o += b;
        r->off[r->nblk] = o;
    }
    free(H);
    if (!(r->sign = malloc(sizeof(float) * (size_t)n))) return gq_rot_free(r), gq_fail(GQ_ERR_NOMEM, "out of memory");
    uint64_t s = seed ^ (0x5EEDull << 32) ^ (uint64_t)n;
    for (int i = 0; i < n; i++) r->sign[i] = gq_splitmix64(&s) >> 63 ? -1.0f : 1.0f;
    return GQ_OK;
}

// 16 floats (GCC vector extension: AVX-512 registers in the avx512f clone,
// pairs or quads of narrower ones in the others).
typedef float v16 __attribute__((vector_size(64)));
#define AI inline __attribute__((always_inline))
static AI v16 ld16(const float *p) {
    v16 v;
    memcpy(&v, p, sizeof v);
    return v;
}
static AI void st16(float *p, v16 v, int n) { // the first n <= 16 floats of v
    float o[16];
    memcpy(o, &v, sizeof o);
    memcpy(p, o, sizeof(float) * (size_t)n);
}

// y = A x for every chunk of M floats (A: AT its transpose, rows padded
// with zeros to NV · 16 floats), sums in j order. NV <= 3 (M <= 48), four
// chunks at a time: 4 · NV independent sums, kept in registers once inlined
// with constant M and NV; else (any M) one chunk at a time.
static AI void dense4(float *x0, float *x1, float *x2, float *x3, const float *AT, const int M, const int NV) {
    v16 h0 = ld16(AT), h1 = NV > 1 ? ld16(AT + 16) : h0, h2 = NV > 2 ? ld16(AT + 32) : h0;
    v16 a0 = h0 * x0[0], b0 = h0 * x1[0], c0 = h0 * x2[0], d0 = h0 * x3[0];
    v16 a1 = h1 * x0[0], b1 = h1 * x1[0], c1 = h1 * x2[0], d1 = h1 * x3[0];
    v16 a2 = h2 * x0[0], b2 = h2 * x1[0], c2 = h2 * x2[0], d2 = h2 * x3[0];
    for (int j = 1; j < M; j++) {
        const float *h = AT + (size_t)j * 16 * NV;
        h0 = ld16(h);
        a0 += h0 * x0[j], b0 += h0 * x1[j], c0 += h0 * x2[j], d0 += h0 * x3[j];
        if (NV > 1) {
            h1 = ld16(h + 16);
            a1 += h1 * x0[j], b1 += h1 * x1[j], c1 += h1 * x2[j], d1 += h1 * x3[j];
        }
        if (NV > 2) {
            h2 = ld16(h + 32);
            a2 += h2 * x0[j], b2 += h2 * x1[j], c2 += h2 * x2[j], d2 += h2 * x3[j];
        }
    }
    const int n0 = M < 16 ? M : 16, n1 = M - 16 < 16 ? M - 16 : 16, n2 = M - 32;
    st16(x0, a0, n0), st16(x1, b0, n0), st16(x2, c0, n0), st16(x3, d0, n0);
    if (NV > 1) st16(x0 + 16, a1, n1), st16(x1 + 16, b1, n1), st16(x2 + 16, c1, n1), st16(x3 + 16, d1, n1);
    if (NV > 2) st16(x0 + 32, a2, n2), st16(x1 + 32, b2, n2), st16(x2 + 32, c2, n2), st16(x3 + 32, d2, n2);
}

static AI void chunks_dense(float *x, const float *AT, const int M, const int NV, int b) {
    int c = 0;
    if (NV <= 3)
        for (; c + 4 * M <= b; c += 4 * M) dense4(x + c, x + c + M, x + c + 2 * M, x + c + 3 * M, AT, M, NV);
    for (; c < b; c += M) {
        float *xc = x + c, t[MAX_M];
        for (int i = 0; i < M; i++) t[i] = AT[i] * xc[0];
        for (int j = 1; j < M; j++)
            for (int i = 0; i < M; i++) t[i] += AT[(size_t)j * 16 * NV + i] * xc[j];
        memcpy(xc, t, sizeof(float) * M);
    }
}

// One block of size b = P · m (chunks of m floats, P a power of two):
// y = (Had_P ⊗ A) x / √b, A = Had_m (HT = its transpose, stored) or Had_mᵀ
// (HT = Had_m): per chunk the dense product (sums in j order), then the
// butterflies between chunks, then the scale. The same float operations
// in the same order at any vector width.
__attribute__((target_clones("avx512f", "avx2", "default"))) static void block_had(float *x, const float *HT, int m,
                                                                                    int b) {
    switch (m) {
    case 12: chunks_dense(x, HT, 12, 1, b); break;
    case 16: chunks_dense(x, HT, 16, 1, b); break;
    case 20: chunks_dense(x, HT, 20, 2, b); break;
    case 28: chunks_dense(x, HT, 28, 2, b); break;
    case 36: chunks_dense(x, HT, 36, 3, b); break;
    case 44: chunks_dense(x, HT, 44, 3, b); break;
    default: chunks_dense(x, HT, m, PAD(m) / 16, b);
    }
    // the butterflies between chunks: stages h and 2h in one pass where two
    // are left (the same operations as one stage after the other)
    int h = m;
    for (; 4 * h <= b; h *= 4)
        for (int c = 0; c < b; c += 4 * h) {
            float *p0 = x + c, *p1 = p0 + h, *p2 = p1 + h, *p3 = p2 + h;
#pragma omp simd
            for (int k = 0; k < h; k++) {
                const float s0 = p0[k] + p1[k], d0 = p0[k] - p1[k], s1 = p2[k] + p3[k], d1 = p2[k] - p3[k];
                p0[k] = s0 + s1, p1[k] = d0 + d1, p2[k] = s0 - s1, p3[k] = d0 - d1;
            }
        }
    for (; h < b; h *= 2)
        for (int c = 0; c < b; c += 2 * h) {
            float *lo = x + c, *hi = x + c + h;
#pragma omp simd
            for (int k = 0; k < h; k++) {
                const float a = lo[k], e = hi[k];
                lo[k] = a + e, hi[k] = a - e;
            }
        }
    const float sc = 1.0f / sqrtf((float)b);
#pragma omp simd
    for (int i = 0; i < b; i++) x[i] *= sc;
}

__attribute__((target_clones("avx512f", "avx2", "default"))) static void times_sign(float *x, const float *s, int n) {
#pragma omp simd
    for (int i = 0; i < n; i++) x[i] *= s[i];
}

void gq_rot_apply(const struct gq_rot *r, float *x) {
    times_sign(x, r->sign, r->n);
    for (int b = 0; b < r->nblk; b++) {
        const int m = r->m[b];
        block_had(x + r->off[b], r->had[b] + (size_t)m * PAD(m), m, r->off[b + 1] - r->off[b]);
    }
}

void gq_rot_apply_t(const struct gq_rot *r, float *x) {
    for (int b = 0; b < r->nblk; b++) block_had(x + r->off[b], r->had[b], r->m[b], r->off[b + 1] - r->off[b]);
    times_sign(x, r->sign, r->n);
}

void gq_rot_rows_inplace(const struct gq_rot *R, float *W, int rows, bool back) {
#pragma omp parallel for schedule(static) if (rows > 1)
    for (int r = 0; r < rows; r++) {
        if (back) gq_rot_apply_t(R, W + (size_t)r * R->n);
        else gq_rot_apply(R, W + (size_t)r * R->n);
    }
}
