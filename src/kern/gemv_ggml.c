// gemv_ggml.c - decode GEMVs of the GGUF block types (contract: qmatmul.h).
//
// Blocks of 32 weights. Q8_0: fp16 scale + 32 int8 (34 bytes); Q4_0: fp16
// scale + 16 bytes, low nibbles weights 0..15, high 16..31, value (q − 8) ·
// d (18 bytes); Q4_1: fp16 d, fp16 m, the nibbles, value q · d + m (20
// bytes); Q5_0 / Q5_1: as Q4_x plus a u32 whose bit j is bit 4 of weight j,
// value (q − 16) · d (22 bytes) or q · d + m (24 bytes); F16: fp16 values.
//
// Q8_0 / Q4_x / Q5_x multiply in integers against x rounded to int8 in
// blocks of 32 (gq_q8x_make, llama.cpp's Q8 activations): per block the
// exact int32 Σ codes · x codes, then × (d · x scale); with a min, + m · x
// scale · Σ x codes. Two layouts:
//   rows as stored: the scalar reference (one row, one block at a time) and
//     an AVX2 version, for weights that were not prepared;
//   16-row groups (gq_qweight_prepare, as llama.cpp repacks Q4_0): per
//     group of 16 rows and block of 32 columns one superblock, the 16 rows'
//     scales (fp16, then the 16 mins), for Q5 eight u64 masks (mask c, bit
//     4l + j = bit 4 of row l's weight 4c + j), then the codes as 64-byte
//     chunks whose dword l holds 4 consecutive bytes of row l (Q4/Q5: chunk
//     i = bytes 4i..4i+3 of the nibbles, i.e. weights 4i.. and 16 + 4i..;
//     Q8_0: chunk c = weights 4c..4c+3). One VNNI dpbusd then multiplies 4
//     weights of 16 rows by the same 4 x codes (a dword broadcast); AVX2
//     does 8 rows per ymm with maddubs. Same size as the original.
#include "format/ggml.h"
#include "kern/kern.h"

#include <omp.h>

// ---------------------------------------------------------------------------
// int8 activations.

float gq_round_i8(const float *x, int n, int8_t *q) {
    float mx = 0;
    for (int i = 0; i < n; i++) mx = fabsf(x[i]) > mx ? fabsf(x[i]) : mx;
    const float s = mx / 127, inv = s > 0 ? 1 / s : 0;
    for (int i = 0; i < n; i++) {
        const float t = x[i] * inv;
        q[i] = (int8_t)(int)(t + (t < 0 ? -0.5f : 0.5f));
    }
    return s;
}

// One block of 32: the scalar rounding's operations on 8 lanes (max of |x|
// is exact in any order; x · inv, ± 0.5 and the truncation are the same
// roundings), so codes and scale are bit-identical.
AVX2_FN static float round32_avx2(const float *x, int8_t *q, int32_t *sum) {
    const __m256 sgn = _mm256_set1_ps(-0.0f);
    __m256 v[4], m = _mm256_setzero_ps();
    for (int i = 0; i < 4; i++) v[i] = _mm256_loadu_ps(x + 8 * i), m = _mm256_max_ps(m, _mm256_andnot_ps(sgn, v[i]));
    __m128 h = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
    h = _mm_max_ps(h, _mm_movehl_ps(h, h));
    h = _mm_max_ss(h, _mm_movehdup_ps(h));
    const float mx = _mm_cvtss_f32(h), s = mx / 127, inv = s > 0 ? 1 / s : 0;
    const __m256 vi = _mm256_set1_ps(inv), half = _mm256_set1_ps(0.5f);
    __m256i c[4];
    for (int i = 0; i < 4; i++) {
        const __m256 t = _mm256_mul_ps(v[i], vi);
        // t < 0 ? -0.5 : 0.5 (t = -0 takes +0.5, as the scalar comparison)
        const __m256 neg = _mm256_cmp_ps(t, _mm256_setzero_ps(), _CMP_LT_OQ);
        c[i] = _mm256_cvttps_epi32(_mm256_add_ps(t, _mm256_or_ps(half, _mm256_and_ps(neg, sgn))));
    }
    __m256i s16 = _mm256_add_epi32(_mm256_add_epi32(c[0], c[1]), _mm256_add_epi32(c[2], c[3]));
    __m128i s4 = _mm_add_epi32(_mm256_castsi256_si128(s16), _mm256_extracti128_si256(s16, 1));
    s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0x4E));
    s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0xB1));
    *sum = _mm_cvtsi128_si32(s4);
    // packs work per 128-bit lane: dwords of 4 codes come out as c0[0:4] c1[0:4] c2[0:4] c3[0:4] | c0[4:8] ..
    const __m256i p8 = _mm256_packs_epi16(_mm256_packs_epi32(c[0], c[1]), _mm256_packs_epi32(c[2], c[3]));
    _mm256_storeu_si256((__m256i *)q, _mm256_permutevar8x32_epi32(p8, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7)));
    return s;
}

enum gq_status gq_q8x_make(const float *x, int cols, struct q8x *out) {
    const int nb = cols / 32;
    int8_t *q = gq_kscratch(GQ_SCR_XQ, (size_t)cols + (sizeof(float) + sizeof(int32_t)) * (size_t)nb + 64);
    if (!q) return gq_fail(GQ_ERR_NOMEM, "qmatmul: int8 activations of %d columns", cols);
    float *d = (float *)(q + cols); // cols is a multiple of 32: aligned
    int32_t *s = (int32_t *)(d + nb);
    if (gq_qmatmul_isa() >= GQ_ISA_AVX2) {
        for (int i = 0; i < nb; i++) d[i] = round32_avx2(x + 32 * i, q + 32 * i, s + i);
    } else {
        for (int i = 0; i < nb; i++) {
            d[i] = gq_round_i8(x + 32 * i, 32, q + 32 * i);
            s[i] = 0;
            for (int j = 0; j < 32; j++) s[i] += q[32 * i + j];
        }
    }
    *out = (struct q8x){q, d, s};
    return GQ_OK;
}

// ---------------------------------------------------------------------------
// Rows as stored: scalar reference and AVX2. Each kernel is the dot product
// of one row b with x.

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
AVX2_FN static GQ_INLINE __m256i dot_w8(__m256i w, __m256i x) {
    return _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_sign_epi8(w, w), _mm256_sign_epi8(x, w)), _mm256_set1_epi16(1));
}

// The fp16 value at b by F16C (exact, as gq_vqp_f16, without its bit work).
AVX2_FN static GQ_INLINE float f16c_first(const uint8_t *b) {
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
    return gq_hsum256(acc);
}

// Σ_j (q_j − off) · x_j of one 16-byte nibble block (low nibbles weights
// 0..15, high 16..31) in integers: scalar, and as 8 int32 partial sums.
static inline int32_t q4_block_dot_scalar(const uint8_t *q16, const int8_t *xb, int off) {
    int32_t s = 0;
    for (int j = 0; j < 16; j++) s += ((q16[j] & 15) - off) * xb[j] + ((q16[j] >> 4) - off) * xb[16 + j];
    return s;
}

AVX2_FN static GQ_INLINE __m256i q4_block_dot(const uint8_t *q16, const int8_t *xb, int off) {
    __m256i w = _mm256_srlv_epi64(_mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)q16)),
                                  _mm256_setr_epi64x(0, 0, 4, 4));
    w = _mm256_sub_epi8(_mm256_and_si256(w, _mm256_set1_epi8(15)), _mm256_set1_epi8((char)off));
    return dot_w8(w, _mm256_loadu_si256((const __m256i *)xb));
}

static inline int32_t q5_block_dot_scalar(const uint8_t *qh4, const int8_t *xb, int off) {
    const uint32_t qh = (uint32_t)qh4[0] | (uint32_t)qh4[1] << 8 | (uint32_t)qh4[2] << 16 | (uint32_t)qh4[3] << 24;
    const uint8_t *q16 = qh4 + 4;
    int32_t s = 0;
    for (int j = 0; j < 16; j++)
        s += ((int)((q16[j] & 15) | (qh >> j & 1) << 4) - off) * xb[j] +
             ((int)((q16[j] >> 4) | (qh >> (j + 16) & 1) << 4) - off) * xb[16 + j];
    return s;
}

// 32 bytes, byte j = 16 where bit j of the u32 qh is set, else 0.
AVX2_FN static GQ_INLINE __m256i q5_high_bits(uint32_t qh) {
    // byte j of the result starts as byte j/8 of qh (shuffles stay within 128-bit lanes)
    const __m256i by = _mm256_shuffle_epi8(_mm256_set1_epi32((int)qh),
                                           _mm256_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1,
                                                            2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3));
    const __m256i bit = _mm256_set1_epi64x(0x8040201008040201ll); // byte j: 1 << (j mod 8)
    const __m256i set = _mm256_cmpeq_epi8(_mm256_and_si256(by, bit), bit);
    return _mm256_and_si256(set, _mm256_set1_epi8(16));
}

AVX2_FN static GQ_INLINE __m256i q5_block_dot(const uint8_t *qh4, const int8_t *xb, int off) {
    uint32_t qh;
    memcpy(&qh, qh4, 4);
    __m256i w = _mm256_srlv_epi64(_mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)(qh4 + 4))),
                                  _mm256_setr_epi64x(0, 0, 4, 4));
    w = _mm256_or_si256(_mm256_and_si256(w, _mm256_set1_epi8(15)), q5_high_bits(qh));
    w = _mm256_sub_epi8(w, _mm256_set1_epi8((char)off));
    return dot_w8(w, _mm256_loadu_si256((const __m256i *)xb));
}

// One row of a Q4_0 / Q4_1 / Q5_0 / Q5_1 matrix: blocks of bs bytes, the
// codes at byte qo (Q5: the high bits first), code offset off, and with
// has_min the block's fp16 m as its second field (value q · d + m).
static GQ_INLINE float q45_dot_scalar(const uint8_t *b, const struct q8x *xq, int cols, int bs, int qo, int off, bool q5,
                                      bool has_min) {
    float acc = 0;
    for (int i = 0; i < cols / 32; i++, b += bs) {
        const int8_t *xb = xq->q + i * 32;
        const int32_t p = q5 ? q5_block_dot_scalar(b + qo, xb, off) : q4_block_dot_scalar(b + qo, xb, off);
        const float t = (float)p * (gq_vqp_f16(b, 0) * xq->d[i]);
        acc += has_min ? t + gq_vqp_f16(b, 1) * (xq->d[i] * (float)xq->s[i]) : t;
    }
    return acc;
}

AVX2_FN static GQ_INLINE float q45_dot_avx2(const uint8_t *b, const struct q8x *xq, int cols, int bs, int qo, int off,
                                            bool q5, bool has_min) {
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
    return has_min ? gq_hsum256(acc) + _mm_cvtss_f32(_mm_shuffle_ps(mins, mins, 1)) : gq_hsum256(acc);
}

#define Q45_DOTS(name, bs, qo, off, q5, has_min)                                                              \
    static float name##_dot_scalar(const uint8_t *b, const float *x, const struct q8x *xq, int cols) {        \
        return q45_dot_scalar(b, xq, cols, bs, qo, off, q5, has_min);                                         \
    }                                                                                                         \
    AVX2_FN static float name##_dot_avx2(const uint8_t *b, const float *x, const struct q8x *xq, int cols) { \
        return q45_dot_avx2(b, xq, cols, bs, qo, off, q5, has_min);                                           \
    }
Q45_DOTS(q4_0, 18, 2, 8, false, false)
Q45_DOTS(q4_1, 20, 4, 0, false, true)
Q45_DOTS(q5_0, 22, 2, 16, true, false)
Q45_DOTS(q5_1, 24, 4, 0, true, true)

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
    float acc = gq_hsum256(_mm256_add_ps(a0, a1));
    for (; j < cols; j++) acc += gq_vqp_f16(b, j) * x[j];
    return acc;
}

// ---------------------------------------------------------------------------
// 16-row groups.

// Byte offsets inside a superblock: mins, Q5 masks, codes; total size.
struct sb16 {
    int m, qh, qs, size, off; // off: the code offset (Q4_0 8, Q5_0 16, Q8_0 128 after the sign flip, else 0)
    bool min, q5, q8;
};
static bool sb16_of(enum gq_ggml_type t, struct sb16 *s) {
    switch (t) {
    case GQ_TYPE_Q4_0: *s = (struct sb16){0, 0, 32, 288, 8, false, false, false}; return true;
    case GQ_TYPE_Q4_1: *s = (struct sb16){32, 0, 64, 320, 0, true, false, false}; return true;
    case GQ_TYPE_Q5_0: *s = (struct sb16){0, 32, 96, 352, 16, false, true, false}; return true;
    case GQ_TYPE_Q5_1: *s = (struct sb16){32, 64, 128, 384, 0, true, true, false}; return true;
    case GQ_TYPE_Q8_0: *s = (struct sb16){0, 0, 32, 544, 128, false, false, true}; return true;
    default: return false;
    }
}

size_t gq_ggml_sb16_bytes(enum gq_ggml_type t) {
    struct sb16 s;
    return sb16_of(t, &s) ? (size_t)s.size : 0;
}

uint8_t *gq_ggml_repack16(const struct gq_qweight *w, enum gq_status *st) {
    struct sb16 S;
    *st = GQ_OK;
    if (!sb16_of(w->type, &S) || w->cols % 32) return NULL;
    const int nb = w->cols / 32, ng = (w->rows + 15) / 16;
    const int bs = (int)(w->row_size / (size_t)nb); // original block bytes
    uint8_t *out = aligned_alloc(64, ((size_t)ng * nb * S.size + 63) / 64 * 64);
    if (!out) {
        *st = gq_fail(GQ_ERR_NOMEM, "qmatmul: repacking a %d x %d matrix", w->rows, w->cols);
        return NULL;
    }
#pragma omp parallel for schedule(static)
    for (int g = 0; g < ng; g++)
        for (int b = 0; b < nb; b++) {
            uint8_t *sb = out + ((size_t)g * nb + b) * S.size;
            memset(sb, 0, (size_t)S.size);
            for (int l = 0; l < 16 && 16 * g + l < w->rows; l++) {
                const uint8_t *blk = (const uint8_t *)w->data + (size_t)(16 * g + l) * w->row_size + (size_t)b * bs;
                memcpy(sb + 2 * l, blk, 2); // d
                if (S.min) memcpy(sb + S.m + 2 * l, blk + 2, 2);
                const uint8_t *codes = blk + (S.min ? 4 : 2);
                if (S.q5) {
                    uint32_t qh;
                    memcpy(&qh, codes, 4);
                    codes += 4;
                    for (int c = 0; c < 8; c++)
                        for (int j = 0; j < 4; j++)
                            if (qh >> (4 * c + j) & 1) sb[S.qh + 8 * c + (4 * l + j) / 8] |= (uint8_t)(1u << ((4 * l + j) % 8));
                }
                const int nchunk = S.q8 ? 8 : 4;
                for (int c = 0; c < nchunk; c++) memcpy(sb + S.qs + 64 * c + 4 * l, codes + 4 * c, 4);
            }
        }
    return out;
}

// AVX-512: one group of 16 rows over all blocks -> 16 outputs.
AVX512_FN static GQ_INLINE __m512 g16_avx512(const uint8_t *sb, int nb, const struct sb16 *S, const struct q8x *xq) {
    const __m512i m4 = _mm512_set1_epi8(15), x80 = _mm512_set1_epi8((char)0x80), b16 = _mm512_set1_epi8(16);
    __m512 accf = _mm512_setzero_ps(), accm = _mm512_setzero_ps();
    for (int b = 0; b < nb; b++, sb += S->size) {
        const int8_t *xb = xq->q + 32 * b;
        int32_t xw[8];
        memcpy(xw, xb, 32);
        for (int o = 0; o < S->size; o += 64) _mm_prefetch((const char *)(sb + 4 * S->size + o), _MM_HINT_T0);
        __m512i acc = _mm512_setzero_si512();
        const uint8_t *qs = sb + S->qs;
        if (S->q8) {
            for (int c = 0; c < 8; c++) {
                const __m512i wv = _mm512_xor_si512(_mm512_loadu_si512(qs + 64 * c), x80); // w + 128
                acc = _mm512_dpbusd_epi32(acc, wv, _mm512_set1_epi32(xw[c]));
            }
        } else {
            for (int i = 0; i < 4; i++) {
                const __m512i a = _mm512_loadu_si512(qs + 64 * i);
                __m512i lo = _mm512_and_si512(a, m4), hi = _mm512_and_si512(_mm512_srli_epi16(a, 4), m4);
                if (S->q5) {
                    uint64_t kl, kh;
                    memcpy(&kl, sb + S->qh + 8 * i, 8);
                    memcpy(&kh, sb + S->qh + 8 * (4 + i), 8);
                    lo = _mm512_mask_add_epi8(lo, kl, lo, b16), hi = _mm512_mask_add_epi8(hi, kh, hi, b16);
                }
                acc = _mm512_dpbusd_epi32(acc, lo, _mm512_set1_epi32(xw[i]));
                acc = _mm512_dpbusd_epi32(acc, hi, _mm512_set1_epi32(xw[4 + i]));
            }
        }
        const float dx = xq->d[b];
        const int32_t sx = xq->s[b];
        if (S->off) acc = _mm512_sub_epi32(acc, _mm512_set1_epi32(S->off * sx));
        const __m512 d = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)sb));
        accf = _mm512_fmadd_ps(_mm512_cvtepi32_ps(acc), _mm512_mul_ps(d, _mm512_set1_ps(dx)), accf);
        if (S->min)
            accm = _mm512_fmadd_ps(_mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(sb + S->m))),
                                   _mm512_set1_ps(dx * (float)sx), accm);
    }
    return S->min ? _mm512_add_ps(accf, accm) : accf;
}

// AVX2: half h (rows 8h..8h+7) of one group -> 8 outputs.
AVX2_FN static GQ_INLINE __m256 g16_avx2(const uint8_t *sb, int nb, int h, const struct sb16 *S, const struct q8x *xq) {
    const __m256i m4 = _mm256_set1_epi8(15), ones = _mm256_set1_epi16(1);
    __m256 accf = _mm256_setzero_ps(), accm = _mm256_setzero_ps();
    for (int b = 0; b < nb; b++, sb += S->size) {
        const int8_t *xb = xq->q + 32 * b;
        int32_t xw[8];
        memcpy(xw, xb, 32);
        const uint8_t *qs = sb + S->qs + 32 * h;
        __m256i acc;
        if (S->q8) {
            acc = _mm256_setzero_si256();
            for (int c = 0; c < 8; c++) // stored as int8 (the flip to w + 128 is the VNNI kernel's)
                acc = _mm256_add_epi32(acc, dot_w8(_mm256_loadu_si256((const __m256i *)(qs + 64 * c)),
                                                   _mm256_set1_epi32(xw[c])));
        } else {
            __m256i s16a = _mm256_setzero_si256(), s16b = _mm256_setzero_si256();
            for (int i = 0; i < 4; i++) {
                const __m256i a = _mm256_loadu_si256((const __m256i *)(qs + 64 * i));
                __m256i lo = _mm256_and_si256(a, m4), hi = _mm256_and_si256(_mm256_srli_epi16(a, 4), m4);
                if (S->q5) {
                    uint32_t kl, kh;
                    memcpy(&kl, sb + S->qh + 8 * i + 4 * h, 4);
                    memcpy(&kh, sb + S->qh + 8 * (4 + i) + 4 * h, 4);
                    lo = _mm256_or_si256(lo, q5_high_bits(kl));
                    hi = _mm256_or_si256(hi, q5_high_bits(kh));
                }
                // codes 0..31 times int8: pairs <= 2·31·127 in int16; four such sums still fit
                s16a = _mm256_add_epi16(s16a, _mm256_maddubs_epi16(lo, _mm256_set1_epi32(xw[i])));
                s16b = _mm256_add_epi16(s16b, _mm256_maddubs_epi16(hi, _mm256_set1_epi32(xw[4 + i])));
            }
            acc = _mm256_add_epi32(_mm256_madd_epi16(s16a, ones), _mm256_madd_epi16(s16b, ones));
        }
        const float dx = xq->d[b];
        const int32_t sx = xq->s[b];
        // Q8_0 keeps its signed codes here: no offset to take off
        if (S->off && !S->q8) acc = _mm256_sub_epi32(acc, _mm256_set1_epi32(S->off * sx));
        const __m256 d = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(sb + 16 * h)));
        accf = _mm256_fmadd_ps(_mm256_cvtepi32_ps(acc), _mm256_mul_ps(d, _mm256_set1_ps(dx)), accf);
        if (S->min)
            accm = _mm256_fmadd_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(sb + S->m + 16 * h))),
                                   _mm256_set1_ps(dx * (float)sx), accm);
    }
    return S->min ? _mm256_add_ps(accf, accm) : accf;
}

// Groups covering rows [r0, r1); only those rows are written.
AVX512_FN static void g16_rows_avx512(float *y, const struct gq_qweight *w, const struct sb16 *S, const struct q8x *xq,
                                      int r0, int r1, bool accumulate) {
    const int nb = w->cols / 32;
    for (int g = r0 / 16; 16 * g < r1; g++) {
        const __m512 v = g16_avx512(w->rp + (size_t)g * nb * S->size, nb, S, xq);
        const int a = gq_max_i(16 * g, r0), e = gq_min_i(16 * g + 16, r1);
        const __mmask16 k = (__mmask16)(((1u << (e - a)) - 1) << (a - 16 * g));
        float *yg = y + 16 * g;
        _mm512_mask_storeu_ps(yg, k, accumulate ? _mm512_add_ps(v, _mm512_maskz_loadu_ps(k, yg)) : v);
    }
}

AVX2_FN static void g16_rows_avx2(float *y, const struct gq_qweight *w, const struct sb16 *S, const struct q8x *xq,
                                  int r0, int r1, bool accumulate) {
    const int nb = w->cols / 32;
    for (int g8 = r0 / 8; 8 * g8 < r1; g8++) {
        const __m256 v = g16_avx2(w->rp + (size_t)(g8 / 2) * nb * S->size, nb, g8 & 1, S, xq);
        float o[8];
        _mm256_storeu_ps(o, v);
        for (int r = gq_max_i(8 * g8, r0); r < gq_min_i(8 * g8 + 8, r1); r++) y[r] = accumulate ? y[r] + o[r - 8 * g8] : o[r - 8 * g8];
    }
}

// ---------------------------------------------------------------------------
// Rows decoded to f32 (the reference rule, gq_dequantize) and the dispatch.

void gq_ggml_decode_rows(const struct gq_qweight *w, int r0, int r1, float *out) {
    for (int r = r0; r < r1; r++)
        gq_dequantize(w->type, (const uint8_t *)w->data + (size_t)r * w->row_size, out + (size_t)(r - r0) * w->cols, w->cols);
}

enum gq_status gq_gemv_ggml(float *y, const float *x, const struct gq_qweight *w, int r0, int r1, bool accumulate) {
    const enum gq_isa isa = gq_qmatmul_isa();
    const bool simd = isa >= GQ_ISA_AVX2;
    struct sb16 S;
    struct q8x xq = {0};
    if (w->rp && simd && sb16_of(w->type, &S)) {
        GQ_TRY(gq_q8x_make(x, w->cols, &xq));
        if (isa == GQ_ISA_AVX512) g16_rows_avx512(y, w, &S, &xq, r0, r1, accumulate);
        else g16_rows_avx2(y, w, &S, &xq, r0, r1, accumulate);
        return GQ_OK;
    }
    row_dot_fn dot = NULL;
    switch (w->type) {
    case GQ_TYPE_Q8_0: dot = simd ? q8_0_dot_avx2 : q8_0_dot_scalar; break;
    case GQ_TYPE_Q4_0: dot = simd ? q4_0_dot_avx2 : q4_0_dot_scalar; break;
    case GQ_TYPE_Q4_1: dot = simd ? q4_1_dot_avx2 : q4_1_dot_scalar; break;
    case GQ_TYPE_Q5_0: dot = simd ? q5_0_dot_avx2 : q5_0_dot_scalar; break;
    case GQ_TYPE_Q5_1: dot = simd ? q5_1_dot_avx2 : q5_1_dot_scalar; break;
    case GQ_TYPE_F16: dot = simd ? f16_dot_avx2 : f16_dot_scalar; break;
    default: break;
    }
    if (dot) {
        if (w->type != GQ_TYPE_F16) GQ_TRY(gq_q8x_make(x, w->cols, &xq)); // ggml block types: cols % 32 == 0
        for (int r = r0; r < r1; r++) {
            const float v = dot((const uint8_t *)w->data + (size_t)r * w->row_size, x, &xq, w->cols);
            y[r] = accumulate ? y[r] + v : v;
        }
        return GQ_OK;
    }
    // any other type: rows decoded in chunks, then a dot product per row
    enum { CH = 16 };
    float *buf = gq_kscratch(GQ_SCR_TMP, sizeof(float) * (size_t)CH * w->cols);
    if (!buf) return gq_fail(GQ_ERR_NOMEM, "qmatmul: decode buffer");
    for (int a = r0; a < r1; a += CH) {
        const int e = gq_min_i(a + CH, r1);
        gq_ggml_decode_rows(w, a, e, buf);
        for (int r = a; r < e; r++) {
            float acc = 0;
            const float *br = buf + (size_t)(r - a) * w->cols;
            for (int j = 0; j < w->cols; j++) acc += br[j] * x[j];
            y[r] = accumulate ? y[r] + acc : acc;
        }
    }
    return GQ_OK;
}
