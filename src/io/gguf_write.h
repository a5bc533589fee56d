// gguf_write.h - GGUF v3 writer (ggml-style): collect KVs and tensors, then
// write the file in one pass.
//
// Usage:
//   struct gq_gguf_writer *w = gq_gguf_writer_new(0);          // 0: default alignment 32
//   gq_gguf_writer_copy_kvs(w, src, (const char *[]){"general.file_type", NULL});
//   gq_gguf_writer_set_u32(w, "general.file_type", 7);
//   gq_gguf_writer_add_tensor(w, "tok_embd.weight", GQ_TYPE_Q8_0, 2, ne, data, nbytes);
//   gq_gguf_writer_write(w, "out.gguf");
//   gq_gguf_writer_free(w);
//
// KVs keep the order in which their keys were first set; setting an existing
// key replaces its value in place. Tensors are written in the order added,
// each at an offset aligned to the writer's alignment.
//
// The output is written to "PATH.tmp.<pid>", fsync'ed and renamed to PATH only
// when complete; on any failure the temp file is removed and an existing PATH
// is left untouched.
#ifndef GQ_GGUF_WRITE_H
#define GQ_GGUF_WRITE_H

#include "io/gguf.h"

struct gq_gguf_writer;

// alignment: data alignment in bytes, a power of two (0: GGUF default 32).
// A non-default alignment is recorded as the uint32 KV general.alignment.
// Returns NULL when out of memory or when alignment is not a power of two.
struct gq_gguf_writer *gq_gguf_writer_new(uint32_t alignment);
void gq_gguf_writer_free(struct gq_gguf_writer *w);

// Scalar KVs. Keys must be non-empty UTF-8 without control characters.
// Setting "general.alignment" (uint32 power of two only) changes the writer's
// alignment; any other type for that key is rejected.
enum gq_status gq_gguf_writer_set_u8(struct gq_gguf_writer *w, const char *key, uint8_t v);
enum gq_status gq_gguf_writer_set_i8(struct gq_gguf_writer *w, const char *key, int8_t v);
enum gq_status gq_gguf_writer_set_u16(struct gq_gguf_writer *w, const char *key, uint16_t v);
enum gq_status gq_gguf_writer_set_i16(struct gq_gguf_writer *w, const char *key, int16_t v);
enum gq_status gq_gguf_writer_set_u32(struct gq_gguf_writer *w, const char *key, uint32_t v);
enum gq_status gq_gguf_writer_set_i32(struct gq_gguf_writer *w, const char *key, int32_t v);
enum gq_status gq_gguf_writer_set_u64(struct gq_gguf_writer *w, const char *key, uint64_t v);
enum gq_status gq_gguf_writer_set_i64(struct gq_gguf_writer *w, const char *key, int64_t v);
enum gq_status gq_gguf_writer_set_f32(struct gq_gguf_writer *w, const char *key, float v);
enum gq_status gq_gguf_writer_set_f64(struct gq_gguf_writer *w, const char *key, double v);
enum gq_status gq_gguf_writer_set_bool(struct gq_gguf_writer *w, const char *key, bool v);
enum gq_status gq_gguf_writer_set_str(struct gq_gguf_writer *w, const char *key, const char *v);
// A string value of len bytes (may hold NULs).
enum gq_status gq_gguf_writer_set_strn(struct gq_gguf_writer *w, const char *key, const char *v,
                                       size_t len);

// Array of n scalars of type vtype (not STRING/ARRAY), host-order elements of
// the vtype's natural C type (uint8_t .. double; bool as one byte 0/1).
enum gq_status gq_gguf_writer_set_arr(struct gq_gguf_writer *w, const char *key,
                                      enum gq_gguf_vtype vtype, const void *data, size_t n);
// Array of n NUL-terminated strings.
enum gq_status gq_gguf_writer_set_arr_str(struct gq_gguf_writer *w, const char *key,
                                          const char *const *strs, size_t n);

// Copies KV `key` of reader handle g (any type, arrays included). The value is
// copied: g may be closed afterwards. Missing key -> GQ_ERR_ARG.
enum gq_status gq_gguf_writer_copy_kv(struct gq_gguf_writer *w, const struct gq_gguf *g,
                                      const char *key);
// Copies every KV of g whose key starts with none of the NULL-terminated
// skip_prefixes (skip_prefixes may be NULL: copy all). general.alignment is
// never copied (the writer's alignment decides it).
enum gq_status gq_gguf_writer_copy_kvs(struct gq_gguf_writer *w, const struct gq_gguf *g,
                                       const char *const *skip_prefixes);
// Removes a KV; returns true if it was present.
bool gq_gguf_writer_remove_kv(struct gq_gguf_writer *w, const char *key);
size_t gq_gguf_writer_n_kv(const struct gq_gguf_writer *w);

// Adds a tensor of shape ne[0..n_dims-1] (ne[0] fastest, 1 <= n_dims <= 4).
// Checks: unique name (< 64 bytes, as ggml requires), known type, ne[0] a
// multiple of the type's block size, nbytes == row size x rows.
// add_tensor borrows data until gq_gguf_writer_write returns; add_tensor_copy
// copies it now.
enum gq_status gq_gguf_writer_add_tensor(struct gq_gguf_writer *w, const char *name,
                                         enum gq_ggml_type type, int n_dims, const int64_t *ne,
                                         const void *data, size_t nbytes);
enum gq_status gq_gguf_writer_add_tensor_copy(struct gq_gguf_writer *w, const char *name,
                                              enum gq_ggml_type type, int n_dims,
                                              const int64_t *ne, const void *data, size_t nbytes);
// A tensor whose data is produced at write time: fill(user, dst, nbytes) must
// write all nbytes into dst (a buffer of one tensor, reused) or fail with a
// gq_fail message. Lets a quantizer produce one tensor at a time.
typedef enum gq_status (*gq_gguf_tensor_fill)(void *user, const char *name, void *dst,
                                              size_t nbytes);
enum gq_status gq_gguf_writer_add_tensor_fill(struct gq_gguf_writer *w, const char *name,
                                              enum gq_ggml_type type, int n_dims,
                                              const int64_t *ne, size_t nbytes,
                                              gq_gguf_tensor_fill fill, void *user);
// Adds tensor t of reader handle g, borrowing its mapped data (g must stay
// open until the write). name NULL: keep t's name.
enum gq_status gq_gguf_writer_copy_tensor(struct gq_gguf_writer *w, const struct gq_gguf *g,
                                          const struct gq_gguf_tensor *t, const char *name);
size_t gq_gguf_writer_n_tensors(const struct gq_gguf_writer *w);

// Writes the GGUF v3 file atomically (see top). Errors name PATH.
enum gq_status gq_gguf_writer_write(struct gq_gguf_writer *w, const char *path);

#endif
