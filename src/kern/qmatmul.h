// qmatmul.h - matrix products with weights kept compressed in memory: ggml
// block types (F16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1 with their own kernels; any other type the
// reader dequantizes through a row-decode path) and packed GPTVQ matrices.
//
//   decode (one token, n = 1): fused decode-and-multiply GEMV kernels, a
//     scalar reference and an AVX2/FMA version picked at run time from the
//     CPU's features, OpenMP over rows / row tiles. Q8_0, Q4_x, Q5_x and the
//     int8-codebook VQ layouts below multiply in integers against x rounded
//     to int8 (per 32 columns / per column tile, scale max|x| / 127, as
//     llama.cpp does); F16 and every other VQ matrix multiply in float;
//   prefill (n > 1): chunks of rows decoded to f32, then sgemm.
// All kernels live in qmatmul.c with the scalar reference beside each one.
#ifndef GQ_QMATMUL_H
#define GQ_QMATMUL_H

#include "io/gguf.h"
#include "quant/vqpack.h"

// Runtime view of a packed GPTVQ matrix: the parts stay where they are (the
// file mapping); tile bounds and the permutation are expanded once.
struct gq_vqrt {
    struct gq_vqpack p;
    int nv, lk;          // vectors per row, index bits
    int *ct_start, *rt_start; // (n_ct + 1), (n_rt + 1)
    int *vt_start;       // (n_ct + 1) first vector of each column tile: (ct_start − n_out) / d
    int *blk0;           // (n_ct) first normalisation block of each column tile
    int n_nblk;
    int32_t *perm;       // (cols) position -> column; NULL: identity
    int q8;              // int8-activation GEMV layout: 0 none, GQ_VQ_Q8_NIB2 or GQ_VQ_Q8_BYTE4
};
// Decode GEMVs of int8 codebooks with one stage, no normalisation and no SVD
// multiply in integers: x is rounded to int8 with one scale per column tile
// (max|x| / 127, as llama.cpp rounds activations to Q8), the products of
// codes and int8 x are summed exactly in int32 and y += sum · (codebook
// scale · x scale) per row and tile. Two layouts have AVX2 kernels (byte
// shuffles and maddubs); any other matrix takes the float kernels.
enum { GQ_VQ_Q8_NIB2 = 1,  // d = 2, k <= 16: 4-bit indices, table lookups by pshufb
       GQ_VQ_Q8_BYTE4 = 2 }; // d = 4, 128 < k <= 256: byte indices, a 4-byte centroid per gather lane
// Validates p completely (gq_vqpack_unpack's checks) and builds the view.
enum gq_status gq_vqrt_init(struct gq_vqrt *v, const struct gq_vqpack *p, const char *what);
void gq_vqrt_free(struct gq_vqrt *v);

enum gq_qw_kind { GQ_QW_GGML = 1, GQ_QW_VQ };
struct gq_qweight {
    enum gq_qw_kind kind;
    int rows, cols;           // (n_out, n_in)
    enum gq_ggml_type type;   // GGML: block type of the rows
    const void *data;         // GGML: rows × row_size bytes
    size_t row_size;
    struct gq_vqrt *vq;       // VQ
};

enum gq_isa { GQ_ISA_SCALAR = 0, GQ_ISA_AVX2 = 1 };
// The kernels in use: AVX2 when the CPU has AVX2 and FMA (checked once), else
// scalar. Tests and benchmarks may set it (setting AVX2 on a CPU without it
// is refused: returns the ISA in effect).
enum gq_isa gq_qmatmul_isa(void);
enum gq_isa gq_qmatmul_set_isa(enum gq_isa isa);

// y (n, rows) = x (n, cols) · Wᵀ.
enum gq_status gq_qmatmul(float *y, const float *x, const struct gq_qweight *w, int n);
// Rows [r0, r1) of W as f32 (rows, cols) in the original column order:
// bit-identical to the quantizer's fake-quant values for VQ.
void gq_qweight_decode_rows(const struct gq_qweight *w, int r0, int r1, float *out);
// Bytes of the compressed weight (parts of a VQ matrix; rows × row_size).
size_t gq_qweight_bytes(const struct gq_qweight *w);

#endif
