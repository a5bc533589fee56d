// vqprim.h - the numerical primitives of vector quantization that a backend
// implements (backend.h: vq_assign, vq_mstep, vq_em, vq_gram) and their CPU
// references (cpu.c): weighted nearest-centroid assignment, EM's M-step and
// rounds, the codebook update's normal equations. The quantizer that calls
// them (seeds, GPTVQ's driver) is quant/vq.h.
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
#ifndef GQ_VQPRIM_H
#define GQ_VQPRIM_H

#include "gptvq.h"
#include "backend/vqform.h" // GQ_VQ_MAX_DIM, gq_vq_qform
#include <stdbool.h>
#include <stdint.h>

struct gq_backend;

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

struct gq_vq_em_stats {
    int iters;          // EM iterations run (stops early when no assignment changes)
    int n_reseeded;     // empty clusters re-seeded over the run
    double objective;   // final Σ dist_i
    double *trace;      // optional caller array (iters_max + 1): objective after init
                        // assignment, then after each iteration; NULL to skip
};

// EM rounds from the seeds already in C (quant/vq.h: gq_vq_em = seeds + these
// rounds): E-step (gq_vq_assign) and M-step (gq_vq_mstep) until `iters`
// rounds or no assignment changes. Empty clusters: each empty centroid is
// moved onto the point with the largest current dist_i (which is then
// assigned to it), so the objective never increases. C (k, d) and idx (n) are
// outputs (idx: final assignment to the final C); st may be NULL.
// A group of at least GQ_VQ_EM_DEVICE_MIN point-centroid coordinates runs its
// assignments and M-steps on the backend `large`, a smaller one on the CPU.
// On the CPU, with k >= 128 and positive definite metrics, the assignments
// after the first skip the points that bounds prove keep their centroid
// (cpu.c); the steps are bit-identical to full scans (test_vq).
// A NaN objective is an error (gq_vq_em_nan's message).
enum gq_status gq_vq_em_rounds(const struct gq_backend *large, const struct gq_vq_data *D, int k, int iters, double *C,
                               int32_t *idx, struct gq_vq_em_stats *st);
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
// CPU reference of the batch: gq_vq_em_rounds(large) per job, the jobs in parallel
// over the OpenMP threads (one job: its own loops are threaded). On error
// the message of a failing job (here the lowest; the caller stops, and the
// other jobs' outputs are then undefined).
enum gq_status gq_vq_em_batch(const struct gq_backend *large, struct gq_vq_em_job *jobs, int n_jobs, int k, int iters);

#endif
