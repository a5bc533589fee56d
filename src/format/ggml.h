// ggml.h - the ggml block types as numbers: GGUF tensors (F32, F16, BF16,
// Q4_0 .. Q8_0, the K-quants) decoded to f32 (dequant.c, ggml's
// dequantize_row_* bit for bit) and f32 rows encoded to F16 / Q8_0 / Q4_0
// with llama.cpp's reference rounding (requant.c, for `gptvq export`).
#ifndef GQ_FORMAT_GGML_H
#define GQ_FORMAT_GGML_H

#include "io/gguf.h"

bool gq_ggml_type_supported(enum gq_ggml_type t); // dequantize implemented

// Dequantizes n elements (n a multiple of the block size) of type t to f32.
enum gq_status gq_dequantize(enum gq_ggml_type t, const void *src, float *dst, int64_t n);
// n f32 values to type t (F32, F16, Q8_0, Q4_0; n a multiple of 32 for the
// block types) with llama.cpp's reference rounding (requant.c).
enum gq_status gq_quantize_row_ggml(enum gq_ggml_type t, const float *x, void *dst, int64_t n);

// Dequantizes a whole tensor to a malloc'd f32 buffer. Rejects NaN/Inf
// values with a message naming the tensor.
enum gq_status gq_gguf_tensor_to_f32(const struct gq_gguf *g, const struct gq_gguf_tensor *t,
                                     float **out);

#endif
