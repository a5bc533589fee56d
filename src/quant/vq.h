// vq.h - vector quantization in GPTVQ (seed paper 003, §2.2 and appendices
// G, H, I): EM seeds and codebook initialisation, codebook storage (int8 +
// scale, fp16), blockwise data normalisation, the bits-per-value
// configuration and GPTVQ on one matrix (gptvq.c). The distance, assignment,
// M-step and EM rounds they run on are the backend's primitives
// (backend/vqprim.h); the quantized matrix and its decode rule are the
// format's (format/vqtensor.h).
#ifndef GQ_VQ_H
#define GQ_VQ_H

#include "gptvq.h"
#include "backend/vqprim.h"
#include "format/vqtensor.h"
#include "quant/quant.h"
#include <math.h>
#include <stdbool.h>
#include <stdint.h>

// enum gq_vq_init (MAHALANOBIS, KMEANSPP) is public: include/gptvq.h.

// Seeds (no EM): C (k, d) gets k seed centroids.
//  MAHALANOBIS: points sorted by (x − μ)ᵀ Σ⁺ (x − μ) (μ, Σ: plain mean and
//    covariance of the points), then the points at sorted positions
//    j·⌊N/(k−1)⌋, j = 0..k−1 (clamped to N−1; k = 1: the mean). Deterministic.
//  KMEANSPP: first centroid uniform, each next one with probability ∝ current
//    dist_i to the nearest chosen centroid (the weighted distance above);
//    seeded by `seed` (gq_splitmix64).
// N < k is allowed (duplicate seeds; EM re-seeds empties).
enum gq_status gq_vq_seed(const struct gq_vq_data *D, int k, enum gq_vq_init init, uint64_t seed, double *C);

// EM (paper §2.2): seed, then `iters` rounds of E-step (gq_vq_assign) and
// M-step (gq_vq_mstep), stopping early when no assignment changes. Empty
// clusters: each empty centroid is moved onto the point with the largest
// current dist_i (which is then assigned to it), so the objective never
// increases. C (k, d) and idx (n) are outputs (idx: final assignment to the
// final C). st may be NULL.
enum gq_status gq_vq_em(const struct gq_vq_data *D, int k, int iters, enum gq_vq_init init, uint64_t seed,
                        double *C, int32_t *idx, struct gq_vq_em_stats *st);
// The same EM rounds from the seeds already in C (gq_vq_em = gq_vq_seed +
// this): backend/vqprim.h's gq_vq_em_rounds with the current backend for
// large groups.
enum gq_status gq_vq_em_run(const struct gq_vq_data *D, int k, int iters, double *C, int32_t *idx,
                            struct gq_vq_em_stats *st);

// ---------------------------------------------------------------------------
// Codebook storage. A codebook is n = k·d values.
//  INT8 (default, paper App. G): scale = max|c| / 127 rounded to fp16 (stored
//    as fp16; 0 when all c are 0), q = clamp(round_half_even(c / scale),
//    −127, 127), value = (float)q · scale (float arithmetic).
//  FP16: each value rounded to fp16 (round to nearest even), no scale.
//  F32: no compression (for experiments; counted as 32 bits).
// enum gq_cb_format (GQ_CB_INT8, GQ_CB_FP16, GQ_CB_F32) is public: include/gptvq.h.
// gq_cb_bits / gq_cb_scale_bits: format/vqtensor.h.

// Rounds C (n values) in place to what the format stores. q8 (n, optional)
// gets the int8 codes (INT8), h16 (n, optional) the fp16 bits (FP16),
// *scale the fp16-rounded scale as float (INT8; 1 otherwise).
void gq_cb_round(double *C, int n, enum gq_cb_format f, int8_t *q8, uint16_t *h16, float *scale);

// ---------------------------------------------------------------------------
// Blockwise data normalisation (paper App. I). A tile of weights (rows ×
// width, row stride `ld`) is split per row into blocks of nb consecutive
// columns (the last block of a row may be shorter). Per block s = max|w|;
// over the tile, with L = log2 s of the non-zero blocks:
//     z = min L, a = (max L − min L) / 15 (a = 1 when max L == min L),
// both stored as fp16 (32 bits per tile; z rounded to nearest, a rounded UP
// so that the top code still covers the largest block), then
//     s_int = clamp(ceil((log2 s − z) / a), 0, 15)   (all-zero block: 0)
//     scale = exp2f(a · s_int + z)                    (float arithmetic)
// (s_int raised where float rounding left the scale below s), so every
// |w| / scale <= 1. The normalised weights are w / scale; decode multiplies
// back.
// (struct gq_vq_norm and gq_vq_norm_scale: format/vqtensor.h.)
// sint (rows, n_blocks) gets the 4-bit codes; returns the tile parameters.
struct gq_vq_norm gq_vq_norm_fit(const double *w, int rows, int width, int ld, int nb, uint8_t *sint);

// ---------------------------------------------------------------------------
// Bits per value (paper §2.2): bpv = log2(k)/d + k·d·b_c/l.
// From a target: index bits per value b = the largest integer < bpv
// (2.125 -> 2, 2.25 -> 2, 3.125 -> 3), k = 2^(b·d) (unless k > 0 is given),
// overhead o = bpv − log2(k)/d, and the group size l = ceil(k·d·b_c / o')
// (unless l > 0 is given), with o' = o − 4/nb when normalisation blocks of nb
// are on (their 4-bit codes are paid from the same overhead; App. I / Table 14
// compares at equal overhead this way). b_c = gq_cb_bits(format).
// The fp16 codebook scale (int8) and the fp16 (a, z) per normalised tile are
// real stored bits too; they are NOT in the paper's formula, so the paper's
// configurations come out exactly (2D 2.125 -> k = 16, l = 2048) and the
// achieved bpv the driver reports is slightly higher (2.1328 there).
// Codebook SVD (svd_rank r > 0, d = 1 only): a group stores r factor values
// instead of k·d centroids, so l = ceil(r·b_c / o') (the per-tensor factor
// V and the r factor scales are not in the formula; the achieved bpv counts
// them).
// Errors (GQ_ERR_ARG, message): bpv too small for any k >= 2, overhead <= 0
// after the normalisation codes, k not a power of two, k·d > 2^20, svd_rank
// with d > 1 or above k.
struct gq_vq_config {
    int d, k, log2k;
    int64_t l;          // target weights per codebook group
    double index_bpv;   // log2(k)/d
    double overhead_bpv; // paper formula k·d·b_c/l (+ 4/nb with normalisation)
    // The slabs (gq_gptvq_n_slabs) gq_gptvq_quantize works on: slab_own[s]
    // nonzero for each; NULL: all of them.
    const uint8_t *slab_own;
};
enum gq_status gq_vq_config_from_bpv(double bpv, int d, int k, int64_t l, enum gq_cb_format f, int norm_block,
                                     int svd_rank, struct gq_vq_config *out);

// ---------------------------------------------------------------------------
// GPTVQ on one weight matrix (gptvq.c; paper Algorithm 1).
// The result's tiling, storage and decode rule: format/vqtensor.h.

// One slab's share of a result (plain numbers: ranks merge them bytewise).
struct gq_vq_slab {
    double objective, objective_pass, ref, greedy, objective_svd_trunc;
    double t_em, t_assign, t_feedback, t_update;
    int64_t em_iters, n_reseeded;
    int32_t update_iters, update_kept;
};
#define GQ_VQ_MAX_SLABS 256

struct gq_vq_result {
    double objective;        // tr((W−Q)H(W−Q)ᵀ), final
    double objective_pass;   // after the GPTVQ pass, before the codebook update
    double ref;              // tr(WHWᵀ)
    double rel_error;        // objective / ref
    double bpv;              // achieved, from gq_vq_tensor_bits
    int64_t l;               // weights per group (largest)
    bool update_kept;        // the codebook update lowered the objective and was kept (in a slab at least)
    int n_kept;              // slabs that kept it
    int update_iters;        // GD steps / CG iterations (1: dense exact solve); codebook SVD: ALS iterations
    double objective_svd_trunc; // codebook SVD: after sorting and rank-r truncation, before ALS and rounding
    double greedy;           // Σ over steps of ‖err‖² = ‖e U_SS⁻¹‖²: with exact feedback this
                             // equals tr((W−Q)(H+λI)(W−Q)ᵀ) of the pass (the OBS identity)
    double damp_abs;         // λ
    double damp_rel;
    int n_dead, n_tries;
    int64_t em_iters_total, n_reseeded;
    double t_prep, t_em, t_assign, t_feedback, t_update; // seconds
    int n_slab;              // units of work (below); the totals above are their sums, in slab order
    struct gq_vq_slab slab[GQ_VQ_MAX_SLABS];
};

// W (rows, cols) row-major is replaced by the decoded quantized matrix; t (may
// be NULL) receives the compressed form. H (cols, cols) as for GPTQ. qp gives
// damping, block size and act_order; vp the GPTVQ options; cfg from
// gq_vq_config_from_bpv. seed makes EM (k-means++) deterministic.
// EXACT update: dense solve up to this many unknowns per row tile, conjugate
// gradients above (a variable so tests can force either path).
extern int gq_vq_dense_max;
// Codebook SVD: alternating exact least-squares rounds on the factors U and V
// (a variable so tests can vary it).
extern int gq_vq_svd_als_iters;

// Slabs: the matrix is quantized in runs of whole row tiles of about
// vp->slab_rows rows (0: one slab), each on its own (pass, codebook update
// and its keep-or-not decision, objective). They depend only on the shape and
// the options, so a caller may quantize some (cfg->slab_own) and merge the
// rest from others: the bits are those of one call doing all. With only some
// slabs, W is left as it was, t holds zeros outside them and res's totals
// cover them only; merge t's arrays and res->slab, then gq_gptvq_finish.
enum gq_status gq_gptvq_quantize(float *W, int rows, int cols, const float *H, const struct gq_quant_params *qp,
                                 const struct gq_gptvq_params *vp, const struct gq_vq_config *cfg, uint64_t seed,
                                 struct gq_vq_tensor *t, struct gq_vq_result *res);
// Slabs of a (rows, cols) matrix: min(ceil(rows / slab_rows), row tiles,
// GQ_VQ_MAX_SLABS); 1 when slab_rows <= 0 or with the codebook SVD (it
// couples all groups).
int gq_gptvq_n_slabs(int rows, int cols, const struct gq_gptvq_params *vp, const struct gq_vq_config *cfg);
// res's totals from its slabs, in slab order (rel_error included).
void gq_vq_result_total(struct gq_vq_result *res);
// Totals, W (rows, cols) = the decoded t (checked finite) and the achieved bpv.
enum gq_status gq_gptvq_finish(const struct gq_vq_tensor *t, float *W, struct gq_vq_result *res);
// A linear's report entry (errors, bits, k, l, timings) from its GPTVQ result.
struct gq_quant_layer_report;
void gq_vq_report_fill(const struct gq_vq_result *res, const struct gq_vq_tensor *t, struct gq_quant_layer_report *r);

#endif
