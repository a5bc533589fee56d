// qmatmul.c - compressed-weight matrix products (contract: qmatmul.h):
// ISA selection, per-thread scratch, repacking at load, the decode GEMV's
// split into pieces, and the prefill dispatch. The kernels themselves are in
// gemv_ggml.c, gemv_vq.c and gemm.c.
#include "kern/kern.h"

#include <cpuid.h>
#include <omp.h>
#include <sys/mman.h>
#include <unistd.h>

// ---------------------------------------------------------------------------
// ISA.

static int isa_best = -1, isa_cur = -1;

static enum gq_isa detect_isa(void) {
    __builtin_cpu_init();
    unsigned a, b, c, d; // F16C: CPUID.1:ECX bit 29 (not a feature string of every compiler's builtin)
    const bool f16c = __get_cpuid(1, &a, &b, &c, &d) && (c >> 29 & 1);
    if (!(__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && f16c)) return GQ_ISA_SCALAR;
    // (the builtins report AVX-512 only where the OS saves the zmm and mask state)
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
        __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vnni") && __builtin_cpu_supports("avx512vbmi"))
        return GQ_ISA_AVX512;
    return GQ_ISA_AVX2;
}

enum gq_isa gq_qmatmul_isa_best(void) {
    if (isa_best < 0) isa_best = detect_isa();
    return (enum gq_isa)isa_best;
}
enum gq_isa gq_qmatmul_isa(void) {
    if (isa_cur < 0) {
        // GPTVQ_ISA=scalar|avx2|avx512 caps the kernels (comparisons, debugging)
        const char *e = getenv("GPTVQ_ISA");
        enum gq_isa want = GQ_ISA_AVX512;
        if (e && !strcmp(e, "scalar")) want = GQ_ISA_SCALAR;
        else if (e && !strcmp(e, "avx2")) want = GQ_ISA_AVX2;
        gq_qmatmul_set_isa(want);
    }
    return (enum gq_isa)isa_cur;
}
enum gq_isa gq_qmatmul_set_isa(enum gq_isa isa) {
    const enum gq_isa best = gq_qmatmul_isa_best();
    isa_cur = isa > best ? best : isa < GQ_ISA_SCALAR ? GQ_ISA_SCALAR : isa;
    return (enum gq_isa)isa_cur;
}
const char *gq_cpu_kernels(void) { return gq_isa_name(gq_qmatmul_isa()); }
const char *gq_isa_name(enum gq_isa isa) {
    return isa == GQ_ISA_AVX512 ? "avx512" : isa == GQ_ISA_AVX2 ? "avx2" : "scalar";
}

// ---------------------------------------------------------------------------
// Per-thread scratch.

static _Thread_local struct {
    void *p;
    size_t n;
} scr[GQ_SCR_COUNT];

void *gq_kscratch(int slot, size_t bytes) {
    if (scr[slot].n >= bytes) return scr[slot].p;
    free(scr[slot].p);
    size_t n = (bytes + bytes / 4 + 63) / 64 * 64; // headroom: a slightly larger matrix does not regrow it
    scr[slot].p = aligned_alloc(64, n);
    scr[slot].n = scr[slot].p ? n : 0;
    return scr[slot].p;
}

// ---------------------------------------------------------------------------
// Weights.

enum gq_status gq_qweight_prepare(struct gq_qweight *w, void **owned) {
    *owned = NULL;
    if (w->kind != GQ_QW_GGML || w->rp || !gq_ggml_sb16_bytes(w->type) || w->cols % 32) return GQ_OK;
    if (gq_qmatmul_isa_best() < GQ_ISA_AVX2) return GQ_OK; // only the SIMD kernels read it
    enum gq_status st;
    uint8_t *rp = gq_ggml_repack16(w, &st);
    if (!rp) return st;
    w->rp = rp;
    *owned = rp;
    return GQ_OK;
}

void gq_qweight_release_source(const struct gq_qweight *w) {
    // the original rows of a repacked weight in a file mapping: their pages
    // leave the process (a later read, the scalar kernels' or an embedding
    // lookup's, maps them again from the file)
    if (w->kind != GQ_QW_GGML || !w->rp) return;
    const long pg = sysconf(_SC_PAGESIZE);
    uintptr_t a = ((uintptr_t)w->data + (uintptr_t)pg - 1) & ~((uintptr_t)pg - 1);
    uintptr_t e = ((uintptr_t)w->data + (size_t)w->rows * w->row_size) & ~((uintptr_t)pg - 1);
    if (e > a) madvise((void *)a, e - a, MADV_DONTNEED);
}

size_t gq_qweight_bytes(const struct gq_qweight *w) {
    if (w->kind == GQ_QW_GGML) return (size_t)w->rows * w->row_size;
    size_t b = 0;
    for (int i = 0; i < GQ_VQP_COUNT; i++) b += w->vq->p.bytes[i];
    return b;
}

void gq_qweight_decode_rows(const struct gq_qweight *w, int r0, int r1, float *out) {
    if (w->kind == GQ_QW_VQ) {
        gq_vq_decode_rows(w->vq, r0, r1, out);
        return;
    }
    for (int r = r0; r < r1; r++)
        gq_dequantize(w->type, (const uint8_t *)w->data + (size_t)r * w->row_size, out + (size_t)(r - r0) * w->cols, w->cols);
}

// ---------------------------------------------------------------------------
// Decode GEMV.

void gq_qgemv_share(const struct gq_qweight *w, int ith, int nth, int *r0, int *r1) {
    // whole 16-row groups for the repacked types, row pairs for VQ
    const int unit = w->kind == GQ_QW_GGML ? (w->rp ? 16 : 4) : 2;
    const int nu = (w->rows + unit - 1) / unit;
    const int a = (int)((int64_t)nu * ith / nth), b = (int)((int64_t)nu * (ith + 1) / nth);
    *r0 = gq_min_i(a * unit, w->rows), *r1 = gq_min_i(b * unit, w->rows);
}

enum gq_status gq_qgemv_rows(float *y, const float *x, const struct gq_qweight *w, int r0, int r1, bool accumulate) {
    if (r0 >= r1) return GQ_OK;
    return w->kind == GQ_QW_VQ ? gq_gemv_vq(y, x, w, r0, r1, accumulate) : gq_gemv_ggml(y, x, w, r0, r1, accumulate);
}

static enum gq_status gemv(float *y, const float *x, const struct gq_qweight *w) {
    enum gq_status err = GQ_OK;
    char msg[512] = "";
#pragma omp parallel
    {
        int r0, r1;
        gq_qgemv_share(w, omp_get_thread_num(), omp_get_num_threads(), &r0, &r1);
        const enum gq_status s = gq_qgemv_rows(y, x, w, r0, r1, false);
        if (s != GQ_OK)
#pragma omp critical(gq_qmatmul_err)
            if (err == GQ_OK) err = s, snprintf(msg, sizeof msg, "%s", gq_last_error());
    }
    return err == GQ_OK ? GQ_OK : gq_fail(err, "%s", msg);
}

// ---------------------------------------------------------------------------
// Prefill.

enum gq_status gq_qmatmul(float *y, const float *x, const struct gq_qweight *w, int n) {
    if (n == 1) return gemv(y, x, w);
    return gq_gemm(y, x, w, n);
}
