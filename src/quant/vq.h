// vq.h - vector-quantization primitives of GPTVQ (seed paper 003, §2.2 and
// appendices G, H, I): weighted nearest-centroid assignment, the EM codebook
// initialisation, codebook storage (int8 + scale, fp16), blockwise data
// normalisation and the bits-per-value configuration. Pure math on small
// arrays; the GPTQ-style driver that calls them is gptvq.c.
//
// Points and metrics. A VQ point is d consecutive weights of one row
// (d = 1, 2, 4, 8). Points come in "slots": all points of one slot share one
// symmetric positive semi-definite d×d metric M (for GPTVQ: the points of the
// same d columns, M from the inverse Hessian of those columns), and point i
// carries a scalar multiplier s2[i] >= 0 (the square of its normalisation
// scale; 1 without normalisation). The distance of point i to centroid c is
//     dist_i(c) = s2[i] · (x_i − c)ᵀ M_slot(i) (x_i − c)
// and the EM / assignment objective is Σ_i dist_i(c_idx[i]) (paper Eq. 4-5,
// with M = D = diag(1/[H⁻¹]_jj) by default or the full sub-block).
// One weighting is used everywhere: assignment, EM's E-step, its M-step and
// the reported objective (the reference code weights fitting and assignment
// differently; we do not).
//
// GEMM form: dist = s2·(xᵀMx − 2 xᵀ(Mc) + cᵀMc). Per slot the k vectors
// P_m = M c_m and norms n_m = c_mᵀ M c_m are computed once, so a point costs
// k·(d + 1) multiply-adds and the argmin ignores xᵀMx and s2 (both constant
// per point). No n×k distance matrix is materialised: memory is O(k·d) per
// thread, whatever the number of points.
#ifndef GQ_VQ_H
#define GQ_VQ_H

#include "gptvq.h"
#include "quant/quant.h"
#include "quant/vqform.h" // GQ_VQ_MAX_DIM, gq_vq_qform
#include <math.h>
#include <stdbool.h>
#include <stdint.h>

struct gq_vq_data {
    int d;             // 1..GQ_VQ_MAX_DIM
    int n_slots;       // slot s holds points [s·per_slot, (s+1)·per_slot)
    int per_slot;      // points per slot (>= 1)
    const double *x;   // (n_slots·per_slot, d) row-major points
    const double *s2;  // (n) per-point multipliers, or NULL (all 1)
    const double *metric; // (n_slots, d, d) symmetric PSD metrics, row-major
    bool diag;         // metrics are diagonal (fast path; off-diagonals ignored)
};

static inline int64_t gq_vq_n_points(const struct gq_vq_data *D) {
    return (int64_t)D->n_slots * D->per_slot;
}

// Normal equations of GPTVQ's exact codebook update for one row tile
// (gptvq.c): with the assignments fixed the objective restricted to the
// tile's rows is θᵀGθ − 2bᵀθ + const over its m = stages·n_ct·k·d codebook
// entries, local order (stage, column tile, centroid, coordinate), with
//   G = Σ_r A_rᵀ H A_r,
// A_r (nv·d, m) holding sig[r, v] at (v·d + j, (s, ct(v), idx_s(r, v), j))
// for every vector v of row r, coordinate j < d and stage s.
struct gq_vq_gram {
    int rows, nv, d, k, stages, n_ct;
    const int *vt_start;     // (n_ct + 1) first vector of each column tile (vt_start[n_ct] = nv)
    const uint16_t *idx;     // idx[s·idx_stage + r·nv + v]: centroid (within its group) of vector v of row r
    size_t idx_stage;
    const double *sig;       // (rows, nv) scale of each vector (normalisation), NULL: 1
    const double *H;         // (nv·d, nv·d), leading dimension ldh: the VQ positions' Hessian
    int ldh;
};
static inline size_t gq_vq_gram_m(const struct gq_vq_gram *g) {
    return (size_t)g->stages * g->n_ct * g->k * g->d;
}
// G (m, m) = Σ_r A_rᵀ H A_r (overwritten). CPU reference: one task per pair
// of (stage, column tile) blocks, the same sums for any number of threads.
enum gq_status gq_vq_gram(const struct gq_vq_gram *g, double *G);

// Nearest centroid of every point under its slot's metric. C: (k, d)
// row-major centroids. idx (n) gets argmin_m dist_i(c_m) (lowest m on ties).
// dist (n, optional) gets dist_i(c_idx[i]) including s2. Returns the total
// objective Σ_i dist_i. Threaded over points (OpenMP).
double gq_vq_assign(const struct gq_vq_data *D, const double *C, int k, int32_t *idx, double *dist);

// Same argmin for one point x of a slot with precomputed P (k, d) = M c_m and
// nrm (k) = c_mᵀ M c_m: argmin_m nrm[m] − 2 xᵀP_m (lowest m on ties).
int gq_vq_nearest(const double *x, int d, const double *P, const double *nrm, int k);
// P and nrm of one metric (d, d) for the codebook C (k, d).
void gq_vq_precompute(const double *metric, bool diag, int d, const double *C, int k, double *P, double *nrm);

// M-step (paper Eq. 6): for every centroid m with points,
//   c_m = (Σ_{i∈I_m} s2_i M_i)⁺ (Σ_{i∈I_m} s2_i M_i x_i)
// (diag: per coordinate; a coordinate with zero total weight keeps its old
// value; full: d×d solve, falling back to the old centroid when singular).
// Centroids without points are left unchanged. Returns the number of empty
// centroids. C (k, d) is read (old values) and written.
int gq_vq_mstep(const struct gq_vq_data *D, const int32_t *idx, int k, double *C);

// enum gq_vq_init (MAHALANOBIS, KMEANSPP) is public: include/gptvq.h.

struct gq_vq_em_stats {
    int iters;          // EM iterations run (stops early when no assignment changes)
    int n_reseeded;     // empty clusters re-seeded over the run
    double objective;   // final Σ dist_i
    double *trace;      // optional caller array (iters_max + 1): objective after init
                        // assignment, then after each iteration; NULL to skip
};

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
// The same EM rounds from the seeds already in C (gq_vq_em = gq_vq_seed + this).
// A group of at least GQ_VQ_EM_DEVICE_MIN point-centroid coordinates runs its
// assignments and M-steps on the current backend, a smaller one on the CPU.
// On the CPU, with k >= 128 and positive definite metrics, the assignments
// after the first skip the points that bounds prove keep their centroid
// (vq.c); the steps are bit-identical to full scans (test_vq).
// A NaN objective is an error (gq_vq_em_nan's message).
enum gq_status gq_vq_em_run(const struct gq_vq_data *D, int k, int iters, double *C, int32_t *idx,
                            struct gq_vq_em_stats *st);
#define GQ_VQ_EM_DEVICE_MIN ((int64_t)1 << 22)
enum gq_status gq_vq_em_nan(const struct gq_vq_data *D, int k);

// One group's EM for a batch (the backend's vq_em): C (k, d) holds the seeds
// and gets the centroids, idx (n) the final assignment, st the counts.
struct gq_vq_em_job {
    struct gq_vq_data D;
    double *C;
    int32_t *idx;
    struct gq_vq_em_stats st; // st.trace unused
};
// CPU reference of the batch: gq_vq_em_run per job, the jobs in parallel
// over the OpenMP threads (one job: its own loops are threaded). On error
// the message of a failing job (here the lowest; the caller stops, and the
// other jobs' outputs are then undefined).
enum gq_status gq_vq_em_batch(struct gq_vq_em_job *jobs, int n_jobs, int k, int iters);

// ---------------------------------------------------------------------------
// Codebook storage. A codebook is n = k·d values.
//  INT8 (default, paper App. G): scale = max|c| / 127 rounded to fp16 (stored
//    as fp16; 0 when all c are 0), q = clamp(round_half_even(c / scale),
//    −127, 127), value = (float)q · scale (float arithmetic).
//  FP16: each value rounded to fp16 (round to nearest even), no scale.
//  F32: no compression (for experiments; counted as 32 bits).
// enum gq_cb_format (GQ_CB_INT8, GQ_CB_FP16, GQ_CB_F32) is public: include/gptvq.h.
int gq_cb_bits(enum gq_cb_format f);        // 8, 16, 32 bits per entry
int gq_cb_scale_bits(enum gq_cb_format f);  // 16 for INT8 (its fp16 scale), else 0

// Rounds C (n values) in place to what the format stores. q8 (n, optional)
// gets the int8 codes (INT8), h16 (n, optional) the fp16 bits (FP16),
// *scale the fp16-rounded scale as float (INT8; 1 otherwise).
void gq_cb_round(double *C, int n, enum gq_cb_format f, int8_t *q8, uint16_t *h16, float *scale);

// f32 -> fp16 bits, round to nearest even, overflow to ±inf, NaN kept.
uint16_t gq_f32_to_f16(float f);

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
struct gq_vq_norm {
    float a, z;       // fp16-rounded step and offset of the tile
};
// sint (rows, n_blocks) gets the 4-bit codes; returns the tile parameters.
struct gq_vq_norm gq_vq_norm_fit(const double *w, int rows, int width, int ld, int nb, uint8_t *sint);
static inline float gq_vq_norm_scale(struct gq_vq_norm n, int sint) {
    return exp2f(n.a * (float)sint + n.z);
}

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
};
enum gq_status gq_vq_config_from_bpv(double bpv, int d, int k, int64_t l, enum gq_cb_format f, int norm_block,
                                     int svd_rank, struct gq_vq_config *out);

// ---------------------------------------------------------------------------
// GPTVQ on one weight matrix (gptvq.c; paper Algorithm 1).
//
// Column positions p = 0..cols-1 follow `perm` (position -> original
// column): first n_out outlier columns (kept as fp16 scalars), then the VQ
// columns, cut into n_ct column tiles of whole d-vectors (at most 256 columns
// wide unless the group size forces wider ones). Rows are cut into n_rt row
// tiles. Group (rt, ct) = row tile × column tile owns one codebook per stage.
// Decoded value of row r at position p >= n_out, vector t = (p − n_out)/d,
// coordinate j = (p − n_out) % d:
//     c = cb[0][rt][ct][idx[0][r][t]][j] (+ cb[1][rt][ct][idx[1][r][t]][j])   float
//     q = norm ? c · gq_vq_norm_scale(norm[rt][ct], sint[r][block]) : c      float
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

struct gq_vq_result {
    double objective;        // tr((W−Q)H(W−Q)ᵀ), final
    double objective_pass;   // after the GPTVQ pass, before the codebook update
    double ref;              // tr(WHWᵀ)
    double rel_error;        // objective / ref
    double bpv;              // achieved, from gq_vq_tensor_bits
    int64_t l;               // weights per group (largest)
    bool update_kept;        // the codebook update lowered the objective and was kept
    int update_iters;        // GD steps / CG iterations (1: dense exact solve); codebook SVD: ALS iterations
    double objective_svd_trunc; // codebook SVD: after sorting and rank-r truncation, before ALS and rounding
    double greedy;           // Σ over steps of ‖err‖² = ‖e U_SS⁻¹‖²: with exact feedback this
                             // equals tr((W−Q)(H+λI)(W−Q)ᵀ) of the pass (the OBS identity)
    double damp_abs;         // λ
    double damp_rel;
    int n_dead, n_tries;
    int64_t em_iters_total, n_reseeded;
    double t_prep, t_em, t_assign, t_feedback, t_update; // seconds
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

enum gq_status gq_gptvq_quantize(float *W, int rows, int cols, const float *H, const struct gq_quant_params *qp,
                                 const struct gq_gptvq_params *vp, const struct gq_vq_config *cfg, uint64_t seed,
                                 struct gq_vq_tensor *t, struct gq_vq_result *res);

#endif
