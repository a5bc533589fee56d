// dist.c - ranks of one run through MPI (GQ_MPI builds), or one process.
#include "util/dist.h"
#ifdef GQ_MPI
#include <mpi.h>
#endif

static int g_rank = 0, g_size = 1, g_local = 0;
// The collectives' carrier other than MPI (NULL: MPI itself): see dist.h.
static const struct gq_dist_transport *g_tr;
#ifdef GQ_MPI
static bool g_mpi; // MPI_Init done by us
#endif

static int env_int(const char *name) {
    const char *v = getenv(name);
    return v && *v ? atoi(v) : 0;
}

// The world size the launcher announced (0: not launched by one).
static int launched_size(void) {
    int n = env_int("OMPI_COMM_WORLD_SIZE");
    if (!n) n = env_int("PMI_SIZE");
    if (!n) n = env_int("PMIX_SIZE");
    if (!n && getenv("PMIX_RANK")) n = 1;
    return n;
}

enum gq_status gq_dist_init(void) {
    int n = launched_size();
    if (n <= 0) return GQ_OK;
#ifdef GQ_MPI
    if (g_mpi) return GQ_OK;
    int provided = 0;
    // OpenMP threads compute; only the main thread calls MPI.
    if (MPI_Init_thread(NULL, NULL, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS)
        return gq_fail(GQ_ERR_IO, "MPI_Init failed");
    g_mpi = true;
    MPI_Comm_rank(MPI_COMM_WORLD, &g_rank);
    MPI_Comm_size(MPI_COMM_WORLD, &g_size);
    MPI_Comm local; // the ranks on this machine share its cores
    int n_local = 1;
    MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, g_rank, MPI_INFO_NULL, &local);
    MPI_Comm_size(local, &n_local);
    MPI_Comm_rank(local, &g_local);
    MPI_Comm_free(&local);
    gq_threads_share(n_local);
    return GQ_OK;
#else
    if (n > 1) { // the launcher's numbering, for the error line (gptvq.h)
        g_rank = env_int("OMPI_COMM_WORLD_RANK"), g_size = n;
        return gq_fail(GQ_ERR_UNSUPPORTED, "started by an MPI launcher with %d processes, but this gptvq was built "
                       "without MPI (install Open MPI: bash scripts/setup.sh, then make)", n);
    }
    return GQ_OK;
#endif
}

void gq_dist_finalize(void) {
#ifdef GQ_MPI
    if (g_mpi) MPI_Finalize();
    g_mpi = false;
#endif
    g_rank = 0, g_size = 1, g_local = 0, g_tr = NULL;
    gq_threads_share(1);
}

const char *gq_dist_library(void) {
#ifdef GQ_MPI
    static char v[MPI_MAX_LIBRARY_VERSION_STRING];
    int len = 0;
    if (!v[0] && MPI_Get_library_version(v, &len) == MPI_SUCCESS) v[strcspn(v, "\n")] = 0;
    return v;
#else
    return NULL;
#endif
}

int gq_dist_rank(void) { return g_rank; }
int gq_dist_size(void) { return g_size; }
int gq_dist_local_rank(void) { return g_local; }

void gq_dist_set_transport(const struct gq_dist_transport *t) { g_tr = t; }
const char *gq_dist_transport_name(void) { return g_tr ? g_tr->name : g_size > 1 ? "MPI" : "none"; }

void gq_dist_abort(int code) {
#ifdef GQ_MPI
    if (g_mpi && g_size > 1) {
        fflush(stdout), fflush(stderr);
        MPI_Abort(MPI_COMM_WORLD, code);
    }
#endif
    (void)code;
}

// MPI counts are int: large buffers go in pieces of at most 2^30 elements.
#define PIECE ((size_t)1 << 30)

#ifdef GQ_MPI
// n elements of `size` bytes at buf reduced in place over the ranks, in pieces.
static enum gq_status allreduce(void *buf, size_t n, size_t size, MPI_Datatype type, MPI_Op op) {
    for (size_t i = 0; i < n && g_size > 1; i += PIECE) {
        int c = (int)(n - i < PIECE ? n - i : PIECE);
        if (MPI_Allreduce(MPI_IN_PLACE, (char *)buf + i * size, c, type, op, MPI_COMM_WORLD) != MPI_SUCCESS)
            return gq_fail(GQ_ERR_IO, "MPI_Allreduce (%s) of %d elements failed", op == MPI_SUM ? "sum" : "bitwise or", c);
    }
    return GQ_OK;
}
#endif

enum gq_status gq_dist_sum_i64(int64_t *x, size_t n) {
    if (g_tr && g_size > 1) return g_tr->sum_i64(x, n);
#ifdef GQ_MPI
    return allreduce(x, n, sizeof *x, MPI_INT64_T, MPI_SUM);
#else
    (void)x, (void)n;
    return GQ_OK;
#endif
}

enum gq_status gq_dist_or(void *buf, size_t bytes) {
    if (g_tr && g_size > 1) return g_tr->or_bytes(buf, bytes);
#ifdef GQ_MPI
    return allreduce(buf, bytes, 1, MPI_BYTE, MPI_BOR);
#else
    (void)buf, (void)bytes;
    return GQ_OK;
#endif
}

enum gq_status gq_dist_bcast(void *buf, size_t bytes, int root) {
    if (g_tr && g_size > 1) return g_tr->bcast(buf, bytes, root);
#ifdef GQ_MPI
    if (g_size > 1)
        for (size_t i = 0; i < bytes; i += PIECE) {
            int c = (int)(bytes - i < PIECE ? bytes - i : PIECE);
            if (MPI_Bcast((char *)buf + i, c, MPI_BYTE, root, MPI_COMM_WORLD) != MPI_SUCCESS)
                return gq_fail(GQ_ERR_IO, "MPI_Bcast of %d bytes from rank %d failed", c, root);
        }
#endif
    (void)buf, (void)bytes, (void)root;
    return GQ_OK;
}
