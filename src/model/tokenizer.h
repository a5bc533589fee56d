// tokenizer.h - native tokenizers: byte-level BPE (GPT-2 style, PCRE2
// pre-tokenizer), SentencePiece-style BPE with byte fallback (Llama), and the
// llama2.c tokenizer.bin. The struct is private to tokenizer*.c.
#ifndef GQ_TOKENIZER_H
#define GQ_TOKENIZER_H

#include "io/gguf.h"

// From GGUF metadata tokenizer.ggml.* (model "gpt2" or "llama").
enum gq_status gq_tokenizer_from_gguf(const struct gq_gguf *g, struct gq_tokenizer **out);
// From a Hugging Face tokenizer.json (BPE models: byte-level or SentencePiece-style).
// config_dir may hold tokenizer_config.json (add_bos_token); may be NULL.
enum gq_status gq_tokenizer_from_json(const char *path, struct gq_tokenizer **out);
// From a llama2.c tokenizer.bin; vocab_size from the checkpoint header.
enum gq_status gq_tokenizer_from_llama2c(const char *path, int vocab_size, struct gq_tokenizer **out);
// The same from memory (`path` names the source in messages; used by the fuzzer).
enum gq_status gq_tokenizer_from_json_memory(const char *data, size_t size, const char *path,
                                             struct gq_tokenizer **out);
enum gq_status gq_tokenizer_from_llama2c_memory(const char *data, size_t size, const char *path, int vocab_size,
                                                struct gq_tokenizer **out);
void gq_tokenizer_free(struct gq_tokenizer *t);
// Writes t as GGUF tokenizer metadata (tokenizer.ggml.*: model, pre when it
// is a known one, tokens, types, scores, merges, special ids) and, when given,
// the Hugging Face tokenizer.json text whole as tokenizer.huggingface.json,
// which gq_tokenizer_from_gguf then prefers (the exact tokenizer).
struct gq_gguf_writer;
enum gq_status gq_tokenizer_write_gguf(const struct gq_tokenizer *t, struct gq_gguf_writer *w, const char *hf_json);

int32_t gq_tokenizer_bos(const struct gq_tokenizer *t); // -1 if none
int32_t gq_tokenizer_eos(const struct gq_tokenizer *t); // -1 if none
bool gq_tokenizer_add_bos(const struct gq_tokenizer *t); // model's default
// Sets the BOS/EOS/add_bos defaults (used by loaders that read them from a config).
void gq_tokenizer_set_special(struct gq_tokenizer *t, int32_t bos, int32_t eos, int add_bos);
const char *gq_tokenizer_kind(const struct gq_tokenizer *t); // "gpt2", "llama", "llama2c"
// End-of-generation tokens (eos, <|im_end|>, <|eot_id|>, ...).
bool gq_tokenizer_is_eog(const struct gq_tokenizer *t, int32_t id);

// Like gq_token_to_bytes, for streaming output: prev is the token before id
// (-1 at the start). Drops the dummy-prefix space of a SentencePiece or
// llama2.c token at the start or after BOS (run.c decode()); gpt2: as is.
size_t gq_token_to_bytes_after(const struct gq_tokenizer *t, int32_t prev, int32_t id, char *buf, size_t cap);
// Decodes a whole sequence (malloc'd, NUL-terminated; *out_len excludes the
// NUL). special: also print the text of control tokens (BOS, <|im_start|>).
// decode(encode(x)) == x for every tokenizer kind and valid UTF-8 x.
enum gq_status gq_detokenize(const struct gq_tokenizer *t, const int32_t *ids, size_t n, bool special,
                             char **out, size_t *out_len);

#endif
