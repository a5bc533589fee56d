// group.h - one input group of a block's linears quantized and shared among
// the ranks (group.c), and the per-linear settings engine.c shares with it.
#ifndef GQ_GROUP_H
#define GQ_GROUP_H
#include "quant/quant.h"
#include "quant/vq.h"
#include "util/common.h"

struct gq_model;

// The GGUF block type an RTN / GPTQ grid is (quantized on its f16 grid
// whether written so or not), or -1.
int gq_grid_gguf_type(const struct gq_quantize_params *p);
// The per-matrix parameters of a run's settings.
void gq_quant_params_from(const struct gq_quantize_params *p, struct gq_quant_params *q);
// The GPTVQ configuration of a budget of bpv bits per value (residual VQ included).
enum gq_status gq_linear_config(const struct gq_quantize_params *p, double bpv, struct gq_vq_config *cfg);
// The VQ dimension of --vq-dim 0 (auto) at budget bpv, for matrices whose
// smallest holds min_weights weights (cols4: every width a multiple of 4):
// 4 where bpv leaves 2 index bits per value (k 256 over 4-D vectors) and the
// smallest matrix holds at least half a 4-D codebook group (its one codebook
// then costs at most twice the planned overhead), else 2.
int gq_vq_auto_dim(const struct gq_gptvq_params *v, double bpv, int64_t min_weights, bool cols4);

// The ranks' parts of one GPTVQ matrix put together (each quantized its
// slabs: gq_gptvq_quantize's slab_own): every array of T and res's slab
// records OR-ed bytewise over the ranks (what a rank did not compute is zero
// there, so each byte comes from the rank that did). Then gq_gptvq_finish.
enum gq_status gq_vq_merge(struct gq_vq_tensor *T, struct gq_vq_result *res);

// GPTVQ's seed for linear t of block l (the EM initialisation's draws).
struct gq_block_tensor;
uint64_t gq_linear_seed(const struct gq_model *m, const struct gq_quantize_params *p, int l,
                        const struct gq_block_tensor *t);

// The linears of block l that read input g (g < 0: all, for RTN) quantized
// with the group's Hessian H (NULL: RTN), each replacing its weight in the
// model (and its packed or GGUF-block form) on every rank; one report entry
// each appended to rep, with a progress line. cfg: GPTVQ's configuration;
// bpv_map (--bit-alloc): each linear's GPTVQ budget, else NULL. Every rank
// calls it, in the same order.
enum gq_status gq_quantize_group(struct gq_model *m, int l, int g, const float *H, const struct gq_quantize_params *p,
                                 const struct gq_vq_config *cfg, const float *bpv_map, struct gq_quant_report *rep,
                                 struct gq_progress *pr);

#endif
