// cuda.c - the CUDA backend's primitive table (backend.h). The kernels live in
// a plug-in, libgptvq_cuda.so (cuda_kernels.cu, built when nvcc is found), that
// is loaded on first use: the program itself links no CUDA library, starts as
// fast as before and runs everywhere; --device cuda says why when the plug-in
// or a device is missing. Calls are serialised (the quantizers call the EM
// primitives from OpenMP threads).
#include "backend.h"
#include "cuda_kernels.h"

#include "../quant/vq.h"
#include "../util/common.h"

#include <dlfcn.h>
#include <pthread.h>
#include <unistd.h>

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static char device_name[256], why_buf[4608];
static int state; // 0 untried, 1 ready, -1 failed

static struct {
    __typeof__(gqcu_init) *init;
    __typeof__(gqcu_dgemm) *dgemm;
    __typeof__(gqcu_dsymm_right) *dsymm_right;
    __typeof__(gqcu_dsyrk_acc) *dsyrk_acc;
    __typeof__(gqcu_chol_inverse_upper) *chol_inverse_upper;
    __typeof__(gqcu_vq_assign) *vq_assign;
    __typeof__(gqcu_vq_mstep) *vq_mstep;
} fn;

// Runs one plug-in call under the lock; its message becomes the error.
#define CALL(f, ...)                                                                                                   \
    do {                                                                                                               \
        char err_[512] = "";                                                                                           \
        pthread_mutex_lock(&lock);                                                                                     \
        int rc_ = fn.f(__VA_ARGS__, err_, sizeof err_);                                                                \
        pthread_mutex_unlock(&lock);                                                                                   \
        if (rc_) return gq_fail(GQ_ERR_IO, "%s", err_);                                                                \
        return GQ_OK;                                                                                                  \
    } while (0)

static enum gq_status cu_dgemm(bool ta, bool tb, int m, int n, int k, double alpha, const double *A, int lda,
                               const double *B, int ldb, double beta, double *C, int ldc) {
    CALL(dgemm, ta, tb, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc);
}
static enum gq_status cu_dsymm_right(int m, int n, const double *S, const double *A, double *C) {
    CALL(dsymm_right, m, n, S, A, C);
}
static enum gq_status cu_dsyrk_acc(int n, int k, const double *X, double *H) { CALL(dsyrk_acc, n, k, X, H); }
static enum gq_status cu_chol_inverse_upper(double *A, int n, int *info) { CALL(chol_inverse_upper, A, n, info); }
static enum gq_status cu_vq_assign(const struct gq_vq_data *D, const double *C, int k, int32_t *idx, double *dist,
                                   double *objective) {
    CALL(vq_assign, D->d, D->n_slots, D->per_slot, D->x, D->s2, D->metric, D->diag, C, k, idx, dist, objective);
}
static enum gq_status cu_vq_mstep(const struct gq_vq_data *D, const int32_t *idx, int k, double *C, int *empty) {
    CALL(vq_mstep, D->d, D->n_slots, D->per_slot, D->x, D->s2, D->metric, D->diag, idx, k, C, empty);
}

static const struct gq_backend cuda = {
    .name = "cuda",
    .dgemm = cu_dgemm,
    .dsymm_right = cu_dsymm_right,
    .dsyrk_acc = cu_dsyrk_acc,
    .chol_inverse_upper = cu_chol_inverse_upper,
    .vq_assign = cu_vq_assign,
    .vq_mstep = cu_vq_mstep,
};

// $GPTVQ_CUDA_LIB, else libgptvq_cuda.so beside the executable or one folder
// up (build/gptvq, build/tests/test_*).
static void *open_plugin(void) {
    const char *env = getenv("GPTVQ_CUDA_LIB");
    if (env && *env) {
        void *h = dlopen(env, RTLD_NOW | RTLD_LOCAL);
        if (!h) snprintf(why_buf, sizeof why_buf, "GPTVQ_CUDA_LIB=%s: %s", env, dlerror());
        return h;
    }
    char exe[4096];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 64);
    if (n <= 0) {
        snprintf(why_buf, sizeof why_buf, "cannot locate the executable to find libgptvq_cuda.so");
        return NULL;
    }
    exe[n] = 0;
    char *slash = strrchr(exe, '/');
    for (int up = 0; up < 2 && slash; up++) {
        *slash = 0;
        char path[4200];
        snprintf(path, sizeof path, "%s/libgptvq_cuda.so", exe);
        if (access(path, F_OK) == 0) {
            void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
            if (!h) snprintf(why_buf, sizeof why_buf, "%s: %s", path, dlerror());
            return h;
        }
        slash = strrchr(exe, '/');
    }
    snprintf(why_buf, sizeof why_buf,
             "libgptvq_cuda.so not found beside the executable (this build has no CUDA: nvcc was not found "
             "at build time) and GPTVQ_CUDA_LIB is not set");
    return NULL;
}

static int load(void) {
    void *h = open_plugin();
    if (!h) return -1;
#define SYM(name)                                                                                                      \
    if (!(*(void **)&fn.name = dlsym(h, "gqcu_" #name))) {                                                             \
        snprintf(why_buf, sizeof why_buf, "libgptvq_cuda.so lacks gqcu_" #name " (stale build?)");                     \
        return -1;                                                                                                     \
    }
    SYM(init) SYM(dgemm) SYM(dsymm_right) SYM(dsyrk_acc) SYM(chol_inverse_upper) SYM(vq_assign) SYM(vq_mstep)
#undef SYM
    return fn.init(why_buf, sizeof why_buf, device_name, sizeof device_name) ? -1 : 1;
}

const struct gq_backend *gq_backend_cuda(const char **why) {
    pthread_mutex_lock(&lock);
    if (!state) state = load();
    pthread_mutex_unlock(&lock);
    if (state < 0) {
        *why = why_buf;
        return NULL;
    }
    return &cuda;
}

const char *gq_cuda_device_name(void) { return state > 0 ? device_name : NULL; }
