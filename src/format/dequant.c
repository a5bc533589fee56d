// dequant.c - ggml block formats -> f32, matching ggml's dequantize_row_*
// bit for bit (same operations in the same order, no FMA contraction: the
// library is built with -std=c11, which implies -ffp-contract=off in gcc).
//
// Block layouts (all little-endian, f16 = IEEE half):
//   Q4_0 (32):  f16 d, u8 qs[16]                 x = d * (nibble - 8)
//   Q4_1 (32):  f16 d, f16 m, u8 qs[16]          x = d * nibble + m
//   Q5_0 (32):  f16 d, u32 qh, u8 qs[16]         x = d * ((nibble | hbit << 4) - 16)
//   Q5_1 (32):  f16 d, f16 m, u32 qh, u8 qs[16]  x = d * (nibble | hbit << 4) + m
//   Q8_0 (32):  f16 d, i8 qs[32]                 x = d * q
//   For the 32-blocks, element j < 16 uses the low nibble of qs[j] (and bit j
//   of qh), element j + 16 the high nibble (and bit j + 16).
//   Q2_K (256): u8 scales[16], u8 qs[64], f16 d, f16 dmin
//   Q3_K (256): u8 hmask[32], u8 qs[64], u8 scales[12], f16 d
//   Q4_K (256): f16 d, f16 dmin, u8 scales[12], u8 qs[128]
//   Q5_K (256): f16 d, f16 dmin, u8 scales[12], u8 qh[32], u8 qs[128]
//   Q6_K (256): u8 ql[128], u8 qh[64], i8 scales[16], f16 d
#include "format/ggml.h"

#include <math.h>

static inline uint16_t rd16(const unsigned char *p) { return (uint16_t)(p[0] | p[1] << 8); }

static inline uint32_t rd32(const unsigned char *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

// gq_f16_to_f32 (common.h) is branch-free bit manipulation, so these loops vectorize.
#define half_to_float gq_f16_to_f32

static void deq_f32(const unsigned char *restrict x, float *restrict y, int64_t n) { memcpy(y, x, (size_t)n * 4); }

static void deq_f16(const unsigned char *restrict x, float *restrict y, int64_t n) {
    int64_t i = 0;
    // Fixed-length inner loop: gcc's -O2 cost model vectorizes it (no epilogue needed).
    for (; i + 32 <= n; i += 32)
        for (int j = 0; j < 32; j++) y[i + j] = half_to_float(rd16(x + 2 * (i + j)));
    for (; i < n; i++) y[i] = half_to_float(rd16(x + 2 * i));
}

static void deq_bf16(const unsigned char *restrict x, float *restrict y, int64_t n) {
    for (int64_t i = 0; i < n; i++) y[i] = gq_bf16_to_f32(rd16(x + 2 * i));
}

static void deq_q4_0(const unsigned char *restrict x, float *restrict y, int64_t nb) {
    for (int64_t b = 0; b < nb; b++, x += 18, y += 32) {
        const float d = half_to_float(rd16(x));
        const unsigned char *qs = x + 2;
        for (int j = 0; j < 16; j++) {
            y[j] = (float)((qs[j] & 0x0f) - 8) * d;
            y[j + 16] = (float)((qs[j] >> 4) - 8) * d;
        }
    }
}

static void deq_q4_1(const unsigned char *restrict x, float *restrict y, int64_t nb) {
    for (int64_t b = 0; b < nb; b++, x += 20, y += 32) {
        const float d = half_to_float(rd16(x)), m = half_to_float(rd16(x + 2));
        const unsigned char *qs = x + 4;
        for (int j = 0; j < 16; j++) {
            y[j] = (float)(qs[j] & 0x0f) * d + m;
            y[j + 16] = (float)(qs[j] >> 4) * d + m;
        }
    }
}

static void deq_q5_0(const unsigned char *restrict x, float *restrict y, int64_t nb) {
    for (int64_t b = 0; b < nb; b++, x += 22, y += 32) {
        const float d = half_to_float(rd16(x));
        const uint32_t qh = rd32(x + 2);
        const unsigned char *qs = x + 6;
        for (int j = 0; j < 16; j++) {
            int h0 = (int)((qh >> j) << 4 & 0x10), h1 = (int)((qh >> (j + 12)) & 0x10);
            y[j] = (float)(((qs[j] & 0x0f) | h0) - 16) * d;
            y[j + 16] = (float)(((qs[j] >> 4) | h1) - 16) * d;
        }
    }
}

static void deq_q5_1(const unsigned char *restrict x, float *restrict y, int64_t nb) {
    for (int64_t b = 0; b < nb; b++, x += 24, y += 32) {
        const float d = half_to_float(rd16(x)), m = half_to_float(rd16(x + 2));
        const uint32_t qh = rd32(x + 4);
        const unsigned char *qs = x + 8;
        for (int j = 0; j < 16; j++) {
            int h0 = (int)((qh >> j) << 4 & 0x10), h1 = (int)((qh >> (j + 12)) & 0x10);
            y[j] = (float)((qs[j] & 0x0f) | h0) * d + m;
            y[j + 16] = (float)((qs[j] >> 4) | h1) * d + m;
        }
    }
}

static void deq_q8_0(const unsigned char *restrict x, float *restrict y, int64_t nb) {
    for (int64_t b = 0; b < nb; b++, x += 34, y += 32) {
        const float d = half_to_float(rd16(x));
        const signed char *qs = (const signed char *)(x + 2);
        for (int j = 0; j < 32; j++) y[j] = (float)qs[j] * d;
    }
}

static void deq_q2_k(const unsigned char *restrict x, float *restrict y, int64_t nb) {
    for (int64_t b = 0; b < nb; b++, x += 84) {
        const unsigned char *sc = x, *q = x + 16;
        const float d = half_to_float(rd16(x + 80)), dmin = half_to_float(rd16(x + 82));
        int is = 0;
        // Two halves of 128; in each, 4 bit-planes (shift 0,2,4,6) over 32 bytes,
        // each plane split in two 16-element sub-blocks with their own 4-bit scale/min.
        for (int half = 0; half < 2; half++, q += 32) {
            for (int shift = 0; shift < 8; shift += 2) {
                for (int k = 0; k < 2; k++, is++) {
                    const float dl = d * (float)(sc[is] & 0x0f), ml = dmin * (float)(sc[is] >> 4);
                    for (int l = 0; l < 16; l++) *y++ = dl * (float)((q[l + 16 * k] >> shift) & 3) - ml;
                }
            }
        }
    }
}

static void deq_q3_k(const unsigned char *restrict x, float *restrict y, int64_t nb) {
    for (int64_t b = 0; b < nb; b++, x += 110) {
        const unsigned char *hm = x, *q = x + 32, *s = x + 96;
        const float d_all = half_to_float(rd16(x + 108));
        // 16 6-bit scales: low 4 bits from s[0..7] (low nibbles for 0..7, high
        // nibbles for 8..15), high 2 bits from s[8 + j%4] at bit 2*(j/4).
        int scales[16];
        for (int j = 0; j < 16; j++) {
            int lo = j < 8 ? (s[j] & 0x0f) : (s[j - 8] >> 4);
            int hi = (s[8 + (j & 3)] >> (2 * (j >> 2))) & 3;
            scales[j] = (lo | hi << 4) - 32;
        }
        int is = 0;
        unsigned m = 1; // hmask bit walks through all 8 bits over both halves
        for (int half = 0; half < 2; half++, q += 32) {
            for (int shift = 0; shift < 8; shift += 2, m <<= 1) {
                for (int k = 0; k < 2; k++, is++) {
                    const float dl = d_all * (float)scales[is];
                    for (int l = 0; l < 16; l++) {
                        int v = ((q[l + 16 * k] >> shift) & 3) - ((hm[l + 16 * k] & m) ? 0 : 4);
                        *y++ = dl * (float)v;
                    }
                }
            }
        }
    }
}

// 6-bit scale and min j (0..7) of the K-quant 12-byte scale block.
static inline void scale_min_k4(int j, const unsigned char *q, int *sc, int *mn) {
    if (j < 4) {
        *sc = q[j] & 63;
        *mn = q[j + 4] & 63;
    } else {
        *sc = (q[j + 4] & 0x0f) | ((q[j - 4] >> 6) << 4);
        *mn = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
    }
}

static void deq_q4_k(const unsigned char *restrict x, float *restrict y, int64_t nb) {
    for (int64_t b = 0; b < nb; b++, x += 144) {
        const float d = half_to_float(rd16(x)), dmin = half_to_float(rd16(x + 2));
        const unsigned char *scales = x + 4, *q = x + 16;
        for (int is = 0; is < 8; is += 2, q += 32) {
            int sc, mn;
            scale_min_k4(is, scales, &sc, &mn);
            const float d1 = d * (float)sc, m1 = dmin * (float)mn;
            scale_min_k4(is + 1, scales, &sc, &mn);
            const float d2 = d * (float)sc, m2 = dmin * (float)mn;
            for (int l = 0; l < 32; l++) *y++ = d1 * (float)(q[l] & 0x0f) - m1;
            for (int l = 0; l < 32; l++) *y++ = d2 * (float)(q[l] >> 4) - m2;
        }
    }
}

static void deq_q5_k(const unsigned char *restrict x, float *restrict y, int64_t nb) {
    for (int64_t b = 0; b < nb; b++, x += 176) {
        const float d = half_to_float(rd16(x)), dmin = half_to_float(rd16(x + 2));
        const unsigned char *scales = x + 4, *qh = x + 16, *ql = x + 48;
        unsigned u1 = 1, u2 = 2;
        for (int is = 0; is < 8; is += 2, ql += 32, u1 <<= 2, u2 <<= 2) {
            int sc, mn;
            scale_min_k4(is, scales, &sc, &mn);
            const float d1 = d * (float)sc, m1 = dmin * (float)mn;
            scale_min_k4(is + 1, scales, &sc, &mn);
            const float d2 = d * (float)sc, m2 = dmin * (float)mn;
            for (int l = 0; l < 32; l++)
                *y++ = d1 * (float)((ql[l] & 0x0f) + ((qh[l] & u1) ? 16 : 0)) - m1;
            for (int l = 0; l < 32; l++)
                *y++ = d2 * (float)((ql[l] >> 4) + ((qh[l] & u2) ? 16 : 0)) - m2;
        }
    }
}

static void deq_q6_k(const unsigned char *restrict x, float *restrict y, int64_t nb) {
    for (int64_t b = 0; b < nb; b++, x += 210) {
        const unsigned char *ql = x, *qh = x + 128;
        const signed char *sc = (const signed char *)(x + 192);
        const float d = half_to_float(rd16(x + 208));
        // Two halves of 128 elements: 64 ql bytes (two nibble planes) and 32 qh
        // bytes (four 2-bit planes) make four runs of 32; 16-element sub-blocks
        // each have an int8 scale.
        for (int half = 0; half < 2; half++, y += 128, ql += 64, qh += 32, sc += 8) {
            for (int l = 0; l < 32; l++) {
                int is = l / 16;
                int q1 = ((ql[l] & 0x0f) | ((qh[l] >> 0) & 3) << 4) - 32;
                int q2 = ((ql[l + 32] & 0x0f) | ((qh[l] >> 2) & 3) << 4) - 32;
                int q3 = ((ql[l] >> 4) | ((qh[l] >> 4) & 3) << 4) - 32;
                int q4 = ((ql[l + 32] >> 4) | ((qh[l] >> 6) & 3) << 4) - 32;
                y[l] = d * (float)sc[is] * (float)q1;
                y[l + 32] = d * (float)sc[is + 2] * (float)q2;
                y[l + 64] = d * (float)sc[is + 4] * (float)q3;
                y[l + 96] = d * (float)sc[is + 6] * (float)q4;
            }
        }
    }
}

bool gq_ggml_type_supported(enum gq_ggml_type t) {
    switch (t) {
    case GQ_TYPE_F32: case GQ_TYPE_F16: case GQ_TYPE_BF16: case GQ_TYPE_Q4_0: case GQ_TYPE_Q4_1:
    case GQ_TYPE_Q5_0: case GQ_TYPE_Q5_1: case GQ_TYPE_Q8_0: case GQ_TYPE_Q2_K: case GQ_TYPE_Q3_K:
    case GQ_TYPE_Q4_K: case GQ_TYPE_Q5_K: case GQ_TYPE_Q6_K: return true;
    default: return false;
    }
}

enum gq_status gq_dequantize(enum gq_ggml_type t, const void *src, float *dst, int64_t n) {
    int bs = gq_ggml_block_size(t);
    if (!gq_ggml_type_supported(t))
        return gq_fail(GQ_ERR_UNSUPPORTED, "dequantize: ggml type %s (%d) is not supported",
                       gq_ggml_type_name(t), (int)t);
    if (n < 0 || n % bs != 0)
        return gq_fail(GQ_ERR_ARG, "dequantize: %lld elements is not a multiple of the %s block size %d",
                       (long long)n, gq_ggml_type_name(t), bs);
    const unsigned char *x = src;
    int64_t nb = n / bs;
    switch (t) {
    case GQ_TYPE_F32: deq_f32(x, dst, n); break;
    case GQ_TYPE_F16: deq_f16(x, dst, n); break;
    case GQ_TYPE_BF16: deq_bf16(x, dst, n); break;
    case GQ_TYPE_Q4_0: deq_q4_0(x, dst, nb); break;
    case GQ_TYPE_Q4_1: deq_q4_1(x, dst, nb); break;
    case GQ_TYPE_Q5_0: deq_q5_0(x, dst, nb); break;
    case GQ_TYPE_Q5_1: deq_q5_1(x, dst, nb); break;
    case GQ_TYPE_Q8_0: deq_q8_0(x, dst, nb); break;
    case GQ_TYPE_Q2_K: deq_q2_k(x, dst, nb); break;
    case GQ_TYPE_Q3_K: deq_q3_k(x, dst, nb); break;
    case GQ_TYPE_Q4_K: deq_q4_k(x, dst, nb); break;
    case GQ_TYPE_Q5_K: deq_q5_k(x, dst, nb); break;
    case GQ_TYPE_Q6_K: deq_q6_k(x, dst, nb); break;
    default: GQ_ASSERT(0 && "type_supported and switch disagree");
    }
    return GQ_OK;
}

enum gq_status gq_gguf_tensor_to_f32(const struct gq_gguf *g, const struct gq_gguf_tensor *t,
                                     float **out) {
    *out = NULL;
    int64_t n = gq_gguf_tensor_nelements(t);
    size_t bytes;
    if (!gq_mul_ok((size_t)n, sizeof(float), &bytes))
        return gq_fail(GQ_ERR_NOMEM, "%s: tensor '%s': %lld elements overflow size_t", g->file.path,
                       t->name, (long long)n);
    if (!gq_ggml_type_supported(t->type))
        return gq_fail(GQ_ERR_UNSUPPORTED, "%s: tensor '%s': ggml type %s (%d) cannot be dequantized",
                       g->file.path, t->name, gq_ggml_type_name(t->type), (int)t->type);
    float *y = malloc(bytes ? bytes : 1);
    if (!y)
        return gq_fail(GQ_ERR_NOMEM, "%s: tensor '%s': cannot allocate %zu bytes", g->file.path,
                       t->name, bytes);
    enum gq_status s = gq_dequantize(t->type, t->data, y, n);
    if (s != GQ_OK) {
        free(y);
        gq_error_prefix("%s: tensor '%s'", g->file.path, t->name);
        return s;
    }
    for (int64_t i = 0; i < n; i++) {
        if (!isfinite(y[i])) {
            int64_t row = t->ne[0] ? i / t->ne[0] : 0, col = t->ne[0] ? i % t->ne[0] : 0;
            s = gq_fail(GQ_ERR_NUMERIC, "%s: tensor '%s' (%s): element %lld (row %lld, col %lld) is %s",
                        g->file.path, t->name, gq_ggml_type_name(t->type), (long long)i,
                        (long long)row, (long long)col, isnan(y[i]) ? "NaN" : "Inf");
            free(y);
            return s;
        }
    }
    *out = y;
    return GQ_OK;
}
