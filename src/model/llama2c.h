// llama2c.h - llama2.c checkpoint layout (karpathy/llama2.c export.py):
//   v0 (legacy): 7 x i32 header (dim, hidden_dim, n_layers, n_heads,
//       n_kv_heads, vocab_size (negative: unshared classifier), seq_len), then
//       f32 tok_emb, rms_att, wq, wk, wv, wo, rms_ffn, w1, w2, w3, rms_final,
//       freq_cis_real, freq_cis_imag, [wcls].
//   v1: 256-byte header (u32 magic "ak42", i32 version 1, the 7 i32, u8
//       shared_classifier), then f32 rms_att, rms_ffn, rms_final, tok_emb,
//       wq, wk, wv, wo, w1, w2, w3, [wcls].
//   v2: like v1 plus i32 group_size after the flag; f32 norms, then each
//       matrix (per layer) as int8 values followed by f32 scales per group (Q8_0).
// Split from the loader so that the fuzzer can drive it from memory.
#ifndef GQ_LLAMA2C_H
#define GQ_LLAMA2C_H

#include "model/model.h"

#define GQ_LLAMA2C_MAGIC 0x616b3432u // "ak42"

struct gq_llama2c_layout {
    int version; // 0, 1 or 2
    int dim, hidden_dim, n_layers, n_heads, n_kv_heads, n_vocab, seq_len;
    bool shared_classifier;
    int group_size;     // v2 only
    size_t header_size; // 28 (v0) or 256
    size_t file_size;   // expected size of the whole file
};

// Validates the header of a checkpoint held in data[0..size) (values,
// divisibility, bounds, exact file size, overflow).
enum gq_status gq_llama2c_parse_header(const void *data, size_t size, const char *name,
                                       struct gq_llama2c_layout *out);
// Fills m's hparams and weights from the buffer: f32 weights are borrowed
// (data must be 4-byte aligned and outlive m), Q8_0 ones dequantized into
// owned buffers. Leaves the tokenizer, names and gq_model_finish to the caller.
enum gq_status gq_llama2c_build(const void *data, size_t size, const char *name, struct gq_model *m);

#endif
