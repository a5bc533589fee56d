// cu_mat.cu - compressed matrices for inference on the device: GEMV kernels,
// decode to f32 and the prefill GEMM.
#include "cu_common.cuh"

// ---------------------------------------------------------------------------
// Inference: compressed matrices kept on the device (gqcu_mat_*) and the
// decoder forward (gqcu_lm_*). One token (decode) runs GEMV kernels: one warp
// per row, lanes over consecutive vectors / blocks (coalesced index and block
// loads), a warp-shuffle sum. Several tokens (prefill) decode row tiles of W
// to f32 and multiply with a TF32 tensor-core GEMM (cuBLAS).

__device__ __forceinline__ float warp_sum(float a) {
    for (int o = 16; o > 0; o >>= 1) a += __shfl_down_sync(0xffffffffu, a, o);
    return a;
}

// GGML blocks of 32 values, an fp16 scale d first. dot: Σ_j w_j x_j of one
// block; get: w_j.
struct BlkQ4_0 { // d, 16 bytes: w_j = d·(q_j − 8), q_j the low nibble of byte j (j < 16), else the high one of j − 16
    static constexpr int bytes = 18;
    __device__ static float dot(const uint8_t *b, const float *x) {
        float s = 0;
        for (int j = 0; j < 16; j++) s += (float)((b[2 + j] & 15) - 8) * x[j] + (float)((b[2 + j] >> 4) - 8) * x[j + 16];
        return __half2float(*(const __half *)b) * s;
    }
    __device__ static float get(const uint8_t *b, int j) {
        const int q = j < 16 ? (b[2 + j] & 15) : (b[2 + j - 16] >> 4);
        return __half2float(*(const __half *)b) * (float)(q - 8);
    }
};
struct BlkQ4_1 { // d, m, 16 bytes: w_j = d·q_j + m
    static constexpr int bytes = 20;
    __device__ static float dot(const uint8_t *b, const float *x) {
        float s = 0, sx = 0;
        for (int j = 0; j < 16; j++) {
            s += (float)(b[4 + j] & 15) * x[j] + (float)(b[4 + j] >> 4) * x[j + 16];
            sx += x[j] + x[j + 16];
        }
        return __half2float(*(const __half *)b) * s + __half2float(*(const __half *)(b + 2)) * sx;
    }
    __device__ static float get(const uint8_t *b, int j) {
        const int q = j < 16 ? (b[4 + j] & 15) : (b[4 + j - 16] >> 4);
        return (float)q * __half2float(*(const __half *)b) + __half2float(*(const __half *)(b + 2));
    }
};
struct BlkQ8_0 { // d, 32 int8: w_j = d·q_j
    static constexpr int bytes = 34;
    __device__ static float dot(const uint8_t *b, const float *x) {
        float s = 0;
        for (int j = 0; j < 32; j++) s += (float)(int8_t)b[2 + j] * x[j];
        return __half2float(*(const __half *)b) * s;
    }
    __device__ static float get(const uint8_t *b, int j) {
        return __half2float(*(const __half *)b) * (float)(int8_t)b[2 + j];
    }
};

// The row of this warp (8 warps per block), or -1 past the end.
__device__ __forceinline__ int warp_row(int rows) {
    const int row = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    return row < rows ? row : -1;
}

template <typename B> __global__ void blk_gemv(const gqcu_mat m, const float *x, float *y) {
    const int lane = threadIdx.x & 31, row = warp_row(m.rows);
    if (row < 0) return;
    const int nb = m.cols / 32;
    const uint8_t *r = m.raw + (size_t)row * nb * B::bytes;
    float acc = 0;
    for (int b = lane; b < nb; b += 32) acc += B::dot(r + (size_t)b * B::bytes, x + (size_t)b * 32);
    acc = warp_sum(acc);
    if (!lane) y[row] = acc;
}

__global__ void f16_gemv(const gqcu_mat m, const float *x, float *y) {
    const int lane = threadIdx.x & 31, row = warp_row(m.rows);
    if (row < 0) return;
    const __half *r = (const __half *)(m.raw + (size_t)row * m.cols * 2);
    float acc = 0;
    if (m.cols % 2 == 0) { // rows 4-byte aligned: pairs
        const __half2 *r2 = (const __half2 *)r;
        for (int c = lane; c < m.cols / 2; c += 32) {
            float2 w = __half22float2(r2[c]);
            acc += w.x * x[2 * c] + w.y * x[2 * c + 1];
        }
    } else
        for (int c = lane; c < m.cols; c += 32) acc += __half2float(r[c]) * x[c];
    acc = warp_sum(acc);
    if (!lane) y[row] = acc;
}

__global__ void f32_gemv(const gqcu_mat m, const float *x, float *y) {
    const int lane = threadIdx.x & 31, row = warp_row(m.rows);
    if (row < 0) return;
    const float *r = (const float *)m.raw + (size_t)row * m.cols;
    float acc = 0;
    for (int c = lane; c < m.cols; c += 32) acc += r[c] * x[c];
    acc = warp_sum(acc);
    if (!lane) y[row] = acc;
}

__global__ void permute_x(const float *x, const int32_t *perm, int n, float *xp) {
    int p = blockIdx.x * blockDim.x + threadIdx.x;
    if (p < n) xp[p] = x[perm ? perm[p] : p];
}

// Codebook entry c of vector v's group in stage s for a row of tile rt.
__device__ __forceinline__ const float *vq_centroid(const gqcu_mat &m, int s, int rt, int v, uint32_t c, int d) {
    return m.cb + (((size_t)s * m.n_rt + rt) * m.n_ct + m.vec_ct[v]) * m.k * d + (size_t)c * d;
}

template <int D> __global__ void vq_gemv(const gqcu_mat m, const float *xp, float *y) {
    const int lane = threadIdx.x & 31, row = warp_row(m.rows);
    if (row < 0) return;
    const int d = D > 0 ? D : m.d, rt = m.row_rt[row];
    float acc = 0;
    for (int s = 0; s < m.stages; s++) {
        const int64_t base = ((int64_t)s * m.rows + row) * m.nv;
        for (int v = lane; v < m.nv; v += 32) {
            const float *cv = vq_centroid(m, s, rt, v, gq_bits_get(m.idx, base + v, m.lk), d);
            const float *xv = xp + m.n_out + (size_t)v * d;
            for (int j = 0; j < d; j++) acc += cv[j] * xv[j];
        }
    }
    for (int p = lane; p < m.n_out; p += 32) acc += m.outl[(size_t)row * m.n_out + p] * xp[p];
    acc = warp_sum(acc);
    if (!lane) y[row] = acc;
}

// Variant 1 ("several rows per warp, codebooks in shared memory"): a block
// takes a chunk of up to 16 rows of one row tile, loads that tile's
// codebooks (every column tile and stage) into shared memory, and each of its
// 8 warps handles every 8th row of the chunk.
#define GEMV_WARPS 8
#define GEMV_CHUNK 16

template <int D> __global__ void vq_gemv_smem(const gqcu_mat m, const float *xp, float *y) {
    extern __shared__ float scb[];
    const int4 ch = m.chunks[blockIdx.x];
    const int d = D > 0 ? D : m.d, per_rt = m.n_ct * m.k * d;
    for (int s = 0; s < m.stages; s++)
        for (int i = threadIdx.x; i < per_rt; i += blockDim.x)
            scb[s * per_rt + i] = m.cb[((size_t)s * m.n_rt + ch.z) * per_rt + i];
    __syncthreads();
    const int lane = threadIdx.x & 31;
    for (int j = threadIdx.x >> 5; j < ch.y; j += GEMV_WARPS) {
        const int row = ch.x + j;
        float acc = 0;
        for (int s = 0; s < m.stages; s++) {
            const int64_t base = ((int64_t)s * m.rows + row) * m.nv;
            const float *cbs = scb + s * per_rt;
            for (int v = lane; v < m.nv; v += 32) {
                const float *cv = cbs + ((size_t)m.vec_ct[v] * m.k + gq_bits_get(m.idx, base + v, m.lk)) * d;
                const float *xv = xp + m.n_out + (size_t)v * d;
                for (int q = 0; q < d; q++) acc += cv[q] * xv[q];
            }
        }
        for (int p = lane; p < m.n_out; p += 32) acc += m.outl[(size_t)row * m.n_out + p] * xp[p];
        acc = warp_sum(acc);
        if (!lane) y[row] = acc;
    }
}

// Decode to f32: rows r0..r0+nr-1 of W into out (nr, cols), original column order.
template <typename B> __global__ void blk_decode(const gqcu_mat m, int r0, int nr, float *out) {
    const int64_t t = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (t >= (int64_t)nr * m.cols) return;
    const int r = (int)(t / m.cols), c = (int)(t % m.cols);
    out[t] = B::get(m.raw + ((size_t)(r0 + r) * (m.cols / 32) + c / 32) * B::bytes, c % 32);
}
__global__ void f16_decode(const gqcu_mat m, int r0, int nr, float *out) {
    const int64_t t = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (t < (int64_t)nr * m.cols) out[t] = __half2float(((const __half *)m.raw)[(size_t)r0 * m.cols + t]);
}
// One thread per (row, vector or outlier column): c0 (+ c1), as the CPU decode.
__global__ void vq_decode(const gqcu_mat m, int r0, int nr, float *out) {
    const int per_row = m.n_out + m.nv;
    const int64_t t = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (t >= (int64_t)nr * per_row) return;
    const int r = (int)(t / per_row), e = (int)(t % per_row), row = r0 + r, d = m.d;
    float *o = out + (size_t)r * m.cols;
    if (e < m.n_out) {
        o[m.perm ? m.perm[e] : e] = m.outl[(size_t)row * m.n_out + e];
        return;
    }
    const int v = e - m.n_out, rt = m.row_rt[row];
    float q[VQ_MAX_DIM];
    for (int s = 0; s < m.stages; s++) {
        const float *cv = vq_centroid(m, s, rt, v, gq_bits_get(m.idx, ((int64_t)s * m.rows + row) * m.nv + v, m.lk), d);
        for (int j = 0; j < d; j++) q[j] = s ? q[j] + cv[j] : cv[j];
    }
    for (int j = 0; j < d; j++) {
        const int p = m.n_out + v * d + j;
        o[m.perm ? m.perm[p] : p] = q[j];
    }
}


// y = W x, x and y on the device.
static cudaError_t gemv(const gqcu_mat *m, const float *x, float *y) {
    const int WARPS = 8, tb = 32 * WARPS;
    const unsigned grid = blocks_for(m->rows, WARPS);
    switch (m->kind) {
    case MAT_F32: f32_gemv<<<grid, tb>>>(*m, x, y); break;
    case MAT_F16: f16_gemv<<<grid, tb>>>(*m, x, y); break;
    case MAT_Q4_0: blk_gemv<BlkQ4_0><<<grid, tb>>>(*m, x, y); break;
    case MAT_Q4_1: blk_gemv<BlkQ4_1><<<grid, tb>>>(*m, x, y); break;
    case MAT_Q8_0: blk_gemv<BlkQ8_0><<<grid, tb>>>(*m, x, y); break;
    default: {
        const float *xp = x;
        if (m->perm) {
            permute_x<<<blocks_for(m->cols, 256), 256>>>(x, m->perm, m->cols, m->xp);
            xp = m->xp;
        }
        if (m->variant == 1) {
            const unsigned g1 = (unsigned)m->n_chunks, t1 = 32 * GEMV_WARPS;
            switch (m->d) {
            case 1: vq_gemv_smem<1><<<g1, t1, m->smem>>>(*m, xp, y); break;
            case 2: vq_gemv_smem<2><<<g1, t1, m->smem>>>(*m, xp, y); break;
            case 4: vq_gemv_smem<4><<<g1, t1, m->smem>>>(*m, xp, y); break;
            default: vq_gemv_smem<0><<<g1, t1, m->smem>>>(*m, xp, y); break;
            }
        } else
            switch (m->d) {
            case 1: vq_gemv<1><<<grid, tb>>>(*m, xp, y); break;
            case 2: vq_gemv<2><<<grid, tb>>>(*m, xp, y); break;
            case 4: vq_gemv<4><<<grid, tb>>>(*m, xp, y); break;
            default: vq_gemv<0><<<grid, tb>>>(*m, xp, y); break;
            }
    }
    }
    return cudaGetLastError();
}

// Rows r0..r0+nr-1 of W as f32 (nr, cols) in out (not for F32 matrices).
static cudaError_t decode(const gqcu_mat *m, int r0, int nr, float *out) {
    const int tb = 256;
    const int64_t n = (int64_t)nr * (m->kind == MAT_VQ ? m->n_out + m->nv : m->cols);
    switch (m->kind) {
    case MAT_F16: f16_decode<<<blocks_for(n, tb), tb>>>(*m, r0, nr, out); break;
    case MAT_Q4_0: blk_decode<BlkQ4_0><<<blocks_for(n, tb), tb>>>(*m, r0, nr, out); break;
    case MAT_Q4_1: blk_decode<BlkQ4_1><<<blocks_for(n, tb), tb>>>(*m, r0, nr, out); break;
    case MAT_Q8_0: blk_decode<BlkQ8_0><<<blocks_for(n, tb), tb>>>(*m, r0, nr, out); break;
    default: vq_decode<<<blocks_for(n, tb), tb>>>(*m, r0, nr, out); break;
    }
    return cudaGetLastError();
}

// Y (n, rows) = X (n, cols) · Wᵀ on the device: the GEMV for one token, else
// W in row tiles of at most tile_floats values decoded to f32 (F32 matrices
// are used as they are, without a tile) and a GEMM per tile, on tensor cores
// in TF32 or in FP32: column-major, the tile is Wᵀ (cols, nr) and X is Xᵀ
// (cols, n), so Y's rows r0.. are op(tile)ᵀ·Xᵀ.
int cu_matmul(const gqcu_mat *m, const float *X, float *Y, int n, float *tile, size_t tile_floats, bool tf32,
                  char *err, size_t cap) {
    int rc = 0;
    const float one = 1, zero = 0;
    if (n == 1) {
        CHECK(gemv(m, X, Y));
        return 0;
    }
    {
        const size_t per = tile_floats / (size_t)m->cols;
        const int R = m->kind == MAT_F32 ? m->rows : (int)(per < (size_t)m->rows ? (per ? per : 1) : m->rows);
        for (int r0 = 0; r0 < m->rows; r0 += R) {
            const int nr = m->rows - r0 < R ? m->rows - r0 : R;
            const float *A = tile;
            if (m->kind == MAT_F32) A = (const float *)m->raw + (size_t)r0 * m->cols;
            else CHECK(decode(m, r0, nr, tile));
            CHECK(cublasGemmEx(g_blas, CUBLAS_OP_T, CUBLAS_OP_N, nr, n, m->cols, &one, A, CUDA_R_32F, m->cols, X,
                               CUDA_R_32F, m->cols, &zero, Y + r0, CUDA_R_32F, m->rows,
                               tf32 ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
        }
    }
out:
    return rc;
}

extern "C" void gqcu_mat_free(struct gqcu_mat *m) {
    if (!m) return;
    cudaFree(m->idx), cudaFree(m->cb), cudaFree(m->outl), cudaFree(m->vec_ct), cudaFree(m->row_rt), cudaFree(m->perm);
    cudaFree(m->raw), cudaFree(m->x), cudaFree(m->xp), cudaFree(m->y), cudaFree(m->chunks);
    free(m);
}

// Variant 1 needs one row tile's codebooks in shared memory (up to the
// device's opt-in limit per block).
// The limit is the kernels', not a matrix's: it only ever grows, so a
// matrix that needed more keeps working after a smaller one is made.
static size_t g_smem_granted = 48 * 1024;
static cudaError_t smem_allow(size_t bytes, bool *fits) {
    int optin = 0;
    cudaError_t e = cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, 0);
    *fits = e == cudaSuccess && bytes <= (size_t)optin;
    if (!*fits || bytes <= g_smem_granted) return e;
    const int b = (int)bytes;
    if ((e = cudaFuncSetAttribute(vq_gemv_smem<1>, cudaFuncAttributeMaxDynamicSharedMemorySize, b)) != cudaSuccess ||
        (e = cudaFuncSetAttribute(vq_gemv_smem<2>, cudaFuncAttributeMaxDynamicSharedMemorySize, b)) != cudaSuccess ||
        (e = cudaFuncSetAttribute(vq_gemv_smem<4>, cudaFuncAttributeMaxDynamicSharedMemorySize, b)) != cudaSuccess ||
        (e = cudaFuncSetAttribute(vq_gemv_smem<0>, cudaFuncAttributeMaxDynamicSharedMemorySize, b)) != cudaSuccess)
        return e;
    g_smem_granted = bytes; // all four granted
    return cudaSuccess;
}

// 0: the kernel with codebooks read through L1 (a warp per row), 1: shared
// memory (several rows per warp); -1 when the matrix cannot take variant 1.
extern "C" int gqcu_mat_set_variant(struct gqcu_mat *m, int variant, char *err, size_t cap) {
    int rc = 0;
    bool fits = false;
    if (variant == 0 || m->kind != MAT_VQ) {
        m->variant = 0;
        return variant == 0 ? 0 : fail(err, cap, "gqcu_mat_set_variant", "not a VQ matrix");
    }
    CHECK(smem_allow(m->smem, &fits));
    if (!fits || !m->chunks) return fail(err, cap, "gqcu_mat_set_variant", "codebooks too large for shared memory");
    m->variant = variant;
out:
    return rc;
}

extern "C" int gqcu_mat_vq(const struct gqcu_vq_desc *D, struct gqcu_mat **out, char *err, size_t cap) {
    int rc = 0;
    gqcu_mat *m = (gqcu_mat *)calloc(1, sizeof *m);
    *out = NULL;
    if (!m) return fail(err, cap, "gqcu_mat_vq", "out of memory");
    if (D->d < 1 || D->d > VQ_MAX_DIM) {
        free(m);
        return fail(err, cap, "gqcu_mat_vq", "vector dimension out of range");
    }
    m->kind = MAT_VQ, m->rows = D->rows, m->cols = D->cols, m->d = D->d, m->k = D->k, m->lk = D->lk;
    m->stages = D->stages, m->n_out = D->n_out, m->nv = D->nv, m->n_ct = D->n_ct, m->n_rt = D->n_rt;
    m->bytes = D->bytes;
    // + 8 zero bytes: the bit reader may touch bytes past the last index
    CHECK(cudaMalloc(&m->idx, D->idx_bytes + 8));
    CHECK(cudaMemset(m->idx, 0, D->idx_bytes + 8));
    CHECK(cudaMemcpy(m->idx, D->idx, D->idx_bytes, cudaMemcpyHostToDevice));
    CHECK(upload(&m->cb, D->cb, (size_t)D->stages * D->n_rt * D->n_ct * D->k * D->d));
    CHECK(upload(&m->outl, D->outl, D->outl ? (size_t)D->rows * D->n_out : 0));
    CHECK(upload(&m->vec_ct, D->vec_ct, (size_t)D->nv));
    CHECK(upload(&m->row_rt, D->row_rt, (size_t)D->rows));
    if (D->perm) CHECK(upload(&m->perm, D->perm, (size_t)D->cols));
    CHECK(cudaMalloc(&m->x, sizeof(float) * D->cols));
    CHECK(cudaMalloc(&m->xp, sizeof(float) * D->cols));
    CHECK(cudaMalloc(&m->y, sizeof(float) * D->rows));
    {
        // chunks of up to GEMV_CHUNK consecutive rows of one row tile
        std::vector<int4> ch;
        for (int r = 0; r < D->rows; r++)
            if (!ch.size() || ch.back().z != D->row_rt[r] || ch.back().y == GEMV_CHUNK) ch.push_back(make_int4(r, 1, D->row_rt[r], 0));
            else ch.back().y++;
        m->n_chunks = (int)ch.size();
        m->smem = sizeof(float) * (size_t)D->stages * D->n_ct * D->k * D->d;
        CHECK(upload(&m->chunks, ch.data(), ch.size()));
        const char *v = getenv("GPTVQ_CUDA_GEMV"); // "smem": variant 1 where it fits
        bool fits = false;
        if (v && !strcmp(v, "smem") && smem_allow(m->smem, &fits) == cudaSuccess && fits) m->variant = 1;
    }
    *out = m;
    return 0;
out:
    gqcu_mat_free(m);
    return rc;
}

extern "C" int gqcu_mat_ggml(int type, int rows, int cols, const void *data, struct gqcu_mat **out, char *err,
                             size_t cap) {
    int rc = 0, blk = 0;
    switch (type) {
    case MAT_Q4_0: blk = BlkQ4_0::bytes; break;
    case MAT_Q4_1: blk = BlkQ4_1::bytes; break;
    case MAT_Q8_0: blk = BlkQ8_0::bytes; break;
    case MAT_F32: case MAT_F16: break;
    default: return fail(err, cap, "gqcu_mat_ggml", "GGML type without a CUDA kernel");
    }
    *out = NULL;
    if (blk && cols % 32) return fail(err, cap, "gqcu_mat_ggml", "block type with rows that are not whole blocks");
    gqcu_mat *m = (gqcu_mat *)calloc(1, sizeof *m);
    if (!m) return fail(err, cap, "gqcu_mat_ggml", "out of memory");
    m->kind = type, m->rows = rows, m->cols = cols;
    m->bytes = (size_t)rows * (blk ? (size_t)(cols / 32) * blk : (size_t)cols * (type == MAT_F32 ? 4 : 2));
    if (data) CHECK(upload(&m->raw, (const uint8_t *)data, m->bytes));
    else CHECK(cudaMalloc(&m->raw, m->bytes)); // filled later (the calibration's block weights)
    CHECK(cudaMalloc(&m->x, sizeof(float) * cols));
    CHECK(cudaMalloc(&m->y, sizeof(float) * rows));
    *out = m;
    return 0;
out:
    gqcu_mat_free(m);
    return rc;
}

extern "C" int gqcu_mat_gemv(struct gqcu_mat *m, const float *x, float *y, char *err, size_t cap) {
    int rc = 0;
    CHECK(cudaMemcpy(m->x, x, sizeof(float) * m->cols, cudaMemcpyHostToDevice));
    CHECK(gemv(m, m->x, m->y));
    CHECK(cudaMemcpy(y, m->y, sizeof(float) * m->rows, cudaMemcpyDeviceToHost));
out:
    return rc;
}

// Y (n, rows) = X (n, cols) · Wᵀ through the prefill path (decode to tiles of
// at most tile_floats values + TF32 GEMM), host X and Y: for the tests.
extern "C" int gqcu_mat_gemm(struct gqcu_mat *m, int n, const float *X, float *Y, size_t tile_floats, char *err,
                             size_t cap) {
    int rc = 0;
    float *dX = NULL, *dY = NULL, *tile = NULL;
    CHECK(upload(&dX, X, (size_t)n * m->cols));
    CHECK(cudaMalloc(&dY, sizeof(float) * n * m->rows));
    CHECK(cudaMalloc(&tile, sizeof(float) * (tile_floats > (size_t)m->cols ? tile_floats : (size_t)m->cols)));
    rc = cu_matmul(m, dX, dY, n, tile, tile_floats, true, err, cap);
    if (rc) goto out;
    CHECK(cudaMemcpy(Y, dY, sizeof(float) * n * m->rows, cudaMemcpyDeviceToHost));
out:
    cudaFree(dX), cudaFree(dY), cudaFree(tile);
    return rc;
}

// Seconds per GEMV (device-resident x and y, `iters` back-to-back launches
// after a warm-up, CUDA events), the matrix's stored bytes, and the device's
// peak memory bandwidth from its clock and bus width (GB/s, 0 if unknown).
extern "C" int gqcu_mat_bench(struct gqcu_mat *m, int iters, double *seconds, size_t *bytes, double *peak_gbs,
                              char *err, size_t cap) {
    int rc = 0, clk = 0, bus = 0;
    cudaEvent_t a = NULL, b = NULL;
    float ms = 0;
    CHECK(cudaMemset(m->x, 0, sizeof(float) * m->cols));
    for (int i = 0; i < 3; i++) CHECK(gemv(m, m->x, m->y));
    CHECK(cudaEventCreate(&a));
    CHECK(cudaEventCreate(&b));
    CHECK(cudaEventRecord(a));
    for (int i = 0; i < iters; i++) CHECK(gemv(m, m->x, m->y));
    CHECK(cudaEventRecord(b));
    CHECK(cudaEventSynchronize(b));
    CHECK(cudaEventElapsedTime(&ms, a, b));
    *seconds = ms / 1e3 / iters;
    *bytes = m->bytes;
    *peak_gbs = 0;
    if (cudaDeviceGetAttribute(&clk, cudaDevAttrMemoryClockRate, 0) == cudaSuccess &&
        cudaDeviceGetAttribute(&bus, cudaDevAttrGlobalMemoryBusWidth, 0) == cudaSuccess)
        *peak_gbs = 2.0 * clk * 1e3 * (bus / 8.0) / 1e9; // DDR: two transfers per clock
out:
    if (a) cudaEventDestroy(a);
    if (b) cudaEventDestroy(b);
    return rc;
}
