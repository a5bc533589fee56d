// tok_internal.h - the tokenizer struct and helpers shared by tokenizer.c
// (encoding/decoding) and tok_load.c (GGUF, tokenizer.json, tokenizer.bin).
#ifndef GQ_TOK_INTERNAL_H
#define GQ_TOK_INTERNAL_H

#include "model/tokenizer.h"

// Token types, numbered as GGUF / llama.cpp / SentencePiece do.
enum { TT_UNDEFINED = 0, TT_NORMAL = 1, TT_UNKNOWN = 2, TT_CONTROL = 3, TT_USER_DEFINED = 4,
       TT_UNUSED = 5, TT_BYTE = 6 };

enum gq_tok_kind {
    GQ_TOK_GPT2,    // byte-level BPE, merges by rank, regex pre-tokenizer
    GQ_TOK_SPM,     // SentencePiece-style: ▁ for spaces, byte fallback
    GQ_TOK_LLAMA2C, // llama2.c tokenizer.bin (run.c encode/decode)
};

// string -> token id, open addressing; strings live in the tokenizer.
struct tok_strmap {
    int32_t *slot; // token id, -1 empty
    uint32_t *hash;
    size_t cap;    // power of two
};

// (left id, right id) -> merge rank and merged id.
struct tok_pairmap {
    uint64_t *key; // (l << 32 | r) + 1; 0 empty
    int32_t *rank, *merged;
    size_t cap, n;
};

#define TOK_MAX_REGEX 8

struct gq_tokenizer {
    enum gq_tok_kind kind;
    int n_vocab;
    char **text;       // token text as stored, NUL-terminated (tokens holding NUL are rejected)
    uint32_t *len;
    float *score;      // NULL unless scores were given
    uint8_t *type;     // TT_*
    struct tok_strmap map;

    // Rank-based BPE (gpt2 and tokenizer.json): pair -> rank.
    struct tok_pairmap merges;
    bool has_merges;

    // Pre-tokenizer: each regex splits the pieces of the previous one,
    // unmatched text kept as pieces (llama.cpp unicode_regex_split).
    void *re[TOK_MAX_REGEX]; // pcre2_code_8 *
    char *re_src[TOK_MAX_REGEX]; // their patterns (owned)
    int n_re;
    bool jit;
    bool byte_level;        // GPT-2 bytes_to_unicode on the pieces
    bool bl_prefix_space;   // ByteLevel(add_prefix_space) from tokenizer.json
    bool metaspace_split;   // tokenizer.json Metaspace(split=true)

    // SPM options
    bool add_space_prefix;
    bool byte_fallback;

    int32_t bos, eos, unk;
    bool add_bos;
    int32_t byte_tok[256];  // token for a raw byte: byte-level char (gpt2) or <0xNN> (spm); -1 none

    // Special tokens matched with parse_special, longest first.
    int32_t *special;
    int n_special;
    uint8_t special_first[256]; // first bytes of the special tokens
    uint32_t max_len;           // longest token text
    int32_t *eog; // end-of-generation tokens besides eos
    int n_eog;
};

// Allocates a tokenizer for n tokens (arrays zeroed, ids -1).
enum gq_status tok_alloc(int n, enum gq_tok_kind kind, struct gq_tokenizer **out);
// Sets token i's text (copied). Fails on allocation failure only.
enum gq_status tok_set_text(struct gq_tokenizer *t, int i, const char *s, size_t n);
// Builds the vocab map, byte tables, special and EOG lists once all texts,
// types and options are set. `src` names the file in messages.
enum gq_status tok_finish(struct gq_tokenizer *t, const char *src);
// Adds a merge (by ids) with the next rank; duplicates keep the first rank.
enum gq_status tok_add_merge(struct gq_tokenizer *t, int32_t l, int32_t r, int32_t merged);
// Compiles a pre-tokenizer regex (PCRE2, UTF + UCP).
enum gq_status tok_add_regex(struct gq_tokenizer *t, const char *pattern, const char *src);
// Regex list for a llama.cpp tokenizer.ggml.pre name; GQ_ERR_UNSUPPORTED if unknown.
enum gq_status tok_set_pre(struct gq_tokenizer *t, const char *pre, const char *src);

// The pre-tokenizer pieces of s (end offsets, malloc'd) - for tests.
enum gq_status tok_pre_split(const struct gq_tokenizer *t, const char *s, size_t n, size_t **ends, size_t *n_pieces);
int32_t tok_lookup(const struct gq_tokenizer *t, const char *s, size_t n);
bool tok_utf8_valid(const char *s, size_t n);
// Offset of the first invalid UTF-8 byte, n if valid.
size_t tok_utf8_check(const char *s, size_t n);
// Length of the UTF-8 sequence starting with byte c (1 for invalid lead bytes).
static inline size_t tok_utf8_len(unsigned char c) {
    return c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 1;
}

// The regexes llama.cpp uses (llama-vocab.cpp, llm_tokenizer_bpe).
#define TOK_RE_GPT2 "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+"
#define TOK_RE_LLAMA3                                                                    \
    "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|" \
    "\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"
#define TOK_RE_QWEN2                                                                     \
    "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|" \
    "\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"

#endif
