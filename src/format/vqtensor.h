// vqtensor.h - a GPTVQ matrix as the quantizer builds it and the packed
// reader rebuilds it (vqpack.h): tiling, codebooks, indices, normalisation
// codes, outliers, permutation, and its decode rule, the one every decoder
// (fake-quant, the kernels' tables, the CUDA decode) follows.
#ifndef GQ_VQTENSOR_H
#define GQ_VQTENSOR_H

#include "gptvq.h"
#include <math.h>
#include <stdbool.h>
#include <stdint.h>

// Codebook storage (quant/vq.h: gq_cb_round) stores per entry
int gq_cb_bits(enum gq_cb_format f);        // 8, 16, 32 bits per entry
int gq_cb_scale_bits(enum gq_cb_format f);  // 16 for INT8 (its fp16 scale), else 0

// Blockwise data normalisation (paper App. I; fitting: quant/vq.h,
// gq_vq_norm_fit): per tile a step a and offset z, per block of a row a 4-bit
// code s_int; the block's scale is exp2f(a · s_int + z) (float arithmetic).
struct gq_vq_norm {
    float a, z;       // fp16-rounded step and offset of the tile
};
static inline float gq_vq_norm_scale(struct gq_vq_norm n, int sint) {
    return exp2f(n.a * (float)sint + n.z);
}

// Column positions p = 0..cols-1 follow `perm` (position -> original
// column): first n_out outlier columns (kept as fp16 scalars), then the VQ
// columns, cut into n_ct column tiles of whole d-vectors (at most 256 columns
// wide unless the group size forces wider ones). Rows are cut into n_rt row
// tiles. Group (rt, ct) = row tile × column tile owns one codebook per stage.
// Decoded value of row r at position p >= n_out, vector t = (p − n_out)/d,
// coordinate j = (p − n_out) % d:
//     c = cb[0][rt][ct][idx[0][r][t]][j] (+ cb[1][rt][ct][idx[1][r][t]][j])   float
//     q = norm ? c · gq_vq_norm_scale(norm[rt][ct], sint[r][block]) : c      float
// Rotation (--rotate, util/hadamard.h): the rows decoded above are the
// matrix in a rotated basis of its input, W' = W Rᵀ; the matrix is W' R,
// each decoded row (in original column order) multiplied by R, i.e.
// gq_rot_apply_t(R, row), R = gq_rot_init(cols, rot_seed).
// The fake-quant matrix is exactly this decode (one function, gq_vq_decode).
struct gq_vq_tensor {
    int rows, cols, d, k, stages;
    int n_out;              // outlier columns (positions [0, n_out))
    int32_t *perm;          // (cols)
    int n_ct, n_rt;
    int *ct_start;          // (n_ct + 1) positions, ct_start[0] = n_out, last = cols
    int *rt_start;          // (n_rt + 1) rows
    enum gq_cb_format cb_format;
    float *cb;              // (stages, n_rt, n_ct, k, d) stored codebook values
    float *cb_scale;        // (stages, n_rt, n_ct) int8 scales (1 otherwise)
    uint16_t *idx;          // (stages, rows, n_vec), n_vec = (cols − n_out)/d
    int norm_block;         // 0: no normalisation
    int n_nblk;             // normalisation blocks per row (Σ over column tiles)
    uint8_t *sint;          // (rows, n_nblk) 4-bit codes
    struct gq_vq_norm *norm; // (n_rt, n_ct)
    uint16_t *outl;         // (rows, n_out) fp16 bits
    // Codebook SVD (paper App. H; d = 1, one stage): the n_rt·n_ct codebooks
    // (rows of a (groups, k) matrix) are C = U Vᵀ, rank r. U (groups, r) is
    // stored in cb_format with one scale per factor column (int8: value =
    // code · scale, the gq_cb_round rule applied to each column), V (k, r)
    // in fp16 (f32 when cb_format is F32). cb then holds the products
    // (gq_vq_svd_codebooks) and cb_scale is 1.
    int svd_rank;           // 0: off
    float *svd_u;           // (groups, r) stored values
    float *svd_uscale;      // (r)
    float *svd_v;           // (k, r) stored values
    bool rot;               // rotated (above)
    uint64_t rot_seed;
};
// cb[g][c] = Σ_{j<r} svd_u[g][j] · svd_v[c][j], float, j ascending (the
// decode rule of a codebook-SVD tensor; a packed reader calls it too).
void gq_vq_svd_codebooks(struct gq_vq_tensor *t);
void gq_vq_tensor_free(struct gq_vq_tensor *t);
// Q (rows, cols) row-major in ORIGINAL column order.
void gq_vq_decode(const struct gq_vq_tensor *t, float *Q);
// Bits actually stored (indices, codebooks + scales, normalisation codes and
// tile parameters, outliers; the permutation is not counted: act-order is a
// choice of column order that an fp32 / packed model needs too, 0 bits when
// off); divide by rows·cols for the achieved bpv.
int64_t gq_vq_tensor_bits(const struct gq_vq_tensor *t);

// Row tile of each row and column tile / normalisation-block offset of each
// vector, for decoding and for the quantizer's sweeps.
struct gq_vq_maps {
    int *row_rt;   // (rows)
    int *vec_ct;   // (n_vec)
    int *vec_blk;  // (n_vec) normalisation block index within the row (0 without)
};
enum gq_status gq_vq_maps_build(const struct gq_vq_tensor *t, struct gq_vq_maps *mp);
void gq_vq_maps_free(struct gq_vq_maps *m);

// Normalisation scale of row r, vector v (1 without normalisation).
static inline float gq_vq_vec_scale(const struct gq_vq_tensor *t, const struct gq_vq_maps *mp, int r, int v) {
    if (!t->norm_block) return 1.0f;
    const struct gq_vq_norm nm = t->norm[(size_t)mp->row_rt[r] * t->n_ct + mp->vec_ct[v]];
    return gq_vq_norm_scale(nm, t->sint[(size_t)r * t->n_nblk + mp->vec_blk[v]]);
}

// Codebook of group (rt, ct) in a stage: k·d floats.
static inline const float *gq_vq_cb(const struct gq_vq_tensor *t, int stage, int rt, int ct) {
    return t->cb + ((((size_t)stage * t->n_rt + rt) * t->n_ct + ct) * t->k) * t->d;
}

// The decode rule for one vector, written to q[0..d).
static inline void gq_vq_vec_decode(const struct gq_vq_tensor *t, const struct gq_vq_maps *mp, int r, int v,
                                    float *q) {
    const int rt = mp->row_rt[r], ct = mp->vec_ct[v], d = t->d;
    const size_t nv = (size_t)(t->cols - t->n_out) / d;
    const float *c0 = gq_vq_cb(t, 0, rt, ct) + (size_t)t->idx[(size_t)r * nv + v] * d;
    for (int j = 0; j < d; j++) q[j] = c0[j];
    if (t->stages > 1) {
        const float *c1 = gq_vq_cb(t, 1, rt, ct) + (size_t)t->idx[((size_t)t->rows + r) * nv + v] * d;
        for (int j = 0; j < d; j++) q[j] = q[j] + c1[j];
    }
    if (t->norm_block) {
        float s = gq_vq_vec_scale(t, mp, r, v);
        for (int j = 0; j < d; j++) q[j] = q[j] * s;
    }
}

// Decoded matrix in POSITION order (rows, cols).
void gq_vq_decode_positions(const struct gq_vq_tensor *t, const struct gq_vq_maps *mp, float *Qp);

#endif
