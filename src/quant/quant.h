// quant.h - uniform scalar quantization of one weight matrix: RTN, GPTQ and
// the layer Hessian H = 2/N · Σ x xᵀ they use. Pure math, no model I/O: the
// quantization engine calls these once per linear layer.
//
// Shapes: W is (rows, cols) row-major = (n_out, n_in) of a linear layer
// y = W x; H is (cols, cols). Groups run along the input dimension (columns):
// group g of a row holds columns [g·group_size, min((g+1)·group_size, cols)),
// so the last group is narrower when group_size does not divide cols.
//
// Quantizer (GPTQ's Quantizer, quant.py, per channel): maxq = 2^wbits - 1,
//   asym: xmin = min(min x, 0), xmax = max(max x, 0) (the grid always holds 0),
//         scale = (xmax - xmin)/maxq, zero = round(-xmin/scale)
//   sym:  xmax = max(|xmin|, xmax), xmin = -xmax, zero = (maxq + 1)/2
//   an all-zero group gets xmin = -1, xmax = 1 (as GPTQ)
//   code q = clamp(round(x/scale) + zero, 0, maxq)   (round half to even, as torch)
//   value  = scale · (q - zero)                        (float arithmetic)
// scale is rounded to float before it is used, so the stored (scale, zero,
// code) reproduce the dequantized values bit for bit.
// f16_grid (the grid of a GGUF block type, group_size 32: gq_quant_gguf_type):
//   scale is rounded to f16 (at least its smallest subnormal, at most 65504);
//   sym:  value = scale · (q - zero) as above: Q4_0 / Q5_0 / Q8_0's
//         d · (q - 8 / 16 / 128), the same float product;
//   asym: zero = round(-xmin/scale) as above, then the grid moves to GGUF's
//         min form: m = f16(-scale · zero), code q = clamp(round((x - m)/scale)),
//         value = (float)q · scale + m (Q4_1 / Q5_1's d · q + m), and the
//         group's "zero" (find_params, the scales/zeros outputs) holds m.
//   So a group is one GGUF block whose llama.cpp dequantization is the value.
// Deviation from GPTQ: in sym mode GPTQ keeps xmin = 0 for a group without
// negative entries, which with zero = (maxq+1)/2 clips its positive half; we
// always use xmin = -xmax.
#ifndef GQ_QUANT_H
#define GQ_QUANT_H

#include "gptvq.h"
#include <math.h>

// GPTQ's --mse search (Quantizer(mse=True): grid=100, maxshrink=0.8,
// norm=2.4): shrink factors p = 1 - i/100 for i = 0..79 (1.00 down to 0.21),
// the range [p·xmin, p·xmax] with the lowest Σ |x - q(x)|^2.4 wins (p = 1,
// plain min/max, is a candidate, so the search never increases that error).
#define GQ_MSE_GRID 100
#define GQ_MSE_MAXSHRINK 0.8
#define GQ_MSE_NORM 2.4

struct gq_quant_params {
    int wbits;          // 1..8
    int group_size;     // columns per group; <= 0: one group per row
    bool sym;           // default false: asymmetric min/max
    bool mse_clip;      // shrink-factor grid search per group (see GQ_MSE_*)
    float damp;         // GPTQ percdamp: λ = damp · mean(diag H) on the diagonal (0.01)
    int block_size;     // GPTQ lazy batch B (<= 0: 128)
    bool act_order;     // quantize columns in order of descending diag(H)
    bool static_groups; // group params from the original W up front (implied by act_order)
    bool f16_grid;      // f16 scale (and min): groups are GGUF blocks (see above)
};
// Measured (tests/test_gptq.c [2]): with outlier-heavy activations at 2 bits
// and groups of 32/64, dynamic groups can end up WORSE than RTN in the layer
// objective (GPTQ/RTN ≈ 1.17); static groups (≈ 0.62) and act-order (≈ 0.38)
// stay well below. Prefer act_order (or static_groups) for 2-bit.

// wbits 4, per row, asym, no mse, damp 0.01, block 128, no act-order.
void gq_quant_params_default(struct gq_quant_params *p);
// Checks p against a (rows, cols) matrix; GQ_ERR_ARG with a message.
enum gq_status gq_quant_params_check(const struct gq_quant_params *p, int rows, int cols);
// Columns per group (cols for per-row) and groups per row.
int gq_quant_group_cols(const struct gq_quant_params *p, int cols);
int gq_quant_n_groups(const struct gq_quant_params *p, int cols);

// Scale and zero of one group of n values (x contiguous), as described above.
void gq_quant_find_params(const double *x, int n, const struct gq_quant_params *p, float *scale,
                          float *zero);

// The grid is in GGUF's min form (f16_grid, asym): its "zero" is the min m.
static inline bool gq_quant_minform(const struct gq_quant_params *p) { return p->f16_grid && !p->sym; }

// One value on the grid of (scale, zero); *code gets q in [0, maxq].
// minform: gq_quant_minform of the parameters the grid came from.
static inline float gq_quant_value(double x, float scale, float zero, int maxq, bool minform, int *code) {
    double q = minform ? nearbyint((x - zero) / scale) : nearbyint(x / scale) + zero;
    if (!(q >= 0)) q = 0; // also NaN
    if (q > maxq) q = maxq;
    *code = (int)q;
    if (!minform) return scale * ((float)q - zero);
    float dq = (float)q * scale; // two statements: no fused multiply-add, as llama.cpp's x = d·q + m
    return dq + zero;
}

// The GGUF block type (enum gq_ggml_type) whose dequantization is this grid
// exactly, or -1: group_size 32 and sym 4 / 5 / 8 bits -> Q4_0 / Q5_0 / Q8_0,
// asym 4 / 5 bits -> Q4_1 / Q5_1 (with f16_grid set when quantizing).
int gq_quant_gguf_type(const struct gq_quant_params *p);
// Q (rows, cols), cols a multiple of 32, quantized with p (f16_grid) on the
// group grids (scales, zeros) (rows, cols/32), as rows of GGUF blocks of
// type gq_quant_gguf_type(p) into out (gq_ggml_row_size · rows bytes). Every
// value is checked to be its block's dequantization, bit for bit.
enum gq_status gq_quant_gguf_encode(const struct gq_quant_params *p, const float *Q, int rows, int cols,
                                    const float *scales, const float *zeros, void *out);

// Round to nearest: Q_out (rows, cols) gets the dequantized values.
// scales, zeros: NULL, or (rows, n_groups) row-major outputs.
enum gq_status gq_rtn_quantize(const float *W, int rows, int cols, const struct gq_quant_params *p,
                               float *Q_out, float *scales, float *zeros);

// ---------------------------------------------------------------------------
// Hessian of the layer reconstruction error ‖WX - QX‖² (GPTQ's add_batch).

struct gq_hessian {
    int n;             // input dimension
    double *h;         // (n, n) scratch: the current unit's Σ x xᵀ (upper triangle)
    bool pending;      // h holds additions not folded into acc yet
    int64_t *acc;      // exact running sum of the upper triangle, 3 limbs (below)
    int64_t n_samples; // rows (tokens) added so far
    int64_t n_adds;    // gq_hessian_add calls folded into acc
    double bound;      // Σ over those calls of their largest |entry| (acc cannot wrap below 2^62)
    double *scratch;   // (GQ_HESSIAN_CHUNK, n) double copy of the input chunk
};
#define GQ_HESSIAN_CHUNK 256

enum gq_status gq_hessian_init(struct gq_hessian *H, int n);
// Adds Σ x xᵀ over the n_tokens rows of X (n_tokens, dim) row-major to the
// current unit's sum, in double (chunks of GQ_HESSIAN_CHUNK).
enum gq_status gq_hessian_add(struct gq_hessian *H, const float *X, int n_tokens, int dim);
// Ends a unit: its sum is added exactly (fixed point, 2^-64 resolution) to
// the running total. The total is therefore the same whatever the order of
// the units and however they are split between processes
// (gq_hessian_allreduce), as long as each unit's additions are the same.
// allreduce and finish fold a pending unit first.
enum gq_status gq_hessian_fold(struct gq_hessian *H);
// The engine's unit: whole calibration windows, this many tokens (one window
// of 2048; four of 512), so that 512-token windows do not pay a fold each.
#define GQ_HESSIAN_UNIT_TOKENS 2048
// One more unit whose Σ x xᵀ S (n, n) row-major upper triangle, over
// n_tokens tokens, was summed elsewhere (the CUDA device's calibration pass),
// folded into the total.
enum gq_status gq_hessian_add_sum(struct gq_hessian *H, const double *S, int64_t n_tokens);
// Sums every rank's H (gq_dist_sum_i64: exact, order-free); a no-op with one.
enum gq_status gq_hessian_allreduce(struct gq_hessian *H);
// FNV-1a 64 (over 64-bit words) of the folded total's limbs (after
// gq_hessian_fold / allreduce).
uint64_t gq_hessian_digest(const struct gq_hessian *H);
// out (n, n) float, full symmetric: 2/N · Σ x xᵀ with N = n_samples (tokens).
// GPTQ divides by the number of sequences instead; the scale does not change
// GPTQ's result (its damping is relative to mean(diag H)). N = 0 gives zeros.
enum gq_status gq_hessian_finish(struct gq_hessian *H, float *out);
// The same from a sum h (n, n) whose upper triangle holds Σ x xᵀ over n_samples tokens.
void gq_hessian_finish_sum(const double *h, int n, int64_t n_samples, float *out);
void gq_hessian_free(struct gq_hessian *H);
// Asymmetric calibration (--fp-target, GPTAQ's objective): the quantized
// model's inputs x_t of a linear and the source model's x̂_t, H = 2/N Σ x xᵀ,
// C (n, n) = 2/N Σ x̂ xᵀ. W (rows, n) becomes the weight A that minimises
// Σ_t ‖A x_t − W x̂_t‖² + λ‖A − W‖², λ = damp · mean(diag H): quantizing A
// with H then minimises the error against the source model's output, not
// against W's output on the already-quantized inputs.
enum gq_status gq_fp_target(float *W, int rows, int n, const float *H, const double *C, double damp);
// Whether a run rotates its linears (gq_quantize_params.rotate resolved).
struct gq_quantize_params;
bool gq_quantize_rotates(const struct gq_quantize_params *p);
// --rotate: R H Rᵀ (malloc'd n × n, symmetric; NULL when out of memory) for
// the rotation R of H's width n: the Hessian of the inputs R x.
struct gq_rot;
float *gq_rot_hessian(const float *H, const struct gq_rot *R);

// ---------------------------------------------------------------------------
// The output head (head.c, --head-bpv).

struct gq_model;
struct gq_quant_layer_report;
// True when the source has no output.weight: the token embedding is the head.
bool gq_head_tied(const struct gq_model *m);
// GPTVQ of the head at p->head_bpv (p->vq's dimension, codebook format and
// normalisation) with the Hessian of the final norm of X (n_win windows of
// seqlen tokens, dim): the last block's outputs on this rank's calibration
// windows (summed over the ranks). The packed result goes to
// m->head_pack; r gets its report (layer -1). q: p as the per-matrix
// quantizers' settings (damping, act-order, block size).
struct gq_quantize_params;
enum gq_status gq_quantize_head(struct gq_model *m, const struct gq_quantize_params *p, const struct gq_quant_params *q,
                                const float *X, int n_win, int seqlen, struct gq_quant_layer_report *r);

// ---------------------------------------------------------------------------
// Block-output fine-tuning of packed GPTVQ codebooks (finetune.c, --finetune).

struct gq_context;
struct gq_layer_w;
struct gq_finetune_report {
    double loss0, loss1;   // block objective before, and after the steps and the rounding
    double loss_steps[2];  // at the first and the last step (before rounding)
    int steps;
    bool kept;             // loss1 < loss0: the tuned codebooks replaced the quantized ones
    double seconds;
};
// Block l, every linear quantized (packed GPTVQ in m->packs): the codebooks
// of its seven linears take p->finetune_steps Adam steps (step size
// p->ft_lr times each codebook's largest |entry|) on the block output error
// against the source block src (its linears unquantized) on the same inputs
// X (n_win windows of seqlen tokens, the quantized model's block inputs),
// with assignments fixed (step j reads p->ft_batch windows in turn from
// window 0); kept (packs and the block's f32 slots) only if the rounded
// result lowers the objective over the first 32 windows (all when fewer;
// the report's loss0 / loss1 are that objective). Only the first
// gq_finetune_windows(p, n_win) windows of X are read. sink_weight: the
// first token's weight in the objective (the Hessians' own).
int gq_finetune_windows(const struct gq_quantize_params *p, int n_win);
enum gq_status gq_finetune_block(struct gq_context *c, struct gq_model *m, int l, const struct gq_layer_w *src,
                                 const float *X, int n_win, int seqlen, float sink_weight,
                                 const struct gq_quantize_params *p, struct gq_finetune_report *r);
// The objective of one window (n tokens, positions 0..n-1) through a block
// as model/forward.c computes it, Σ_t w_t ‖y_t − yref_t‖²; W and dW: q, k,
// v, o, gate, up, down; dW non-NULL: the gradients are added to it.
struct gq_ft_shape {
    int n, dim, n_heads, n_kv_heads, head_dim, ffn, rope_dim;
    bool rope_interleaved;
    float eps;
    const float *inv_freq;                // rope_dim / 2
    const float *attn_norm, *ffn_norm;    // (dim)
    const float *bq, *bk, *bv;            // q/k/v biases or NULL
};
double gq_finetune_block_loss(const struct gq_ft_shape *sh, const float *const W[7], float *const dW[7], const float *x,
                              const float *yref, const float *w);

// tr(ΔHΔᵀ) with Δ = W - Q, and tr(WHWᵀ) (either output may be NULL):
// ‖(W - Q)X‖² and ‖WX‖² up to the 2/N scale of H. Double precision.
enum gq_status gq_layer_objective(const float *W, const float *Q, int rows, int cols,
                                  const float *H, double *obj, double *ref);

// ---------------------------------------------------------------------------
// GPTQ (Frantar et al. 2022, Alg. 1; GPTVQ paper Eq. 2-3).

// What GPTQ and GPTVQ share before their column loop: the column order and
// the upper Cholesky factor U of the damped H⁻¹ in that order (H⁻¹ = UᵀU).
struct gq_hinv {
    int n;
    double *U;        // (n, n) row-major, zero below the diagonal
    int32_t *perm;    // (n) position -> original column
    double *diag;     // (n) diag H in original order, dead inputs (H_ii = 0) set to 1
    int n_dead;
    double damp_rel;  // relative damping finally used (retries raise it)
    double damp_abs;  // λ added to the diagonal
    int n_tries;      // Cholesky attempts
};
// perm (n) = 0..n-1 stably sorted by descending key (ties: lower index first).
void gq_sort_desc(int32_t *perm, const double *key, int n);
// perm_in: the column order to use, or NULL: descending diag H (act_order)
// or identity. Damping λ = damp · mean(diag H); on a failed factorisation
// retried with 10× damping and a diagonal floor (warning on stderr).
enum gq_status gq_hinv_prepare(const float *H, int n, float damp, bool act_order, const int32_t *perm_in,
                               struct gq_hinv *out);
void gq_hinv_free(struct gq_hinv *h);
// Wd (rows, n) = W with columns in `perm` order, dead inputs zeroed.
enum gq_status gq_permuted_weights(const float *W, int rows, int n, const float *H, const int32_t *perm,
                                   double *Wd);

// One slab's share of a GPTQ result (plain numbers: ranks merge them bytewise).
struct gq_gptq_slab {
    double objective, ref, rtn_objective;
    int32_t rtn_fallback, pad;
};
#define GQ_GPTQ_MAX_SLABS 256

struct gq_gptq_result {
    // Optional caller-owned outputs, set before the call (NULL: skip):
    float *scales;     // (rows, n_groups), by ORIGINAL column group
    float *zeros;      // (rows, n_groups)
    uint8_t *codes;    // (rows, cols) integer codes q, original column order
    int32_t *perm;     // (cols) quantization order (act_order; identity otherwise)
    // Slabs (inputs): runs of about slab_rows rows (<= 0: one slab), each
    // quantized on its own (its lazy-update GEMMs, its RTN guard) so that
    // ranks may split them: only those with slab_own[s] set (NULL: all); W,
    // scales, zeros and codes keep their input values in the others' rows.
    int slab_rows;
    const uint8_t *slab_own;
    // Filled by the call:
    int n_slab;
    struct gq_gptq_slab slab[GQ_GPTQ_MAX_SLABS];
    double damp_rel;   // relative damping finally used (= p->damp unless retried)
    double damp_abs;   // λ added to the diagonal
    int n_tries;       // Cholesky attempts (1 = no retry)
    int n_dead;        // inputs with H_ii == 0 (their weights are quantized to 0)
    double objective;  // tr((W-Q)H(W-Q)ᵀ) with the H passed in
    double rel_error;  // objective / tr(WHWᵀ) (0 when tr(WHWᵀ) <= 0)
    double rtn_objective; // RTN's tr((W-Q)H(W-Q)ᵀ) on the same grid settings
    double rtn_rel_error; // rtn_objective / tr(WHWᵀ)
    bool rtn_fallback; // GPTQ's result was worse than RTN's, so RTN's was kept (in a slab at least)
};
// Slabs of a matrix of `rows` rows: min(ceil(rows / slab_rows), GQ_GPTQ_MAX_SLABS),
// 1 when slab_rows <= 0; slab s is rows [rows·s/n, rows·(s+1)/n) (gq_dist_span).
int gq_gptq_n_slabs(int rows, int slab_rows);
// res's totals (objective, rel_error, rtn_*) from its slabs, in slab order.
void gq_gptq_result_total(struct gq_gptq_result *res);

// W (rows, cols) row-major is replaced by its quantized values; H (cols, cols)
// is the layer Hessian (symmetric, read whole). On failure W is untouched.
// Group parameters are computed when the first column of a group is reached,
// from the weights as updated by all earlier columns (exact, whatever the
// block size; reference GPTQ reads stale in-block weights there), or with
// static_groups / act_order from the original W (see gptq.c).
// Guard: greedy GPTQ can lose to plain rounding (dynamic groups at 2 bits
// under outlier-heavy H, tests/test_gptq.c [2]); the RTN solution is always
// evaluated too and kept when its objective is lower (rtn_fallback), so the
// result is never worse than RTN in the layer objective (per slab: a slab
// falls back on its own).
enum gq_status gq_gptq_quantize(float *W, int rows, int cols, const float *H,
                                const struct gq_quant_params *p, struct gq_gptq_result *res);

// Hessian artefacts (hessian.c): DIR/blk.<layer>.<input>.hessian holding a
// float H (n, n) of block `layer`'s linear input `input` (gq_block_input) and
// its token count; load checks the header against (n, layer, input).
enum gq_status gq_hessian_save(const char *dir, int layer, int input, const float *H, int n, int64_t n_samples);
enum gq_status gq_hessian_load(const char *dir, int layer, int input, float *H, int n, int64_t *n_samples);

// Bit allocation (alloc.c): item i (of n_items) has n_opt[i] options (at most
// GQ_ALLOC_MAX_OPT), flattened in bits[] / err[] (item 0's first); choice[i]
// gets the chosen option's index within its item and *used their Σ bits.
// The choice minimises Σ err among all choices with at most *used bits
// (*used <= budget); GQ_ERR_ARG when even the cheapest options exceed it.
#define GQ_ALLOC_MAX_OPT 16
enum gq_status gq_bit_alloc(int n_items, const int *n_opt, const int64_t *bits, const double *err, int64_t budget,
                            int *choice, int64_t *used);

#endif
