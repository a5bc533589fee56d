// dist.h - the processes of one run. `mpirun -np N gptvq quantize ...` makes
// N ranks (Open MPI, when the build found it: make MPI=1); otherwise there is
// one. Nothing here is a network layer of its own: every exchange is an MPI
// collective, and without MPI each call is the one-process identity.
//
// Collectives: every rank calls them, in the same order, with the same sizes.
// A rank that fails does not return to them: the CLI prints its error and
// calls gq_dist_abort, which ends every rank (MPI_Abort).
#ifndef GQ_DIST_H
#define GQ_DIST_H
#include "util/common.h"

// gq_dist_init, _finalize, _rank, _size, _abort, _bcast: gptvq.h.

// x[i] summed over the ranks, in place (integers: the sum does not depend on
// the order in which the ranks' values meet).
enum gq_status gq_dist_sum_i64(int64_t *x, size_t n);
// buf's bytes OR-ed over the ranks, in place: where every byte is zero on all
// ranks but at most one, each rank ends up with that one's bytes (parts of an
// array computed by different ranks, put together bit for bit).
enum gq_status gq_dist_or(void *buf, size_t bytes);

// This rank's number among the ranks on its machine (0 without MPI): the
// GPU it takes when several share a machine.
int gq_dist_local_rank(void);

// Who carries the collectives above. MPI starts the ranks and carries them by
// default; a backend may hand them to its own library for the rest of the
// run (the CUDA backend to NCCL: backend/cuda.c, gq_cuda_dist_start), which
// implements the same three calls with the same meaning, on host buffers.
// gq_dist_set_transport(NULL) returns them to MPI.
struct gq_dist_transport {
    const char *name;
    enum gq_status (*sum_i64)(int64_t *x, size_t n);
    enum gq_status (*or_bytes)(void *buf, size_t bytes);
    enum gq_status (*bcast)(void *buf, size_t bytes, int root);
};
void gq_dist_set_transport(const struct gq_dist_transport *t);
const char *gq_dist_transport_name(void); // "MPI", "NCCL", or "none" (one process)

// The share [*lo, *hi) of n items rank r of size gets: contiguous, in order,
// sizes differ by at most one (also the rows of GPTQ's slab r of `size`).
static inline void gq_dist_span(int64_t n, int r, int size, int64_t *lo, int64_t *hi) {
    *lo = n * r / size, *hi = n * (r + 1) / size;
}

#endif
