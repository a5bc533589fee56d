// decode.c - a compressed weight's stored size and its rows decoded to f32
// (qmatmul.h): the float path of prefill and embedding lookups.
#include "kern/kern.h"

size_t gq_qweight_bytes(const struct gq_qweight *w) {
    if (w->kind == GQ_QW_GGML) return (size_t)w->rows * w->row_size;
    size_t b = 0;
    for (int i = 0; i < GQ_VQP_COUNT; i++) b += w->vq->p.bytes[i];
    return b;
}

void gq_qweight_decode_rows(const struct gq_qweight *w, int r0, int r1, float *out) {
    if (w->kind == GQ_QW_VQ) {
        gq_vq_decode_rows(w->vq, r0, r1, out);
        for (int r = r0; w->vq->rot && r < r1; r++) gq_rot_apply_t(w->vq->rot, out + (size_t)(r - r0) * w->cols);
        return;
    }
    gq_ggml_decode_rows(w, r0, r1, out);
}
