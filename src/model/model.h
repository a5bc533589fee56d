// model.h - internal model representation shared by the loaders and the forward.
//
// Weights are f32, row-major W: (n_out, n_in), the layout of GGUF, llama2.c and
// safetensors alike. A weight either borrows the mapping of an F32 file or is
// an owned, dequantized copy (registered with gq_model_own).
#ifndef GQ_MODEL_H
#define GQ_MODEL_H

#include "util/common.h"

struct gq_qweight;
struct gq_vqpack;

enum gq_rope_scaling { GQ_ROPE_SCALING_NONE = 0, GQ_ROPE_SCALING_LINEAR, GQ_ROPE_SCALING_LLAMA3 };

struct gq_hparams {
    int n_vocab, dim, n_layers, n_heads, n_kv_heads, head_dim, hidden_dim, ctx_len;
    int rope_dim;            // rotated dims per head (== head_dim for Llama)
    float rms_eps, rope_theta;
    bool rope_interleaved;   // true: pairs (2i, 2i+1) (GGUF llama, llama2.c); false: rotate-half (HF, NeoX)
    enum gq_rope_scaling rope_scaling;
    float rope_factor, rope_low_freq_factor, rope_high_freq_factor;
    int rope_orig_ctx;
};

struct gq_layer_w {
    const float *attn_norm;          // (dim)
    const float *wq, *wk, *wv;       // (n_heads*head_dim, dim), (n_kv_heads*head_dim, dim) x2
    const float *bq, *bk, *bv;       // optional biases (Qwen2), NULL otherwise
    const float *wo;                 // (dim, n_heads*head_dim)
    const float *ffn_norm;           // (dim)
    const float *w_gate, *w_up;      // (hidden_dim, dim)
    const float *w_down;             // (dim, hidden_dim)
    // The same linears kept compressed (packed VQ, F16, Q8_0, Q4_0, ...) when
    // the model was loaded with keep_quantized; the f32 pointer is then NULL
    // and the forward runs the compressed kernels (src/kern/qmatmul.h).
    const struct gq_qweight *q_wq, *q_wk, *q_wv, *q_wo, *q_w_gate, *q_w_up, *q_w_down;
};

struct gq_model {
    struct gq_hparams hp;
    const float *tok_embd;    // (n_vocab, dim)
    const float *output_norm; // (dim)
    const float *output;      // (n_vocab, dim); == tok_embd when tied
    const float *rope_freq_factors; // (rope_dim/2) divisors of the RoPE frequencies (GGUF rope_freqs), or NULL
    // keep_quantized loads: compressed embedding / output head (f32 pointer NULL)
    const struct gq_qweight *q_tok_embd, *q_output;
    bool keep_quantized;      // set before loading (gq_load_params)
    bool no_repack;           // keep_quantized without the SIMD layout copies (gq_load_params)
    // Packed GPTVQ matrices produced by gq_quantize (NULL unless GPTVQ without
    // fake_quant): (n_layers, arch n_tensors), h.version 0 where none.
    struct gq_vqpack *packs;
    // The output head packed by GPTVQ (--head-bpv; the token embedding too
    // when tied), or NULL.
    struct gq_vqpack *head_pack;
    // GPTQ / RTN matrices kept as GGUF blocks (a grid that is a GGUF block
    // type, gq_quant_gguf_type, without fake_quant; NULL otherwise):
    // (n_layers, arch n_tensors), data NULL where none (a width that is not
    // whole blocks of 32 stays f32).
    struct gq_gguf_blocks {
        int type; // enum gq_ggml_type
        const uint8_t *data;
        size_t bytes;
    } *blocks;
    struct gq_layer_w *layers;
    struct gq_tokenizer *tok;
    // Set by a streaming gq_quantize with a checkpoint: finished blocks'
    // quantized f32 weights left memory for the checkpoint folder, and
    // reload(m, l) reads block l's back into its slots (owned by the model;
    // release them when done). NULL when every weight is in memory.
    enum gq_status (*reload)(struct gq_model *m, int layer);
    void *reload_user;

    char *arch, *name, *source_format, *chat_template; // owned (chat_template may be NULL)

    // Ownership: buffers freed with the model, plus the source (mapping) that
    // borrowed weights point into.
    void **owned;
    size_t n_owned, cap_owned;
    void *source;
    void (*source_free)(void *source);
};

struct gq_model *gq_model_alloc(void);
// Registers a malloc'd buffer to be freed with the model; frees p and fails
// when the list cannot grow.
enum gq_status gq_model_own(struct gq_model *m, void *p);
// Frees an owned buffer before the model goes (no-op for one it does not own).
void gq_model_release(struct gq_model *m, void *p);
// Checks shapes, required tensors and hparams; fills derived fields
// (head_dim, rope_dim defaults). Called by every loader at the end.
enum gq_status gq_model_finish(struct gq_model *m, const char *path);
// Returns GQ_ERR_NUMERIC naming `what` if x holds a NaN or Inf.
enum gq_status gq_check_finite(const float *x, size_t n, const char *path, const char *what);

// Loaders (one per source format).
enum gq_status gq_load_gguf(const char *path, struct gq_model *m);
enum gq_status gq_load_hf_dir(const char *dir, struct gq_model *m);
enum gq_status gq_load_llama2c(const char *path, const char *tokenizer_path, struct gq_model *m);

// ---------------------------------------------------------------------------
// Block-level forward (the body of gq_forward, exposed for calibration).

// Inputs of a block's linear groups, in execution order; linears of one group
// share their input (and so their Hessian): q/k/v, o, gate/up, down.
enum gq_block_input { GQ_IN_ATTN = 0, GQ_IN_ATTN_OUT, GQ_IN_FFN, GQ_IN_FFN_DOWN, GQ_IN_COUNT };

struct gq_block_hooks {
    // Called with each group's input x (n, n_in) before the group runs, and the
    // block's residual stream at that point, resid (n, dim): the block input
    // for GQ_IN_ATTN/GQ_IN_ATTN_OUT, the post-attention residual after.
    void (*capture)(void *user, int layer, enum gq_block_input which, const float *x, int n, int n_in,
                    const float *resid);
    void *user;
    int stop_after; // a gq_block_input: return right after capturing it; -1: whole block.
                    // x then holds only the residual adds done so far (none before
                    // GQ_IN_FFN): callers that stop early keep their own copy.
    int start_at;   // GQ_IN_ATTN (0): whole block; GQ_IN_FFN: x already holds the
                    // block's post-attention residual (a pass that stopped at
                    // GQ_IN_FFN), so only the FFN half runs. GQ_IN_ATTN_OUT: x is
                    // the block input and att_in (n, q_dim) the attention output
                    // (kept from an earlier pass with the same q/k/v; the KV cache
                    // is not written); GQ_IN_FFN_DOWN: x is the post-attention
                    // residual and hb_in (n, ffn) the down projection's input.
    const float *att_in, *hb_in;
};

// Runs decoder block `layer` with weights w (the model's, or replacements such
// as quantized ones) on x (n, dim), in place, for tokens at positions
// pos0..pos0+n-1 of the context's KV cache (the block's K/V are written there).
enum gq_status gq_block_forward(struct gq_context *c, int layer, const struct gq_layer_w *w, float *x, int n,
                                int pos0, const struct gq_block_hooks *hooks);
// Lockstep decode of n independent sequences, all at the same position:
// tokens[i] is appended to seqs[i] (each its own context and KV cache);
// logits (n, n_vocab). The matmuls run batched in `batch`'s scratch, whose
// context must be at least as long as the sequences'.
enum gq_status gq_forward_lockstep(struct gq_context *batch, struct gq_context *const *seqs, int n,
                                   const int32_t *tokens, float *logits);
// Rows with their own positions and visible keys: a batch of token trees
// (a shared prefix and its branches, several documents side by side) in
// one pass. Row i (cache row c->pos + i) is at RoPE position pos[i] and
// attends to cache rows [lo0[i], hi0[i]) (none: lo0 == hi0) and
// [lo1[i], c->pos + i], with lo0 <= hi0 <= lo1.
struct gq_rows_layout {
    const int *pos, *lo0, *hi0, *lo1; // (n) each
};
// n rows through the model laid out by lay (appended to the KV cache, as
// gq_forward); logits (n_out, n_vocab) of rows out[0..n_out). CPU contexts.
enum gq_status gq_forward_rows(struct gq_context *c, const int32_t *tokens, int n, const struct gq_rows_layout *lay,
                               const int *out, int n_out, float *logits);
// RoPE frequencies (rope_dim / 2) of a context, after scaling.
const float *gq_context_inv_freq(const struct gq_context *c);
// Llama 3.1 RoPE scaling: what frequency j (of rope_dim / 2) is divided by
// (the rope_freqs values llama.cpp's converter writes).
double gq_rope_llama3_divisor(const struct gq_hparams *hp, int j);
// out (n, dim) = the final RMS norm (output_norm) of x (n, dim): the head's input.
void gq_final_norm(const struct gq_model *m, const float *x, int n, float *out);
// x (n, dim) = token embeddings.
enum gq_status gq_embed(const struct gq_model *m, const int32_t *tokens, int n, float *x);

#endif
