// cu_block.cu - Llama-family decoder blocks on the device: the decoder forward
// (gqcu_lm_*) and the calibration passes (gqcu_calib_*).
#include "cu_common.cuh"

// ---------------------------------------------------------------------------
// Llama-family decoder blocks on the device: the arithmetic of
// src/model/forward.c (RMSNorm with a double sum of squares, RoPE angles in
// double, SwiGLU). One block function serves the forward (gqcu_lm_*: KV cache
// on the device, compressed weights, TF32 prefill GEMMs) and the calibration
// passes (gqcu_calib_*: f32 weights, FP32 GEMMs, hooks as block_forward's).
// Attention: one warp per (query, head), online softmax over the keys
// 0..pos, lanes over the head dimension.

#define ATT_MAX_HD 256 // head_dim <= 32 lanes × 8

enum { IN_ATTN = 0, IN_ATTN_OUT, IN_FFN, IN_FFN_DOWN }; // enum gq_block_input

struct blk_shape {
    int dim, n_heads, n_kv_heads, head_dim, hidden_dim, rope_dim, rope_interleaved;
    float rms_eps;
    float *inv_freq; // (rope_dim / 2), on the device
};
struct blk_w { // one block's weights on the device (biases NULL when absent)
    float *attn_norm, *ffn_norm, *bq, *bk, *bv;
    gqcu_mat *w[7]; // q, k, v, o, gate, up, down
};
struct blk_buf { // scratch for a number of tokens
    float *xb, *q, *k, *v, *att, *hb, *hb2;
};
// Calibration: after capturing input group `which` (buf, n_in wide; resid the
// residual stream) the pass returns when it is stop_after (-1: whole block).
struct blk_hooks {
    int start_at, stop_after; // start_at IN_ATTN or IN_FFN (x holds the post-attention residual)
    int (*capture)(void *user, int which, const float *buf, int n_in, const float *resid, char *err, size_t cap);
    void *user;
};

static int shape_check(const blk_shape *s, const char *what, char *err, size_t cap) {
    if (s->n_kv_heads <= 0 || s->head_dim > ATT_MAX_HD || s->n_heads % s->n_kv_heads || s->rope_dim > s->head_dim ||
        s->rope_dim % 2)
        return fail(err, cap, what, "head_dim above 256, heads not a multiple of the KV heads or a RoPE width "
                                    "that is odd or above head_dim");
    return 0;
}

static void blk_buf_free(blk_buf *b) {
    cudaFree(b->xb), cudaFree(b->q), cudaFree(b->k), cudaFree(b->v), cudaFree(b->att), cudaFree(b->hb), cudaFree(b->hb2);
    memset(b, 0, sizeof *b);
}
static cudaError_t blk_buf_alloc(blk_buf *b, const blk_shape *s, size_t n) {
    const size_t q_dim = (size_t)s->n_heads * s->head_dim, kv = (size_t)s->n_kv_heads * s->head_dim;
    const size_t wide = q_dim > (size_t)s->dim ? q_dim : s->dim;
    cudaError_t e;
    if ((e = cudaMalloc(&b->xb, sizeof(float) * n * wide)) != cudaSuccess ||
        (e = cudaMalloc(&b->q, sizeof(float) * n * q_dim)) != cudaSuccess ||
        (e = cudaMalloc(&b->k, sizeof(float) * n * kv)) != cudaSuccess ||
        (e = cudaMalloc(&b->v, sizeof(float) * n * kv)) != cudaSuccess ||
        (e = cudaMalloc(&b->att, sizeof(float) * n * q_dim)) != cudaSuccess ||
        (e = cudaMalloc(&b->hb, sizeof(float) * n * s->hidden_dim)) != cudaSuccess)
        return e;
    return cudaMalloc(&b->hb2, sizeof(float) * n * s->hidden_dim);
}
static void blk_w_free(blk_w *w) {
    cudaFree(w->attn_norm), cudaFree(w->ffn_norm), cudaFree(w->bq), cudaFree(w->bk), cudaFree(w->bv);
    for (int j = 0; j < 7; j++) gqcu_mat_free(w->w[j]);
    memset(w, 0, sizeof *w);
}

__global__ void rmsnorm_k(const float *x, const float *w, float *out, int dim, float eps) {
    __shared__ double red[256];
    const float *xi = x + (size_t)blockIdx.x * dim;
    float *oi = out + (size_t)blockIdx.x * dim;
    double ss = 0;
    for (int j = threadIdx.x; j < dim; j += blockDim.x) ss += (double)xi[j] * xi[j];
    red[threadIdx.x] = ss;
    __syncthreads();
    for (int h = blockDim.x / 2; h > 0; h >>= 1) {
        if ((int)threadIdx.x < h) red[threadIdx.x] += red[threadIdx.x + h];
        __syncthreads();
    }
    const float scale = (float)(1.0 / sqrt(red[0] / dim + eps));
    for (int j = threadIdx.x; j < dim; j += blockDim.x) oi[j] = xi[j] * scale * w[j];
}

// Heads of x (n, n_heads·hd) at positions pos0..: one thread per (token, head, pair).
__global__ void rope_k(float *x, int n, int n_heads, int hd, int half, int interleaved, const float *inv_freq,
                       int pos0) {
    const int64_t t = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (t >= (int64_t)n * n_heads * half) return;
    const int j = (int)(t % half), h = (int)(t / half % n_heads), i = (int)(t / ((int64_t)half * n_heads));
    const double a = (double)(pos0 + i) * inv_freq[j];
    const float c = (float)cos(a), s = (float)sin(a);
    float *xh = x + ((size_t)i * n_heads + h) * hd;
    const int a0 = interleaved ? 2 * j : j, a1 = interleaved ? 2 * j + 1 : j + half;
    const float x0 = xh[a0], x1 = xh[a1];
    xh[a0] = x0 * c - x1 * s;
    xh[a1] = x0 * s + x1 * c;
}

// Causal attention of queries q (n, n_heads·hd) at positions pos0.. over the
// layer's cache kc, vc (positions, kv_dim); out (n, n_heads·hd). A block of
// ATT_SPLIT warps per (query, head): warp w takes keys w, w + ATT_SPLIT, ...
// with its own online softmax (so one decoded token still spreads over
// n_heads · ATT_SPLIT warps), then warp 0 combines the partial maxima, sums
// and outputs in a fixed order.
#define ATT_SPLIT 8
__global__ void attention_k(const float *q, const float *kc, const float *vc, float *out, int n, int pos0,
                            int n_heads, int group, int hd, int kv_dim, float scale) {
    __shared__ float s_mx[ATT_SPLIT], s_l[ATT_SPLIT], s_acc[ATT_SPLIT][ATT_MAX_HD];
    const int lane = threadIdx.x & 31, wi = threadIdx.x >> 5;
    const int i = (int)(blockIdx.x / n_heads), h = (int)(blockIdx.x % n_heads), g = h / group, q_dim = n_heads * hd;
    const float *qi = q + (size_t)i * q_dim + (size_t)h * hd;
    float qr[ATT_MAX_HD / 32], acc[ATT_MAX_HD / 32];
#pragma unroll
    for (int e = 0; e < ATT_MAX_HD / 32; e++) {
        const int j = lane + 32 * e;
        qr[e] = j < hd ? qi[j] : 0.0f;
        acc[e] = 0;
    }
    float mx = -INFINITY, l = 0;
    for (int t = wi; t <= pos0 + i; t += ATT_SPLIT) {
        const float *kt = kc + (size_t)t * kv_dim + (size_t)g * hd, *vt = vc + (size_t)t * kv_dim + (size_t)g * hd;
        float dot = 0;
#pragma unroll
        for (int e = 0; e < ATT_MAX_HD / 32; e++)
            if (lane + 32 * e < hd) dot += qr[e] * kt[lane + 32 * e];
        for (int o = 16; o > 0; o >>= 1) dot += __shfl_xor_sync(0xffffffffu, dot, o);
        const float s = dot * scale, nm = fmaxf(mx, s), corr = expf(mx - nm), p = expf(s - nm);
        l = l * corr + p;
#pragma unroll
        for (int e = 0; e < ATT_MAX_HD / 32; e++)
            if (lane + 32 * e < hd) acc[e] = acc[e] * corr + p * vt[lane + 32 * e];
        mx = nm;
    }
    if (lane == 0) s_mx[wi] = mx, s_l[wi] = l;
#pragma unroll
    for (int e = 0; e < ATT_MAX_HD / 32; e++)
        if (lane + 32 * e < hd) s_acc[wi][lane + 32 * e] = acc[e];
    __syncthreads();
    if (wi) return;
    float M = -INFINITY, L = 0, f[ATT_SPLIT];
    for (int w = 0; w < ATT_SPLIT; w++) M = fmaxf(M, s_mx[w]); // warp 0 always has key 0: M is finite
    for (int w = 0; w < ATT_SPLIT; w++) // a warp without keys adds nothing; a NaN still reaches the output
        f[w] = s_l[w] != 0 ? expf(s_mx[w] - M) : 0.0f, L += s_l[w] * f[w];
    float *oi = out + (size_t)i * q_dim + (size_t)h * hd;
    for (int j = lane; j < hd; j += 32) {
        float o = 0;
        for (int w = 0; w < ATT_SPLIT; w++) o += s_acc[w][j] * f[w];
        oi[j] = o / L;
    }
}

__global__ void add_k(float *x, const float *y, int64_t n) {
    const int64_t t = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (t < n) x[t] += y[t];
}
__global__ void bias_k(float *x, const float *b, int64_t n, int dim) {
    const int64_t t = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (t < n) x[t] += b[t % dim];
}
__global__ void swiglu_k(float *g, const float *u, int64_t n) { // silu(gate) · up
    const int64_t t = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (t < n) {
        const float a = g[t];
        g[t] = a / (1.0f + expf(-a)) * u[t];
    }
}

static cudaError_t launch_add(float *x, const float *y, int64_t n) {
    add_k<<<blocks_for(n, 256), 256>>>(x, y, n);
    return cudaGetLastError();
}

// One block on x (n, dim), in place, for tokens at positions pos0..: the
// layer's cache kc, vc (positions, kv_dim) receives their K/V and the
// attention reads it; kc NULL: the n tokens are their own cache (pos0 0).
// tf32: the prefill GEMMs on tensor cores (the forward), else FP32.
static int block_run(const blk_shape *s, const blk_w *W, float *x, int n, int pos0, float *kc, float *vc,
                     const blk_buf *b, float *tile, size_t tile_floats, bool tf32, const blk_hooks *hk, char *err,
                     size_t cap) {
    int rc = 0;
    const int dim = s->dim, hd = s->head_dim, q_dim = s->n_heads * hd, kv = s->n_kv_heads * hd, ffn = s->hidden_dim;
    const int half = s->rope_dim / 2;
#define MATMUL(j, X, Y)                                                                                                \
    if ((rc = cu_matmul(W->w[j], X, Y, n, tile, tile_floats, tf32, err, cap))) goto out;
#define HOOK(which, buf, width)                                                                                        \
    if (hk && (rc = hk->capture(hk->user, which, buf, width, x, err, cap))) goto out;                                  \
    if (hk && hk->stop_after == (which)) goto out;
    if (!hk || hk->start_at != IN_FFN) {
        rmsnorm_k<<<n, 256>>>(x, W->attn_norm, b->xb, dim, s->rms_eps);
        CHECK(cudaGetLastError());
        HOOK(IN_ATTN, b->xb, dim);
        MATMUL(0, b->xb, b->q);
        MATMUL(1, b->xb, b->k);
        MATMUL(2, b->xb, b->v);
        if (W->bq) bias_k<<<blocks_for((int64_t)n * q_dim, 256), 256>>>(b->q, W->bq, (int64_t)n * q_dim, q_dim);
        if (W->bk) bias_k<<<blocks_for((int64_t)n * kv, 256), 256>>>(b->k, W->bk, (int64_t)n * kv, kv);
        if (W->bv) bias_k<<<blocks_for((int64_t)n * kv, 256), 256>>>(b->v, W->bv, (int64_t)n * kv, kv);
        if (half > 0) {
            rope_k<<<blocks_for((int64_t)n * s->n_heads * half, 256), 256>>>(b->q, n, s->n_heads, hd, half,
                                                                              s->rope_interleaved, s->inv_freq, pos0);
            rope_k<<<blocks_for((int64_t)n * s->n_kv_heads * half, 256), 256>>>(b->k, n, s->n_kv_heads, hd, half,
                                                                                 s->rope_interleaved, s->inv_freq, pos0);
        }
        CHECK(cudaGetLastError());
        if (kc) {
            CHECK(cudaMemcpy(kc + (size_t)pos0 * kv, b->k, sizeof(float) * n * kv, cudaMemcpyDeviceToDevice));
            CHECK(cudaMemcpy(vc + (size_t)pos0 * kv, b->v, sizeof(float) * n * kv, cudaMemcpyDeviceToDevice));
        } else
            kc = b->k, vc = b->v;
        attention_k<<<(unsigned)((int64_t)n * s->n_heads), 32 * ATT_SPLIT>>>(b->q, kc, vc, b->att, n, pos0, s->n_heads,
                                                                              s->n_heads / s->n_kv_heads, hd, kv,
                                                                              1.0f / sqrtf((float)hd));
        CHECK(cudaGetLastError());
        HOOK(IN_ATTN_OUT, b->att, q_dim);
        MATMUL(3, b->att, b->xb);
        CHECK(launch_add(x, b->xb, (int64_t)n * dim));
    }
    rmsnorm_k<<<n, 256>>>(x, W->ffn_norm, b->xb, dim, s->rms_eps);
    CHECK(cudaGetLastError());
    HOOK(IN_FFN, b->xb, dim);
    MATMUL(4, b->xb, b->hb);
    MATMUL(5, b->xb, b->hb2);
    swiglu_k<<<blocks_for((int64_t)n * ffn, 256), 256>>>(b->hb, b->hb2, (int64_t)n * ffn);
    CHECK(cudaGetLastError());
    HOOK(IN_FFN_DOWN, b->hb, ffn);
    MATMUL(6, b->hb, b->xb);
    CHECK(launch_add(x, b->xb, (int64_t)n * dim));
#undef HOOK
#undef MATMUL
out:
    return rc;
}

// ---------------------------------------------------------------------------
// The forward (gqcu_lm_*).

struct gqcu_lm {
    blk_shape sh;
    int n_vocab, n_layers, n_ctx;
    blk_w *L;
    gqcu_mat *output;
    float *output_norm;
    float *kc, *vc; // (n_layers, n_ctx, kv_dim)
    float *tile;
    size_t tile_floats;
    int n_cap;      // scratch sized for n_cap tokens
    int logits_cap; // logits sized for logits_cap rows (only the last token's unless all are asked for)
    blk_buf b;
    float *x, *logits;
    bool tf32; // prefill GEMMs on TF32 tensor cores (GPTVQ_CUDA_TF32=0: FP32)
};

static void free_scratch(gqcu_lm *lm) {
    blk_buf_free(&lm->b);
    cudaFree(lm->x), cudaFree(lm->logits);
    lm->x = lm->logits = NULL;
    lm->n_cap = lm->logits_cap = 0;
}

extern "C" void gqcu_lm_free(struct gqcu_lm *lm) {
    if (!lm) return;
    free_scratch(lm);
    for (int l = 0; lm->L && l < lm->n_layers; l++) blk_w_free(&lm->L[l]);
    free(lm->L);
    gqcu_mat_free(lm->output);
    cudaFree(lm->output_norm), cudaFree(lm->sh.inv_freq), cudaFree(lm->kc), cudaFree(lm->vc), cudaFree(lm->tile);
    free(lm);
}

static int grow_scratch(gqcu_lm *lm, int n, char *err, size_t cap) {
    int rc = 0;
    free_scratch(lm);
    CHECK(blk_buf_alloc(&lm->b, &lm->sh, (size_t)n));
    CHECK(cudaMalloc(&lm->x, sizeof(float) * n * lm->sh.dim));
    lm->n_cap = n;
out:
    if (rc) free_scratch(lm);
    return rc;
}

extern "C" int gqcu_lm_new(const struct gqcu_lm_desc *D, struct gqcu_lm **out, char *err, size_t cap) {
    int rc = 0;
    const size_t kv_dim = (size_t)D->n_kv_heads * D->head_dim, cache = (size_t)D->n_layers * D->n_ctx * kv_dim;
    size_t tile = 0, widest = 0;
    gqcu_lm *lm = (gqcu_lm *)calloc(1, sizeof *lm);
    *out = NULL;
    if (!lm || !(lm->L = (blk_w *)calloc((size_t)D->n_layers, sizeof *lm->L))) {
        for (int l = 0; l < D->n_layers; l++) {
            const gqcu_lm_layer *S = &D->layers[l];
            gqcu_mat_free(S->wq), gqcu_mat_free(S->wk), gqcu_mat_free(S->wv), gqcu_mat_free(S->wo);
            gqcu_mat_free(S->w_gate), gqcu_mat_free(S->w_up), gqcu_mat_free(S->w_down);
        }
        gqcu_mat_free(D->output);
        rc = fail(err, cap, "gqcu_lm_new", "out of memory");
        goto out;
    }
    lm->sh = {D->dim, D->n_heads, D->n_kv_heads, D->head_dim, D->hidden_dim, D->rope_dim, D->rope_interleaved,
              D->rms_eps, NULL};
    lm->n_vocab = D->n_vocab, lm->n_layers = D->n_layers, lm->n_ctx = D->n_ctx;
    lm->tf32 = !(getenv("GPTVQ_CUDA_TF32") && !strcmp(getenv("GPTVQ_CUDA_TF32"), "0"));
    // the lm owns the matrices from here on, also when this call fails
    for (int l = 0; l < D->n_layers; l++) {
        const gqcu_lm_layer *S = &D->layers[l];
        gqcu_mat *const w[7] = {S->wq, S->wk, S->wv, S->wo, S->w_gate, S->w_up, S->w_down};
        memcpy(lm->L[l].w, w, sizeof w);
    }
    lm->output = D->output;
    if ((rc = shape_check(&lm->sh, "gqcu_lm_new", err, cap))) goto out;
    for (int l = 0; l < D->n_layers; l++) {
        const gqcu_lm_layer *S = &D->layers[l];
        blk_w *L = &lm->L[l];
        const size_t q_dim = (size_t)D->n_heads * D->head_dim;
        CHECK(upload(&L->attn_norm, S->attn_norm, (size_t)D->dim));
        CHECK(upload(&L->ffn_norm, S->ffn_norm, (size_t)D->dim));
        if (S->bq) CHECK(upload(&L->bq, S->bq, q_dim));
        if (S->bk) CHECK(upload(&L->bk, S->bk, kv_dim));
        if (S->bv) CHECK(upload(&L->bv, S->bv, kv_dim));
        for (int j = 0; j < 7; j++) {
            const gqcu_mat *m = L->w[j];
            if (m->kind != MAT_F32 && (size_t)m->rows * m->cols > tile) tile = (size_t)m->rows * m->cols;
            if ((size_t)m->cols > widest) widest = m->cols;
        }
    }
    if (lm->output->kind != MAT_F32 && (size_t)lm->output->rows * lm->output->cols > tile)
        tile = (size_t)lm->output->rows * lm->output->cols;
    if ((size_t)lm->output->cols > widest) widest = lm->output->cols;
    CHECK(upload(&lm->output_norm, D->output_norm, (size_t)D->dim));
    CHECK(upload(&lm->sh.inv_freq, D->inv_freq, (size_t)(D->rope_dim / 2)));
    CHECK(cudaMalloc(&lm->kc, sizeof(float) * (cache ? cache : 1)));
    CHECK(cudaMalloc(&lm->vc, sizeof(float) * (cache ? cache : 1)));
    // prefill tiles: whole matrices up to 32 Mi values (128 MiB), at least one row
    lm->tile_floats = tile < ((size_t)1 << 25) ? tile : (size_t)1 << 25;
    if (lm->tile_floats < widest) lm->tile_floats = widest;
    CHECK(cudaMalloc(&lm->tile, sizeof(float) * lm->tile_floats));
    *out = lm;
    return 0;
out:
    gqcu_lm_free(lm);
    return rc;
}

extern "C" int gqcu_lm_forward(struct gqcu_lm *lm, const float *x, int n, int pos0, float *logits, int all_logits,
                               char *err, size_t cap) {
    int rc = 0;
    const int dim = lm->sh.dim, kv_dim = lm->sh.n_kv_heads * lm->sh.head_dim;
    if (n <= 0 || pos0 < 0 || pos0 + n > lm->n_ctx) return fail(err, cap, "gqcu_lm_forward", "tokens outside the context");
    if (n > lm->n_cap && (rc = grow_scratch(lm, n, err, cap))) return rc;
    CHECK(cudaMemcpy(lm->x, x, sizeof(float) * n * dim, cudaMemcpyHostToDevice));
    for (int l = 0; l < lm->n_layers; l++) {
        float *kc = lm->kc + (size_t)l * lm->n_ctx * kv_dim, *vc = lm->vc + (size_t)l * lm->n_ctx * kv_dim;
        if ((rc = block_run(&lm->sh, &lm->L[l], lm->x, n, pos0, kc, vc, &lm->b, lm->tile, lm->tile_floats, lm->tf32, NULL,
                            err, cap)))
            goto out;
    }
    if (logits) {
        const int rows = all_logits ? n : 1;
        if (rows > lm->logits_cap) {
            cudaFree(lm->logits);
            lm->logits = NULL, lm->logits_cap = 0;
            CHECK(cudaMalloc(&lm->logits, sizeof(float) * rows * lm->n_vocab));
            lm->logits_cap = rows;
        }
        rmsnorm_k<<<rows, 256>>>(lm->x + (size_t)(n - rows) * dim, lm->output_norm, lm->b.xb, dim, lm->sh.rms_eps);
        CHECK(cudaGetLastError());
        if ((rc = cu_matmul(lm->output, lm->b.xb, lm->logits, rows, lm->tile, lm->tile_floats, lm->tf32, err, cap)))
            goto out;
        CHECK(cudaMemcpy(logits, lm->logits, sizeof(float) * rows * lm->n_vocab, cudaMemcpyDeviceToHost));
    } else
        CHECK(cudaDeviceSynchronize());
out:
    return rc;
}

// ---------------------------------------------------------------------------
// Calibration passes on the device (engine.c with --device cuda). The
// windows' activations X stay on the device, the current block's f32 weights
// are uploaded before each pass, and a linear group's Σ xᵀx accumulates there
// in double (DSYRK per window). A pass is block_run with block_forward's
// hooks and FP32 GEMMs (no TF32, as the CPU's sgemm); the capture weights
// tokens as engine.c's on_capture does (residual weighting, the first
// token's weight).

struct gqcu_calib {
    blk_shape sh;
    int ns, seqlen;
    float *X, *tmp; // X (ns, seqlen, dim), tmp one window
    blk_w W;        // the current block: F32 matrices
    blk_buf b;      // one window's scratch
    float *y;       // (seqlen, dim): the residual weighting's o / down output
    double *xd, *H; // capture: (seqlen, n_in), (n_in, n_in)
    int *bad;       // non-finite flag
    int want, resid_w; // the pass's capture: input group (-1: none), residual weighting through o (1) / down (2)
    float sink;
};

extern "C" void gqcu_calib_free(struct gqcu_calib *c) {
    if (!c) return;
    cudaFree(c->sh.inv_freq), cudaFree(c->X), cudaFree(c->tmp);
    blk_w_free(&c->W);
    blk_buf_free(&c->b);
    cudaFree(c->y), cudaFree(c->xd), cudaFree(c->H), cudaFree(c->bad);
    free(c);
}

extern "C" int gqcu_calib_new(const struct gqcu_calib_desc *D, const float *X, struct gqcu_calib **out, char *err,
                              size_t cap) {
    int rc = 0;
    gqcu_calib *c = (gqcu_calib *)calloc(1, sizeof *c);
    *out = NULL;
    if (!c) return fail(err, cap, "gqcu_calib_new", "out of memory");
    c->sh = {D->dim, D->n_heads, D->n_kv_heads, D->head_dim, D->hidden_dim, D->rope_dim, D->rope_interleaved,
             D->rms_eps, NULL};
    c->ns = D->nsamples, c->seqlen = D->seqlen;
    {
        const size_t S = (size_t)c->seqlen, q_dim = (size_t)D->n_heads * D->head_dim,
                     kv = (size_t)D->n_kv_heads * D->head_dim, dim = (size_t)D->dim, ffn = (size_t)D->hidden_dim;
        const size_t wide = q_dim > dim ? q_dim : dim, n_in = ffn > wide ? ffn : wide;
        // (rows, cols) of q, k, v, o, gate, up, down
        const size_t shape[7][2] = {{q_dim, dim}, {kv, dim}, {kv, dim}, {dim, q_dim}, {ffn, dim}, {ffn, dim}, {dim, ffn}};
        if ((rc = shape_check(&c->sh, "gqcu_calib_new", err, cap))) goto out;
        CHECK(upload(&c->sh.inv_freq, D->inv_freq, (size_t)(D->rope_dim / 2)));
        CHECK(upload(&c->X, X, (size_t)c->ns * S * dim));
        CHECK(cudaMalloc(&c->tmp, sizeof(float) * S * dim));
        CHECK(cudaMalloc(&c->W.attn_norm, sizeof(float) * dim));
        CHECK(cudaMalloc(&c->W.ffn_norm, sizeof(float) * dim));
        for (int j = 0; j < 7; j++)
            if ((rc = gqcu_mat_ggml(MAT_F32, (int)shape[j][0], (int)shape[j][1], NULL, &c->W.w[j], err, cap))) goto out;
        CHECK(blk_buf_alloc(&c->b, &c->sh, S));
        CHECK(cudaMalloc(&c->y, sizeof(float) * S * dim));
        CHECK(cudaMalloc(&c->xd, sizeof(double) * S * n_in));
        CHECK(cudaMalloc(&c->H, sizeof(double) * n_in * n_in));
        CHECK(cudaMalloc(&c->bad, sizeof(int)));
    }
    *out = c;
    return 0;
out:
    gqcu_calib_free(c);
    return rc;
}

// Biases: allocated on first use (a model has all three or none).
static cudaError_t set_bias(float **d, const float *h, size_t n) {
    if (!h) {
        cudaFree(*d);
        *d = NULL;
        return cudaSuccess;
    }
    cudaError_t e = *d ? cudaSuccess : cudaMalloc((void **)d, sizeof(float) * n);
    return e == cudaSuccess ? cudaMemcpy(*d, h, sizeof(float) * n, cudaMemcpyHostToDevice) : e;
}

extern "C" int gqcu_calib_block(struct gqcu_calib *c, const struct gqcu_calib_block *B, char *err, size_t cap) {
    int rc = 0;
    const size_t q_dim = (size_t)c->sh.n_heads * c->sh.head_dim, kv = (size_t)c->sh.n_kv_heads * c->sh.head_dim;
    const float *w[7] = {B->wq, B->wk, B->wv, B->wo, B->w_gate, B->w_up, B->w_down};
    CHECK(cudaMemcpy(c->W.attn_norm, B->attn_norm, sizeof(float) * c->sh.dim, cudaMemcpyHostToDevice));
    CHECK(cudaMemcpy(c->W.ffn_norm, B->ffn_norm, sizeof(float) * c->sh.dim, cudaMemcpyHostToDevice));
    CHECK(set_bias(&c->W.bq, B->bq, q_dim));
    CHECK(set_bias(&c->W.bk, B->bk, kv));
    CHECK(set_bias(&c->W.bv, B->bv, kv));
    for (int j = 0; j < 7; j++) CHECK(cudaMemcpy(c->W.w[j]->raw, w[j], c->W.w[j]->bytes, cudaMemcpyHostToDevice));
out:
    return rc;
}

__global__ void flag_nonfinite(const float *x, int64_t n, int *bad) {
    const int64_t t = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (t < n && !isfinite(x[t])) atomicOr(bad, 1);
}

// xd (n, n_in) = x as double, each token t scaled as on_capture does: by
// sqrt(dim / ‖resid_t + y_t‖²) (float, when y is given), then token 0 by
// sqrt(sink) (float, when sink != 1). One block per token.
__global__ void capture_rows(const float *x, int n_in, const float *resid, const float *y, int dim, float sink,
                             double *xd) {
    __shared__ double red[256];
    const int t = blockIdx.x;
    float w = 1.0f;
    if (y) {
        double ss = 0;
        for (int j = threadIdx.x; j < dim; j += blockDim.x) {
            const double h = (double)resid[(size_t)t * dim + j] + y[(size_t)t * dim + j];
            ss += h * h;
        }
        red[threadIdx.x] = ss;
        __syncthreads();
        for (int h = blockDim.x / 2; h > 0; h >>= 1) {
            if ((int)threadIdx.x < h) red[threadIdx.x] += red[threadIdx.x + h];
            __syncthreads();
        }
        w = red[0] > 0 ? (float)sqrt(dim / red[0]) : 1.0f;
    }
    for (int j = threadIdx.x; j < n_in; j += blockDim.x) {
        float v = x[(size_t)t * n_in + j];
        if (y) v = v * w;
        if (t == 0 && sink != 1.0f) v *= sqrtf(sink);
        xd[(size_t)t * n_in + j] = v;
    }
}

// The pass's capture (a blk_hooks callback): at the wanted input group, the
// non-finite check, token weights and H += xdᵀ xd.
static int calib_capture(void *u, int which, const float *buf, int n_in, const float *resid, char *err, size_t cap) {
    gqcu_calib *c = (gqcu_calib *)u;
    int rc = 0;
    const int S = c->seqlen;
    const double one = 1;
    const float *y = NULL;
    if (which != c->want) return 0;
    flag_nonfinite<<<blocks_for((int64_t)S * n_in, 256), 256>>>(buf, (int64_t)S * n_in, c->bad);
    CHECK(cudaGetLastError());
    if (c->resid_w) { // through o or down: (dim, n_in), FP32 as the CPU's sgemm
        if ((rc = cu_matmul(c->W.w[c->resid_w == 1 ? 3 : 6], buf, c->y, S, NULL, 0, false, err, cap))) goto out;
        y = c->y;
    }
    capture_rows<<<S, 256>>>(buf, n_in, resid, y, c->sh.dim, c->sink, c->xd);
    CHECK(cudaGetLastError());
    // column-major: xdᵀ is (n_in, S); Hᵀ += xdᵀ xd, lower (= row-major upper, as the CPU's H)
    CHECK(cublasDsyrk(g_blas, CUBLAS_FILL_MODE_LOWER, CUBLAS_OP_N, n_in, S, &one, c->xd, n_in, &one, c->H, n_in));
out:
    return rc;
}

extern "C" int gqcu_calib_pass(struct gqcu_calib *c, int start_at, int stop_after, int in_place, int want,
                               int resid_w, float sink, double *H, int *bad_window, char *err, size_t cap) {
    int rc = 0, bad = 0;
    const size_t per = (size_t)c->seqlen * c->sh.dim;
    const int n_in = want == IN_ATTN_OUT ? c->sh.n_heads * c->sh.head_dim : want == IN_FFN_DOWN ? c->sh.hidden_dim : c->sh.dim;
    const blk_hooks hk = {start_at, stop_after, calib_capture, c};
    c->want = want, c->resid_w = resid_w, c->sink = sink;
    *bad_window = -1;
    // the device keeps no activations between passes: a pass starts at the block or the FFN input
    if (start_at != IN_ATTN && start_at != IN_FFN)
        return fail(err, cap, "gqcu_calib_pass", "a pass starts at the block or the FFN input");
    if (want >= 0) CHECK(cudaMemset(c->H, 0, sizeof(double) * n_in * n_in));
    CHECK(cudaMemset(c->bad, 0, sizeof(int)));
    for (int i = 0; i < c->ns; i++) {
        float *x = c->X + i * per;
        if (!in_place) {
            CHECK(cudaMemcpy(c->tmp, x, sizeof(float) * per, cudaMemcpyDeviceToDevice));
            x = c->tmp;
        }
        if ((rc = block_run(&c->sh, &c->W, x, c->seqlen, 0, NULL, NULL, &c->b, NULL, 0, false, &hk, err, cap))) goto out;
        if (stop_after < 0) { // the block's output: checked per window, as finish_block
            flag_nonfinite<<<blocks_for((int64_t)per, 256), 256>>>(x, (int64_t)per, c->bad);
            CHECK(cudaGetLastError());
            CHECK(cudaMemcpy(&bad, c->bad, sizeof(int), cudaMemcpyDeviceToHost));
            if (bad) {
                *bad_window = i;
                fail(err, cap, "gqcu_calib_pass", "non-finite block output");
                return -2;
            }
        }
    }
    CHECK(cudaMemcpy(&bad, c->bad, sizeof(int), cudaMemcpyDeviceToHost));
    if (bad) {
        fail(err, cap, "gqcu_calib_pass", "non-finite calibration activation");
        return -2;
    }
    if (want >= 0 && H) CHECK(cudaMemcpy(H, c->H, sizeof(double) * n_in * n_in, cudaMemcpyDeviceToHost));
out:
    return rc;
}
