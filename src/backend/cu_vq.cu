// cu_vq.cu - the VQ primitives on the device: assignment, M-step, batched EM of
// small groups, the codebook update's normal equations (contracts:
// backend/vqprim.h).
#include "cu_common.cuh"

// ---------------------------------------------------------------------------
// VQ. Points x (n, d), slot s = i / per_slot with metric M_s (d, d), per-point
// weights s2 (or none), codebook C (k, d). Same formulas as cpu.c.

// P (n_slots, k, d) = M_s c_m, nrm (n_slots, k) = c_mᵀ M_s c_m.
__global__ void vq_precompute(const double *metric, int diag, int d, const double *C, int k, int n_slots, double *P,
                              double *nrm) {
    int64_t t = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (t >= (int64_t)n_slots * k) return;
    int s = (int)(t / k), m = (int)(t % k);
    nrm[t] = gq_vq_project(metric + (size_t)s * d * d, diag, d, C + (size_t)m * d, P + (size_t)t * d);
}

// argmin_m nrm[m] − 2 xᵀP_m, lowest m on ties, NaN never wins (all NaN: 0),
// as cpu.c's nearest_impl.
__device__ static int nearest(const double *x, int d, const double *P, const double *nrm, int k) {
    double best = INFINITY;
    int bm = 0;
    for (int m = 0; m < k; m++) {
        double dot = 0;
        for (int a = 0; a < d; a++) dot += x[a] * P[(size_t)m * d + a];
        const double e = nrm[m] - 2 * dot;
        if (e < best) best = e, bm = m;
    }
    return bm;
}

// One thread per point: argmin_m nrm[m] − 2 xᵀP_m (lowest m on ties), its
// weighted distance, and one partial sum of the objective per thread block.
__global__ void vq_assign_k(const double *x, const double *s2, const double *metric, int diag, int d, int per_slot,
                            int64_t n, const double *C, int k, const double *P, const double *nrm, int32_t *idx,
                            double *dist, double *part) {
    extern __shared__ double red[];
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    double v = 0;
    if (i < n) {
        int s = (int)(i / per_slot);
        const double *xi = x + (size_t)i * d, *Ps = P + (size_t)s * k * d, *ns = nrm + (size_t)s * k;
        double xr[VQ_MAX_DIM];
        for (int a = 0; a < d; a++) xr[a] = xi[a];
        const int bm = nearest(xr, d, Ps, ns, k);
        idx[i] = bm;
        v = gq_vq_qform(metric + (size_t)s * d * d, diag, d, xr, C + (size_t)bm * d) * (s2 ? s2[i] : 1.0);
        if (dist) dist[i] = v;
    }
    red[threadIdx.x] = v;
    __syncthreads();
    for (int h = blockDim.x / 2; h > 0; h >>= 1) {
        if ((int)threadIdx.x < h) red[threadIdx.x] += red[threadIdx.x + h];
        __syncthreads();
    }
    if (threadIdx.x == 0) part[blockIdx.x] = red[0];
}

extern "C" int gqcu_vq_assign(int d, int n_slots, int per_slot, const double *x, const double *s2,
                              const double *metric, int diag, const double *C, int k, int32_t *idx, double *dist,
                              double *objective, char *err, size_t cap) {
    int rc = 0;
    const int64_t n = (int64_t)n_slots * per_slot;
    const int TB = 256;
    const int64_t nb = (n + TB - 1) / TB;
    double *dx = NULL, *ds2 = NULL, *dM = NULL, *dC = NULL, *dP = NULL, *dn = NULL, *ddist = NULL, *dpart = NULL;
    int32_t *didx = NULL;
    std::vector<double> part((size_t)(nb > 0 ? nb : 1));
    *objective = 0;
    if (n <= 0) return 0;
    CHECK(upload(&dx, x, (size_t)n * d));
    if (s2) CHECK(upload(&ds2, s2, (size_t)n));
    CHECK(upload(&dM, metric, (size_t)n_slots * d * d));
    CHECK(upload(&dC, C, (size_t)k * d));
    CHECK(cudaMalloc(&dP, sizeof(double) * n_slots * k * d));
    CHECK(cudaMalloc(&dn, sizeof(double) * n_slots * k));
    CHECK(cudaMalloc(&didx, sizeof(int32_t) * n));
    if (dist) CHECK(cudaMalloc(&ddist, sizeof(double) * n));
    CHECK(cudaMalloc(&dpart, sizeof(double) * nb));
    vq_precompute<<<(unsigned)(((int64_t)n_slots * k + TB - 1) / TB), TB>>>(dM, diag, d, dC, k, n_slots, dP, dn);
    CHECK(cudaGetLastError());
    vq_assign_k<<<(unsigned)nb, TB, TB * sizeof(double)>>>(dx, ds2, dM, diag, d, per_slot, n, dC, k, dP, dn, didx,
                                                            ddist, dpart);
    CHECK(cudaGetLastError());
    CHECK(cudaMemcpy(idx, didx, sizeof(int32_t) * n, cudaMemcpyDeviceToHost));
    if (dist) CHECK(cudaMemcpy(dist, ddist, sizeof(double) * n, cudaMemcpyDeviceToHost));
    CHECK(cudaMemcpy(part.data(), dpart, sizeof(double) * nb, cudaMemcpyDeviceToHost));
    for (int64_t b = 0; b < nb; b++) *objective += part[(size_t)b]; // fixed order: same sum on every run
out:
    cudaFree(dx), cudaFree(ds2), cudaFree(dM), cudaFree(dC), cudaFree(dP), cudaFree(dn), cudaFree(didx);
    cudaFree(ddist), cudaFree(dpart);
    return rc;
}

// M-step, deterministic (no floating-point atomics: the same centroids on
// every run, so a resumed run can match an uninterrupted one): the points are
// sorted by centroid with a stable radix sort, so each centroid's points are in
// index order and its anchor (cpu.c: the first point) leads its list; then one
// warp per centroid sums A_m = Σ w M and b_m = Σ w M (x − x_anchor) over its
// list, lanes striding it and a shuffle tree at the end (a fixed order).
__global__ void mstep_iota(int32_t *v, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) v[i] = i;
}
__global__ void mstep_bounds(const uint32_t *key, int n, int *beg, int *end) {
    int p = blockIdx.x * blockDim.x + threadIdx.x;
    if (p >= n) return;
    if (p == 0 || key[p] != key[p - 1]) beg[key[p]] = p;
    if (p == n - 1 || key[p] != key[p + 1]) end[key[p]] = p + 1;
}
// One point's share of its centroid's normal equations: A += w M, b += w M
// (x − x_anchor) (diag: the diagonal of M only; A's other entries untouched).
__device__ static void mstep_add(double *A, double *b, const double *M, double w, const double *xi, const double *xr,
                                 int d, int diag) {
    double e[VQ_MAX_DIM];
    for (int a = 0; a < d; a++) e[a] = xi[a] - xr[a];
    for (int a = 0; a < d; a++) {
        if (diag) {
            A[a * d + a] += w * M[a * d + a];
            b[a] += w * M[a * d + a] * e[a];
        } else
            for (int c = 0; c < d; c++) {
                A[a * d + c] += w * M[a * d + c];
                b[a] += w * M[a * d + c] * e[c];
            }
    }
}
// A (d × d; diag: its diagonal) and b summed over the warp's lanes by a
// shuffle tree (a fixed order); every lane gets the sums.
__device__ static void warp_sum_ab(double *A, double *b, int d, int diag) {
    const int dd = d * d;
    for (int q = 0; q < dd + d; q++) {
        if (diag && q < dd && q / d != q % d) continue;
        double v = q < dd ? A[q] : b[q - dd];
        for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
        if (q < dd) A[q] = v;
        else b[q - dd] = v;
    }
}
__global__ void mstep_sum(const double *x, const double *s2, const double *metric, int diag, int d, int per_slot,
                          int k, const int *beg, const int *end, const int32_t *pts, double *A, double *b,
                          int *anchor) {
    const int m = (int)(((int64_t)blockIdx.x * blockDim.x + threadIdx.x) / 32), lane = threadIdx.x % 32;
    if (m >= k) return; // whole warps: blockDim is a multiple of 32
    const int p0 = beg[m], p1 = end[m], dd = d * d;
    if (p0 >= p1) {
        if (lane == 0) anchor[m] = -1;
        return;
    }
    const double *xr = x + (size_t)pts[p0] * d;
    double Aa[VQ_MAX_DIM * VQ_MAX_DIM], ba[VQ_MAX_DIM];
    for (int q = 0; q < dd; q++) Aa[q] = 0;
    for (int a = 0; a < d; a++) ba[a] = 0;
    for (int p = p0 + lane; p < p1; p += 32) {
        const int64_t i = pts[p];
        mstep_add(Aa, ba, metric + (size_t)(i / per_slot) * dd, s2 ? s2[i] : 1.0, x + (size_t)i * d, xr, d, diag);
    }
    warp_sum_ab(Aa, ba, d, diag);
    if (lane == 0) {
        for (int q = 0; q < dd; q++) A[(size_t)m * dd + q] = Aa[q];
        for (int a = 0; a < d; a++) b[(size_t)m * d + a] = ba[a];
        anchor[m] = pts[p0];
    }
}
// c = x_anchor + A⁻¹ b for a centroid with points (diag: per coordinate with
// A_aa > 0; full: Cholesky of the triangle LAPACKE_dposv(COL_MAJOR, 'U')
// reads in cpu.c, i.e. the row-major lower one; the old centroid kept when A is
// not positive definite or the solution is not finite, as there).
__device__ static void solve_centroid(const double *Am, const double *bm, const double *xr, int d, int diag,
                                      double *c) {
    if (diag) {
        for (int a = 0; a < d; a++)
            if (Am[a * d + a] > 0) c[a] = xr[a] + bm[a] / Am[a * d + a];
        return;
    }
    double L[VQ_MAX_DIM * VQ_MAX_DIM], y[VQ_MAX_DIM];
    for (int i = 0; i < d; i++)
        for (int j = 0; j <= i; j++) {
            double s = Am[i * d + j];
            for (int p = 0; p < j; p++) s -= L[i * d + p] * L[j * d + p];
            if (i == j) {
                if (!(s > 0)) return;
                L[i * d + i] = sqrt(s);
            } else
                L[i * d + j] = s / L[j * d + j];
        }
    for (int i = 0; i < d; i++) {
        double s = bm[i];
        for (int p = 0; p < i; p++) s -= L[i * d + p] * y[p];
        y[i] = s / L[i * d + i];
    }
    for (int i = d - 1; i >= 0; i--) {
        double s = y[i];
        for (int p = i + 1; p < d; p++) s -= L[p * d + i] * y[p];
        y[i] = s / L[i * d + i];
    }
    for (int a = 0; a < d; a++)
        if (!isfinite(y[a])) return;
    for (int a = 0; a < d; a++) c[a] = xr[a] + y[a];
}

__global__ void mstep_solve(const double *x, int d, int k, const int *anchor, int diag, const double *A,
                            const double *b, double *C, int *empty) {
    int m = blockIdx.x * blockDim.x + threadIdx.x;
    if (m >= k) return;
    if (anchor[m] < 0) {
        atomicAdd(empty, 1);
        return;
    }
    solve_centroid(A + (size_t)m * d * d, b + (size_t)m * d, x + (size_t)anchor[m] * d, d, diag, C + (size_t)m * d);
}

extern "C" int gqcu_vq_mstep(int d, int n_slots, int per_slot, const double *x, const double *s2,
                             const double *metric, int diag, const int32_t *idx, int k, double *C, int *empty,
                             char *err, size_t cap) {
    int rc = 0;
    const int64_t n = (int64_t)n_slots * per_slot;
    const int TB = 256;
    double *dx = NULL, *ds2 = NULL, *dM = NULL, *dC = NULL, *dA = NULL, *db = NULL;
    int32_t *didx = NULL, *dpts = NULL, *dpts_s = NULL;
    uint32_t *dkey_s = NULL;
    int *dbeg = NULL, *dend = NULL, *danchor = NULL, *dempty = NULL;
    void *tmp = NULL;
    size_t tmp_bytes = 0;
    int bits = 1;
    while ((1 << bits) < k) bits++;
    *empty = 0;
    if (n <= 0) {
        *empty = k;
        return 0;
    }
    if (n > 0x7fffffff) return fail(err, cap, "gqcu_vq_mstep", "more than 2^31 points");
    CHECK(upload(&dx, x, (size_t)n * d));
    if (s2) CHECK(upload(&ds2, s2, (size_t)n));
    CHECK(upload(&dM, metric, (size_t)n_slots * d * d));
    CHECK(upload(&dC, C, (size_t)k * d));
    CHECK(upload(&didx, idx, (size_t)n));
    CHECK(cudaMalloc(&dpts, sizeof(int32_t) * n));
    CHECK(cudaMalloc(&dpts_s, sizeof(int32_t) * n));
    CHECK(cudaMalloc(&dkey_s, sizeof(uint32_t) * n));
    CHECK(cudaMalloc(&dA, sizeof(double) * k * d * d));
    CHECK(cudaMalloc(&db, sizeof(double) * k * d));
    CHECK(cudaMalloc(&dbeg, sizeof(int) * k));
    CHECK(cudaMalloc(&dend, sizeof(int) * k));
    CHECK(cudaMalloc(&danchor, sizeof(int) * k));
    CHECK(cudaMalloc(&dempty, sizeof(int)));
    CHECK(cudaMemset(dbeg, 0, sizeof(int) * k));
    CHECK(cudaMemset(dend, 0, sizeof(int) * k));
    CHECK(cudaMemset(dempty, 0, sizeof(int)));
    mstep_iota<<<blocks_for(n, TB), TB>>>(dpts, (int)n);
    CHECK(cudaGetLastError());
    // indices are in [0, k): the low `bits` bits order them, unsigned
    CHECK(cub::DeviceRadixSort::SortPairs(NULL, tmp_bytes, (const uint32_t *)didx, dkey_s, dpts, dpts_s, (int)n, 0,
                                          bits));
    CHECK(cudaMalloc(&tmp, tmp_bytes ? tmp_bytes : 1));
    CHECK(cub::DeviceRadixSort::SortPairs(tmp, tmp_bytes, (const uint32_t *)didx, dkey_s, dpts, dpts_s, (int)n, 0,
                                          bits));
    mstep_bounds<<<blocks_for(n, TB), TB>>>(dkey_s, (int)n, dbeg, dend);
    CHECK(cudaGetLastError());
    mstep_sum<<<blocks_for((int64_t)k * 32, 128), 128>>>(dx, ds2, dM, diag, d, per_slot, k, dbeg, dend, dpts_s, dA, db,
                                                        danchor);
    CHECK(cudaGetLastError());
    mstep_solve<<<blocks_for(k, TB), TB>>>(dx, d, k, danchor, diag, dA, db, dC, dempty);
    CHECK(cudaGetLastError());
    CHECK(cudaMemcpy(C, dC, sizeof(double) * k * d, cudaMemcpyDeviceToHost));
    CHECK(cudaMemcpy(empty, dempty, sizeof(int), cudaMemcpyDeviceToHost));
out:
    cudaFree(dx), cudaFree(ds2), cudaFree(dM), cudaFree(dC), cudaFree(dA), cudaFree(db), cudaFree(didx);
    cudaFree(dpts), cudaFree(dpts_s), cudaFree(dkey_s), cudaFree(dbeg), cudaFree(dend), cudaFree(danchor);
    cudaFree(dempty), cudaFree(tmp);
    return rc;
}

// ---------------------------------------------------------------------------
// EM rounds of many small groups at once (gq_vq_em_batch's contract, cpu.c's
// gq_vq_em_rounds step for step): one thread block per group runs every round
// with its codebook in shared memory. Assignment: P and nrm per (slot,
// centroid), then argmin_m nrm − 2 xᵀP (lowest m on ties, NaN never wins),
// the objective summed in a fixed order; M-step: a warp per centroid finds
// its first point (the anchor) and sums A, b over its points (lanes stride,
// shuffle tree), lane 0 solves; empty centroids move, in increasing order,
// onto the worst-served point (lowest index on ties). No floating-point
// atomics: the same result on every run.
#define EM_T 256
#define GRAM_MAX 256 // centroids per codebook (EM, normal equations) and vectors per column tile

struct em_group {
    int d, k, diag, ns, ps;
    int64_t n;
    const double *x, *s2, *M;
    double *P, *nrm, *dist, *C, *red;
    int32_t *idx, *prev;
    int *ired;
};

// Assignment of every point to C; returns the objective (all threads).
__device__ static double em_assign(const em_group &g) {
    const int d = g.d, k = g.k, tid = threadIdx.x;
    for (int t = tid; t < g.ns * k; t += EM_T)
        g.nrm[t] = gq_vq_project(g.M + (size_t)(t / k) * d * d, g.diag, d, g.C + (size_t)(t % k) * d, g.P + (size_t)t * d);
    __syncthreads();
    double part = 0;
    for (int64_t i = tid; i < g.n; i += EM_T) {
        const int s = (int)(i / g.ps);
        const double *xi = g.x + (size_t)i * d;
        const int bm = nearest(xi, d, g.P + (size_t)s * k * d, g.nrm + (size_t)s * k, k);
        g.idx[i] = bm;
        const double v = gq_vq_qform(g.M + (size_t)s * d * d, g.diag, d, xi, g.C + (size_t)bm * d) * (g.s2 ? g.s2[i] : 1.0);
        g.dist[i] = v;
        part += v;
    }
    g.red[tid] = part;
    __syncthreads();
    for (int h = EM_T / 2; h > 0; h >>= 1) {
        if (tid < h) g.red[tid] += g.red[tid + h];
        __syncthreads();
    }
    const double obj = g.red[0];
    __syncthreads();
    return obj;
}

// M-step in place on C; returns the number of empty centroids (all threads).
__device__ static int em_mstep(const em_group &g, int *s_empty) {
    const int d = g.d, dd = d * d, lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    if (threadIdx.x == 0) *s_empty = 0;
    __syncthreads();
    for (int m = warp; m < g.k; m += EM_T / 32) {
        int first = 0x7fffffff;
        for (int64_t i = lane; i < g.n; i += 32)
            if (g.idx[i] == m) {
                first = (int)i;
                break;
            }
        for (int o = 16; o > 0; o >>= 1) first = min(first, __shfl_xor_sync(0xffffffffu, first, o));
        if (first == 0x7fffffff) {
            if (lane == 0) atomicAdd(s_empty, 1);
            continue;
        }
        const double *xr = g.x + (size_t)first * d;
        double A[VQ_MAX_DIM * VQ_MAX_DIM], b[VQ_MAX_DIM];
        for (int q = 0; q < dd; q++) A[q] = 0;
        for (int a = 0; a < d; a++) b[a] = 0;
        for (int64_t i = lane; i < g.n; i += 32)
            if (g.idx[i] == m)
                mstep_add(A, b, g.M + (size_t)(i / g.ps) * dd, g.s2 ? g.s2[i] : 1.0, g.x + (size_t)i * d, xr, d, g.diag);
        warp_sum_ab(A, b, d, g.diag);
        if (lane == 0) solve_centroid(A, b, xr, d, g.diag, g.C + (size_t)m * d);
    }
    __syncthreads();
    return *s_empty;
}

// Empty centroids onto the worst-served points (cpu.c); returns how many moved.
__device__ static int em_reseed(const em_group &g, unsigned char *used) {
    const int d = g.d, tid = threadIdx.x;
    for (int64_t i = tid; i < g.n; i += EM_T)
        g.dist[i] = gq_vq_qform(g.M + (size_t)(i / g.ps) * d * d, g.diag, d, g.x + (size_t)i * d,
                             g.C + (size_t)g.idx[i] * d) *
                    (g.s2 ? g.s2[i] : 1.0);
    for (int m = tid; m < g.k; m += EM_T) used[m] = 0;
    __syncthreads();
    for (int64_t i = tid; i < g.n; i += EM_T) used[g.idx[i]] = 1;
    __syncthreads();
    int moved = 0;
    for (int m = 0; m < g.k; m++) {
        if (used[m]) continue;
        // argmax of dist, lowest index on ties (cpu.c: w = 0, then strict >, so
        // a NaN wins only at index 0)
        double bv = 0;
        int bw = -1;
        for (int64_t i = tid; i < g.n; i += EM_T) {
            const double v = g.dist[i];
            if (bw < 0 ? i == 0 || !isnan(v) : v > bv) bv = v, bw = (int)i;
        }
        g.red[tid] = bv, g.ired[tid] = bw;
        __syncthreads();
        for (int h = EM_T / 2; h > 0; h >>= 1) {
            if (tid < h) {
                const double v = g.red[tid + h];
                const int w = g.ired[tid + h];
                if (w >= 0 && (g.ired[tid] < 0 || v > g.red[tid] || (v == g.red[tid] && w < g.ired[tid])))
                    g.red[tid] = v, g.ired[tid] = w;
            }
            __syncthreads();
        }
        const double v = g.red[0];
        const int w = g.ired[0];
        __syncthreads();
        if (!(v > 0)) break; // every point sits on a centroid
        if (tid == 0) {
            for (int a = 0; a < d; a++) g.C[(size_t)m * d + a] = g.x[(size_t)w * d + a];
            g.idx[w] = m, g.dist[w] = 0, used[m] = 1;
        }
        moved++;
        __syncthreads();
    }
    return moved;
}

__global__ void vq_em_k(int d, int k, int iters, int diag, const int *n_slots, const int *per_slot,
                        const int64_t *x_off, const int64_t *m_off, const int64_t *s_off, const double *X,
                        const double *S2, const double *MT, double *CG, int32_t *IDX, int32_t *PREV, double *DIST, double *P,
                        double *NRM, int *iters_out, int *reseeded_out, double *obj_out) {
    extern __shared__ double em_sh[];
    __shared__ int s_empty, s_changed;
    __shared__ unsigned char used[GRAM_MAX];
    const int j = blockIdx.x, tid = threadIdx.x;
    em_group g;
    g.d = d, g.k = k, g.diag = diag, g.ns = n_slots[j], g.ps = per_slot[j];
    g.n = (int64_t)g.ns * g.ps;
    g.x = X + (size_t)x_off[j] * d, g.s2 = S2 ? S2 + x_off[j] : NULL, g.M = MT + (size_t)m_off[j] * d * d;
    g.P = P + (size_t)s_off[j] * k * d, g.nrm = NRM + (size_t)s_off[j] * k, g.dist = DIST + x_off[j];
    g.idx = IDX + x_off[j], g.prev = PREV + x_off[j];
    g.C = em_sh, g.red = em_sh + (size_t)k * d, g.ired = (int *)(g.red + EM_T);
    double *Cg = CG + (size_t)j * k * d;
    for (int t = tid; t < k * d; t += EM_T) g.C[t] = Cg[t];
    __syncthreads();
    double obj = em_assign(g);
    int it = 0, moved = 0;
    while (it < iters && !isnan(obj)) {
        for (int64_t i = tid; i < g.n; i += EM_T) g.prev[i] = g.idx[i];
        if (em_mstep(g, &s_empty)) moved += em_reseed(g, used);
        obj = em_assign(g);
        it++;
        if (tid == 0) s_changed = 0;
        __syncthreads();
        for (int64_t i = tid; i < g.n; i += EM_T)
            if (g.prev[i] != g.idx[i]) s_changed = 1;
        __syncthreads();
        const int changed = s_changed;
        __syncthreads();
        if (!changed) break;
    }
    for (int t = tid; t < k * d; t += EM_T) Cg[t] = g.C[t];
    if (tid == 0) iters_out[j] = it, reseeded_out[j] = moved, obj_out[j] = obj;
}

extern "C" int gqcu_vq_em(int n_jobs, int d, int k, int iters, int diag, const int *n_slots, const int *per_slot,
                          const int64_t *x_off, const int64_t *m_off, int64_t n_metric, const double *x,
                          const double *s2, const double *metric, double *C, int32_t *idx, int *iters_out,
                          int *reseeded, double *objective, char *err, size_t cap) {
    int rc = 0;
    if (n_jobs <= 0) return 0;
    if (k > GRAM_MAX || d > VQ_MAX_DIM) return fail(err, cap, "gqcu_vq_em", "more than 256 centroids or dimension 8");
    const int64_t n = x_off[n_jobs - 1] + (int64_t)n_slots[n_jobs - 1] * per_slot[n_jobs - 1];
    std::vector<int64_t> s_off((size_t)n_jobs); // each block's own P / nrm scratch
    int64_t nsl = 0;
    for (int j = 0; j < n_jobs; j++) s_off[(size_t)j] = nsl, nsl += n_slots[j];
    const size_t smem = sizeof(double) * ((size_t)k * d + EM_T) + sizeof(int) * EM_T;
    int *dns = NULL, *dps = NULL, *dit = NULL, *drs = NULL;
    int64_t *dxo = NULL, *dmo = NULL, *dso = NULL;
    double *dx = NULL, *ds2 = NULL, *dM = NULL, *dC = NULL, *ddist = NULL, *dP = NULL, *dnrm = NULL, *dobj = NULL;
    int32_t *didx = NULL, *dprev = NULL;
    CHECK(upload(&dns, n_slots, (size_t)n_jobs));
    CHECK(upload(&dps, per_slot, (size_t)n_jobs));
    CHECK(upload(&dxo, x_off, (size_t)n_jobs));
    CHECK(upload(&dmo, m_off, (size_t)n_jobs));
    CHECK(upload(&dso, s_off.data(), (size_t)n_jobs));
    CHECK(upload(&dx, x, (size_t)n * d));
    if (s2) CHECK(upload(&ds2, s2, (size_t)n));
    CHECK(upload(&dM, metric, (size_t)n_metric * d * d));
    CHECK(upload(&dC, C, (size_t)n_jobs * k * d));
    CHECK(cudaMalloc(&didx, sizeof(int32_t) * n));
    CHECK(cudaMalloc(&dprev, sizeof(int32_t) * n));
    CHECK(cudaMalloc(&ddist, sizeof(double) * n));
    CHECK(cudaMalloc(&dP, sizeof(double) * nsl * k * d));
    CHECK(cudaMalloc(&dnrm, sizeof(double) * nsl * k));
    CHECK(cudaMalloc(&dit, sizeof(int) * n_jobs));
    CHECK(cudaMalloc(&drs, sizeof(int) * n_jobs));
    CHECK(cudaMalloc(&dobj, sizeof(double) * n_jobs));
    vq_em_k<<<(unsigned)n_jobs, EM_T, smem>>>(d, k, iters, diag, dns, dps, dxo, dmo, dso, dx, ds2, dM, dC, didx,
                                              dprev, ddist, dP, dnrm, dit, drs, dobj);
    CHECK(cudaGetLastError());
    CHECK(cudaMemcpy(C, dC, sizeof(double) * n_jobs * k * d, cudaMemcpyDeviceToHost));
    CHECK(cudaMemcpy(idx, didx, sizeof(int32_t) * n, cudaMemcpyDeviceToHost));
    CHECK(cudaMemcpy(iters_out, dit, sizeof(int) * n_jobs, cudaMemcpyDeviceToHost));
    CHECK(cudaMemcpy(reseeded, drs, sizeof(int) * n_jobs, cudaMemcpyDeviceToHost));
    CHECK(cudaMemcpy(objective, dobj, sizeof(double) * n_jobs, cudaMemcpyDeviceToHost));
out:
    cudaFree(dns), cudaFree(dps), cudaFree(dxo), cudaFree(dmo), cudaFree(dso), cudaFree(dx), cudaFree(ds2), cudaFree(dM);
    cudaFree(dC), cudaFree(didx), cudaFree(dprev), cudaFree(ddist), cudaFree(dP), cudaFree(dnrm), cudaFree(dit);
    cudaFree(drs), cudaFree(dobj);
    return rc;
}

// ---------------------------------------------------------------------------
// Codebook-update normal equations (contract: gq_vq_gram, vq.h). G is made of
// (k·d)² blocks, one per pair of (stage, column tile) B1, B2:
//   G[(B1, c1, j1), (B2, c2, j2)] = Σ_r Σ_{v1 ∈ ct1: idx_s1 = c1} Σ_{v2 ∈ ct2: idx_s2 = c2}
//                                   σ_{r,v1} σ_{r,v2} H[v1·d + j1, v2·d + j2].
// First, per (stage, row, column tile), the tile's vectors sorted by centroid
// (gram_lists: thread c scans for centroid c, so each list is in vector
// order) go to global memory once. Then one thread block per block pair
// B1 <= B2 and 16 × 16 chunk of it (the lower blocks are mirrored after, as
// on the CPU); each thread owns one entry (no atomics) and sums, row by row,
// over its two centroids' lists: cpu.c's gram_block order and products.

#define GRAM_T 16

// grid (rows, stages·n_ct), GRAM_MAX threads. start: (stage, row, tile, k + 1)
// offsets into the tile's part of list / w, which are laid out as idx
// ((stage, row, vector)) and hold vector numbers and their σ.
__global__ void gram_lists(int rows, int nv, int k, int n_ct, const int *vt_start, const uint16_t *idx,
                           const double *sig, int *start, int *list, double *w) {
    __shared__ int cnt[GRAM_MAX], st[GRAM_MAX + 1];
    const int r = blockIdx.x, s = blockIdx.y / n_ct, ct = blockIdx.y % n_ct, tid = threadIdx.x;
    const int v0 = vt_start[ct], n = vt_start[ct + 1] - v0;
    const size_t row = (size_t)s * rows + r;
    const uint16_t *ir = idx + row * nv + v0;
    const double *sr = sig ? sig + (size_t)r * nv + v0 : NULL;
    int *lst = list + row * nv + v0;
    double *wl = w + row * nv + v0;
    for (int c = tid; c < k; c += blockDim.x) {
        int nc = 0;
        for (int v = 0; v < n; v++) nc += ir[v] == c;
        cnt[c] = nc;
    }
    __syncthreads();
    if (tid == 0) {
        st[0] = 0;
        for (int c = 0; c < k; c++) st[c + 1] = st[c] + cnt[c];
    }
    __syncthreads();
    int *gst = start + (row * n_ct + ct) * (size_t)(k + 1);
    for (int c = tid; c <= k; c += blockDim.x) gst[c] = st[c];
    for (int c = tid; c < k; c += blockDim.x) {
        int o = st[c];
        for (int v = 0; v < n; v++)
            if (ir[v] == c) lst[o] = v0 + v, wl[o++] = sr ? sr[v] : 1.0;
    }
}

__global__ void vq_gram_k(int rows, int nv, int d, int k, int S, int n_ct, const int *vt_start, const int *start,
                          const int *list, const double *w, const double *H, int ldh, double *G) {
    const int kd = k * d, nb = S * n_ct, cps = (kd + GRAM_T - 1) / GRAM_T;
    const size_t m = (size_t)nb * kd;
    const int chunk = blockIdx.x % (cps * cps);
    int B1 = 0, rest = blockIdx.x / (cps * cps); // pairs (0,0) (0,1) .. (0,nb−1) (1,1) ..
    while (rest >= nb - B1) rest -= nb - B1, B1++;
    const int B2 = B1 + rest;
    const int s1 = B1 / n_ct, ct1 = B1 % n_ct, s2 = B2 / n_ct, ct2 = B2 % n_ct;
    const int a = (chunk / cps) * GRAM_T + threadIdx.y, b = (chunk % cps) * GRAM_T + threadIdx.x;
    if (a >= kd || b >= kd) return;
    const int c1 = a / d, j1 = a % d, c2 = b / d, j2 = b % d;
    const int v1a = vt_start[ct1], v2a = vt_start[ct2];
    double acc = 0;
    for (int r = 0; r < rows; r++) {
        const size_t row1 = (size_t)s1 * rows + r, row2 = (size_t)s2 * rows + r;
        const int *st1 = start + (row1 * n_ct + ct1) * (size_t)(k + 1), *st2 = start + (row2 * n_ct + ct2) * (size_t)(k + 1);
        const int *l1 = list + row1 * nv + v1a, *l2 = list + row2 * nv + v2a;
        const double *w1 = w + row1 * nv + v1a, *w2 = w + row2 * nv + v2a;
        const int e1 = st1[c1 + 1], b2 = st2[c2], e2 = st2[c2 + 1];
        for (int i1 = st1[c1]; i1 < e1; i1++) { // cpu.c's order and products: the same sum
            const double *h = H + (size_t)(l1[i1] * d + j1) * ldh + j2, wa = w1[i1];
            for (int i2 = b2; i2 < e2; i2++) acc += wa * w2[i2] * h[(size_t)l2[i2] * d];
        }
    }
    G[((size_t)B1 * kd + a) * m + (size_t)B2 * kd + b] = acc;
}

// Entries below the diagonal blocks (block row > block column) from their mirrors.
__global__ void vq_gram_mirror(double *G, size_t m, int kd) {
    const size_t i = (size_t)blockIdx.y * blockDim.y + threadIdx.y, j = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < m && j < m && i / kd > j / kd) G[i * m + j] = G[j * m + i];
}

extern "C" int gqcu_vq_gram(int rows, int nv, int d, int k, int stages, int n_ct, const int *vt_start,
                            const uint16_t *idx, size_t idx_stage, const double *sig, const double *H, int ldh,
                            double *G, char *err, size_t cap) {
    int rc = 0;
    const int kd = k * d, nb = stages * n_ct, cps = (kd + GRAM_T - 1) / GRAM_T, nvp = nv * d;
    const size_t m = (size_t)nb * kd, sH = nvp ? ((size_t)(nvp - 1) * ldh + nvp) * sizeof(double) : 0;
    int *dvt = NULL, *dstart = NULL, *dlist = NULL;
    uint16_t *didx = NULL;
    double *dsig = NULL, *dG = NULL, *dw = NULL;
    const double *dH = NULL;
    void *oH = NULL;
    if (!m) return 0;
    if (rows <= 0) {
        memset(G, 0, sizeof(double) * m * m);
        return 0;
    }
    if (k > GRAM_MAX) return fail(err, cap, "gqcu_vq_gram", "more than 256 centroids");
    for (int c = 0; c < n_ct; c++)
        if (vt_start[c + 1] - vt_start[c] > GRAM_MAX) return fail(err, cap, "gqcu_vq_gram", "column tile over 256 vectors");
    CHECK(upload(&dvt, vt_start, (size_t)n_ct + 1));
    CHECK(cudaMalloc(&didx, sizeof(uint16_t) * ((size_t)stages * rows * nv + 1)));
    for (int s = 0; s < stages; s++) // stages packed at a stride of rows·nv
        CHECK(cudaMemcpy(didx + (size_t)s * rows * nv, idx + (size_t)s * idx_stage, sizeof(uint16_t) * rows * nv,
                         cudaMemcpyHostToDevice));
    if (sig) CHECK(upload(&dsig, sig, (size_t)rows * nv));
    CHECK(view_in(&dH, &oH, H, sH));
    CHECK(cudaMalloc(&dG, sizeof(double) * m * m));
    {
        const dim3 th(GRAM_T, GRAM_T), mg((unsigned)((m + GRAM_T - 1) / GRAM_T), (unsigned)((m + GRAM_T - 1) / GRAM_T));
        const size_t grid = (size_t)nb * (nb + 1) / 2 * cps * cps;
        if (grid > 0x7fffffff || m > 65535u * GRAM_T || nb > 65535) { // grid x; the mirror's and the lists' grid y
            rc = fail(err, cap, "gqcu_vq_gram", "system too large");
            goto out;
        }
        CHECK(cudaMalloc(&dstart, sizeof(int) * (size_t)stages * rows * n_ct * (k + 1)));
        CHECK(cudaMalloc(&dlist, sizeof(int) * ((size_t)stages * rows * nv + 1)));
        CHECK(cudaMalloc(&dw, sizeof(double) * ((size_t)stages * rows * nv + 1)));
        gram_lists<<<dim3((unsigned)rows, (unsigned)nb), GRAM_MAX>>>(rows, nv, k, n_ct, dvt, didx, dsig, dstart, dlist,
                                                                      dw);
        CHECK(cudaGetLastError());
        vq_gram_k<<<(unsigned)grid, th>>>(rows, nv, d, k, stages, n_ct, dvt, dstart, dlist, dw, dH, ldh, dG);
        vq_gram_mirror<<<mg, th>>>(dG, m, kd);
    }
    CHECK(cudaGetLastError());
    CHECK(cudaMemcpy(G, dG, sizeof(double) * m * m, cudaMemcpyDeviceToHost));
out:
    cudaFree(dvt), cudaFree(didx), cudaFree(dsig), cudaFree(dG), cudaFree(oH), cudaFree(dstart), cudaFree(dlist);
    cudaFree(dw);
    return rc;
}
