// requant.c - f32 rows to ggml block types (F16, Q8_0, Q4_0), for `gptvq
// export`. The rounding rules are llama.cpp's reference ones
// (quantize_row_q8_0_ref / quantize_row_q4_0_ref), so an exported file holds
// the blocks llama.cpp itself would produce from the same f32 values.
#include "format/ggml.h"
#include "util/common.h"

#include <math.h>

static void put_f16(uint8_t *p, float f) {
    uint16_t h = gq_f32_to_f16(f);
    memcpy(p, &h, 2);
}

enum gq_status gq_quantize_row_ggml(enum gq_ggml_type t, const float *x, void *dst, int64_t n) {
    uint8_t *o = dst;
    if (t == GQ_TYPE_F32) {
        memcpy(dst, x, sizeof(float) * (size_t)n);
        return GQ_OK;
    }
    if (t == GQ_TYPE_F16) {
        for (int64_t i = 0; i < n; i++) put_f16(o + 2 * i, x[i]);
        return GQ_OK;
    }
    if (t != GQ_TYPE_Q8_0 && t != GQ_TYPE_Q4_0)
        return gq_fail(GQ_ERR_UNSUPPORTED, "quantize row: type %s is not supported (f16, q8_0, q4_0)",
                       gq_ggml_type_name(t));
    if (n % 32) return gq_fail(GQ_ERR_ARG, "quantize row: %lld values are not whole blocks of 32", (long long)n);
    for (int64_t b = 0; b < n / 32; b++) {
        const float *xb = x + b * 32;
        if (t == GQ_TYPE_Q8_0) {
            float amax = 0;
            for (int j = 0; j < 32; j++) amax = fmaxf(amax, fabsf(xb[j]));
            const float d = amax / 127, id = d ? 1.0f / d : 0.0f;
            uint8_t *ob = o + b * 34;
            put_f16(ob, d);
            for (int j = 0; j < 32; j++) ob[2 + j] = (uint8_t)(int8_t)roundf(xb[j] * id);
        } else {
            float amax = 0, max = 0;
            for (int j = 0; j < 32; j++)
                if (fabsf(xb[j]) > amax) amax = fabsf(xb[j]), max = xb[j];
            const float d = max / -8, id = d ? 1.0f / d : 0.0f;
            uint8_t *ob = o + b * 18;
            put_f16(ob, d);
            for (int j = 0; j < 16; j++) {
                int q0 = (int)(int8_t)(xb[j] * id + 8.5f), q1 = (int)(int8_t)(xb[j + 16] * id + 8.5f);
                q0 = q0 < 15 ? q0 : 15, q1 = q1 < 15 ? q1 : 15;
                ob[2 + j] = (uint8_t)(q0 | q1 << 4);
            }
        }
    }
    return GQ_OK;
}
