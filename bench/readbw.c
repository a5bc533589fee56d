// readbw - the machine's read bandwidth: a read-only stream (the sum of a
// buffer's bytes, as a decode step reads its weights) over a buffer much
// larger than the last-level cache, split across the threads (OpenMP
// default: what gptvq uses, gq_default_threads, unless -t), best of R
// passes. The roofline of a decode is this bandwidth / the bytes it reads
// per token.
// usage: readbw [-m MiB] [-t threads] [-r reps]      prints: readbw gbs=... mib=... threads=...
#include "gptvq.h"
#include "util/common.h"

#include <omp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(int argc, char **argv) {
    long mib = 1024, threads = 0, reps = 7;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "-m")) mib = atol(argv[i + 1]);
        else if (!strcmp(argv[i], "-t")) threads = atol(argv[i + 1]);
        else if (!strcmp(argv[i], "-r")) reps = atol(argv[i + 1]);
        else return fprintf(stderr, "usage: %s [-m MiB] [-t threads] [-r reps]\n", argv[0]), 2;
    }
    if (mib < 1 || reps < 1) return fprintf(stderr, "readbw: -m and -r must be positive\n"), 2;
    gq_set_threads((int)threads);
    const size_t n = (size_t)mib << 20, nw = n / sizeof(uint64_t);
    uint64_t *a = aligned_alloc(64, n);
    if (!a) return fprintf(stderr, "readbw: cannot allocate %ld MiB\n", mib), 1;
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < nw; i++) a[i] = i; // first touch by the thread that reads it
    double best = 0;
    uint64_t sink = 0;
    for (long r = 0; r < reps; r++) {
        const double t0 = gq_time_s();
        uint64_t s = 0;
#pragma omp parallel for schedule(static) reduction(+ : s)
        for (size_t i = 0; i < nw; i += 8) // four independent sums: the loads, not the adds, bound it
            s += (a[i] + a[i + 1]) + (a[i + 2] + a[i + 3]) + (a[i + 4] + a[i + 5]) + (a[i + 6] + a[i + 7]);
        const double g = (double)n / (gq_time_s() - t0) / 1e9;
        if (g > best) best = g;
        sink += s;
    }
    printf("readbw gbs=%.2f mib=%ld threads=%d check=%llu\n", best, mib, omp_get_max_threads(),
           (unsigned long long)(sink & 0xff));
    free(a);
    return 0;
}
