// common.h - internal helpers shared by every module (not public API).
#ifndef GQ_COMMON_H
#define GQ_COMMON_H

#include "gptvq.h"
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

// Sets the thread's error message (printf-style) and returns `s`, so that
// `return gq_fail(GQ_ERR_FORMAT, "%s: bad magic", path);` reads naturally.
enum gq_status gq_fail(enum gq_status s, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
// Prefixes the current error message with "prefix: ".
void gq_error_prefix(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

// Broken invariants only (never for bad input).
#define GQ_ASSERT(x)                                                              \
    do {                                                                          \
        if (!(x)) {                                                               \
            fprintf(stderr, "gptvq: internal error %s:%d: %s\n", __FILE__, __LINE__, #x); \
            abort();                                                              \
        }                                                                         \
    } while (0)

#define GQ_TRY(expr)                                 \
    do {                                             \
        enum gq_status gq__s = (expr);               \
        if (gq__s != GQ_OK) return gq__s;            \
    } while (0)

// splitmix64: the seeded generator behind every --seed (sampling, calibration
// windows); gq_rng_uniform: a double in [0, 1) from its top 53 bits.
static inline uint64_t gq_splitmix64(uint64_t *s) {
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}
static inline double gq_rng_uniform(uint64_t *s) { return (double)(gq_splitmix64(s) >> 11) * 0x1.0p-53; }

// Processes on this machine that share its cores (util/dist.c sets it under
// mpirun): gq_default_threads gives each its share when they may all run
// everywhere.
void gq_threads_share(int n);

// Overflow-checked size arithmetic: return false on overflow.
static inline bool gq_mul_ok(size_t a, size_t b, size_t *out) {
    return !__builtin_mul_overflow(a, b, out);
}
static inline bool gq_add_ok(size_t a, size_t b, size_t *out) {
    return !__builtin_add_overflow(a, b, out);
}

// A read-only mapping of a whole file.
struct gq_mapped_file {
    const unsigned char *data;
    size_t size;
    char *path; // owned copy
};
enum gq_status gq_map_file(const char *path, struct gq_mapped_file *f);
void gq_unmap_file(struct gq_mapped_file *f);
// Reads a whole file into malloc'd memory (NUL-terminated for convenience).
enum gq_status gq_read_file(const char *path, char **data, size_t *size);
// Writes len bytes to path through "path.tmp" and a rename, so that no
// partial file is ever left under the name (the temporary goes on failure).
enum gq_status gq_write_file_atomic(const char *path, const void *data, size_t len);
// mkdir -p: path and its missing parents (0755); GQ_ERR_IO naming it otherwise.
enum gq_status gq_mkdir_p(const char *path);

double gq_time_s(void); // monotonic seconds

// Progress line on stderr: "label  [####....] 42/100  12.3s  ETA 17.0s".
struct gq_progress {
    const char *label;
    int64_t total, done;
    double t0, last_print;
    bool enabled;
};
void gq_progress_start(struct gq_progress *p, const char *label, int64_t total, bool enabled);
void gq_progress_update(struct gq_progress *p, int64_t done, const char *extra);
void gq_progress_end(struct gq_progress *p);

// IEEE half / bfloat16 -> f32.
// Bit manipulation rather than _Float16, which clang < 15 lacks on x86-64 (the
// fuzz build): em << 13 puts exponent and mantissa in float position, and the
// 2^(127-15) rebias is exact for normals and subnormals; Inf/NaN keep an
// all-ones exponent.
static inline float gq_f16_to_f32(uint16_t h) {
    uint32_t em = h & 0x7fffu, bits = em << 13, u;
    float f;
    memcpy(&f, &bits, 4);
    f *= 0x1p112f;
    memcpy(&u, &f, 4);
    u = (em >= 0x7c00u ? (0x7f800000u | bits) : u) | (uint32_t)(h & 0x8000u) << 16;
    memcpy(&f, &u, 4);
    return f;
}
// f32 -> fp16 bits, round to nearest even, overflow to ±inf, NaN kept.
uint16_t gq_f32_to_f16(float f);
static inline float gq_bf16_to_f32(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

// "512 B", "12.3 MiB", "4.56 GiB" into buf (at least 32 bytes); returns buf.
char *gq_fmt_bytes(char *buf, double bytes);

#endif
