// test_vqcases.h - small GPTVQ matrices over the option space (d = 1, 2, 4,
// 8; int8 / fp16 / f32 codebooks; normalisation; residual; outliers; codebook
// SVD; act-order on / off; ragged tiles), shared by test_vqpack and
// test_qmatmul. Include after test.h and test_rand.h.
#ifndef GQ_TEST_VQCASES_H
#define GQ_TEST_VQCASES_H
#include "quant/vq.h"

struct cfg {
    int d, k, rows, cols;
    int64_t l;
    enum gq_cb_format f;
    int norm, stages, svd;
    double outl;
    bool act;
};

static void quantize(const struct cfg *c, struct gq_vq_tensor *t, float *Q) {
    float *W = rand_matrix(c->rows, c->cols, 0.5);
    float *X = rand_activations(3 * c->cols, c->cols, 1);
    float *H = hessian_of(X, 3 * c->cols, c->cols);
    struct gq_gptvq_params vp = {0};
    vp.dim = c->d, vp.em_iters = 10, vp.em_init = GQ_VQ_INIT_MAHALANOBIS, vp.cb_update = GQ_CB_UPDATE_EXACT;
    vp.cb_format = c->f, vp.stages = c->stages, vp.norm_block = c->norm, vp.outlier_frac = c->outl;
    vp.cb_svd_rank = c->svd;
    struct gq_quant_params qp;
    gq_quant_params_default(&qp);
    qp.block_size = 16, qp.act_order = c->act;
    struct gq_vq_config cfg = {.d = c->d, .k = c->k, .l = c->l};
    struct gq_vq_result res;
    memcpy(Q, W, sizeof(float) * (size_t)c->rows * c->cols);
    CHECK_OK(gq_gptvq_quantize(Q, c->rows, c->cols, H, &qp, &vp, &cfg, 3, t, &res));
    free(W), free(X), free(H);
}

static const struct cfg vq_cases[] = {
    {1, 4, 24, 64, 128, GQ_CB_INT8, 0, 1, 0, 0, true},     {1, 8, 16, 96, 256, GQ_CB_FP16, 16, 1, 0, 0.05, true},
    {2, 16, 32, 64, 512, GQ_CB_INT8, 0, 1, 0, 0, false},   {2, 16, 32, 72, 384, GQ_CB_INT8, 8, 1, 0, 0.1, true},
    {2, 4, 20, 60, 300, GQ_CB_F32, 0, 2, 0, 0, true},      {4, 64, 40, 64, 1280, GQ_CB_INT8, 16, 1, 0, 0, true},
    {4, 16, 24, 48, 384, GQ_CB_FP16, 0, 2, 0, 0.1, false}, {8, 32, 24, 64, 768, GQ_CB_INT8, 0, 1, 0, 0, true},
    {1, 8, 32, 96, 128, GQ_CB_INT8, 0, 1, 4, 0, true},     {1, 4, 24, 64, 64, GQ_CB_FP16, 16, 1, 2, 0.05, true},
    {1, 8, 16, 48, 96, GQ_CB_F32, 0, 1, 8, 0, false},      {2, 256, 16, 64, 512, GQ_CB_INT8, 0, 1, 0, 0, true},
    // wider, ragged: vectors per tile and normalisation blocks not multiples of 8
    {2, 16, 48, 172, 2048, GQ_CB_INT8, 0, 1, 0, 0, true},  {2, 16, 40, 172, 1024, GQ_CB_INT8, 12, 1, 0, 0.03, true},
    {4, 256, 64, 256, 8192, GQ_CB_INT8, 0, 1, 0, 0, true}, {1, 8, 40, 344, 512, GQ_CB_INT8, 20, 1, 0, 0, true},
    {2, 64, 36, 200, 4096, GQ_CB_INT8, 0, 2, 0, 0, false},
    // int8-activation kernels: odd vectors per row (index nibbles starting
    // mid-byte), several 32-vector blocks per tile plus a rest
    {2, 16, 30, 2 * 151, 9060, GQ_CB_INT8, 0, 1, 0, 0, true}, {4, 256, 40, 4 * 45, 7200, GQ_CB_INT8, 0, 1, 0, 0, false},
    // the AVX-512 kernels' layouts (qmatmul.h): column tiles at multiples of
    // 32 vectors (d 1 and 2, k 16; 4.5 steps of 64 vectors a row, ragged
    // row tiles), of 4 vectors (d 2, k 64; a 16-vector rest), d 4 k 256
    // with outliers; each with act-order
    {1, 16, 32, 576, 1024, GQ_CB_INT8, 0, 1, 0, 0, true},  {2, 16, 64, 576, 2048, GQ_CB_INT8, 0, 1, 0, 0, true},
    {2, 64, 40, 576, 8192, GQ_CB_INT8, 0, 1, 0, 0, true},  {2, 64, 24, 208, 2048, GQ_CB_INT8, 0, 1, 0, 0.038, true},
    {4, 256, 48, 416, 16384, GQ_CB_INT8, 0, 1, 0, 0.04, true},
    // NIB rows ending in a short (32-vector, 256-bit) step with d 1, and in
    // a 56-vector (full-register) step
    {1, 16, 64, 608, 1024, GQ_CB_INT8, 0, 1, 0, 0, true},  {2, 16, 16, 112, 512, GQ_CB_INT8, 0, 1, 0, 0, false},
    // d 2 k 64 with 96-vector column tiles: 64-vector steps whose halves
    // belong to different groups (the two-table lookup)
    {2, 64, 64, 576, 4096, GQ_CB_INT8, 0, 1, 0, 0, true},
    // normalisation through the int8 kernels: blocks of whole 32-vector
    // halves (AVX-512 NIB: d 2, and d 1 with a short last step and row
    // tiles not multiples of 4; AVX2 NIB2), blocks of 16 vectors (AVX2
    // generic / BYTE4 per block; AVX-512 D4K256 per quarter of a chunk, and
    // with blocks of 32 vectors, a ragged last chunk and rows not multiples of
    // 4), ragged blocks with outliers
    {2, 16, 62, 576, 4096, GQ_CB_INT8, 64, 1, 0, 0, true},  {1, 16, 30, 480, 2400, GQ_CB_INT8, 64, 1, 0, 0, true},
    {2, 16, 40, 576, 2048, GQ_CB_INT8, 32, 1, 0, 0, false}, {4, 256, 48, 416, 16384, GQ_CB_INT8, 64, 1, 0, 0, true},
    {2, 64, 64, 576, 4096, GQ_CB_INT8, 64, 1, 0, 0, true},  {2, 16, 36, 200, 2048, GQ_CB_INT8, 40, 1, 0, 0.03, true},
    {4, 256, 38, 4 * 45, 7200, GQ_CB_INT8, 128, 1, 0, 0, false},
    // d 2 k 256 (AVX-512 D2K256): outliers and act-order; normalisation blocks of 32 vectors with a
    // ragged last chunk and rows not multiples of 4; blocks of 64 vectors
    {2, 256, 40, 576, 8192, GQ_CB_INT8, 0, 1, 0, 0.04, true}, {2, 256, 38, 2 * 90, 6840, GQ_CB_INT8, 64, 1, 0, 0, false},
    {2, 256, 48, 512, 8192, GQ_CB_INT8, 128, 1, 0, 0, true},
};
#define N_CASES (int)(sizeof vq_cases / sizeof *vq_cases)

// A case quantized (Q: its fake-quant matrix), packed, and viewed as the
// runtime's compressed weight w (include kern/qmatmul.h and format/vqpack.h first).
#ifdef GQ_QMATMUL_H
struct vq_built {
    float *Q;
    struct gq_vq_tensor t;
    struct gq_vqpack p;
    uint8_t *buf;
    struct gq_vqrt v;
    struct gq_qweight w;
};
static void vq_build(const struct cfg *c, struct vq_built *b) {
    b->Q = malloc(sizeof(float) * (size_t)c->rows * c->cols);
    quantize(c, &b->t, b->Q);
    CHECK_OK(gq_vqpack_pack(&b->t, &b->p, &b->buf));
    CHECK_OK(gq_vqrt_init(&b->v, &b->p, "case"));
    b->w = (struct gq_qweight){.kind = GQ_QW_VQ, .rows = c->rows, .cols = c->cols, .vq = &b->v};
}
static void vq_built_free(struct vq_built *b) {
    gq_vqrt_free(&b->v);
    gq_vq_tensor_free(&b->t);
    free(b->buf), free(b->Q);
}
#endif

#endif
