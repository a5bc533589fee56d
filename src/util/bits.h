// bits.h - reading little-endian bit streams: value i occupies bits
// [i·w, (i+1)·w), bit b of the stream being bit (b % 8) of byte b / 8. One
// reader for the CPU code (vqpack.h) and the CUDA kernels (backend/cu_*.cu).
#ifndef GQ_BITS_H
#define GQ_BITS_H

#include "hostdev.h"

#include <stdint.h>

static GQ_HOST_DEVICE uint32_t gq_bits_get(const uint8_t *s, int64_t i, int w) {
    uint64_t b = (uint64_t)i * (uint64_t)w, v = 0;
    const uint8_t *p = s + (b >> 3);
    int nbytes = (int)(((b & 7) + (uint64_t)w + 7) >> 3);
    for (int j = 0; j < nbytes; j++) v |= (uint64_t)p[j] << (8 * j);
    return (uint32_t)((v >> (b & 7)) & ((1ull << w) - 1));
}

#endif
