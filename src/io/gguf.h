// gguf.h - GGUF v2/v3 reader (mmap) and the ggml types' sizes (decoding the
// block types is format/ggml.h's).
//
// Every count, offset and size in the file is validated before it is used;
// a bad file yields GQ_ERR_FORMAT with "PATH: what (offset N)".
#ifndef GQ_GGUF_H
#define GQ_GGUF_H

#include "util/common.h"

enum gq_gguf_vtype {
    GQ_GGUF_UINT8 = 0, GQ_GGUF_INT8 = 1, GQ_GGUF_UINT16 = 2, GQ_GGUF_INT16 = 3,
    GQ_GGUF_UINT32 = 4, GQ_GGUF_INT32 = 5, GQ_GGUF_FLOAT32 = 6, GQ_GGUF_BOOL = 7,
    GQ_GGUF_STRING = 8, GQ_GGUF_ARRAY = 9, GQ_GGUF_UINT64 = 10, GQ_GGUF_INT64 = 11,
    GQ_GGUF_FLOAT64 = 12,
};

// ggml tensor types (numbering as in ggml.h).
enum gq_ggml_type {
    GQ_TYPE_F32 = 0, GQ_TYPE_F16 = 1, GQ_TYPE_Q4_0 = 2, GQ_TYPE_Q4_1 = 3,
    GQ_TYPE_Q5_0 = 6, GQ_TYPE_Q5_1 = 7, GQ_TYPE_Q8_0 = 8, GQ_TYPE_Q8_1 = 9,
    GQ_TYPE_Q2_K = 10, GQ_TYPE_Q3_K = 11, GQ_TYPE_Q4_K = 12, GQ_TYPE_Q5_K = 13,
    GQ_TYPE_Q6_K = 14, GQ_TYPE_Q8_K = 15, GQ_TYPE_I8 = 24, GQ_TYPE_I16 = 25,
    GQ_TYPE_I32 = 26, GQ_TYPE_I64 = 27, GQ_TYPE_F64 = 28, GQ_TYPE_BF16 = 30,
    GQ_TYPE_COUNT_ = 42, // one past the largest type number we know (Q1_0 = 41)
};

struct gq_gguf_str {
    uint64_t len;
    const char *data; // points into the mapping; NOT NUL-terminated
};

struct gq_gguf_kv {
    char *key; // owned, NUL-terminated, valid UTF-8
    enum gq_gguf_vtype type;
    union {
        uint64_t u64; // all unsigned ints and bool
        int64_t i64;  // all signed ints
        double f64;   // float32/float64
        struct gq_gguf_str str;
    } v;
    // arrays (type == GQ_GGUF_ARRAY)
    enum gq_gguf_vtype arr_type;
    uint64_t arr_n;
    const unsigned char *arr_data; // raw element bytes in the mapping (non-string arrays)
    struct gq_gguf_str *arr_str;   // owned, for string arrays (arr_n entries)
};

struct gq_gguf_tensor {
    char *name; // owned, NUL-terminated
    int n_dims;
    int64_t ne[4];  // ne[0] is the fastest-varying (row length)
    enum gq_ggml_type type;
    uint64_t offset; // relative to data section
    size_t nbytes;
    const void *data; // into the mapping
};

struct gq_gguf {
    struct gq_mapped_file file;
    uint32_t version;
    uint64_t n_kv, n_tensors;
    struct gq_gguf_kv *kv;
    struct gq_gguf_tensor *tensors;
    uint32_t alignment;
    uint64_t data_offset;
    bool owns_mapping; // false for gq_gguf_open_memory (the caller owns the buffer)
};

enum gq_status gq_gguf_open(const char *path, struct gq_gguf **out);
// Parses an in-memory buffer (used by the fuzzer); `name` is used in messages.
// The buffer must outlive the handle.
enum gq_status gq_gguf_open_memory(const void *data, size_t size, const char *name,
                                   struct gq_gguf **out);
void gq_gguf_close(struct gq_gguf *g);

const struct gq_gguf_kv *gq_gguf_find_kv(const struct gq_gguf *g, const char *key);
const struct gq_gguf_tensor *gq_gguf_find_tensor(const struct gq_gguf *g, const char *name);

// Typed getters. Integers convert between widths when the value fits;
// a missing key gives GQ_ERR_FORMAT "missing key"; a wrong type gives a
// GQ_ERR_FORMAT message naming the expected and found types.
enum gq_status gq_gguf_get_i64(const struct gq_gguf *g, const char *key, int64_t *out);
enum gq_status gq_gguf_get_f64(const struct gq_gguf *g, const char *key, double *out); // ints accepted
enum gq_status gq_gguf_get_bool(const struct gq_gguf *g, const char *key, bool *out);
// Returns a malloc'd NUL-terminated copy.
enum gq_status gq_gguf_get_str(const struct gq_gguf *g, const char *key, char **out);
const char *gq_gguf_vtype_name(enum gq_gguf_vtype t);
// Bytes of a fixed-size value type; 0 for string/array/unknown.
size_t gq_gguf_vtype_size(uint32_t t);
// Keys and tensor names: strict UTF-8 (no overlongs, no surrogates, <= U+10FFFF)
// and no control characters (they end up in one-line error messages).
bool gq_gguf_valid_name(const char *s, size_t n);
// An array KV whose elements have type elem_type (GQ_GGUF_ARRAY + elem_type);
// missing key or other type -> GQ_ERR_FORMAT naming expected and found types.
enum gq_status gq_gguf_get_array(const struct gq_gguf *g, const char *key,
                                 enum gq_gguf_vtype elem_type, const struct gq_gguf_kv **out);
// Element i (< arr_n) of a non-string array, widened (arr_data is unaligned).
// Integers/bool for _i64 (uint64 values above INT64_MAX wrap), any number for _f64.
int64_t gq_gguf_arr_i64(const struct gq_gguf_kv *kv, uint64_t i);
double gq_gguf_arr_f64(const struct gq_gguf_kv *kv, uint64_t i);
// Element count of a tensor (validated not to overflow at open).
int64_t gq_gguf_tensor_nelements(const struct gq_gguf_tensor *t);

// Human-readable listing (gptvq inspect): header, every KV (long strings and
// arrays abbreviated unless full), tensor table, per-type totals.
void gq_gguf_dump(const struct gq_gguf *g, FILE *fp, bool full);

// ggml type info.
const char *gq_ggml_type_name(enum gq_ggml_type t); // "?" if unknown
int gq_ggml_block_size(enum gq_ggml_type t);         // elements per block; 0 if unknown
size_t gq_ggml_type_size(enum gq_ggml_type t);       // bytes per block; 0 if unknown
// Bytes of a row of n elements (n must be a multiple of the block size; 0 otherwise).
size_t gq_ggml_row_size(enum gq_ggml_type t, int64_t n);
// llama.cpp's general.file_type (LLAMA_FTYPE_MOSTLY_*) of a model whose
// matrices are of type t: F16 1, Q4_0 2, Q4_1 3, Q8_0 7, Q5_0 8, Q5_1 9; 0 otherwise.
uint32_t gq_ggml_llama_ftype(enum gq_ggml_type t);

#endif
