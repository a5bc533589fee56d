// forward_cuda.h - the decoder and the calibration passes on a CUDA device,
// built from a model (forward_cuda.c) on the plug-in of backend/cuda.c.
#ifndef GQ_FORWARD_CUDA_H
#define GQ_FORWARD_CUDA_H

#include "gptvq.h"

#include <stdbool.h>
#include <stdint.h>

// The decoder forward of a CUDA context (forward.c): the model's linears on the
// device (compressed where a kernel takes their format, else decoded to f32),
// norms, RoPE frequencies inv_freq (rope_dim / 2) and a KV cache of n_ctx.
// forward: tokens at positions pos0.. (embedded on the host), logits as
// gq_forward's.
struct gq_model;
struct gq_cuda_lm;
enum gq_status gq_cuda_lm_new(const struct gq_model *m, int n_ctx, const float *inv_freq, struct gq_cuda_lm **out);
enum gq_status gq_cuda_lm_forward(struct gq_cuda_lm *c, const int32_t *tokens, int n, int pos0, float *logits,
                                  bool all_logits);
int gq_cuda_lm_n_f32(const struct gq_cuda_lm *c); // linears running decoded to f32
void gq_cuda_lm_free(struct gq_cuda_lm *c);

// Calibration passes on the CUDA device (quant/engine.c): X (nsamples,
// seqlen, dim) uploaded once; block(L) uploads a block's f32 weights; the
// passes are backend.h's gq_cuda_calib_pass, freed by gq_cuda_calib_free.
struct gqcu_calib;
struct gq_layer_w;
enum gq_status gq_cuda_calib_new(const struct gq_model *m, const float *inv_freq, int nsamples, int seqlen,
                                 const float *X, struct gqcu_calib **out);
enum gq_status gq_cuda_calib_block(struct gqcu_calib *c, const struct gq_layer_w *L);

#endif
