// cu_nccl.cu - the ranks' collectives through NCCL (cuda_kernels.h:
// gqcu_nccl_*), for several processes with --device cuda: cuda.c hands
// util/dist.h's three calls to these once MPI has started the ranks and
// passed rank 0's NCCL id to the others. Host buffers in and out, in pieces
// through one device staging buffer on a stream of our own: the Hessians'
// exact integer limbs summed (ncclInt64, ncclSum: integers, so the order of
// the ranks does not matter, as with MPI), a broadcast, and the bytewise OR
// of the slabs' merge as ncclMax over bytes (every byte is zero on all ranks
// but at most one, where OR and max agree). Built without NCCL (no nccl.h),
// each call says so.
#include "cu_common.cuh"

#ifdef GQ_NCCL
#include <nccl.h>

static ncclComm_t g_comm;
static cudaStream_t g_stream;
static char *g_stage;
static const size_t STAGE = (size_t)64 << 20;

static inline const char *status_str(ncclResult_t e) { return ncclGetErrorString(e); }
static inline bool ok(ncclResult_t e) { return e == ncclSuccess; }

extern "C" int gqcu_nccl_id(unsigned char id[128], char *err, size_t cap) {
    int rc = 0;
    ncclUniqueId u;
    static_assert(sizeof u.internal == 128, "NCCL unique id size");
    CHECK(ncclGetUniqueId(&u));
    memcpy(id, u.internal, 128);
out:
    return rc;
}

extern "C" int gqcu_nccl_init(const unsigned char id[128], int n_ranks, int rank, char *err, size_t cap) {
    int rc = 0;
    ncclUniqueId u;
    memcpy(u.internal, id, 128);
    CHECK(cudaStreamCreateWithFlags(&g_stream, cudaStreamNonBlocking));
    CHECK(cudaMalloc((void **)&g_stage, STAGE));
    CHECK(ncclCommInitRank(&g_comm, n_ranks, u, rank));
out:
    return rc;
}

// op 0: int64 sum; 1: bytes, max (= OR here); 2: bytes, broadcast from root.
static int collective(void *host, size_t bytes, int op, int root, char *err, size_t cap) {
    int rc = 0;
    const size_t piece = op == 0 ? STAGE / 8 * 8 : STAGE;
    for (size_t i = 0; i < bytes; i += piece) {
        const size_t c = bytes - i < piece ? bytes - i : piece;
        char *h = (char *)host + i;
        CHECK(cudaMemcpyAsync(g_stage, h, c, cudaMemcpyHostToDevice, g_stream));
        if (op == 0) CHECK(ncclAllReduce(g_stage, g_stage, c / 8, ncclInt64, ncclSum, g_comm, g_stream));
        else if (op == 1) CHECK(ncclAllReduce(g_stage, g_stage, c, ncclUint8, ncclMax, g_comm, g_stream));
        else CHECK(ncclBroadcast(g_stage, g_stage, c, ncclUint8, root, g_comm, g_stream));
        CHECK(cudaMemcpyAsync(h, g_stage, c, cudaMemcpyDeviceToHost, g_stream));
        CHECK(cudaStreamSynchronize(g_stream));
    }
out:
    return rc;
}

extern "C" int gqcu_nccl_sum_i64(int64_t *x, size_t n, char *err, size_t cap) {
    return collective(x, n * sizeof *x, 0, 0, err, cap);
}
extern "C" int gqcu_nccl_or(void *buf, size_t bytes, char *err, size_t cap) { return collective(buf, bytes, 1, 0, err, cap); }
extern "C" int gqcu_nccl_bcast(void *buf, size_t bytes, int root, char *err, size_t cap) {
    return collective(buf, bytes, 2, root, err, cap);
}

extern "C" void gqcu_nccl_free(void) {
    if (g_comm) ncclCommDestroy(g_comm);
    cudaFree(g_stage);
    if (g_stream) cudaStreamDestroy(g_stream);
    g_comm = NULL, g_stage = NULL, g_stream = NULL;
}

#else

static int no_nccl(char *err, size_t cap) {
    return fail(err, cap, "NCCL", "libgptvq_cuda.so was built without NCCL (nccl.h not found): one process only");
}
extern "C" int gqcu_nccl_id(unsigned char id[128], char *err, size_t cap) { return no_nccl(err, cap); }
extern "C" int gqcu_nccl_init(const unsigned char id[128], int n_ranks, int rank, char *err, size_t cap) {
    return no_nccl(err, cap);
}
extern "C" int gqcu_nccl_sum_i64(int64_t *x, size_t n, char *err, size_t cap) { return no_nccl(err, cap); }
extern "C" int gqcu_nccl_or(void *buf, size_t bytes, char *err, size_t cap) { return no_nccl(err, cap); }
extern "C" int gqcu_nccl_bcast(void *buf, size_t bytes, int root, char *err, size_t cap) { return no_nccl(err, cap); }
extern "C" void gqcu_nccl_free(void) {}

#endif
