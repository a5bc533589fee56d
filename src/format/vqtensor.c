// vqtensor.c - storage size and decode rule of a GPTVQ matrix (vqtensor.h).
#include "format/vqtensor.h"
#include "util/common.h"
#include "util/hadamard.h"

int gq_cb_bits(enum gq_cb_format f) { return f == GQ_CB_INT8 ? 8 : f == GQ_CB_FP16 ? 16 : 32; }
int gq_cb_scale_bits(enum gq_cb_format f) { return f == GQ_CB_INT8 ? 16 : 0; }

void gq_vq_tensor_free(struct gq_vq_tensor *t) {
    if (!t) return;
    free(t->perm), free(t->ct_start), free(t->rt_start), free(t->cb), free(t->cb_scale), free(t->idx);
    free(t->sint), free(t->norm), free(t->outl), free(t->svd_u), free(t->svd_uscale), free(t->svd_v);
    memset(t, 0, sizeof *t);
}

static int ilog2(int k) {
    int b = 0;
    while ((1 << b) < k) b++;
    return b;
}

int64_t gq_vq_tensor_bits(const struct gq_vq_tensor *t) {
    int64_t nv = (t->cols - t->n_out) / t->d, groups = (int64_t)t->n_rt * t->n_ct;
    int64_t bits = (int64_t)t->stages * t->rows * nv * ilog2(t->k);
    if (t->svd_rank) // U in cb_format with a scale per column, V in fp16 (f32)
        bits += (int64_t)t->svd_rank * (groups * gq_cb_bits(t->cb_format) + gq_cb_scale_bits(t->cb_format) +
                                        (int64_t)t->k * (t->cb_format == GQ_CB_F32 ? 32 : 16));
    else
        bits += (int64_t)t->stages * groups *
                ((int64_t)t->k * t->d * gq_cb_bits(t->cb_format) + gq_cb_scale_bits(t->cb_format));
    if (t->norm_block) bits += (int64_t)t->rows * t->n_nblk * 4 + groups * 32;
    bits += (int64_t)t->rows * t->n_out * 16;
    bool ident = true;
    for (int i = 0; i < t->cols; i++) ident &= t->perm[i] == i;
    if (!ident) bits += (int64_t)t->cols * ilog2(t->cols);
    return bits;
}

void gq_vq_svd_codebooks(struct gq_vq_tensor *t) {
    const int r = t->svd_rank, k = t->k;
    const size_t ng = (size_t)t->n_rt * t->n_ct;
    for (size_t g = 0; g < ng; g++) {
        const float *u = t->svd_u + g * r;
        for (int c = 0; c < k; c++) {
            const float *v = t->svd_v + (size_t)c * r;
            float s = 0;
            for (int j = 0; j < r; j++) s += u[j] * v[j];
            t->cb[g * k + c] = s;
        }
        t->cb_scale[g] = 1;
    }
}

void gq_vq_maps_free(struct gq_vq_maps *m) { free(m->row_rt), free(m->vec_ct), free(m->vec_blk); }

enum gq_status gq_vq_maps_build(const struct gq_vq_tensor *t, struct gq_vq_maps *mp) {
    const int nv = (t->cols - t->n_out) / t->d;
    mp->row_rt = malloc(sizeof(int) * t->rows);
    mp->vec_ct = malloc(sizeof(int) * (nv ? nv : 1));
    mp->vec_blk = malloc(sizeof(int) * (nv ? nv : 1));
    if (!mp->row_rt || !mp->vec_ct || !mp->vec_blk) {
        gq_vq_maps_free(mp);
        return gq_fail(GQ_ERR_NOMEM, "gptvq: tile maps");
    }
    for (int rt = 0; rt < t->n_rt; rt++)
        for (int r = t->rt_start[rt]; r < t->rt_start[rt + 1]; r++) mp->row_rt[r] = rt;
    int blk0 = 0;
    for (int ct = 0; ct < t->n_ct; ct++) {
        int v0 = (t->ct_start[ct] - t->n_out) / t->d, v1 = (t->ct_start[ct + 1] - t->n_out) / t->d;
        int vpb = t->norm_block ? t->norm_block / t->d : 1;
        for (int v = v0; v < v1; v++) {
            mp->vec_ct[v] = ct;
            mp->vec_blk[v] = t->norm_block ? blk0 + (v - v0) / vpb : 0;
        }
        if (t->norm_block) blk0 += (v1 - v0 + vpb - 1) / vpb;
    }
    return GQ_OK;
}

void gq_vq_decode_positions(const struct gq_vq_tensor *t, const struct gq_vq_maps *mp, float *Qp) {
    const int n = t->cols, d = t->d, nv = (n - t->n_out) / d;
#pragma omp parallel for schedule(static)
    for (int r = 0; r < t->rows; r++) {
        float *q = Qp + (size_t)r * n;
        for (int p = 0; p < t->n_out; p++) q[p] = gq_f16_to_f32(t->outl[(size_t)r * t->n_out + p]);
        for (int v = 0; v < nv; v++) gq_vq_vec_decode(t, mp, r, v, q + t->n_out + (size_t)v * d);
    }
}

void gq_vq_decode(const struct gq_vq_tensor *t, float *Q) {
    struct gq_vq_maps mp = {0};
    float *Qp = malloc(sizeof(float) * (size_t)t->rows * t->cols);
    if (!Qp || gq_vq_maps_build(t, &mp) != GQ_OK) { // decode is for tensors we built; only OOM fails
        free(Qp);
        for (size_t i = 0; i < (size_t)t->rows * t->cols; i++) Q[i] = NAN;
        return;
    }
    gq_vq_decode_positions(t, &mp, Qp);
    for (int r = 0; r < t->rows; r++)
        for (int p = 0; p < t->cols; p++) Q[(size_t)r * t->cols + t->perm[p]] = Qp[(size_t)r * t->cols + p];
    free(Qp);
    gq_vq_maps_free(&mp);
    if (t->rot) {
        struct gq_rot R;
        if (gq_rot_init(&R, t->cols, t->rot_seed) != GQ_OK) {
            for (size_t i = 0; i < (size_t)t->rows * t->cols; i++) Q[i] = NAN;
            return;
        }
        gq_rot_rows_inplace(&R, Q, t->rows, true);
        gq_rot_free(&R);
    }
}
