// kern.h - internals shared by the CPU kernel files (not used outside src/kern).
//
//   isa.c        ISA selection, per-thread scratch (the bottom of kern/)
//   decode.c     rows of a weight decoded to f32
//   gemv_ggml.c  GEMVs of the GGUF block types (F16, Q8_0, Q4_x, Q5_x)
//   gemv_vq.c    runtime tables and GEMVs of packed GPTVQ matrices
//   gemm.c       prefill products (n > 1 tokens)
//   vmath.c      vector math of the decode step (exp, SwiGLU, attention)
//   qmatmul.c    repacking at load, row shares, dispatch (the top of kern/)
//
// Every SIMD function carries a target attribute and is only called when the
// ISA in use (gq_qmatmul_isa) has it; the scalar functions are the reference.
#ifndef GQ_KERN_H
#define GQ_KERN_H

#include "kern/qmatmul.h"
#include "util/common.h"

#include <immintrin.h>

#define AVX2_FN __attribute__((target("avx2,fma,f16c")))
#define AVX512_FN \
    __attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx512vbmi,gfni")))
#define GQ_INLINE inline __attribute__((always_inline))

// Per-thread scratch: slot `slot` of the calling thread, at least `bytes`
// bytes, 64-byte aligned, kept between calls (grown, never shrunk), so that
// the hot paths allocate nothing once warm. NULL when memory is exhausted.
enum { GQ_SCR_X = 0, GQ_SCR_XQ, GQ_SCR_TAB, GQ_SCR_TMP, GQ_SCR_GEMM_A, GQ_SCR_GEMM_B,
       GQ_SCR_GEMM_XP, GQ_SCR_GEMM_XT, GQ_SCR_GEMM_XS, GQ_SCR_GEMM_XQ, GQ_SCR_COUNT };
void *gq_kscratch(int slot, size_t bytes);

// int8 activations: x[0..n) rounded to codes with the scale max|x| / 127
// (returned), halves away from zero; the same arithmetic in every ISA (the
// SIMD versions give bit-identical codes and scales).
float gq_round_i8(const float *x, int n, int8_t *q);

// x in blocks of 32 columns as int8 codes (the Q8 activations of the ggml
// block kernels): codes q, scale d and code sum s of each block.
struct q8x {
    const int8_t *q;  // (cols) codes
    const float *d;   // (cols / 32) scales
    const int32_t *s; // (cols / 32) Σ codes of the block
};
// Builds the blocks in the thread's scratch (slot GQ_SCR_XQ); cols % 32 == 0.
enum gq_status gq_q8x_make(const float *x, int cols, struct q8x *out);

// GEMV pieces: y[r] for rows [r0, r1) (accumulate: y[r] += instead of =).
enum gq_status gq_gemv_ggml(float *y, const float *x, const struct gq_qweight *w, int r0, int r1, bool accumulate);
// Rows [r0, r1) of a GGML-type weight decoded to f32 (gq_dequantize row by row).
void gq_ggml_decode_rows(const struct gq_qweight *w, int r0, int r1, float *out);
enum gq_status gq_gemv_vq(float *y, const float *x, const struct gq_qweight *w, int r0, int r1, bool accumulate);

// Prefill (n > 1).
enum gq_status gq_gemm(float *y, const float *x, const struct gq_qweight *w, int n);

// Repacking for the SIMD kernels (gq_qweight_prepare): the GGUF block types
// Q8_0 / Q4_0 / Q4_1 / Q5_0 / Q5_1 as groups of 16 rows (layout in
// gemv_ggml.c); returns the buffer (NULL: type not repacked or no memory,
// *st says which).
uint8_t *gq_ggml_repack16(const struct gq_qweight *w, enum gq_status *st);
// Bytes of one 16-row superblock (16 rows × 32 columns) of a repacked type; 0: not repacked.
size_t gq_ggml_sb16_bytes(enum gq_ggml_type t);

// Rows [r0, r1) of a packed matrix as f32 in column order (the decode rule).
void gq_vq_decode_rows(const struct gq_vqrt *v, int r0, int r1, float *out);

// AVX-512 int8 kernels of packed VQ matrices (gemv_vq.c), chosen at load.
enum gq_vq_fast { GQ_VQF_NONE = 0, GQ_VQF_NIB, GQ_VQF_D2K64, GQ_VQF_D4K256, GQ_VQF_D2K64H, GQ_VQF_D2K256, GQ_VQF_COUNT };

static inline int gq_min_i(int a, int b) { return a < b ? a : b; }
static inline int gq_max_i(int a, int b) { return a > b ? a : b; }

AVX2_FN static GQ_INLINE float gq_hsum256(__m256 a) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

// The lane sums of four registers (a 4-way transposing reduction).
AVX512_FN static GQ_INLINE __m128 gq_hsum4_512(__m512 f0, __m512 f1, __m512 f2, __m512 f3) {
    const __m512 a = _mm512_add_ps(_mm512_unpacklo_ps(f0, f1), _mm512_unpackhi_ps(f0, f1)); // (f0 f1 f0 f1) per lane
    const __m512 b = _mm512_add_ps(_mm512_unpacklo_ps(f2, f3), _mm512_unpackhi_ps(f2, f3));
    const __m512 c = _mm512_add_ps(_mm512_shuffle_ps(a, b, _MM_SHUFFLE(1, 0, 1, 0)), _mm512_shuffle_ps(a, b, _MM_SHUFFLE(3, 2, 3, 2)));
    const __m256 d = _mm256_add_ps(_mm512_castps512_ps256(c), _mm512_extractf32x8_ps(c, 1));
    return _mm_add_ps(_mm256_castps256_ps128(d), _mm256_extractf128_ps(d, 1));
}

#endif
