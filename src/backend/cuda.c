// cuda.c - the CUDA backend's primitive table (backend.h). The kernels live in
// a plug-in, libgptvq_cuda.so (cuda_kernels.cu, built when nvcc is found), that
// is loaded on first use: the program itself links no CUDA library, starts as
// fast as before and runs everywhere; --device cuda says why when the plug-in
// or a device is missing. Calls are serialised (the quantizers call the EM
// primitives from OpenMP threads).
#include "backend.h"
#include "cuda_kernels.h"

#include "../io/gguf.h"
#include "../kern/qmatmul.h"
#include "../quant/vq.h"
#include "../quant/vqpack.h"
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
    __typeof__(gqcu_mat_vq) *mat_vq;
    __typeof__(gqcu_mat_ggml) *mat_ggml;
    __typeof__(gqcu_mat_free) *mat_free;
    __typeof__(gqcu_mat_gemv) *mat_gemv;
    __typeof__(gqcu_mat_bench) *mat_bench;
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
    SYM(mat_vq) SYM(mat_ggml) SYM(mat_free) SYM(mat_gemv) SYM(mat_bench)
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

// ---------------------------------------------------------------------------
// Inference matrices.

static enum gq_status need_device(void) {
    const char *why = NULL;
    return gq_backend_cuda(&why) ? GQ_OK : gq_fail(GQ_ERR_UNSUPPORTED, "cuda: %s", why);
}

enum gq_status gq_cuda_mat_new(const struct gq_qweight *q, struct gqcu_mat **out) {
    *out = NULL;
    GQ_TRY(need_device());
    char err[512] = "";
    int rc;
    if (q->kind == GQ_QW_GGML) {
        if (q->type != GQ_TYPE_Q4_0 && q->type != GQ_TYPE_F16)
            return gq_fail(GQ_ERR_UNSUPPORTED, "cuda: GEMV of GGML type %d", (int)q->type);
        pthread_mutex_lock(&lock);
        rc = fn.mat_ggml(q->type == GQ_TYPE_Q4_0 ? GQCU_Q4_0 : GQCU_F16, q->rows, q->cols, q->data, out, err, sizeof err);
        pthread_mutex_unlock(&lock);
        return rc ? gq_fail(GQ_ERR_IO, "%s", err) : GQ_OK;
    }
    const struct gq_vqrt *v = q->vq;
    const struct gq_vqpack_hdr *h = &v->p.h;
    if (h->norm_block) return gq_fail(GQ_ERR_UNSUPPORTED, "cuda: GEMV of a VQ matrix with normalisation");
    const int n_g = h->n_rt * h->n_ct, kd = h->k * h->d;
    float *cb = malloc(sizeof(float) * (size_t)h->stages * n_g * kd);
    float *outl = h->n_out ? malloc(sizeof(float) * (size_t)h->rows * h->n_out) : NULL;
    int32_t *vec_ct = malloc(sizeof(int32_t) * (size_t)v->nv), *row_rt = malloc(sizeof(int32_t) * (size_t)h->rows);
    enum gq_status s = GQ_OK;
    if (!cb || !vec_ct || !row_rt || (h->n_out && !outl)) s = gq_fail(GQ_ERR_NOMEM, "out of memory");
    for (int st = 0; s == GQ_OK && st < h->stages; st++)
        for (int g = 0; g < n_g; g++) gq_vqpack_codebook(&v->p, st, g, cb + ((size_t)st * n_g + g) * kd);
    for (int ct = 0; s == GQ_OK && ct < h->n_ct; ct++)
        for (int i = v->vt_start[ct]; i < v->vt_start[ct + 1]; i++) vec_ct[i] = ct;
    for (int rt = 0; s == GQ_OK && rt < h->n_rt; rt++)
        for (int r = v->rt_start[rt]; r < v->rt_start[rt + 1]; r++) row_rt[r] = rt;
    for (int64_t i = 0; s == GQ_OK && outl && i < (int64_t)h->rows * h->n_out; i++)
        outl[i] = gq_vqp_f16(v->p.part[GQ_VQP_OUTL], i);
    if (s == GQ_OK) {
        struct gqcu_vq_desc D = {.rows = h->rows, .cols = h->cols, .d = h->d, .k = h->k, .lk = v->lk,
                                 .stages = h->stages, .n_out = h->n_out, .nv = v->nv, .n_ct = h->n_ct, .n_rt = h->n_rt,
                                 .idx = v->p.part[GQ_VQP_IDX], .idx_bytes = v->p.bytes[GQ_VQP_IDX],
                                 .bytes = gq_qweight_bytes(q), .cb = cb, .outl = outl, .vec_ct = vec_ct,
                                 .row_rt = row_rt, .perm = v->perm};
        pthread_mutex_lock(&lock);
        rc = fn.mat_vq(&D, out, err, sizeof err);
        pthread_mutex_unlock(&lock);
        if (rc) s = gq_fail(GQ_ERR_IO, "%s", err);
    }
    free(cb), free(outl), free(vec_ct), free(row_rt);
    return s;
}

enum gq_status gq_cuda_mat_gemv(struct gqcu_mat *m, const float *x, float *y) { CALL(mat_gemv, m, x, y); }

enum gq_status gq_cuda_mat_bench(struct gqcu_mat *m, int iters, double *seconds, size_t *bytes, double *peak_gbs) {
    CALL(mat_bench, m, iters, seconds, bytes, peak_gbs);
}

void gq_cuda_mat_free(struct gqcu_mat *m) {
    if (!m || state <= 0) return;
    pthread_mutex_lock(&lock);
    fn.mat_free(m);
    pthread_mutex_unlock(&lock);
}
