// gemv_vq.h - what the VQ decode GEMVs of gemv_vq.c (runtime view, tables,
// scalar and AVX2 kernels, the dispatch) share with the AVX-512 kernels of
// gemv_vq512.c. Internal to src/kern.
#ifndef GQ_GEMV_VQ_H
#define GQ_GEMV_VQ_H

#include "kern/kern.h"

// x of one GEMV, prepared for the kernel that runs (gemv_vq.c vq_prep_x).
struct vqx {
    const float *xp;  // (cols) position order
    float *xd;        // float AVX2: xd[j·nv + vec] = xp[n_out + vec·d + j]
    int8_t *xq;       // int8: (cols) codes in position order, scale xs[ct] per column tile
    float *xs;        // (n_ct)
    int32_t *sum;     // (n_ct) Σ codes of each tile (AVX-512: of each 32-vector half, NIB)
    int8_t *xa, *xabs; // AVX2 NIB2 / BYTE4: arranged codes and |codes|; GENERIC: 4 (8) bytes per vector
    int8_t *pl;       // AVX-512: d planes of codes (NIB: lane order per 64 vectors), pstride bytes apart
    int pstride;
    int32_t *cr;      // AVX-512 NIB with normalisation: per step the 16 lanes' −128 · Σ x (64-byte aligned)
};

// The outlier columns' part of row r.
static inline float vq_outl(const struct gq_vqrt *v, const float *xp, int r) {
    const int no = v->p.h.n_out;
    float acc = 0;
    for (int p = 0; p < no; p++) acc += gq_vqp_f16(v->p.part[GQ_VQP_OUTL], (int64_t)r * no + p) * xp[p];
    return acc;
}

static inline void put(float *y, int r, float v, bool accumulate) { y[r] = accumulate ? y[r] + v : v; }

// AVX-512 (gemv_vq512.c): x for the fast kernels, and one row tile's rows
// [ra, rb) of each fast kernel (NIB and D2K64H write y, the others add into
// tmp[r − ra]); tb, sv: step-table scratch (gq_gemv_vq).
AVX512_FN void gq_vq_prep_avx512(const struct gq_vqrt *v, const float *x, struct vqx *X);
AVX512_FN void gq_vq_nib_tile_avx512(const struct gq_vqrt *v, const struct vqx *X, int rt, int ra, int rb, __m512i *tb,
                                     __m512 *sv, float *y, bool accumulate);
AVX512_FN void gq_vq_d2k64h_tile_avx512(const struct gq_vqrt *v, const struct vqx *X, int rt, int ra, int rb, __m512i *tb,
                                        __m512 *sv, float *y, bool accumulate);
AVX512_FN void gq_vq_d2k64_tile_avx512(const struct gq_vqrt *v, const struct vqx *X, int rt, int ra, int rb, float *tmp);
AVX512_FN void gq_vq_d4k256_tile_avx512(const struct gq_vqrt *v, const struct vqx *X, int rt, int ra, int rb, float *tmp);
AVX512_FN void gq_vq_d2k256_tile_avx512(const struct gq_vqrt *v, const struct vqx *X, int rt, int ra, int rb, float *tmp);

#endif
