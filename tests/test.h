// test.h - a tiny test harness: CHECK macros, max-diff helper, skip.
// A test binary exits 0 (pass), 1 (fail) or 77 (skipped, with a reason).
#ifndef GQ_TEST_H
#define GQ_TEST_H
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int gqt_failures = 0, gqt_checks = 0;

#define CHECK(cond)                                                                \
    do {                                                                           \
        gqt_checks++;                                                              \
        if (!(cond)) {                                                             \
            gqt_failures++;                                                        \
            fprintf(stderr, "FAIL %s:%d: %s\n", __FILE__, __LINE__, #cond);        \
        }                                                                          \
    } while (0)

#define CHECKF(cond, ...)                                                          \
    do {                                                                           \
        gqt_checks++;                                                              \
        if (!(cond)) {                                                             \
            gqt_failures++;                                                        \
            fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond);        \
            fprintf(stderr, __VA_ARGS__);                                          \
            fputc('\n', stderr);                                                   \
        }                                                                          \
    } while (0)

#define CHECK_OK(expr)                                                             \
    do {                                                                           \
        enum gq_status gqt_s = (expr);                                             \
        gqt_checks++;                                                              \
        if (gqt_s != GQ_OK) {                                                      \
            gqt_failures++;                                                        \
            fprintf(stderr, "FAIL %s:%d: %s -> %s: %s\n", __FILE__, __LINE__, #expr, \
                    gq_status_str(gqt_s), gq_last_error());                        \
        }                                                                          \
    } while (0)

// Skips the whole test binary (exit 77) with a reason.
#define SKIP(...)                                                                  \
    do {                                                                           \
        fprintf(stderr, "SKIP: ");                                                 \
        fprintf(stderr, __VA_ARGS__);                                              \
        fputc('\n', stderr);                                                       \
        exit(77);                                                                  \
    } while (0)

static inline int test_done(const char *name) {
    fprintf(stderr, "%s: %d checks, %d failed\n", name, gqt_checks, gqt_failures);
    return gqt_failures ? 1 : 0;
}

// Max |a-b| over n; prints like llm.c's check_tensor.
static inline double max_abs_diff(const float *a, const float *b, size_t n) {
    double m = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - (double)b[i]);
        if (d > m || isnan(d)) m = isnan(d) ? INFINITY : d;
    }
    return m;
}

// ../shared/data relative to the repo root (tests run from the repo root);
// GQ_DATA overrides.
static inline const char *data_dir(void) {
    const char *d = getenv("GQ_DATA");
    return d ? d : "../shared/data";
}
static inline int file_exists(const char *p) { return access(p, R_OK) == 0; }

// The whole file, NUL-terminated (malloc'd); *n its size. NULL if unreadable.
static inline void *test_read_file(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long sz = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = sz >= 0 ? malloc((size_t)sz + 1) : NULL;
    if (b && fread(b, 1, (size_t)sz, f) != (size_t)sz) free(b), b = NULL;
    fclose(f);
    if (b) b[sz] = 0, *n = (size_t)sz;
    return b;
}
#endif
