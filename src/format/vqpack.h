// vqpack.h - the packed form of a GPTVQ matrix: the bytes a packed GGUF
// stores for one quantized linear (layout: docs/format.md).
//
// A matrix is a small header (13 int32, version 1; 16, version 2: a
// rotation, vqtensor.h; kept in the GGUF metadata as
// "gptvq.vq.<tensor name>") plus up to GQ_VQP_COUNT parts, each written as
// its own GGUF tensor "<tensor name>.<suffix>" of a standard type. Every part
// holds exactly ceil(bits / 8) bytes, and the bits of all parts add up to
// gq_vq_tensor_bits(): the file stores what the reported bpv counts, no more.
// Bit streams are little-endian: value i occupies bits [i·w, (i+1)·w) of the
// stream, bit b of the stream being bit (b % 8) of byte b / 8.
#ifndef GQ_VQPACK_H
#define GQ_VQPACK_H

#include "format/vqtensor.h"

#include "util/bits.h"
#include "util/common.h"

#include <stdio.h>
#include <string.h>

#define GQ_VQPACK_VERSION 2 // the newest this build reads and writes (1: without rotation fields)

enum gq_vqp_part {
    GQ_VQP_IDX = 0, // bit stream (stages, rows, n_vec) × log2 k bits
    GQ_VQP_CB,      // codebooks (stages, groups, k, d): int8 codes / fp16 / f32 (absent with SVD)
    GQ_VQP_CBS,     // fp16 (stages, groups) int8 codebook scales
    GQ_VQP_SVDU,    // codebook SVD: U (groups, r) int8 codes / fp16 / f32
    GQ_VQP_SVDUS,   // fp16 (r) int8 scales of U's columns
    GQ_VQP_SVDV,    // fp16 (k, r) (f32 when the format is f32)
    GQ_VQP_NSINT,   // bit stream (rows, n_nblk) × 4 bits: normalisation codes
    GQ_VQP_NPAR,    // fp16 (groups, 2): normalisation step a and offset z per group
    GQ_VQP_OUTL,    // fp16 (rows, n_out) outlier columns
    GQ_VQP_PERM,    // bit stream (cols) × ceil(log2 cols) bits: position -> column (absent: identity)
    GQ_VQP_COUNT
};

// Header fields, in their stored order.
struct gq_vqpack_hdr {
    int32_t version, rows, cols, d, k, stages, n_out, n_ct, n_rt, norm_block, cb_format, svd_rank, has_perm;
    int32_t rot, rot_seed_lo, rot_seed_hi; // version 2: rotated (1), the seed's low and high 32 bits
};
#define GQ_VQPACK_HDR_N 13    // fields of a version 1 header
#define GQ_VQPACK_HDR_N_V2 16 // version 2
// Stored fields of a header (by its version); a rotated matrix is version 2, any other version 1.
static inline int gq_vqpack_hdr_n(const struct gq_vqpack_hdr *h) {
    return h->version >= 2 ? GQ_VQPACK_HDR_N_V2 : GQ_VQPACK_HDR_N;
}
// The header stored as an int32 array (kv: a GGUF "gptvq.vq.*" value's n
// elements at data) into h, unstored fields 0; GQ_ERR_FORMAT if the count
// does not fit its version.
enum gq_status gq_vqpack_hdr_read(struct gq_vqpack_hdr *h, const void *data, uint64_t n, const char *path,
                                  const char *key);

struct gq_vqpack {
    struct gq_vqpack_hdr h;
    const uint8_t *part[GQ_VQP_COUNT]; // NULL when absent
    size_t bytes[GQ_VQP_COUNT];
};

const char *gq_vqpack_suffix(int part);            // "vq_idx", ...
// Checks a header; bits[] (optional) gets the size of every part in bits
// (0: absent). what names the tensor in the error message.
enum gq_status gq_vqpack_layout(const struct gq_vqpack_hdr *h, const char *what, int64_t bits[GQ_VQP_COUNT]);
// GGUF element type (GQ_TYPE_I8 for bytes and int8 codes, F16, F32) and the
// element count of a present part.
void gq_vqpack_part_type(const struct gq_vqpack_hdr *h, int part, int64_t bits, int *type, int64_t *ne);

// Packs t; the parts point into one malloc'd buffer returned in *owned.
enum gq_status gq_vqpack_pack(const struct gq_vq_tensor *t, struct gq_vqpack *p, uint8_t **owned);
// Checks p (header, part sizes, permutation, finite values) and rebuilds the
// quantizer's form, whose gq_vq_decode is the packed matrix.
enum gq_status gq_vqpack_unpack(const struct gq_vqpack *p, const char *what, struct gq_vq_tensor *t);

// inspect: one line per packed matrix of a GGUF (shape, d, k, l, bits,
// bytes, bpv) and the totals, with the file size split into packed parts,
// other tensors and header + alignment. Nothing printed without packed
// matrices.
struct gq_gguf;
enum gq_status gq_vqpack_summary(const struct gq_gguf *g, FILE *out);
// Packed matrix `name` (rows, cols) of a GGUF: header "gptvq.vq.<name>" and
// the part tensors "<name>.<suffix>", each of exactly the type and size the
// header implies (else GQ_ERR_FORMAT naming the file and tensor); parts point
// into the mapping. *found false (GQ_OK): no packed matrix of that name.
enum gq_status gq_vqpack_from_gguf(const struct gq_gguf *g, const char *name, int64_t rows, int64_t cols,
                                   struct gq_vqpack *p, bool *found);

// Value i of a part: fp16, or coded in a codebook format f (int8 code ×
// scale, fp16, f32). Parts are byte arrays in a file mapping (no alignment).
static inline float gq_vqp_f16(const uint8_t *part, int64_t i) {
    uint16_t x;
    memcpy(&x, part + 2 * i, 2);
    return gq_f16_to_f32(x);
}
static inline float gq_vqp_coded(int f, const uint8_t *part, int64_t i, float scale) {
    if (f == GQ_CB_INT8) return (float)(int8_t)part[i] * scale;
    if (f == GQ_CB_FP16) return gq_vqp_f16(part, i);
    float x;
    memcpy(&x, part + 4 * i, 4);
    return x;
}
// Codebook of group g (= rt · n_ct + ct), stage s, as k·d floats: the first
// step of the decode rule (docs/format.md), for unpacking and the kernels.
void gq_vqpack_codebook(const struct gq_vqpack *p, int s, int64_t g, float *cb);

// Bit streams (the reader, gq_bits_get, is in util/bits.h).
static inline void gq_bits_put(uint8_t *s, int64_t i, int w, uint32_t x) {
    uint64_t b = (uint64_t)i * (uint64_t)w;
    for (int j = 0; j < w; j++, b++)
        if ((x >> j) & 1) s[b >> 3] |= (uint8_t)(1u << (b & 7));
}

#endif
