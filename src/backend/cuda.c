// cuda.c - the CUDA backend's primitive table (backend.h). The kernels live in
// a plug-in, libgptvq_cuda.so (cu_*.cu, built when nvcc is found), that
// is loaded on first use: the program itself links no CUDA library, starts as
// fast as before and runs everywhere; --device cuda says why when the plug-in
// or a device is missing. Calls are serialised (the quantizers call the EM
// primitives from OpenMP threads).
#include "backend/backend.h"
#include "backend/cuda_kernels.h"
#include "backend/vqprim.h"
#include "format/vqpack.h"
#include "io/gguf.h"
#include "kern/qmatmul.h"
#include "util/common.h"
#include "util/dist.h"

#include <dlfcn.h>
#include <pthread.h>
#include <unistd.h>

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static const struct gq_backend cuda;
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
    __typeof__(gqcu_vq_em) *vq_em;
    __typeof__(gqcu_dposv) *dposv;
    __typeof__(gqcu_vq_gram) *vq_gram;
    __typeof__(gqcu_hold) *hold;
    __typeof__(gqcu_release) *release;
    __typeof__(gqcu_mat_vq) *mat_vq;
    __typeof__(gqcu_mat_ggml) *mat_ggml;
    __typeof__(gqcu_mat_free) *mat_free;
    __typeof__(gqcu_mat_gemv) *mat_gemv;
    __typeof__(gqcu_mat_gemm) *mat_gemm;
    __typeof__(gqcu_mat_bench) *mat_bench;
    __typeof__(gqcu_mat_set_variant) *mat_set_variant;
    __typeof__(gqcu_lm_new) *lm_new;
    __typeof__(gqcu_lm_forward) *lm_forward;
    __typeof__(gqcu_lm_free) *lm_free;
    __typeof__(gqcu_calib_new) *calib_new;
    __typeof__(gqcu_calib_block) *calib_block;
    __typeof__(gqcu_calib_pass) *calib_pass;
    __typeof__(gqcu_calib_free) *calib_free;
    __typeof__(gqcu_nccl_id) *nccl_id;
    __typeof__(gqcu_nccl_init) *nccl_init;
    __typeof__(gqcu_nccl_sum_i64) *nccl_sum_i64;
    __typeof__(gqcu_nccl_or) *nccl_or;
    __typeof__(gqcu_nccl_bcast) *nccl_bcast;
    __typeof__(gqcu_nccl_free) *nccl_free;
} fn;

// Runs one plug-in call under the lock; a failure sets s to an error with
// the plug-in's message.
#define CALL_TO(s, f, ...)                                                                                             \
    do {                                                                                                               \
        char err_[512] = "";                                                                                           \
        pthread_mutex_lock(&lock);                                                                                     \
        int rc_ = fn.f(__VA_ARGS__, err_, sizeof err_);                                                                \
        pthread_mutex_unlock(&lock);                                                                                   \
        if (rc_) (s) = gq_fail(GQ_ERR_IO, "%s", err_);                                                                 \
    } while (0)
// ... and returns its status.
#define CALL(f, ...)                                                                                                   \
    do {                                                                                                               \
        enum gq_status s_ = GQ_OK;                                                                                     \
        CALL_TO(s_, f, __VA_ARGS__);                                                                                   \
        return s_;                                                                                                     \
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

// Groups of at least GQ_VQ_EM_DEVICE_MIN point-centroid coordinates run
// gq_vq_em_rounds with this backend (device assignments and M-steps); the rest
// (2D 2.125: 2^15 each, a column tile of a 7B layer holds ~128) go to one
// batched kernel launch, their points, metrics (shared by a column tile's
// groups) and seeds packed together. Shapes the kernel does not take (k >
// 256, mixed metric kinds) stay on the CPU reference.
// Consecutive groups of one column tile share their slot metrics.
static bool same_metrics(const struct gq_vq_data *a, const struct gq_vq_data *b) {
    return a->metric == b->metric && a->n_slots == b->n_slots;
}

static enum gq_status cu_vq_em(struct gq_vq_em_job *jobs, int n_jobs, int k, int iters) {
    int nb = 0, d = 0, diag = -1;
    bool any_s2 = false, mixed = false;
    int64_t n_pts = 0, n_met = 0;
    int *sel = malloc(sizeof(int) * (n_jobs ? n_jobs : 1));
    if (!sel) return gq_fail(GQ_ERR_NOMEM, "vq: EM batch of %d groups", n_jobs);
    for (int j = 0; j < n_jobs; j++) {
        const struct gq_vq_data *D = &jobs[j].D;
        const int64_t n = gq_vq_n_points(D);
        jobs[j].st.trace = NULL;
        if (n * k * D->d >= GQ_VQ_EM_DEVICE_MIN || n <= 0 || k > 256) {
            enum gq_status s = gq_vq_em_rounds(&cuda, D, k, iters, jobs[j].C, jobs[j].idx, &jobs[j].st);
            if (s != GQ_OK) {
                free(sel);
                return s;
            }
            continue;
        }
        mixed |= (diag >= 0 && diag != (int)D->diag) || (d && d != D->d);
        diag = D->diag, d = D->d, any_s2 |= D->s2 != NULL;
        if (!nb || !same_metrics(D, &jobs[sel[nb - 1]].D)) n_met += D->n_slots;
        sel[nb++] = j, n_pts += n;
    }
    enum gq_status s = GQ_OK;
    if (!nb) goto done;
    if (mixed) {
        for (int i = 0; i < nb && s == GQ_OK; i++) s = gq_vq_em_batch(&cuda, &jobs[sel[i]], 1, k, iters);
        goto done;
    }
    int *ns = malloc(sizeof(int) * nb * 4), *ps = ns ? ns + nb : NULL, *it = ns ? ns + 2 * nb : NULL,
        *rs = ns ? ns + 3 * nb : NULL;
    int64_t *xo = malloc(sizeof(int64_t) * nb * 2), *mo = xo ? xo + nb : NULL;
    double *X = malloc(sizeof(double) * n_pts * d), *S2 = any_s2 ? malloc(sizeof(double) * n_pts) : NULL;
    double *M = malloc(sizeof(double) * n_met * d * d), *C = malloc(sizeof(double) * nb * k * d);
    double *obj = malloc(sizeof(double) * nb);
    int32_t *idx = malloc(sizeof(int32_t) * n_pts);
    if (!ns || !xo || !X || (any_s2 && !S2) || !M || !C || !obj || !idx) {
        s = gq_fail(GQ_ERR_NOMEM, "vq: EM batch of %d groups, %lld points", nb, (long long)n_pts);
        goto out;
    }
    int64_t xa = 0, ma = 0;
    for (int i = 0; i < nb; i++) {
        const struct gq_vq_em_job *J = &jobs[sel[i]];
        const int64_t n = gq_vq_n_points(&J->D);
        ns[i] = J->D.n_slots, ps[i] = J->D.per_slot, xo[i] = xa;
        memcpy(X + xa * d, J->D.x, sizeof(double) * n * d);
        for (int64_t p = 0; S2 && p < n; p++) S2[xa + p] = J->D.s2 ? J->D.s2[p] : 1.0;
        if (i && same_metrics(&J->D, &jobs[sel[i - 1]].D))
            mo[i] = mo[i - 1];
        else {
            mo[i] = ma;
            memcpy(M + ma * d * d, J->D.metric, sizeof(double) * J->D.n_slots * d * d);
            ma += J->D.n_slots;
        }
        memcpy(C + (size_t)i * k * d, J->C, sizeof(double) * k * d);
        xa += n;
    }
    CALL_TO(s, vq_em, nb, d, k, iters, diag, ns, ps, xo, mo, n_met, X, S2, M, C, idx, it, rs, obj);
    for (int i = 0; i < nb && s == GQ_OK; i++) {
        struct gq_vq_em_job *J = &jobs[sel[i]];
        memcpy(J->C, C + (size_t)i * k * d, sizeof(double) * k * d);
        memcpy(J->idx, idx + xo[i], sizeof(int32_t) * gq_vq_n_points(&J->D));
        J->st.iters = it[i], J->st.n_reseeded = rs[i], J->st.objective = obj[i];
        if (isnan(obj[i])) s = gq_vq_em_nan(&J->D, k);
    }
out:
    free(ns), free(xo), free(X), free(S2), free(M), free(C), free(obj), free(idx);
done:
    free(sel);
    return s;
}

// Shapes the kernel takes (vq.h limits k to 65536): else the CPU reference.
static enum gq_status cu_vq_gram(const struct gq_vq_gram *g, double *G) {
    bool fits = g->k <= 256;
    for (int c = 0; fits && c < g->n_ct; c++) fits = g->vt_start[c + 1] - g->vt_start[c] <= 256;
    if (!fits) return gq_vq_gram(g, G);
    CALL(vq_gram, g->rows, g->nv, g->d, g->k, g->stages, g->n_ct, g->vt_start, g->idx, g->idx_stage, g->sig, g->H,
         g->ldh, G);
}
static enum gq_status cu_dposv(int n, double *A, double *b, int *info) { CALL(dposv, n, A, b, info); }
static enum gq_status cu_hold(const void *p, size_t bytes, bool writable) { CALL(hold, p, bytes, writable); }
static enum gq_status cu_release(const void *p) { CALL(release, p); }

static const struct gq_backend cuda = {
    .name = "cuda",
    .dgemm = cu_dgemm,
    .dsymm_right = cu_dsymm_right,
    .dsyrk_acc = cu_dsyrk_acc,
    .chol_inverse_upper = cu_chol_inverse_upper,
    .vq_assign = cu_vq_assign,
    .vq_mstep = cu_vq_mstep,
    .vq_em = cu_vq_em,
    .dposv = cu_dposv,
    .vq_gram = cu_vq_gram,
    .hold = cu_hold,
    .release = cu_release,
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
    SYM(init) SYM(dgemm) SYM(dsymm_right) SYM(dsyrk_acc) SYM(chol_inverse_upper) SYM(vq_assign) SYM(vq_mstep) SYM(vq_em)
    SYM(dposv) SYM(vq_gram) SYM(hold) SYM(release)
    SYM(mat_vq) SYM(mat_ggml) SYM(mat_free) SYM(mat_gemv) SYM(mat_gemm) SYM(mat_bench) SYM(mat_set_variant) SYM(lm_new) SYM(lm_forward)
    SYM(lm_free) SYM(calib_new) SYM(calib_block) SYM(calib_pass) SYM(calib_free)
    SYM(nccl_id) SYM(nccl_init) SYM(nccl_sum_i64) SYM(nccl_or) SYM(nccl_bcast) SYM(nccl_free)
#undef SYM
    // several ranks on one machine: one GPU each
    return fn.init(gq_dist_local_rank(), why_buf, sizeof why_buf, device_name, sizeof device_name) ? -1 : 1;
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

enum gq_status gq_cuda_need_device(void) {
    const char *why = NULL;
    return gq_backend_cuda(&why) ? GQ_OK : gq_fail(GQ_ERR_UNSUPPORTED, "cuda: %s", why);
}

static bool ggml_kernel(enum gq_ggml_type t) {
    return t == GQ_TYPE_F32 || t == GQ_TYPE_F16 || t == GQ_TYPE_Q4_0 || t == GQ_TYPE_Q4_1 || t == GQ_TYPE_Q8_0;
}

enum gq_status gq_cuda_mat_f32(int rows, int cols, const float *w, struct gqcu_mat **out) {
    *out = NULL;
    GQ_TRY(gq_cuda_need_device());
    enum gq_status s = GQ_OK;
    CALL_TO(s, mat_ggml, GQ_TYPE_F32, rows, cols, w, out);
    return s;
}

enum gq_status gq_cuda_mat_new(const struct gq_qweight *q, struct gqcu_mat **out) {
    *out = NULL;
    GQ_TRY(gq_cuda_need_device());
    enum gq_status s = GQ_OK;
    if (q->kind == GQ_QW_GGML) {
        if (!ggml_kernel(q->type))
            return gq_fail(GQ_ERR_UNSUPPORTED, "cuda: no kernel for GGML type %s", gq_ggml_type_name(q->type));
        CALL_TO(s, mat_ggml, (int)q->type, q->rows, q->cols, q->data, out);
        return s;
    }
    const struct gq_vqrt *v = q->vq;
    const struct gq_vqpack_hdr *h = &v->p.h;
    if (h->norm_block) return gq_fail(GQ_ERR_UNSUPPORTED, "cuda: GEMV of a VQ matrix with normalisation");
    if (v->rot) return gq_fail(GQ_ERR_UNSUPPORTED, "cuda: GEMV of a rotated VQ matrix (--rotate)");
    const int n_g = h->n_rt * h->n_ct, kd = h->k * h->d;
    float *cb = malloc(sizeof(float) * (size_t)h->stages * n_g * kd);
    float *outl = h->n_out ? malloc(sizeof(float) * (size_t)h->rows * h->n_out) : NULL;
    int32_t *vec_ct = malloc(sizeof(int32_t) * (size_t)v->nv), *row_rt = malloc(sizeof(int32_t) * (size_t)h->rows);
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
        CALL_TO(s, mat_vq, &D, out);
    }
    free(cb), free(outl), free(vec_ct), free(row_rt);
    return s;
}

enum gq_status gq_cuda_mat_gemv(struct gqcu_mat *m, const float *x, float *y) { CALL(mat_gemv, m, x, y); }

enum gq_status gq_cuda_mat_gemm(struct gqcu_mat *m, int n, const float *X, float *Y, size_t tile_floats) {
    CALL(mat_gemm, m, n, X, Y, tile_floats);
}

enum gq_status gq_cuda_mat_set_variant(struct gqcu_mat *m, int variant) { CALL(mat_set_variant, m, variant); }

enum gq_status gq_cuda_mat_bench(struct gqcu_mat *m, int iters, double *seconds, size_t *bytes, double *peak_gbs) {
    CALL(mat_bench, m, iters, seconds, bytes, peak_gbs);
}

void gq_cuda_mat_free(struct gqcu_mat *m) {
    if (!m || state <= 0) return;
    pthread_mutex_lock(&lock);
    fn.mat_free(m);
    pthread_mutex_unlock(&lock);
}

// ---------------------------------------------------------------------------
// The plug-in's decoder forward and calibration passes (model/forward_cuda.c
// builds their descriptors from a model).

enum gq_status gq_cuda_dev_lm_new(const struct gqcu_lm_desc *D, struct gqcu_lm **out) {
    *out = NULL;
    GQ_TRY(gq_cuda_need_device());
    CALL(lm_new, D, out); // the matrices belong to the lm now, also on failure
}

enum gq_status gq_cuda_dev_lm_forward(struct gqcu_lm *lm, const float *x, int n, int pos0, float *logits,
                                      bool all_logits) {
    CALL(lm_forward, lm, x, n, pos0, logits, all_logits);
}

void gq_cuda_dev_lm_free(struct gqcu_lm *lm) {
    if (!lm || state <= 0) return;
    pthread_mutex_lock(&lock);
    fn.lm_free(lm);
    pthread_mutex_unlock(&lock);
}

enum gq_status gq_cuda_dev_calib_new(const struct gqcu_calib_desc *D, const float *X, struct gqcu_calib **out) {
    *out = NULL;
    GQ_TRY(gq_cuda_need_device());
    CALL(calib_new, D, X, out);
}

enum gq_status gq_cuda_dev_calib_block(struct gqcu_calib *c, const struct gqcu_calib_block *B) {
    CALL(calib_block, c, B);
}

enum gq_status gq_cuda_calib_pass(struct gqcu_calib *c, int start_at, int stop_after, bool in_place, int want,
                                  int resid_w, float sink, double *H, int *bad_window) {
    char err[512] = "";
    pthread_mutex_lock(&lock);
    int rc = fn.calib_pass(c, start_at, stop_after, in_place, want, resid_w, sink, H, bad_window, err, sizeof err);
    pthread_mutex_unlock(&lock);
    if (rc) return gq_fail(rc == -2 ? GQ_ERR_NUMERIC : GQ_ERR_IO, "%s", err);
    return GQ_OK;
}

void gq_cuda_calib_free(struct gqcu_calib *c) {
    if (!c || state <= 0) return;
    pthread_mutex_lock(&lock);
    fn.calib_free(c);
    pthread_mutex_unlock(&lock);
}

// ---------------------------------------------------------------------------
// Several ranks: util/dist.h's collectives through NCCL (cu_nccl.cu).

static enum gq_status nccl_sum_i64(int64_t *x, size_t n) { CALL(nccl_sum_i64, x, n); }
static enum gq_status nccl_or(void *buf, size_t bytes) { CALL(nccl_or, buf, bytes); }
static enum gq_status nccl_bcast(void *buf, size_t bytes, int root) { CALL(nccl_bcast, buf, bytes, root); }
static const struct gq_dist_transport nccl = {"NCCL", nccl_sum_i64, nccl_or, nccl_bcast};
static bool nccl_on;

enum gq_status gq_cuda_dist_start(void) {
    if (gq_dist_size() < 2 || nccl_on) return GQ_OK;
    GQ_TRY(gq_cuda_need_device());
    unsigned char id[128] = {0};
    enum gq_status s = GQ_OK;
    if (gq_dist_rank() == 0) CALL_TO(s, nccl_id, id);
    // rank 0's failure (a plug-in without NCCL) reaches the others as a zero id
    unsigned char ok = s == GQ_OK;
    GQ_TRY(gq_dist_bcast(&ok, 1, 0));
    if (!ok) return s != GQ_OK ? s : gq_fail(GQ_ERR_UNSUPPORTED, "cuda: rank 0 could not start NCCL");
    GQ_TRY(gq_dist_bcast(id, sizeof id, 0)); // through MPI, which started the ranks
    CALL_TO(s, nccl_init, id, gq_dist_size(), gq_dist_rank());
    GQ_TRY(s);
    gq_dist_set_transport(&nccl);
    nccl_on = true;
    return GQ_OK;
}

void gq_cuda_dist_stop(void) {
    if (!nccl_on) return;
    gq_dist_set_transport(NULL);
    pthread_mutex_lock(&lock);
    fn.nccl_free();
    pthread_mutex_unlock(&lock);
    nccl_on = false;
}
