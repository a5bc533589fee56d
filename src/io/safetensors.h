// safetensors.h - reader for the Hugging Face safetensors format (mmap, no copy).
//
// Layout: u64 LE header length N, N bytes of JSON {"name": {"dtype": "F32",
// "shape": [..], "data_offsets": [begin, end]}, "__metadata__": {str: str}},
// then the data buffer. Offsets are relative to the data buffer. Like the
// reference implementation, the tensors must tile the buffer exactly (no
// overlap, no hole, nothing left over); every check happens at open.
#ifndef GQ_SAFETENSORS_H
#define GQ_SAFETENSORS_H

#include "util/common.h"

enum gq_st_dtype {
    GQ_ST_UNKNOWN = 0, // a dtype name we do not know: parses, fails on conversion
    GQ_ST_BOOL, GQ_ST_U8, GQ_ST_I8, GQ_ST_F8_E4M3, GQ_ST_F8_E5M2,
    GQ_ST_I16, GQ_ST_U16, GQ_ST_F16, GQ_ST_BF16,
    GQ_ST_I32, GQ_ST_U32, GQ_ST_F32,
    GQ_ST_I64, GQ_ST_U64, GQ_ST_F64,
};

#define GQ_ST_MAX_DIMS 8
#define GQ_ST_MAX_HEADER 100000000u // as the reference reader (safetensors MAX_HEADER_SIZE)

struct gq_st_tensor {
    char *name;          // owned, NUL-terminated
    char dtype_name[16]; // as written in the file (truncated if longer)
    enum gq_st_dtype dtype;
    int n_dims;
    int64_t shape[GQ_ST_MAX_DIMS]; // shape[0] is the slowest-varying (rows)
    int64_t numel;
    uint64_t begin, end; // byte range in the data buffer
    const void *data;    // into the mapping; alignment not guaranteed
};

struct gq_st_file {
    struct gq_mapped_file file; // file.path is used in every message
    bool owns_mapping;          // false for gq_st_open_memory
    uint64_t header_len;
    const unsigned char *data; // start of the data buffer
    size_t data_size;
    size_t n_tensors;
    struct gq_st_tensor *tensors; // in file (JSON) order
    size_t *by_name;              // indices sorted by name, for gq_st_find
    size_t n_meta;
    char **meta; // owned key, value pairs of __metadata__ (2*n_meta strings)
};

enum gq_status gq_st_open(const char *path, struct gq_st_file **out);
// Parses an in-memory buffer (fuzzer, tests); `name` is used in messages. The
// buffer must outlive the handle.
enum gq_status gq_st_open_memory(const void *data, size_t size, const char *name, struct gq_st_file **out);
void gq_st_close(struct gq_st_file *f);

const struct gq_st_tensor *gq_st_find(const struct gq_st_file *f, const char *name); // NULL if absent
const char *gq_st_meta(const struct gq_st_file *f, const char *key);                 // NULL if absent

size_t gq_st_dtype_size(enum gq_st_dtype t); // bytes per element; 0 for unknown
// Converts F32/F16/BF16/F64 tensors to a malloc'd f32 buffer (numel floats);
// other dtypes give GQ_ERR_UNSUPPORTED naming the tensor and dtype.
enum gq_status gq_st_to_f32(const struct gq_st_file *f, const struct gq_st_tensor *t, float **out);

#endif
