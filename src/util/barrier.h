// barrier.h - a spinning barrier for the threads of one OpenMP region (the
// decode step, forward.c): about 0.15 µs per crossing for 2 threads on one
// chip, against 0.5 µs for `#pragma omp barrier` and 1.4 µs for a parallel
// region per operation (bench numbers in docs/results.md). Waiters spin with
// pause and yield the CPU after ~2^14 rounds, so more threads than cores
// only slow it down. It does not depend on OMP_WAIT_POLICY.
#ifndef GQ_BARRIER_H
#define GQ_BARRIER_H

#include <sched.h>
#include <stdatomic.h>

struct gq_barrier {
    atomic_int count, gen;
};

static inline void gq_barrier_wait(struct gq_barrier *b, int nth) {
    if (nth <= 1) return;
    const int g = atomic_load_explicit(&b->gen, memory_order_relaxed);
    if (atomic_fetch_add_explicit(&b->count, 1, memory_order_acq_rel) == nth - 1) {
        // the last to arrive resets the count before it releases the others
        atomic_store_explicit(&b->count, 0, memory_order_relaxed);
        atomic_fetch_add_explicit(&b->gen, 1, memory_order_release);
        return;
    }
    for (unsigned spins = 0; atomic_load_explicit(&b->gen, memory_order_acquire) == g; spins++) {
        if (spins < (1u << 14)) __builtin_ia32_pause();
        else sched_yield();
    }
}

#endif
