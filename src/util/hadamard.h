// hadamard.h - randomized Hadamard rotations of R^n (incoherence processing,
// as QuIP# does): R = blockdiag(Had_b) · diag(s) / √b, where a block of size
// b = 2^a · m has Had_b = Had_{2^a} ⊗ Had_m (index i = i_p · m + i_m:
// chunks of m consecutive values; Sylvester's Had_{2^a}; Had_m a Paley
// matrix of order m = q + 1, q a prime ≡ 3 mod 4, or 2(q + 1), q a prime
// ≡ 1 mod 4: 12, 20, 28, 36, 44, ...; for b a power of two, Sylvester's of
// order min(b, 16)), and s random signs drawn from a seed. One block when n
// has that form (576 = 16 · 36, 1536 = 128 · 12, 4096, 14336 = 512 · 28),
// else the largest such sizes first. R is orthogonal: Rᵀ R = I.
// docs/format.md gives the exact float arithmetic (a packed file's decode
// rule): signs, per chunk the dense product, butterflies between chunks,
// the scale.
#ifndef GQ_HADAMARD_H
#define GQ_HADAMARD_H
#include "util/common.h"

#define GQ_ROT_MAX_BLOCKS 32 // the largest supported size first: at most log2(n) + 1 blocks

struct gq_rot {
    int n, nblk;
    int off[GQ_ROT_MAX_BLOCKS + 1], m[GQ_ROT_MAX_BLOCKS]; // block b: [off[b], off[b+1]), dense order m[b]
    float *had[GQ_ROT_MAX_BLOCKS];                       // Had_m then its transpose, m × m each, row-major
    float *sign;                                          // n signs ±1
    uint64_t seed;
};

// The rotation seed of a quantization run's --seed.
static inline uint64_t gq_rot_seed(uint64_t seed) { return seed ^ 0x526F7461746500ull; }

// Rotations a and b equal (both NULL, or the same size and seed).
static inline bool gq_rot_same(const struct gq_rot *a, const struct gq_rot *b) {
    return a == b || (a && b && a->n == b->n && a->seed == b->seed);
}

// The rotation of R^n drawn from seed (0 < n; any n: blocks as above).
enum gq_status gq_rot_init(struct gq_rot *r, int n, uint64_t seed);
void gq_rot_free(struct gq_rot *r);
// x ← R x and x ← Rᵀ x (in place, n floats).
void gq_rot_apply(const struct gq_rot *r, float *x);
void gq_rot_apply_t(const struct gq_rot *r, float *x);
// Every row of W (rows × R->n, row-major) rotated in place: w ← R w
// (back: w ← Rᵀ w); OpenMP threads over the rows.
void gq_rot_rows_inplace(const struct gq_rot *R, float *W, int rows, bool back);
// The ±1 Paley (or Sylvester, m a power of two) Hadamard matrix of order m
// into H (m × m, row-major); GQ_ERR_ARG when this construction has no such m.
enum gq_status gq_hadamard_matrix(int m, int8_t *H);

#endif
