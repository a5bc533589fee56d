// isa.c - the kernels' instruction set, chosen at run time from the CPU's
// features (qmatmul.h: gq_qmatmul_isa), and their per-thread scratch.
#include "kern/kern.h"

#include <cpuid.h>

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
        __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vnni") && __builtin_cpu_supports("avx512vbmi") &&
        __builtin_cpu_supports("gfni")) // (every CPU with VBMI has GFNI: Ice Lake on, Zen 4 on)
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
