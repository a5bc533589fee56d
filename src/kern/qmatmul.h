// qmatmul.h - matrix products with weights kept compressed in memory: ggml
// block types (F16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1 with their own kernels; any
// other type the reader dequantizes through a row-decode path) and packed
// GPTVQ matrices.
//
//   decode (one token, n = 1): fused decode-and-multiply GEMVs. Q8_0, Q4_x,
//     Q5_x and every packed matrix with int8 codebooks, one stage, no
//     normalisation and no SVD multiply in integers against x rounded to
//     int8 (per 32 columns for the ggml types, per column tile for VQ, scale
//     max|x| / 127, as llama.cpp rounds activations to Q8); F16 and the other
//     VQ matrices multiply in float. A GEMV can run as pieces, a row range
//     per thread (gq_qgemv_rows), so that a whole decode step runs in one
//     parallel region (forward.c);
//   prefill (n > gq_qmatmul_gemv_max_n: up to that many tokens are that
//     many GEMVs): see gq_qmatmul.
// Kernels: a scalar reference beside each SIMD version (AVX2 + FMA + F16C;
// AVX-512 F/BW/VL/DQ with VNNI, VBMI and GFNI), picked at run time from the CPU's
// features; tests force each one. gq_qweight_prepare repacks what the SIMD
// kernels read in another layout (the ggml block types as 16-row groups,
// like llama.cpp's repacked Q4_0) once, at load.
#ifndef GQ_QMATMUL_H
#define GQ_QMATMUL_H

#include "format/ggml.h"
#include "format/vqpack.h"
#include "util/hadamard.h"

// Runtime view of a packed GPTVQ matrix: the parts stay where they are (the
// file mapping); tile bounds, the permutation and the kernels' tables are
// expanded once (gq_vqrt_init).
struct gq_vqrt {
    struct gq_vqpack p;
    int nv, lk;          // vectors per row, index bits
    int *ct_start, *rt_start; // (n_ct + 1), (n_rt + 1)
    int *vt_start;       // (n_ct + 1) first vector of each column tile: (ct_start − n_out) / d
    int *blk0;           // (n_ct) first normalisation block of each column tile
    int n_nblk;
    int32_t *perm;       // (cols) position -> column; NULL: identity
    // int8 activations (q8 != 0): int8 codebooks, one stage, no SVD. q8
    // names the AVX2 kernel (GQ_VQ_Q8_*); fast the AVX-512 one (kern.h
    // gq_vq_fast), 0: the generic kernels of that ISA. With normalisation the
    // exact int32 sum of each normalisation block is scaled by its nsc.
    int q8, fast;
    int bv;              // vectors per normalisation block (norm_block / d; 0: none)
    uint16_t *nidx;      // fast kernels with normalisation, each row's codes per 64-vector step:
                         // NIB, D2K64H: the two halves' s0 | (16 | s1) << 8; D4K256, D2K256: per column
                         // tile from chunk ch0[ct], the 4 16-vector quarters' codes, 4 bits each
    int *ch0;            // (n_ct + 1) D4K256 / D2K256 with normalisation: first 64-vector chunk of each tile
    uint8_t *tab;        // (groups, d, k) codebook codes + 128 as bytes, coordinate-major (q8)
    uint8_t *cb8;        // (groups, k, dp) codes, each centroid padded to dp = 4 or 8 bytes (q8 GENERIC)
    float *cbs;          // (groups) codebook scales as floats (q8)
    int *half_ct;        // (ceil(nv / 32)) column tile of each 32-vector half (fast == NIB)
    uint8_t *pix;        // (6, 64) fast kernels: byte permutes that arrange x's codes in planes, coordinates
                         // 0..3, then NIB's short last step's 2
    float *fcb;          // (groups, stages, k, d) decoded codebooks (float kernels: q8 == 0)
    float *nsc;          // (groups, 16) normalisation scales exp2(a·s + z) of each 4-bit code s
    struct gq_rot *rot;  // the input rotation R of a rotated matrix (W = W' R, vqtensor.h), else NULL
};
enum { GQ_VQ_Q8_GENERIC = 1, // any d, k: gathers of 4-byte centroid words
       GQ_VQ_Q8_NIB2,        // d = 2, k = 16: 4-bit indices, table lookups by pshufb
       GQ_VQ_Q8_BYTE4,       // d = 4, k = 256: byte indices, a 4-byte centroid per gather lane
       GQ_VQ_Q8_K64 };       // d = 2, k = 64: 6-bit indices, four pshufb and two blends per coordinate
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
    const uint8_t *rp;        // GGML: the 16-row repacked form (gq_qweight_prepare), or NULL
};
// The rotation of a rotated packed matrix (its kernels multiply W' = W Rᵀ by
// R x), else NULL.
static inline const struct gq_rot *gq_qweight_rot(const struct gq_qweight *w) {
    return w->kind == GQ_QW_VQ ? w->vq->rot : NULL;
}

// Repacks w for the SIMD kernels where they read another layout (the ggml
// block types Q8_0 / Q4_x / Q5_x with a multiple of 32 columns); *owned gets
// the buffer to free with the weight (NULL: nothing repacked). The original
// data stays valid and is what the scalar reference and decode_rows read; its
// pages are handed back to the kernel (madvise) when it lies in a mapping.
enum gq_status gq_qweight_prepare(struct gq_qweight *w, void **owned);
// For a prepared weight whose original data lies in a read-only file
// mapping: hands the pages of the original back (MADV_DONTNEED), so that
// the process does not hold both forms. Never for data in anonymous memory.
void gq_qweight_release_source(const struct gq_qweight *w);

enum gq_isa { GQ_ISA_SCALAR = 0, GQ_ISA_AVX2 = 1, GQ_ISA_AVX512 = 2, GQ_ISA_COUNT };
// The kernels in use: the best the CPU has (AVX-512 with VNNI, VBMI and GFNI,
// else AVX2 with FMA and F16C, else scalar), checked once. Tests and
// benchmarks may set a lower one (asking for more than the CPU has gives the
// best it has; the ISA in effect is returned).
enum gq_isa gq_qmatmul_isa(void);
enum gq_isa gq_qmatmul_set_isa(enum gq_isa isa);
enum gq_isa gq_qmatmul_isa_best(void);
const char *gq_isa_name(enum gq_isa isa);

// y (n, rows) = x (n, cols) · Wᵀ, threads of its own (OpenMP). n up to
// gq_qmatmul_gemv_max_n(w) (VQ with k >= 256: 6, else GQ_GEMV_MAX_N): n
// decode GEMVs; more: prefill (gq_gemm).
#define GQ_GEMV_MAX_N 12
int gq_qmatmul_gemv_max_n(const struct gq_qweight *w);
enum gq_status gq_qmatmul(float *y, const float *x, const struct gq_qweight *w, int n);
// The same for x already rotated into a rotated matrix's basis (R x per
// token), as gq_rot_rows makes it: one rotation for every matrix of an input.
enum gq_status gq_qmatmul_rotated(float *y, const float *xr, const struct gq_qweight *w, int n);
// out (n, R->n) = x rotated by R row by row (threads of its own).
void gq_rot_rows(const struct gq_rot *R, const float *x, float *out, int n);
// One piece of the decode GEMV, for a caller that is one of nth threads
// (ith): rows gq_qgemv_share gives it, y[r] = (W x)[r] (accumulate: +=). x is
// read only; every piece rounds x itself (in its thread's scratch), so the
// pieces need no barrier between them. No allocation once warm. For a
// rotated matrix (gq_qweight_rot) x must be R x already: the caller rotates
// an input once for all the matrices that read it (gq_qmatmul does it itself).
void gq_qgemv_share(const struct gq_qweight *w, int ith, int nth, int *r0, int *r1);
enum gq_status gq_qgemv_rows(float *y, const float *x, const struct gq_qweight *w, int r0, int r1, bool accumulate);
// Rows [r0, r1) of W as f32 (rows, cols) in the original column order:
// bit-identical to the quantizer's fake-quant values for VQ (a rotated
// matrix: W = W' R, rotated back).
void gq_qweight_decode_rows(const struct gq_qweight *w, int r0, int r1, float *out);
// Bytes of the compressed weight (parts of a VQ matrix; rows × row_size).
size_t gq_qweight_bytes(const struct gq_qweight *w);

#endif
