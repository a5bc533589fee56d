// arch.h - model description tables: which tensors a decoder block has, their
// shapes, their names in each file format, and (for linears) which input they
// read, so loaders, calibration and quantizers iterate one table instead of
// hard-coding a block. A new architecture is a new table.
#ifndef GQ_ARCH_H
#define GQ_ARCH_H

#include "model/model.h"

#include <stddef.h>

// A shape dimension, resolved against the hyperparameters.
enum gq_dim { GQ_D_NONE = 0, GQ_D_DIM, GQ_D_Q, GQ_D_KV, GQ_D_FFN };

enum gq_tensor_kind { GQ_T_NORM, GQ_T_LINEAR, GQ_T_BIAS };

struct gq_block_tensor {
    const char *name;      // short name: "attn_q"
    enum gq_tensor_kind kind;
    size_t offset;         // offsetof(struct gq_layer_w, field)
    enum gq_dim rows, cols; // W: (rows, cols) = (n_out, n_in); 1-D tensors: cols = NONE
    enum gq_block_input input; // linears: the input they read (linears sharing it share a Hessian)
    size_t qoffset;        // linears: offsetof(struct gq_layer_w, compressed form)
    const char *gguf;      // "blk.%d." + this
    const char *hf;        // "model.layers.%d." + this
};

struct gq_arch {
    const char *name;               // "llama", "qwen2"
    const struct gq_block_tensor *tensors; // in execution order
    int n_tensors;
    bool qkv_bias;                  // biases required
    bool rope_interleaved_gguf;     // GGUF stores q/k for interleaved RoPE (llama) or not (qwen2: NeoX)
};

// NULL when unknown. "mistral" maps to llama.
const struct gq_arch *gq_arch_find(const char *name);
int64_t gq_dim_value(const struct gq_hparams *hp, enum gq_dim d);
// Linear layers per block (the tensors of kind GQ_T_LINEAR).
static inline int gq_arch_n_linears(const struct gq_arch *A) {
    int n = 0;
    for (int i = 0; i < A->n_tensors; i++) n += A->tensors[i].kind == GQ_T_LINEAR;
    return n;
}
static inline const float **gq_block_slot(struct gq_layer_w *L, const struct gq_block_tensor *t) {
    return (const float **)((char *)L + t->offset);
}
// The compressed form's slot of a linear.
static inline const struct gq_qweight **gq_block_qslot(struct gq_layer_w *L, const struct gq_block_tensor *t) {
    return (const struct gq_qweight **)((char *)L + t->qoffset);
}
// Frees block l's f32 copy of linear t (owned by the model) and clears its
// slot (streaming: the block's weights live elsewhere until needed again).
static inline void gq_block_drop(struct gq_model *m, int l, const struct gq_block_tensor *t) {
    const float **slot = gq_block_slot(&m->layers[l], t);
    gq_model_release(m, (void *)*slot);
    *slot = NULL;
}

// Fills m->layers (allocated here) from a weight source: get(ctx, name, rows,
// cols, required, out) fetches tensor `name` as f32 (rows, cols) = (n_out,
// n_in), cols 0 for 1-D; names are "blk.%d." + gguf (hf false) or
// "model.layers.%d." + hf (hf true). Biases are required when bias_required.
typedef enum gq_status (*gq_weight_getter)(void *ctx, const char *name, int64_t rows, int64_t cols, bool required,
                                           const float **out);
// Optional: asked first for every linear; setting *out (compressed form)
// skips the f32 getter for it.
typedef enum gq_status (*gq_qweight_getter)(void *ctx, const char *name, int64_t rows, int64_t cols,
                                            const struct gq_qweight **out);
enum gq_status gq_arch_load_blocks(struct gq_model *m, const struct gq_arch *A, bool hf, bool bias_required,
                                   gq_weight_getter get, gq_qweight_getter qget, void *ctx, const char *path);

#endif
