// gemv_vq.c - the runtime view of packed GPTVQ matrices, their decode rule
// and their decode GEMVs (contract: qmatmul.h; layout: docs/format.md).
//
// y = W x with xp = x in position order (xp[p] = x[perm[p]]): per row the
// outlier columns (fp16 × float), then per column tile the sum over its
// vectors of centroid · x.
//
//   float kernels (fp16 / f32 codebooks, two stages, normalisation, SVD):
//     scalar reference and AVX2 (permutes for k <= 16, else gathers), on
//     codebooks and normalisation scales decoded once at load;
//   int8 kernels (int8 codebooks, one stage, no normalisation, no SVD): x
//     rounded to int8 per column tile (scale xs[ct]); per row and column
//     tile the exact int32 Σ code · x code, then y[r] += sum · (codebook
//     scale · xs[ct]). Scalar reference; AVX2: pshufb tables (d 2, k 16),
//     4-byte gathers (d 4, k 256) or gathers of padded centroids (any other
//     d, k); AVX-512 VNNI: codes + 128 as unsigned bytes (the 128 · Σ x
//     they add is taken off per tile), looked up planar, one coordinate per
//     register, then dpbusd against x codes arranged the same way:
//       NIB    d 1 or 2, k 16: the 4-bit indices of 64 vectors expanded by a
//              shift, pshufb per 128-bit lane (lanes 0-1 one column tile's
//              table, lanes 2-3 the next: tiles start at multiples of 32
//              vectors), scale per half register;
//       D2K64  d 2, k 64: 6-bit indices unpacked by vpermb + vpmultishiftqb,
//              looked up by vpermb in the 64-byte tables;
//       D4K256 d 4, k 256: byte indices, two vpermi2b and a blend on bit 7
//              per coordinate (the group's 1 KiB of tables in 16 registers);
//       D2K256 d 2, k 256: the same kernel with two coordinates (8 registers).
#include "kern/kern.h"

// ---------------------------------------------------------------------------
// Runtime view.

void gq_vqrt_free(struct gq_vqrt *v) {
    if (!v) return;
    free(v->ct_start), free(v->rt_start), free(v->vt_start), free(v->blk0), free(v->perm);
    free(v->tab), free(v->cb8), free(v->cbs), free(v->half_ct), free(v->fcb), free(v->nsc), free(v->nidx), free(v->ch0), free(v->pix);
    if (v->rot) gq_rot_free(v->rot), free(v->rot);
    memset(v, 0, sizeof *v);
}

static int64_t vq_groups(const struct gq_vqrt *v) { return (int64_t)v->p.h.n_rt * v->p.h.n_ct; }

// Normalisation code of row r, block blk.
static inline int nsint(const struct gq_vqrt *v, int r, int blk) {
    return (int)gq_bits_get(v->p.part[GQ_VQP_NSINT], (int64_t)r * v->n_nblk + blk, 4);
}

// Which int8 kernels fit: q8 (AVX2, generic unless a specialised layout
// fits) and fast (AVX-512).
static void pick_kernels(struct gq_vqrt *v) {
    const struct gq_vqpack_hdr *h = &v->p.h;
    v->q8 = v->fast = 0;
    if (h->cb_format != GQ_CB_INT8 || h->stages != 1 || h->svd_rank) return;
    bool m128 = false; // the AVX2 sign trick of the NIB2 / BYTE4 kernels needs codes in [-127, 127] (ours are)
    for (size_t i = 0; i < v->p.bytes[GQ_VQP_CB]; i++) m128 |= (int8_t)v->p.part[GQ_VQP_CB][i] == -128;
    // normalisation blocks of whole 32-vector halves (they start at the
    // column tiles' starts): NIB2's blocks and the AVX-512 NIB halves never
    // straddle two of them; the other AVX-512 kernels do not scale per block
    const bool nalign = !v->bv || v->bv % 32 == 0;
    v->q8 = h->d == 2 && h->k == 16 && !m128 && nalign ? GQ_VQ_Q8_NIB2 : h->d == 4 && h->k == 256 && !m128 ? GQ_VQ_Q8_BYTE4 : GQ_VQ_Q8_GENERIC;
    bool nib = (h->d == 1 || h->d == 2) && h->k == 16 && v->nv % 2 == 0 && nalign;
    bool d2k64 = h->d == 2 && h->k == 64 && v->nv % 4 == 0;
    bool halves = true; // every 64-vector step of a row meets at most two column tiles, 32 vectors each
    for (int c = 1; c < h->n_ct; c++) halves &= v->vt_start[c] % 32 == 0, d2k64 &= v->vt_start[c] % 4 == 0;
    v->fast = nib && halves                       ? GQ_VQF_NIB
            : d2k64 && halves && nalign           ? GQ_VQF_D2K64H
            : d2k64 && !v->bv                     ? GQ_VQF_D2K64
            : (h->d == 4 || h->d == 2) && h->k == 256 && (!v->bv || (v->bv % 16 == 0 && (64 % v->bv == 0 || v->bv % 64 == 0)))
                ? (h->d == 4 ? GQ_VQF_D4K256 : GQ_VQF_D2K256)
                                       : GQ_VQF_NONE;
}

// Byte i (0..63) of a 64-vector NIB step holds vector 32·(L mod 2) + 2·(i mod 16) + L / 2, L = i / 16:
// the order in which the nibbles of 32 index bytes come out when they are
// loaded into both halves of a register and the upper half is shifted by 4
// (lanes: low nibbles of bytes 0-15, of 16-31, high nibbles of 0-15, of 16-31).
static inline int nib_vec(int i) { return 32 * ((i >> 4) & 1) + 2 * (i & 15) + (i >> 5); }

// Tables decoded once: int8 kernels: codes + 128 planar (tab), padded
// centroids (cb8, generic AVX2), float scales; float kernels: the codebooks
// (gq_vqpack_codebook, the decode rule's first step) and the normalisation
// scales of every code.
static enum gq_status build_tables(struct gq_vqrt *v, const char *what) {
    const struct gq_vqpack_hdr *h = &v->p.h;
    const int64_t ng = vq_groups(v);
    const int d = h->d, k = h->k, kd = k * d;
    const bool int16 = h->cb_format == GQ_CB_INT8 && h->stages == 1 && !h->svd_rank; // the prefill's integer path
    if (int16 && !(v->cbs = malloc(sizeof(float) * (size_t)ng))) return gq_fail(GQ_ERR_NOMEM, "%s: kernel tables", what);
    if (h->norm_block && !(v->nsc = malloc(sizeof(float) * 16 * (size_t)ng))) return gq_fail(GQ_ERR_NOMEM, "%s: kernel tables", what);
    for (int64_t g = 0; g < ng; g++) {
        if (v->cbs) v->cbs[g] = gq_vqp_f16(v->p.part[GQ_VQP_CBS], g);
        if (v->nsc) {
            const struct gq_vq_norm nm = {gq_vqp_f16(v->p.part[GQ_VQP_NPAR], 2 * g), gq_vqp_f16(v->p.part[GQ_VQP_NPAR], 2 * g + 1)};
            for (int si = 0; si < 16; si++) v->nsc[g * 16 + si] = gq_vq_norm_scale(nm, si);
        }
    }
    if (v->q8) {
        const int dp = d <= 4 ? 4 : 8;
        v->tab = malloc((size_t)ng * kd + 64);
        if (v->q8 == GQ_VQ_Q8_GENERIC) v->cb8 = calloc((size_t)ng * k * dp + 8, 1);
        if (!v->tab || (v->q8 == GQ_VQ_Q8_GENERIC && !v->cb8)) return gq_fail(GQ_ERR_NOMEM, "%s: kernel tables", what);
        memset(v->tab + (size_t)ng * kd, 0, 64);
        const uint8_t *cb = v->p.part[GQ_VQP_CB];
        for (int64_t g = 0; g < ng; g++)
            for (int m = 0; m < k; m++)
                for (int j = 0; j < d; j++) {
                    const uint8_t c = cb[(size_t)g * kd + (size_t)m * d + j];
                    v->tab[(size_t)g * kd + (size_t)j * k + m] = (uint8_t)(c ^ 0x80); // code + 128
                    if (v->cb8) v->cb8[((size_t)g * k + m) * dp + j] = c;
                }
        if (v->fast) { // x's plane permutes (vq_prep_fast_avx512)
            if (!(v->pix = malloc(6 * 64))) return gq_fail(GQ_ERR_NOMEM, "%s: kernel tables", what);
            for (int j = 0; j < 4; j++)
                for (int i = 0; i < 64; i++) {
                    v->pix[64 * j + i] = (uint8_t)(v->fast == GQ_VQF_NIB ? d * nib_vec(i) + j : d == 4 ? (4 * i + j) & 127 : 2 * i + j);
                    // NIB's short last step (<= 32 vectors, a 256-bit step): byte i < 32 holds vector 2·(i mod 16) + i / 16;
                    // the rest points at a zero (past the codes)
                    if (j < 2) v->pix[64 * (4 + j) + i] = (uint8_t)(i < 32 ? d * (2 * (i & 15) + (i >> 4)) + j : d == 2 ? 127 : 63);
                }
        }
        if (v->fast == GQ_VQF_NIB || v->fast == GQ_VQF_D2K64H) {
            const int nh = (v->nv + 31) / 32;
            if (!(v->half_ct = malloc(sizeof(int) * (size_t)(nh > 0 ? nh : 1)))) return gq_fail(GQ_ERR_NOMEM, "%s: kernel tables", what);
            for (int hh = 0, ct = 0; hh < nh; hh++) {
                while (ct + 1 < h->n_ct && v->vt_start[ct + 1] <= 32 * hh) ct++;
                v->half_ct[hh] = ct;
            }
        }
        if ((v->fast == GQ_VQF_NIB || v->fast == GQ_VQF_D2K64H) && v->bv) { // each half's code per row and step
            const int nh = (v->nv + 31) / 32, nsteps = (v->nv + 63) / 64;
            if (!(v->nidx = malloc(sizeof(uint16_t) * (size_t)h->rows * nsteps + 64)))
                return gq_fail(GQ_ERR_NOMEM, "%s: kernel tables", what);
            for (int r = 0; r < h->rows; r++)
                for (int s = 0; s < nsteps; s++) {
                    int c[2];
                    for (int j = 0; j < 2; j++) {
                        const int hh = gq_min_i(2 * s + j, nh - 1), ct = v->half_ct[hh];
                        c[j] = nsint(v, r, v->blk0[ct] + (32 * hh - v->vt_start[ct]) / v->bv);
                    }
                    v->nidx[(size_t)r * nsteps + s] = (uint16_t)(c[0] | (16 | c[1]) << 8);
                }
        }
        if ((v->fast == GQ_VQF_D4K256 || v->fast == GQ_VQF_D2K256) && v->bv) { // each 16-vector quarter of a chunk lies in one block
            if (!(v->ch0 = malloc(sizeof(int) * (size_t)(h->n_ct + 1)))) return gq_fail(GQ_ERR_NOMEM, "%s: kernel tables", what);
            v->ch0[0] = 0;
            for (int ct = 0; ct < h->n_ct; ct++) v->ch0[ct + 1] = v->ch0[ct] + (v->vt_start[ct + 1] - v->vt_start[ct] + 63) / 64;
            const int nch = v->ch0[h->n_ct];
            if (!(v->nidx = malloc(sizeof(uint16_t) * (size_t)h->rows * nch + 64))) return gq_fail(GQ_ERR_NOMEM, "%s: kernel tables", what);
            for (int r = 0; r < h->rows; r++)
                for (int ct = 0; ct < h->n_ct; ct++) {
                    const int wd = v->vt_start[ct + 1] - v->vt_start[ct], nb = (wd + v->bv - 1) / v->bv;
                    for (int c = 0; 64 * c < wd; c++) {
                        unsigned wq = 0;
                        for (int q = 0; q < 4; q++)
                            wq |= (unsigned)nsint(v, r, v->blk0[ct] + gq_min_i((64 * c + 16 * q) / v->bv, nb - 1)) << (4 * q);
                        v->nidx[(size_t)r * nch + v->ch0[ct] + c] = (uint16_t)wq;
                    }
                }
        }
        return GQ_OK;
    }
    if (!(v->fcb = malloc(sizeof(float) * (size_t)ng * h->stages * kd))) return gq_fail(GQ_ERR_NOMEM, "%s: decoded codebooks", what);
    for (int64_t g = 0; g < ng; g++)
        for (int s = 0; s < h->stages; s++) gq_vqpack_codebook(&v->p, s, g, v->fcb + ((size_t)g * h->stages + s) * kd);
    return GQ_OK;
}

enum gq_status gq_vqrt_init(struct gq_vqrt *v, const struct gq_vqpack *p, const char *what) {
    memset(v, 0, sizeof *v);
    struct gq_vq_tensor t; // full check of the pack (sizes, permutation, finite values)
    GQ_TRY(gq_vqpack_unpack(p, what, &t));
    v->p = *p;
    const struct gq_vqpack_hdr *h = &p->h;
    v->nv = (h->cols - h->n_out) / h->d;
    while ((1 << v->lk) < h->k) v->lk++;
    v->n_nblk = t.n_nblk, v->bv = h->norm_block / h->d;
    v->ct_start = malloc(sizeof(int) * (h->n_ct + 1)), v->rt_start = malloc(sizeof(int) * (h->n_rt + 1));
    v->blk0 = malloc(sizeof(int) * h->n_ct), v->vt_start = malloc(sizeof(int) * (h->n_ct + 1));
    if (h->has_perm) v->perm = malloc(sizeof(int32_t) * h->cols);
    if (!v->ct_start || !v->rt_start || !v->blk0 || !v->vt_start || (h->has_perm && !v->perm)) {
        gq_vq_tensor_free(&t), gq_vqrt_free(v);
        return gq_fail(GQ_ERR_NOMEM, "%s: packed matrix view", what);
    }
    memcpy(v->ct_start, t.ct_start, sizeof(int) * (h->n_ct + 1));
    memcpy(v->rt_start, t.rt_start, sizeof(int) * (h->n_rt + 1));
    if (v->perm) memcpy(v->perm, t.perm, sizeof(int32_t) * h->cols);
    for (int c = 0; c <= h->n_ct; c++) v->vt_start[c] = (v->ct_start[c] - h->n_out) / h->d;
    for (int c = 0, b = 0; c < h->n_ct; c++) {
        v->blk0[c] = b;
        if (h->norm_block) b += (v->ct_start[c + 1] - v->ct_start[c] + h->norm_block - 1) / h->norm_block;
    }
    enum gq_status s = GQ_OK;
    if (t.rot) {
        s = (v->rot = calloc(1, sizeof *v->rot)) ? gq_rot_init(v->rot, h->cols, t.rot_seed) : gq_fail(GQ_ERR_NOMEM, "out of memory");
        if (s != GQ_OK) free(v->rot), v->rot = NULL, gq_error_prefix("%s: input rotation", what);
    }
    gq_vq_tensor_free(&t);
    if (s != GQ_OK) return gq_vqrt_free(v), s;
    pick_kernels(v);
    s = build_tables(v, what);
    if (s != GQ_OK) gq_vqrt_free(v);
    return s;
}

static inline uint32_t vq_index(const struct gq_vqrt *v, int s, int r, int vec) {
    return gq_bits_get(v->p.part[GQ_VQP_IDX], ((int64_t)s * v->p.h.rows + r) * v->nv + vec, v->lk);
}

static int row_tile_of(const struct gq_vqrt *v, int r) {
    int lo = 0, hi = v->p.h.n_rt - 1;
    while (lo < hi) { // last tile whose start <= r
        int mid = (lo + hi + 1) / 2;
        if (v->rt_start[mid] <= r) lo = mid;
        else hi = mid - 1;
    }
    return lo;
}

// Row tiles meeting [r0, r1), each clipped to [ra, rb).
#define FOR_ROW_TILES(v, r0, r1, rt, ra, rb)                                                            \
    for (int rt = row_tile_of(v, r0), ra, rb; rt < (v)->p.h.n_rt && (v)->rt_start[rt] < (r1); rt++)    \
        if ((ra = gq_max_i((v)->rt_start[rt], r0)) < (rb = gq_min_i((v)->rt_start[rt + 1], r1)))

// Rows [r0, r1) in position order (the decode rule of vq.h: c0 (+ c1), then
// × the normalisation scale, float arithmetic). cb: scratch of 2·k·d floats.
static void vq_decode_rows_pos(const struct gq_vqrt *v, int r0, int r1, float *out, float *cb) {
    const struct gq_vqpack_hdr *h = &v->p.h;
    const int d = h->d, kd = h->k * d, n = h->cols;
    for (int r = r0; r < r1; r++)
        for (int p = 0; p < h->n_out; p++)
            out[(size_t)(r - r0) * n + p] = gq_vqp_f16(v->p.part[GQ_VQP_OUTL], (int64_t)r * h->n_out + p);
    FOR_ROW_TILES(v, r0, r1, rt, ra, rb) {
        for (int ct = 0; ct < h->n_ct; ct++) {
            const int64_t g = (int64_t)rt * h->n_ct + ct;
            for (int s = 0; s < h->stages; s++) gq_vqpack_codebook(&v->p, s, g, cb + (size_t)s * kd);
            const int v0 = v->vt_start[ct], v1 = v->vt_start[ct + 1];
            for (int r = ra; r < rb; r++) {
                float *q = out + (size_t)(r - r0) * n + h->n_out;
                for (int vec = v0; vec < v1; vec++) {
                    const float *c0 = cb + (size_t)vq_index(v, 0, r, vec) * d;
                    float qv[8];
                    for (int j = 0; j < d; j++) qv[j] = c0[j];
                    if (h->stages > 1) {
                        const float *c1 = cb + kd + (size_t)vq_index(v, 1, r, vec) * d;
                        for (int j = 0; j < d; j++) qv[j] = qv[j] + c1[j];
                    }
                    if (h->norm_block) {
                        const struct gq_vq_norm nm = {gq_vqp_f16(v->p.part[GQ_VQP_NPAR], 2 * g),
                                                      gq_vqp_f16(v->p.part[GQ_VQP_NPAR], 2 * g + 1)};
                        const float sc = gq_vq_norm_scale(nm, nsint(v, r, v->blk0[ct] + (vec - v0) / (h->norm_block / d)));
                        for (int j = 0; j < d; j++) qv[j] = qv[j] * sc;
                    }
                    for (int j = 0; j < d; j++) q[(size_t)vec * d + j] = qv[j];
                }
            }
        }
    }
}

// (rotated matrices: W', in the rotated basis)
void gq_vq_decode_rows(const struct gq_vqrt *v, int r0, int r1, float *out) {
    const int n = v->p.h.cols;
    float *cb = malloc(sizeof(float) * 2 * (size_t)v->p.h.k * v->p.h.d), *pos = v->perm ? malloc(sizeof(float) * n) : NULL;
    if (!cb || (v->perm && !pos)) { // only under memory exhaustion; zeros are visible in any result
        free(cb), free(pos);
        memset(out, 0, sizeof(float) * (size_t)(r1 - r0) * n);
        return;
    }
    vq_decode_rows_pos(v, r0, r1, out, cb);
    if (v->perm) // position order -> column order, row by row
        for (int r = r0; r < r1; r++) {
            float *q = out + (size_t)(r - r0) * n;
            memcpy(pos, q, sizeof(float) * n);
            for (int p = 0; p < n; p++) q[v->perm[p]] = pos[p];
        }
    free(cb), free(pos);
}

// ---------------------------------------------------------------------------
// x in the kernels' forms, built per call in the thread's scratch.

struct vqx {
    const float *xp;  // (cols) position order
    float *xd;        // float AVX2: xd[j·nv + vec] = xp[n_out + vec·d + j]
    int8_t *xq;       // int8: (cols) codes in position order, scale xs[ct] per column tile
    float *xs;        // (n_ct)
    int32_t *sum;     // (n_ct) Σ codes of each tile (AVX-512: of each 32-vector half, NIB)
    int8_t *xa, *xabs; // AVX2 NIB2 / BYTE4: arranged codes and |codes|; GENERIC: 4 (8) bytes per vector
    int8_t *pl;       // AVX-512: d planes of codes (NIB: lane order per 64 vectors), pstride bytes apart
    int pstride;
    int32_t *cr;      // AVX-512 NIB with normalisation: per step the 16 lanes' −128 · Σ x (64-byte aligned)
};

static void vq_prep_fast_avx512(const struct gq_vqrt *v, const float *x, struct vqx *X);

static enum gq_status vq_prep_x(const struct gq_vqrt *v, const float *x, enum gq_isa isa, struct vqx *X) {
    const struct gq_vqpack_hdr *h = &v->p.h;
    const int n = h->cols, nv = v->nv, d = h->d, no = h->n_out, nct = h->n_ct;
    memset(X, 0, sizeof *X);
    float *xf = gq_kscratch(GQ_SCR_X, sizeof(float) * ((size_t)2 * n + nct) + 64);
    if (!xf) return gq_fail(GQ_ERR_NOMEM, "qmatmul: activations of a (%d, %d) packed matrix", h->rows, n);
    X->xp = xf, X->xs = xf + 2 * n;
    const bool fast = isa == GQ_ISA_AVX512 && v->fast;
    if (fast) { // x is permuted, rounded and arranged by the vector code
        const int nh = (nv + 31) / 32, nsteps = (nv + 63) / 64;
        X->pstride = 64 * nsteps + 64;
        const size_t crb = v->fast == GQ_VQF_NIB && v->bv ? (size_t)64 * nsteps : 0;
        int8_t *b = gq_kscratch(GQ_SCR_XQ, (size_t)n + 128 + (size_t)d * X->pstride + crb + sizeof(int32_t) * (size_t)(nh + nct) + 64);
        if (!b) return gq_fail(GQ_ERR_NOMEM, "qmatmul: int8 activations of a (%d, %d) packed matrix", h->rows, n);
        X->xq = b, X->pl = b + ((n + 128 + 63) & ~63);
        X->cr = crb ? (int32_t *)(X->pl + (size_t)d * X->pstride) : NULL; // (pstride is a multiple of 64)
        X->sum = (int32_t *)(X->pl + (size_t)d * X->pstride + crb);
        vq_prep_fast_avx512(v, x, X);
        return GQ_OK;
    }
    float *xp = xf;
    if (v->perm)
        for (int p = 0; p < n; p++) xp[p] = x[v->perm[p]];
    else
        memcpy(xp, x, sizeof(float) * n);
    if (!v->q8) {
        if (isa >= GQ_ISA_AVX2) {
            X->xd = xp + n;
            for (int vec = 0; vec < nv; vec++)
                for (int j = 0; j < d; j++) X->xd[(size_t)j * nv + vec] = xp[no + vec * d + j];
        }
        return GQ_OK;
    }
    const int dp = d <= 4 ? 4 : 8;
    const bool avx2k = isa >= GQ_ISA_AVX2; // the AVX2 int8 kernels run
    const size_t arr = avx2k ? (v->q8 == GQ_VQ_Q8_GENERIC ? (size_t)nv * dp : 2 * (size_t)n) + 64 : 0;
    int8_t *b = gq_kscratch(GQ_SCR_XQ, (size_t)n + 64 + arr + sizeof(int32_t) * (size_t)nct + 64);
    if (!b) return gq_fail(GQ_ERR_NOMEM, "qmatmul: int8 activations of a (%d, %d) packed matrix", h->rows, n);
    X->xq = b;
    for (int ct = 0; ct < nct; ct++)
        X->xs[ct] = gq_round_i8(xp + v->ct_start[ct], v->ct_start[ct + 1] - v->ct_start[ct], X->xq + v->ct_start[ct]);
    int8_t *o = b + n + 64;
    const int8_t *xc = X->xq + no; // the vectors' codes
    if (avx2k) {
        X->xa = o;
        if (v->q8 == GQ_VQ_Q8_GENERIC) { // 4 (d <= 4) or two planes of 4 (d = 8) bytes per vector, zero padded
            memset(o, 0, (size_t)nv * dp);
            for (int vec = 0; vec < nv; vec++)
                for (int j = 0; j < d; j++)
                    o[(j < 4 ? (size_t)vec * 4 : (size_t)nv * 4 + (size_t)vec * 4) + (j & 3)] = xc[vec * d + j];
        } else { // NIB2: per block of 32 vectors from each tile start, byte 32H + 16L + 2i + j = coord j of vector 16H + 2i + L
            X->xabs = o + n;
            memcpy(X->xa, xc, (size_t)nv * d);
            if (v->q8 == GQ_VQ_Q8_NIB2)
                for (int ct = 0; ct < nct; ct++)
                    for (int bb = v->vt_start[ct]; bb + 32 <= v->vt_start[ct + 1]; bb += 32)
                        for (int H = 0; H < 2; H++)
                            for (int L = 0; L < 2; L++)
                                for (int i = 0; i < 8; i++)
                                    for (int j = 0; j < 2; j++)
                                        X->xa[2 * bb + H * 32 + L * 16 + 2 * i + j] = xc[2 * (bb + 16 * H + 2 * i + L) + j];
            for (int i = 0; i < nv * d; i++) X->xabs[i] = (int8_t)(X->xa[i] < 0 ? -X->xa[i] : X->xa[i]);
        }
        o += arr;
    }
    X->sum = (int32_t *)(((uintptr_t)o + 3) & ~(uintptr_t)3);
    for (int ct = 0; ct < nct; ct++) {
        int32_t sm = 0;
        for (int p = v->ct_start[ct]; p < v->ct_start[ct + 1]; p++) sm += X->xq[p];
        X->sum[ct] = sm;
    }
    return GQ_OK;
}

// The outlier columns' part of row r.
static inline float vq_outl(const struct gq_vqrt *v, const float *xp, int r) {
    const int no = v->p.h.n_out;
    float acc = 0;
    for (int p = 0; p < no; p++) acc += gq_vqp_f16(v->p.part[GQ_VQP_OUTL], (int64_t)r * no + p) * xp[p];
    return acc;
}

static inline void put(float *y, int r, float v, bool accumulate) { y[r] = accumulate ? y[r] + v : v; }

// ---------------------------------------------------------------------------
// Float kernels.

// part + Σ_j (c0[j] (+ c1[j])) · x[j · sj] for vector vec of row r (float, j
// ascending): the scalar reference's step and the AVX2 kernels' rest.
static inline float vq_vec_dot(const struct gq_vqrt *v, const float *cb, int r, int vec, const float *x, size_t sj,
                               float part) {
    const int d = v->p.h.d;
    const float *c0 = cb + (size_t)vq_index(v, 0, r, vec) * d;
    const float *c1 = v->p.h.stages > 1 ? cb + (size_t)v->p.h.k * d + (size_t)vq_index(v, 1, r, vec) * d : NULL;
    for (int j = 0; j < d; j++) part += (c1 ? c0[j] + c1[j] : c0[j]) * x[(size_t)j * sj];
    return part;
}

// Per row tile: the outliers into tmp, then per column tile and row the
// sum over vectors (per normalisation block, × its scale).
static void vq_float_scalar(const struct gq_vqrt *v, const struct vqx *X, float *y, int r0, int r1, bool accumulate,
                            float *tmp) {
    const struct gq_vqpack_hdr *h = &v->p.h;
    const int d = h->d, kd = h->k * d, nb = h->norm_block ? h->norm_block / d : 0;
    FOR_ROW_TILES(v, r0, r1, rt, ra, rb) {
        for (int r = ra; r < rb; r++) tmp[r - ra] = vq_outl(v, X->xp, r);
        for (int ct = 0; ct < h->n_ct; ct++) {
            const int64_t g = (int64_t)rt * h->n_ct + ct;
            const float *cb = v->fcb + (size_t)g * h->stages * kd;
            const int v0 = v->vt_start[ct], v1 = v->vt_start[ct + 1];
            const float *x = X->xp + h->n_out;
            for (int r = ra; r < rb; r++) {
                float acc = 0;
                for (int b0 = v0, blk = v->blk0[ct]; b0 < v1; blk++) {
                    const int b1 = nb && b0 + nb < v1 ? b0 + nb : v1;
                    float part = 0;
                    for (int vec = b0; vec < b1; vec++) part = vq_vec_dot(v, cb, r, vec, x + (size_t)vec * d, 1, part);
                    acc += nb ? part * v->nsc[g * 16 + nsint(v, r, blk)] : part;
                    b0 = b1;
                }
                tmp[r - ra] += acc;
            }
        }
        for (int r = ra; r < rb; r++) put(y, r, tmp[r - ra], accumulate);
    }
}

// Eight indices of stage s, row r, vectors vec..vec+7, as int32 lanes.
AVX2_FN static GQ_INLINE __m256i vq_index8(const struct gq_vqrt *v, int s, int r, int vec) {
    const int lk = v->lk;
    const int64_t bit = (((int64_t)s * v->p.h.rows + r) * v->nv + vec) * lk;
    const size_t byte = (size_t)(bit >> 3), sh = (size_t)(bit & 7);
    if (lk == 8) return _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(v->p.part[GQ_VQP_IDX] + byte)));
    if (lk <= 7 && byte + 8 <= v->p.bytes[GQ_VQP_IDX]) {
        uint64_t w;
        memcpy(&w, v->p.part[GQ_VQP_IDX] + byte, 8);
        w >>= sh;
        if (lk <= 4) { // all eight in the low 32 bits
            const __m256i shifts = _mm256_mullo_epi32(_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7), _mm256_set1_epi32(lk));
            return _mm256_and_si256(_mm256_srlv_epi32(_mm256_set1_epi32((int)(uint32_t)w), shifts),
                                    _mm256_set1_epi32((1 << lk) - 1));
        }
        const uint64_t m = (1u << lk) - 1;
        return _mm256_setr_epi32((int)(w & m), (int)((w >> lk) & m), (int)((w >> 2 * lk) & m), (int)((w >> 3 * lk) & m),
                                 (int)((w >> 4 * lk) & m), (int)((w >> 5 * lk) & m), (int)((w >> 6 * lk) & m),
                                 (int)((w >> 7 * lk) & m));
    }
    int32_t ix[8];
    for (int i = 0; i < 8; i++) ix[i] = (int32_t)vq_index(v, s, r, vec + i);
    return _mm256_loadu_si256((const __m256i *)ix);
}

// Four rows r..r+3, vectors [vec, b1) in steps of 8, k <= 16 (one stage):
// codebook lookups by permutes of the (lo, hi) tables of each coordinate.
// Returns the first vector not done.
AVX2_FN static GQ_INLINE int vq_rows4_small(const struct gq_vqrt *v, int r, int vec, int b1, const int DIM,
                                            const __m256 *tlo, const __m256 *thi, const float *xd, __m256 *pv) {
    const int nv = v->nv;
    const bool two = v->p.h.k > 8;
    __m256 p0 = pv[0], p1 = pv[1], p2 = pv[2], p3 = pv[3];
    for (; vec + 8 <= b1; vec += 8) {
        const __m256i i0 = vq_index8(v, 0, r, vec), i1 = vq_index8(v, 0, r + 1, vec);
        const __m256i i2 = vq_index8(v, 0, r + 2, vec), i3 = vq_index8(v, 0, r + 3, vec);
        const __m256 h0 = _mm256_castsi256_ps(_mm256_slli_epi32(i0, 28)), h1 = _mm256_castsi256_ps(_mm256_slli_epi32(i1, 28));
        const __m256 h2 = _mm256_castsi256_ps(_mm256_slli_epi32(i2, 28)), h3 = _mm256_castsi256_ps(_mm256_slli_epi32(i3, 28));
        for (int j = 0; j < DIM; j++) {
            const __m256 xj = _mm256_loadu_ps(xd + (size_t)j * nv + vec);
            __m256 c0 = _mm256_permutevar8x32_ps(tlo[j], i0), c1 = _mm256_permutevar8x32_ps(tlo[j], i1);
            __m256 c2 = _mm256_permutevar8x32_ps(tlo[j], i2), c3 = _mm256_permutevar8x32_ps(tlo[j], i3);
            if (two) {
                c0 = _mm256_blendv_ps(c0, _mm256_permutevar8x32_ps(thi[j], i0), h0);
                c1 = _mm256_blendv_ps(c1, _mm256_permutevar8x32_ps(thi[j], i1), h1);
                c2 = _mm256_blendv_ps(c2, _mm256_permutevar8x32_ps(thi[j], i2), h2);
                c3 = _mm256_blendv_ps(c3, _mm256_permutevar8x32_ps(thi[j], i3), h3);
            }
            p0 = _mm256_fmadd_ps(c0, xj, p0), p1 = _mm256_fmadd_ps(c1, xj, p1);
            p2 = _mm256_fmadd_ps(c2, xj, p2), p3 = _mm256_fmadd_ps(c3, xj, p3);
        }
    }
    pv[0] = p0, pv[1] = p1, pv[2] = p2, pv[3] = p3;
    return vec;
}

// AVX2, rows [ra, rb) of row tile rt into tmp (which holds their outlier
// parts). Eight vectors per step, each coordinate j a codebook lookup
// (permutes for k <= 16, else a gather) times eight consecutive x values of
// coordinate j.
AVX2_FN static void vq_float_tile_avx2(const struct gq_vqrt *v, const struct vqx *X, int rt, int ra, int rb, float *tmp) {
    const struct gq_vqpack_hdr *h = &v->p.h;
    const int d = h->d, kd = h->k * d, nb = h->norm_block ? h->norm_block / d : 0, nv = v->nv;
    const int ld = d == 1 ? 0 : d == 2 ? 1 : d == 4 ? 2 : 3;
    const bool small = h->k <= 16 && h->stages == 1;
    const float *xd = X->xd;
    for (int ct = 0; ct < h->n_ct; ct++) {
        const int64_t g = (int64_t)rt * h->n_ct + ct;
        const float *cb = v->fcb + (size_t)g * h->stages * kd;
        __m256 tlo[8], thi[8];
        if (small)
            for (int j = 0; j < d; j++) {
                float lo[8] = {0}, hv[8] = {0};
                for (int m = 0; m < h->k; m++) (m < 8 ? lo : hv)[m & 7] = cb[(size_t)m * d + j];
                tlo[j] = _mm256_loadu_ps(lo), thi[j] = _mm256_loadu_ps(hv);
            }
        const int v0 = v->vt_start[ct], v1 = v->vt_start[ct + 1];
        int r = ra;
        // k <= 16: four rows at a time share the x loads and keep four
        // independent FMA chains; the rows left over (and k > 16) go one
        // by one with gathers below
        for (; small && r + 4 <= rb; r += 4) {
            float acc[4] = {0, 0, 0, 0};
            for (int b0 = v0, blk = v->blk0[ct]; b0 < v1; blk++) {
                const int b1 = nb && b0 + nb < v1 ? b0 + nb : v1;
                __m256 pv[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
                int vec = b0;
                switch (d) { // compile-time DIM: ix, hi and pv stay in registers
                case 1: vec = vq_rows4_small(v, r, vec, b1, 1, tlo, thi, xd, pv); break;
                case 2: vec = vq_rows4_small(v, r, vec, b1, 2, tlo, thi, xd, pv); break;
                case 4: vec = vq_rows4_small(v, r, vec, b1, 4, tlo, thi, xd, pv); break;
                default: vec = vq_rows4_small(v, r, vec, b1, 8, tlo, thi, xd, pv); break;
                }
                for (int q = 0; q < 4; q++) {
                    float part = gq_hsum256(pv[q]);
                    for (int t = vec; t < b1; t++) part = vq_vec_dot(v, cb, r + q, t, xd + t, nv, part);
                    acc[q] += nb ? part * v->nsc[g * 16 + nsint(v, r + q, blk)] : part;
                }
                b0 = b1;
            }
            for (int q = 0; q < 4; q++) tmp[r + q - ra] += acc[q];
        }
        for (; r < rb; r++) {
            float acc = 0;
            for (int b0 = v0, blk = v->blk0[ct]; b0 < v1; blk++) {
                const int b1 = nb && b0 + nb < v1 ? b0 + nb : v1;
                __m256 pv = _mm256_setzero_ps();
                int vec = b0;
                for (; vec + 8 <= b1; vec += 8) {
                    __m256i o0 = _mm256_slli_epi32(vq_index8(v, 0, r, vec), ld), o1 = o0;
                    if (h->stages > 1) o1 = _mm256_slli_epi32(vq_index8(v, 1, r, vec), ld);
                    for (int j = 0; j < d; j++) {
                        __m256 c = _mm256_i32gather_ps(cb + j, o0, 4);
                        if (h->stages > 1) c = _mm256_add_ps(c, _mm256_i32gather_ps(cb + kd + j, o1, 4));
                        pv = _mm256_fmadd_ps(c, _mm256_loadu_ps(xd + (size_t)j * nv + vec), pv);
                    }
                }
                float part = gq_hsum256(pv);
                for (; vec < b1; vec++) part = vq_vec_dot(v, cb, r, vec, xd + vec, nv, part);
                acc += nb ? part * v->nsc[g * 16 + nsint(v, r, blk)] : part;
                b0 = b1;
            }
            tmp[r - ra] += acc;
        }
    }
}

// ---------------------------------------------------------------------------
// Int8 kernels: scalar reference.

// The end of the normalisation block of column tile ct that holds vector
// vec (without normalisation: the tile's end), and that block's scale in
// row r (1 without).
static inline int seg_end(const struct gq_vqrt *v, int ct, int vec) {
    const int v0 = v->vt_start[ct], v1 = v->vt_start[ct + 1];
    return v->bv ? gq_min_i(v1, v0 + ((vec - v0) / v->bv + 1) * v->bv) : v1;
}
static inline float seg_scale(const struct gq_vqrt *v, int64_t g, int r, int ct, int vec) {
    return v->bv ? v->nsc[g * 16 + nsint(v, r, v->blk0[ct] + (vec - v->vt_start[ct]) / v->bv)] : 1.0f;
}

static void vq_q8_scalar(const struct gq_vqrt *v, const struct vqx *X, float *y, int r0, int r1, bool accumulate,
                         float *tmp) {
    const struct gq_vqpack_hdr *h = &v->p.h;
    const int d = h->d;
    FOR_ROW_TILES(v, r0, r1, rt, ra, rb) {
        for (int r = ra; r < rb; r++) tmp[r - ra] = vq_outl(v, X->xp, r);
        for (int ct = 0; ct < h->n_ct; ct++) {
            const int64_t g = (int64_t)rt * h->n_ct + ct;
            const int8_t *cb = (const int8_t *)v->p.part[GQ_VQP_CB] + (size_t)g * h->k * d;
            const float sc = v->cbs[g] * X->xs[ct];
            const int v0 = v->vt_start[ct], v1 = v->vt_start[ct + 1];
            const int8_t *x = X->xq + h->n_out;
            for (int r = ra; r < rb; r++) {
                float acc = 0;
                for (int s0 = v0; s0 < v1;) { // the normalisation blocks (or the whole tile)
                    const int s1 = seg_end(v, ct, s0);
                    int32_t sum = 0;
                    for (int vec = s0; vec < s1; vec++) {
                        const int8_t *c = cb + (size_t)vq_index(v, 0, r, vec) * d;
                        for (int j = 0; j < d; j++) sum += c[j] * x[(size_t)vec * d + j];
                    }
                    acc += (float)sum * (sc * seg_scale(v, g, r, ct, s0));
                    s0 = s1;
                }
                tmp[r - ra] += acc;
            }
        }
        for (int r = ra; r < rb; r++) put(y, r, tmp[r - ra], accumulate);
    }
}

// Σ code · x of row r's vectors [vec, v1) (the rest of a column tile).
static int32_t vq_q8_rest(const struct gq_vqrt *v, int r, int vec, int v1, const int8_t *cb, const int8_t *xq) {
    const int d = v->p.h.d;
    int32_t sum = 0;
    for (; vec < v1; vec++) {
        const int8_t *c = cb + (size_t)vq_index(v, 0, r, vec) * d;
        for (int j = 0; j < d; j++) sum += c[j] * xq[v->p.h.n_out + (size_t)vec * d + j];
    }
    return sum;
}

// ---------------------------------------------------------------------------
// Int8 kernels: AVX2.

// Σ c · x over 32 byte pairs: sign trick (|x| unsigned × sign-moved c, pairs
// summed in int16: at most 2 · 127 · 127), then pairs of int16 into int32.
AVX2_FN static GQ_INLINE __m256i dot_i8(__m256i c, __m256i x, __m256i ax) {
    return _mm256_madd_epi16(_mm256_maddubs_epi16(ax, _mm256_sign_epi8(c, x)), _mm256_set1_epi16(1));
}
// The same for any int8 c (−128 included): |c| × x with c's sign.
AVX2_FN static GQ_INLINE __m256i dot_c8(__m256i c, __m256i x) {
    return _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_sign_epi8(c, c), _mm256_sign_epi8(x, c)), _mm256_set1_epi16(1));
}
AVX2_FN static GQ_INLINE int32_t hsum_i32(__m256i a) {
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(a), _mm256_extracti128_si256(a, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4E));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xB1));
    return _mm_cvtsi128_si32(s);
}

// The 32 4-bit indices from bit 4·e of the index stream (e = the first
// vector's element number): lane 0 the even vectors' (0, 2, .., 30), lane 1
// the odd ones'.
AVX2_FN static GQ_INLINE __m256i nib32(const uint8_t *s, int64_t e) {
    const uint8_t *p = s + (e >> 1);
    __m128i b = _mm_loadu_si128((const __m128i *)p);
    if (e & 1) // starts at a high nibble: shift the stream down by 4 bits
        b = _mm_or_si128(_mm_and_si128(_mm_srli_epi16(b, 4), _mm_set1_epi8(0x0F)),
                         _mm_and_si128(_mm_slli_epi16(_mm_loadu_si128((const __m128i *)(p + 1)), 4), _mm_set1_epi8((char)0xF0)));
    const __m256i w = _mm256_srlv_epi64(_mm256_broadcastsi128_si256(b), _mm256_setr_epi64x(0, 0, 4, 4));
    return _mm256_and_si256(w, _mm256_set1_epi8(0x0F));
}

// NIB2: one block of 32 vectors from index element e (8 int32 partial sums).
AVX2_FN static GQ_INLINE __m256i nib2_block(const uint8_t *is, int64_t e, __m256i t0, __m256i t1, const int8_t *xb,
                                            const int8_t *ab) {
    const __m256i ix = nib32(is, e);
    const __m256i c0 = _mm256_shuffle_epi8(t0, ix), c1 = _mm256_shuffle_epi8(t1, ix);
    return _mm256_add_epi32(
        dot_i8(_mm256_unpacklo_epi8(c0, c1), _mm256_loadu_si256((const __m256i *)xb), _mm256_loadu_si256((const __m256i *)ab)),
        dot_i8(_mm256_unpackhi_epi8(c0, c1), _mm256_loadu_si256((const __m256i *)(xb + 32)),
               _mm256_loadu_si256((const __m256i *)(ab + 32))));
}

// Coordinate table j (16 signed codes, in both lanes) of group g (k = 16).
AVX2_FN static GQ_INLINE __m256i nib2_table(const struct gq_vqrt *v, int64_t g, int j) {
    const __m128i t = _mm_xor_si128(_mm_loadu_si128((const __m128i *)(v->tab + (size_t)g * 32 + 16 * j)), _mm_set1_epi8((char)0x80));
    return _mm256_broadcastsi128_si256(t);
}

// NIB2, rows r and r + 1 of row tile rt across all column tiles.
AVX2_FN static void vq_rows2_nib2(const struct gq_vqrt *v, const struct vqx *X, int r, int rt, float *o) {
    const uint8_t *is = v->p.part[GQ_VQP_IDX];
    const size_t ibytes = v->p.bytes[GQ_VQP_IDX];
    const int nct = v->p.h.n_ct;
    const int64_t e0 = (int64_t)r * v->nv, e1 = e0 + v->nv;
    __m256 f0 = _mm256_setzero_ps(), f1 = _mm256_setzero_ps();
    float rest0 = 0, rest1 = 0;
    for (int ct = 0; ct < nct; ct++) {
        const int64_t g = (int64_t)rt * nct + ct;
        const int v0 = v->vt_start[ct], v1 = v->vt_start[ct + 1];
        const __m256i t0 = nib2_table(v, g, 0), t1 = nib2_table(v, g, 1);
        const float sc = v->cbs[g] * X->xs[ct];
        for (int s0 = v0; s0 < v1;) { // the normalisation blocks (or the whole tile)
            const int s1 = seg_end(v, ct, s0), vend = s0 + ((s1 - s0) & ~31);
            __m256i a0 = _mm256_setzero_si256(), a1 = _mm256_setzero_si256();
            int vec = s0;
            for (; vec < vend && (size_t)((e1 + vec) >> 1) + 17 <= ibytes; vec += 32) {
                a0 = _mm256_add_epi32(a0, nib2_block(is, e0 + vec, t0, t1, X->xa + 2 * vec, X->xabs + 2 * vec));
                a1 = _mm256_add_epi32(a1, nib2_block(is, e1 + vec, t0, t1, X->xa + 2 * vec, X->xabs + 2 * vec));
            }
            const float sc0 = sc * seg_scale(v, g, r, ct, s0), sc1 = sc * seg_scale(v, g, r + 1, ct, s0);
            f0 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(a0), _mm256_set1_ps(sc0), f0);
            f1 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(a1), _mm256_set1_ps(sc1), f1);
            if (vec < s1) {
                const int8_t *cb = (const int8_t *)v->p.part[GQ_VQP_CB] + (size_t)g * 32;
                rest0 += (float)vq_q8_rest(v, r, vec, s1, cb, X->xq) * sc0;
                rest1 += (float)vq_q8_rest(v, r + 1, vec, s1, cb, X->xq) * sc1;
            }
            s0 = s1;
        }
    }
    o[0] += gq_hsum256(f0) + rest0;
    o[1] += gq_hsum256(f1) + rest1;
}

// Rows [ra, rb) of row tile rt into tmp (holding their outlier parts).
AVX2_FN static void vq_q8_tile_avx2(const struct gq_vqrt *v, const struct vqx *X, int rt, int ra, int rb, float *tmp) {
    const struct gq_vqpack_hdr *h = &v->p.h;
    const int d = h->d, nv = v->nv, nct = h->n_ct;
    const uint8_t *is = v->p.part[GQ_VQP_IDX];
    const int8_t *cbs = (const int8_t *)v->p.part[GQ_VQP_CB];
    const size_t ibytes = v->p.bytes[GQ_VQP_IDX], kd = (size_t)h->k * d;
    int r = ra;
    if (v->q8 == GQ_VQ_Q8_NIB2) // two rows at a time share the tables and x loads
        for (; r + 2 <= rb; r += 2) vq_rows2_nib2(v, X, r, rt, tmp + (r - ra));
    for (; r < rb; r++) {
        const int64_t e0 = (int64_t)r * nv;
        __m256 accf = _mm256_setzero_ps();
        float rest = 0;
        for (int ct = 0; ct < nct; ct++) {
            const int64_t g = (int64_t)rt * nct + ct;
            const int8_t *cb = cbs + (size_t)g * kd;
            for (int s0 = v->vt_start[ct], v1; s0 < v->vt_start[ct + 1]; s0 = v1) { // normalisation blocks (or the tile)
                v1 = seg_end(v, ct, s0);
                const float sc = v->cbs[g] * X->xs[ct] * seg_scale(v, g, r, ct, s0);
                __m256i acc = _mm256_setzero_si256();
                int vec = s0;
                if (v->q8 == GQ_VQ_Q8_NIB2) {
                    const __m256i t0 = nib2_table(v, g, 0), t1 = nib2_table(v, g, 1);
                    const int vend = s0 + ((v1 - s0) & ~31);
                    for (; vec < vend && (size_t)((e0 + vec) >> 1) + 17 <= ibytes; vec += 32)
                        acc = _mm256_add_epi32(acc, nib2_block(is, e0 + vec, t0, t1, X->xa + 2 * vec, X->xabs + 2 * vec));
                } else if (v->q8 == GQ_VQ_Q8_BYTE4) {
                    for (; vec + 8 <= v1; vec += 8) {
                        const __m256i ix = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(is + e0 + vec)));
                        const __m256i c = _mm256_i32gather_epi32((const int *)cb, ix, 4);
                        acc = _mm256_add_epi32(acc, dot_i8(c, _mm256_loadu_si256((const __m256i *)(X->xa + 4 * vec)),
                                                           _mm256_loadu_si256((const __m256i *)(X->xabs + 4 * vec))));
                    }
                } else { // generic: 8 vectors, their centroids padded to 4 (8) bytes by gathers
                    const int dp = d <= 4 ? 4 : 8;
                    const uint8_t *c8 = v->cb8 + (size_t)g * h->k * dp;
                    for (; vec + 8 <= v1; vec += 8) {
                        const __m256i ix = _mm256_slli_epi32(vq_index8(v, 0, r, vec), dp == 4 ? 2 : 3);
                        acc = _mm256_add_epi32(acc, dot_c8(_mm256_i32gather_epi32((const int *)c8, ix, 1),
                                                           _mm256_loadu_si256((const __m256i *)(X->xa + 4 * (size_t)vec))));
                        if (dp == 8)
                            acc = _mm256_add_epi32(acc, dot_c8(_mm256_i32gather_epi32((const int *)(c8 + 4), ix, 1),
                                                               _mm256_loadu_si256((const __m256i *)(X->xa + 4 * (size_t)(nv + vec)))));
                    }
                }
                accf = _mm256_fmadd_ps(_mm256_cvtepi32_ps(acc), _mm256_set1_ps(sc), accf);
                if (vec < v1) rest += (float)vq_q8_rest(v, r, vec, v1, cb, X->xq) * sc;
            }
        }
        tmp[r - ra] += gq_hsum256(accf) + rest;
    }
}

// ---------------------------------------------------------------------------
// Int8 kernels: AVX-512 (VNNI, VBMI).

// gq_round_i8 on 16 lanes: the same operations, bit-identical codes and scale.
AVX512_FN static float round_i8_avx512(const float *x, int n, int8_t *q) {
    const __m512 sgn = _mm512_set1_ps(-0.0f);
    __m512 m = _mm512_setzero_ps();
    for (int i = 0; i < n; i += 16) {
        const __mmask16 k = n - i >= 16 ? 0xFFFF : (__mmask16)((1u << (n - i)) - 1);
        m = _mm512_max_ps(m, _mm512_andnot_ps(sgn, _mm512_maskz_loadu_ps(k, x + i)));
    }
    const float mx = _mm512_reduce_max_ps(m), s = mx / 127, inv = s > 0 ? 1 / s : 0;
    const __m512 vi = _mm512_set1_ps(inv), ph = _mm512_set1_ps(0.5f), nh = _mm512_set1_ps(-0.5f);
    for (int i = 0; i < n; i += 16) {
        const __mmask16 k = n - i >= 16 ? 0xFFFF : (__mmask16)((1u << (n - i)) - 1);
        const __m512 t = _mm512_mul_ps(_mm512_maskz_loadu_ps(k, x + i), vi);
        const __m512 hv = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(t, _mm512_setzero_ps(), _CMP_LT_OQ), ph, nh);
        _mm512_mask_cvtsepi32_storeu_epi8(q + i, k, _mm512_cvttps_epi32(_mm512_add_ps(t, hv)));
    }
    return s;
}

// Σ of n int8 codes (n may be 0).
AVX512_FN static int32_t sum_i8_avx512(const int8_t *q, int n) {
    __m512i acc = _mm512_setzero_si512();
    for (int i = 0; i < n; i += 64) {
        const __mmask64 k = n - i >= 64 ? ~0ull : (1ull << (n - i)) - 1;
        const __m512i z = _mm512_maskz_loadu_epi8(k, q + i);
        acc = _mm512_add_epi64(acc, _mm512_sad_epu8(_mm512_mask_add_epi8(z, k, z, _mm512_set1_epi8((char)0x80)), _mm512_setzero_si512()));
    }
    return (int32_t)(_mm512_reduce_add_epi64(acc) - 128 * (int64_t)n);
}

static inline __mmask64 mask64(int n) { return n >= 64 ? ~0ull : n <= 0 ? 0 : (1ull << n) - 1; }

// x for the AVX-512 kernels: permuted (gathers), rounded per column tile,
// the codes arranged in planes (one byte permute per plane and 64 vectors)
// and summed (per NIB half, else per column tile).
AVX512_FN static void vq_prep_fast_avx512(const struct gq_vqrt *v, const float *x, struct vqx *X) {
    const struct gq_vqpack_hdr *h = &v->p.h;
    const int n = h->cols, nv = v->nv, d = h->d, no = h->n_out, nct = h->n_ct, nc = nv * d;
    float *xp = (float *)X->xp;
    if (v->perm)
        for (int p = 0; p < n; p += 16) {
            const __mmask16 k = n - p >= 16 ? 0xFFFF : (__mmask16)((1u << (n - p)) - 1);
            const __m512i ix = _mm512_maskz_loadu_epi32(k, v->perm + p);
            _mm512_mask_storeu_ps(xp + p, k, _mm512_mask_i32gather_ps(_mm512_setzero_ps(), k, ix, x, 4));
        }
    else
        memcpy(xp, x, sizeof(float) * n);
    for (int ct = 0; ct < nct; ct++)
        X->xs[ct] = round_i8_avx512(xp + v->ct_start[ct], v->ct_start[ct + 1] - v->ct_start[ct], X->xq + v->ct_start[ct]);
    const int8_t *xc = X->xq + no;
    const int nch = (nv + 63) / 64;
    const bool short_tail = v->fast == GQ_VQF_NIB && nv % 64 && nv % 64 <= 32;
    for (int c = 0; c < nch; c++) {
        const int b0 = 64 * d * c; // first code of the chunk
        const __m512i z0 = _mm512_maskz_loadu_epi8(mask64(nc - b0), xc + b0);
        const __m512i z1 = d >= 2 ? _mm512_maskz_loadu_epi8(mask64(nc - b0 - 64), xc + b0 + 64) : _mm512_setzero_si512();
        for (int j = 0; j < d; j++) {
            const __m512i id = _mm512_loadu_si512(v->pix + 64 * (short_tail && c == nch - 1 ? 4 + j : j));
            __m512i pl;
            if (d <= 2) pl = _mm512_permutex2var_epi8(z0, id, z1);
            else {
                const __m512i z2 = _mm512_maskz_loadu_epi8(mask64(nc - b0 - 128), xc + b0 + 128);
                const __m512i z3 = _mm512_maskz_loadu_epi8(mask64(nc - b0 - 192), xc + b0 + 192);
                const __m512i lo = _mm512_permutex2var_epi8(z0, id, z1), hi = _mm512_permutex2var_epi8(z2, id, z3);
                pl = _mm512_inserti64x4(lo, _mm512_castsi512_si256(hi), 1);
            }
            _mm512_storeu_si512(X->pl + (size_t)j * X->pstride + 64 * c, pl);
        }
    }
    if (X->cr) // the lanes' −128 · Σ x of every step (the correction the normalised NIB rows start from)
        for (int s = 0; s < (nv + 63) / 64; s++) {
            const __m512i one = _mm512_set1_epi8(1);
            __m512i sx = _mm512_dpbusd_epi32(_mm512_setzero_si512(), one, _mm512_loadu_si512(X->pl + 64 * s));
            if (d == 2) sx = _mm512_dpbusd_epi32(sx, one, _mm512_loadu_si512(X->pl + X->pstride + 64 * s));
            _mm512_store_si512(X->cr + 16 * s, _mm512_sub_epi32(_mm512_setzero_si512(), _mm512_slli_epi32(sx, 7)));
        }
    if (v->fast == GQ_VQF_NIB || v->fast == GQ_VQF_D2K64H)
        for (int hh = 0; hh < (nv + 31) / 32; hh++) X->sum[hh] = sum_i8_avx512(xc + 32 * d * hh, gq_min_i(32 * d, nc - 32 * d * hh));
    else
        for (int ct = 0; ct < nct; ct++) X->sum[ct] = sum_i8_avx512(X->xq + v->ct_start[ct], v->ct_start[ct + 1] - v->ct_start[ct]);
}

// One NIB step of a row: the 32 index bytes at ib (nb < 32: only nb of
// them, zeros after) expanded to 64 4-bit indices in the step's lane order:
// the bytes in both 256-bit halves, then one GF(2) affine map per qword
// keeps the low nibble of each byte (lower half) or moves its high nibble
// down (upper half).
AVX512_FN static GQ_INLINE __m512i nib_idx(const uint8_t *ib, int nb) {
    const __m512i lohi = _mm512_setr_epi64(0x0102040800000000ll, 0x0102040800000000ll, 0x0102040800000000ll,
                                           0x0102040800000000ll, 0x1020408000000000ll, 0x1020408000000000ll,
                                           0x1020408000000000ll, 0x1020408000000000ll);
    const __m256i raw = nb >= 32 ? _mm256_loadu_si256((const __m256i *)ib) : _mm256_maskz_loadu_epi8((1u << nb) - 1, ib);
    return _mm512_gf2p8affine_epi64_epi8(_mm512_broadcast_i64x4(raw), lohi, 0);
}

// Σ over the steps of a row: the exact int32 dot products of a step (both
// halves), scaled by the halves' scales into 16 float lanes.
AVX512_FN static GQ_INLINE __m512 nib_step(__m512 f, __m512i z, const __m512i *tb, __m512 sv, const int8_t *x0,
                                           const int8_t *x1, const int D) {
    __m512i a = _mm512_dpbusd_epi32(_mm512_setzero_si512(), _mm512_shuffle_epi8(tb[0], z), _mm512_loadu_si512(x0));
    if (D == 2) a = _mm512_dpbusd_epi32(a, _mm512_shuffle_epi8(tb[1], z), _mm512_loadu_si512(x1));
    return _mm512_fmadd_ps(_mm512_cvtepi32_ps(a), sv, f);
}

// Rows [ra, rb) of one row tile, two at a time (the tables, scales and x
// loads shared): y[r] (+)= Σ lanes + K + outliers.
// The short last step (<= 32 vectors) on 256 bits: both lanes the half's
// table, x in the order of nib_vec's short form.
AVX512_FN static GQ_INLINE __m512 nib_tail(__m512 f, const uint8_t *ib, int nb, __m256i t0, __m256i t1, __m256 sc,
                                           const int8_t *x0, const int8_t *x1, const int D) {
    const __m256i raw = _mm256_broadcastsi128_si256(_mm_maskz_loadu_epi8((__mmask16)((1u << nb) - 1), ib));
    const __m256i z = _mm256_and_si256(_mm256_srlv_epi64(raw, _mm256_setr_epi64x(0, 0, 4, 4)), _mm256_set1_epi8(15));
    __m256i a = _mm256_dpbusd_epi32(_mm256_setzero_si256(), _mm256_shuffle_epi8(t0, z), _mm256_loadu_si256((const __m256i *)x0));
    if (D == 2) a = _mm256_dpbusd_epi32(a, _mm256_shuffle_epi8(t1, z), _mm256_loadu_si256((const __m256i *)x1));
    return _mm512_add_ps(f, _mm512_zextps256_ps512(_mm256_mul_ps(_mm256_cvtepi32_ps(a), sc)));
}

AVX512_FN static GQ_INLINE void nib_rows_avx512(const struct gq_vqrt *v, const struct vqx *X, int ra, int rb,
                                                const __m512i *tb, const __m512 *sv, float K, const int D, float *y,
                                                bool accumulate) {
    const int nv = v->nv, nfull = nv / 64, tail = (nv % 64) / 2, rowb = nv / 2;
    const bool short_tail = tail && tail <= 16; // <= 32 vectors: a 256-bit step
    const __m256i tt0 = short_tail ? _mm512_castsi512_si256(tb[D * nfull]) : _mm256_setzero_si256();
    const __m256i tt1 = short_tail ? _mm512_castsi512_si256(tb[D * nfull + D - 1]) : tt0;
    const __m256 tsc = short_tail ? _mm512_castps512_ps256(sv[nfull]) : _mm256_setzero_ps();
    const uint8_t *is = v->p.part[GQ_VQP_IDX];
    const int8_t *p0 = X->pl, *p1 = X->pl + X->pstride;
    const bool outl = v->p.h.n_out > 0;
    int r = ra;
    for (; r + 4 <= rb; r += 4) {
        const uint8_t *ib = is + (size_t)r * rowb;
        for (int o = 0; o < 4 * rowb; o += 64) _mm_prefetch((const char *)(ib + 8 * (size_t)rowb + o), _MM_HINT_T0); // two groups ahead
        __m512 f0 = _mm512_setzero_ps(), f1 = _mm512_setzero_ps(), f2 = _mm512_setzero_ps(), f3 = _mm512_setzero_ps();
        for (int s = 0; s < nfull + (tail > 0 && !short_tail); s++) {
            const int nb = s < nfull ? 32 : tail;
            const __m512i x0 = _mm512_loadu_si512(p0 + 64 * s), x1 = D == 2 ? _mm512_loadu_si512(p1 + 64 * s) : x0;
            const __m512i t0 = tb[D * s], t1 = D == 2 ? tb[D * s + 1] : t0;
            const __m512 sc = sv[s];
#define NIB4(f, o)                                                                                              \
    {                                                                                                           \
        const __m512i z = nib_idx(ib + (o) + 32 * s, nb);                                                       \
        __m512i a = _mm512_dpbusd_epi32(_mm512_setzero_si512(), _mm512_shuffle_epi8(t0, z), x0);                \
        if (D == 2) a = _mm512_dpbusd_epi32(a, _mm512_shuffle_epi8(t1, z), x1);                                 \
        f = _mm512_fmadd_ps(_mm512_cvtepi32_ps(a), sc, f);                                                      \
    }
            NIB4(f0, 0) NIB4(f1, rowb) NIB4(f2, 2 * rowb) NIB4(f3, 3 * rowb)
#undef NIB4
        }
        if (short_tail) {
            const int8_t *xa = p0 + 64 * nfull, *xb = p1 + 64 * nfull;
            f0 = nib_tail(f0, ib + 32 * nfull, tail, tt0, tt1, tsc, xa, xb, D);
            f1 = nib_tail(f1, ib + rowb + 32 * nfull, tail, tt0, tt1, tsc, xa, xb, D);
            f2 = nib_tail(f2, ib + 2 * rowb + 32 * nfull, tail, tt0, tt1, tsc, xa, xb, D);
            f3 = nib_tail(f3, ib + 3 * rowb + 32 * nfull, tail, tt0, tt1, tsc, xa, xb, D);
        }
        float o[4];
        _mm_storeu_ps(o, _mm_add_ps(gq_hsum4_512(f0, f1, f2, f3), _mm_set1_ps(K)));
        for (int q = 0; q < 4; q++) {
            if (outl) o[q] += vq_outl(v, X->xp, r + q);
            y[r + q] = accumulate ? y[r + q] + o[q] : o[q];
        }
    }
    for (; r + 2 <= rb; r += 2) {
        const uint8_t *ib = is + (size_t)r * rowb;
        __m512 f0 = _mm512_setzero_ps(), f1 = _mm512_setzero_ps();
        int s = 0;
        for (; s < nfull; s++) {
            const __m512i z0 = nib_idx(ib + 32 * s, 32), z1 = nib_idx(ib + rowb + 32 * s, 32);
            f0 = nib_step(f0, z0, tb + D * s, sv[s], p0 + 64 * s, p1 + 64 * s, D);
            f1 = nib_step(f1, z1, tb + D * s, sv[s], p0 + 64 * s, p1 + 64 * s, D);
        }
        if (short_tail) {
            f0 = nib_tail(f0, ib + 32 * s, tail, tt0, tt1, tsc, p0 + 64 * s, p1 + 64 * s, D);
            f1 = nib_tail(f1, ib + rowb + 32 * s, tail, tt0, tt1, tsc, p0 + 64 * s, p1 + 64 * s, D);
        } else if (tail) {
            const __m512i z0 = nib_idx(ib + 32 * s, tail), z1 = nib_idx(ib + rowb + 32 * s, tail);
            f0 = nib_step(f0, z0, tb + D * s, sv[s], p0 + 64 * s, p1 + 64 * s, D);
            f1 = nib_step(f1, z1, tb + D * s, sv[s], p0 + 64 * s, p1 + 64 * s, D);
        }
        // both rows' lane sums at once: 128-bit quarters, then within them
        __m512 t = _mm512_add_ps(_mm512_shuffle_f32x4(f0, f1, _MM_SHUFFLE(1, 0, 1, 0)),
                                 _mm512_shuffle_f32x4(f0, f1, _MM_SHUFFLE(3, 2, 3, 2)));
        t = _mm512_add_ps(t, _mm512_shuffle_f32x4(t, t, _MM_SHUFFLE(2, 3, 0, 1)));
        t = _mm512_add_ps(t, _mm512_permute_ps(t, _MM_SHUFFLE(1, 0, 3, 2)));
        t = _mm512_add_ps(t, _mm512_permute_ps(t, _MM_SHUFFLE(2, 3, 0, 1)));
        float o0 = _mm512_cvtss_f32(t) + K, o1 = _mm_cvtss_f32(_mm512_extractf32x4_ps(t, 2)) + K;
        if (outl) o0 += vq_outl(v, X->xp, r), o1 += vq_outl(v, X->xp, r + 1);
        y[r] = accumulate ? y[r] + o0 : o0;
        y[r + 1] = accumulate ? y[r + 1] + o1 : o1;
    }
    for (; r < rb; r++) {
        const uint8_t *ib = is + (size_t)r * rowb;
        __m512 f = _mm512_setzero_ps();
        int s = 0;
        for (; s < nfull; s++) f = nib_step(f, nib_idx(ib + 32 * s, 32), tb + D * s, sv[s], p0 + 64 * s, p1 + 64 * s, D);
        if (short_tail) f = nib_tail(f, ib + 32 * s, tail, tt0, tt1, tsc, p0 + 64 * s, p1 + 64 * s, D);
        else if (tail) f = nib_step(f, nib_idx(ib + 32 * s, tail), tb + D * s, sv[s], p0 + 64 * s, p1 + 64 * s, D);
        float o = _mm512_reduce_add_ps(f) + K;
        if (outl) o += vq_outl(v, X->xp, r);
        y[r] = accumulate ? y[r] + o : o;
    }
}

// NIB for short row tiles (fewer than 24 rows, where building the lane
// tables above costs as much as the rows): one 64-byte table per step with
// both halves' coordinate tables (d 2: [half 0: c0 c1 | half 1: c0 c1]; d 1:
// [half 0 | half 1]), looked up by vpermb with the half's offset or'ed into
// the indices (lanes 1 and 3 hold the second half).
AVX512_FN static GQ_INLINE void nibp_rows_avx512(const struct gq_vqrt *v, const struct vqx *X, int ra, int rb,
                                                 const __m512i *tp, const __m512 *sv, float K, const int D, float *y,
                                                 bool accumulate) {
    const int nv = v->nv, nfull = nv / 64, tail = (nv % 64) / 2, rowb = nv / 2;
    const bool short_tail = tail && tail <= 16;
    const uint8_t *is = v->p.part[GQ_VQP_IDX];
    const int8_t *p0 = X->pl, *p1 = X->pl + X->pstride;
    const bool outl = v->p.h.n_out > 0;
    const __m512i shift = _mm512_setr_epi64(0, 0, 0, 0, 4, 4, 4, 4), m4 = _mm512_set1_epi8(15);
    const __m512i hl = _mm512_set_epi64(-1, 0, -1, 0, -1, 0, -1, 0); // lanes 1 and 3
    const __m512i off0 = _mm512_and_si512(hl, _mm512_set1_epi8(D == 2 ? 32 : 16)), off1 = _mm512_or_si512(off0, _mm512_set1_epi8(16));
#define NIBP_STEP(f, ib, nb)                                                                                        \
    {                                                                                                               \
        const __m256i raw = (nb) >= 32 ? _mm256_loadu_si256((const __m256i *)(ib)) : _mm256_maskz_loadu_epi8((1u << (nb)) - 1, ib); \
        const __m512i zs = _mm512_srlv_epi64(_mm512_broadcast_i64x4(raw), shift);                                   \
        __m512i a = _mm512_dpbusd_epi32(_mm512_setzero_si512(),                                                     \
                                        _mm512_permutexvar_epi8(_mm512_ternarylogic_epi32(zs, m4, off0, 0xEA), tp[s]), x0); \
        if (D == 2)                                                                                                 \
            a = _mm512_dpbusd_epi32(a, _mm512_permutexvar_epi8(_mm512_ternarylogic_epi32(zs, m4, off1, 0xEA), tp[s]), x1); \
        f = _mm512_fmadd_ps(_mm512_cvtepi32_ps(a), sv[s], f);                                                        \
    }
#define NIBP_TAIL(f, ib)                                                                                             \
    {                                                                                                                \
        const __m256i raw = _mm256_broadcastsi128_si256(_mm_maskz_loadu_epi8((__mmask16)((1u << tail) - 1), ib));   \
        const __m256i z = _mm256_and_si256(_mm256_srlv_epi64(raw, _mm256_setr_epi64x(0, 0, 4, 4)), _mm256_set1_epi8(15)); \
        const __m256i t = _mm512_castsi512_si256(tp[nfull]);                                                         \
        __m256i a = _mm256_dpbusd_epi32(_mm256_setzero_si256(), _mm256_permutexvar_epi8(z, t),                       \
                                        _mm256_loadu_si256((const __m256i *)(p0 + 64 * nfull)));                      \
        if (D == 2)                                                                                                  \
            a = _mm256_dpbusd_epi32(a, _mm256_permutexvar_epi8(_mm256_or_si256(z, _mm256_set1_epi8(16)), t),          \
                                    _mm256_loadu_si256((const __m256i *)(p1 + 64 * nfull)));                          \
        f = _mm512_add_ps(f, _mm512_zextps256_ps512(_mm256_mul_ps(_mm256_cvtepi32_ps(a), _mm512_castps512_ps256(sv[nfull])))); \
    }
    int r = ra;
    for (; r + 4 <= rb; r += 4) {
        const uint8_t *ib = is + (size_t)r * rowb;
        __m512 f0 = _mm512_setzero_ps(), f1 = _mm512_setzero_ps(), f2 = _mm512_setzero_ps(), f3 = _mm512_setzero_ps();
        int s = 0;
        for (; s < nfull + (tail > 0 && !short_tail); s++) {
            const int nb = s < nfull ? 32 : tail;
            const __m512i x0 = _mm512_loadu_si512(p0 + 64 * s), x1 = D == 2 ? _mm512_loadu_si512(p1 + 64 * s) : x0;
            NIBP_STEP(f0, ib + 32 * s, nb) NIBP_STEP(f1, ib + rowb + 32 * s, nb)
            NIBP_STEP(f2, ib + 2 * rowb + 32 * s, nb) NIBP_STEP(f3, ib + 3 * rowb + 32 * s, nb)
        }
        if (short_tail) {
            NIBP_TAIL(f0, ib + 32 * nfull) NIBP_TAIL(f1, ib + rowb + 32 * nfull)
            NIBP_TAIL(f2, ib + 2 * rowb + 32 * nfull) NIBP_TAIL(f3, ib + 3 * rowb + 32 * nfull)
        }
        float o[4];
        _mm_storeu_ps(o, _mm_add_ps(gq_hsum4_512(f0, f1, f2, f3), _mm_set1_ps(K)));
        for (int q = 0; q < 4; q++) {
            if (outl) o[q] += vq_outl(v, X->xp, r + q);
            y[r + q] = accumulate ? y[r + q] + o[q] : o[q];
        }
    }
    for (; r < rb; r++) {
        const uint8_t *ib = is + (size_t)r * rowb;
        __m512 f = _mm512_setzero_ps();
        int s = 0;
        for (; s < nfull + (tail > 0 && !short_tail); s++) {
            const int nb = s < nfull ? 32 : tail;
            const __m512i x0 = _mm512_loadu_si512(p0 + 64 * s), x1 = D == 2 ? _mm512_loadu_si512(p1 + 64 * s) : x0;
            NIBP_STEP(f, ib + 32 * s, nb)
        }
        if (short_tail) NIBP_TAIL(f, ib + 32 * nfull)
        float o = _mm512_reduce_add_ps(f) + K;
        if (outl) o += vq_outl(v, X->xp, r);
        y[r] = accumulate ? y[r] + o : o;
    }
#undef NIBP_STEP
#undef NIBP_TAIL
}

// NIB with normalisation (blocks of whole halves). Per step: the exact
// int32 sums Σ code · x of 16 lanes (the dpbusd of code + 128 started from
// cr, the lanes' −128 · Σ x), × the scale of the lane's half in this row:
// x scale · codebook scale · 2^(a s + z), looked up by the row's two codes
// (nidx: s0 | (16 | s1) << 8; lanes 4-7 and 12-15 take the high byte) in
// the step's two 16-float tables ta (first half) and tb2 (second).
AVX512_FN static GQ_INLINE __m512 nibn_step(__m512 f, __m512i z, const __m512i *tb, __m512i cr, __m512 ta, __m512 tb2,
                                            const uint16_t *w, __m512i x0, __m512i x1, const int D) {
    __m512i a = _mm512_dpbusd_epi32(cr, _mm512_shuffle_epi8(tb[0], z), x0);
    if (D == 2) a = _mm512_dpbusd_epi32(a, _mm512_shuffle_epi8(tb[1], z), x1);
    const __m512i id = _mm512_srlv_epi32(_mm512_broadcastw_epi16(_mm_loadu_si16(w)), // (from memory: no GPR transfer)
                                         _mm512_setr_epi32(0, 0, 0, 0, 8, 8, 8, 8, 0, 0, 0, 0, 8, 8, 8, 8));
    return _mm512_fmadd_ps(_mm512_cvtepi32_ps(a), _mm512_permutex2var_ps(ta, id, tb2), f);
}

// The short last step (<= 32 vectors, one half) on 256 bits, scale sc.
AVX512_FN static GQ_INLINE __m512 nibn_tail(__m512 f, const uint8_t *ib, int nb, __m256i t0, __m256i t1, __m256i cr,
                                            float sc, const int8_t *x0, const int8_t *x1, const int D) {
    const __m256i raw = _mm256_broadcastsi128_si256(_mm_maskz_loadu_epi8((__mmask16)((1u << nb) - 1), ib));
    const __m256i z = _mm256_and_si256(_mm256_srlv_epi64(raw, _mm256_setr_epi64x(0, 0, 4, 4)), _mm256_set1_epi8(15));
    __m256i a = _mm256_dpbusd_epi32(cr, _mm256_shuffle_epi8(t0, z), _mm256_loadu_si256((const __m256i *)x0));
    if (D == 2) a = _mm256_dpbusd_epi32(a, _mm256_shuffle_epi8(t1, z), _mm256_loadu_si256((const __m256i *)x1));
    return _mm512_add_ps(f, _mm512_zextps256_ps512(_mm256_mul_ps(_mm256_cvtepi32_ps(a), _mm256_set1_ps(sc))));
}

// Rows [ra, rb) of one row tile, four at a time (tables and x shared).
AVX512_FN static GQ_INLINE void nibn_rows_avx512(const struct gq_vqrt *v, const struct vqx *X, int ra, int rb,
                                                 const __m512i *tb, const __m512 *tf, const __m512i *cr, const int D,
                                                 float *y, bool accumulate) {
    const int nv = v->nv, nfull = nv / 64, tail = (nv % 64) / 2, rowb = nv / 2, nsteps = (nv + 63) / 64;
    const bool short_tail = tail && tail <= 16;
    const int nst = nfull + (tail > 0 && !short_tail); // 512-bit steps
    const __m256i tt0 = short_tail ? _mm512_castsi512_si256(tb[D * nfull]) : _mm256_setzero_si256();
    const __m256i tt1 = short_tail ? _mm512_castsi512_si256(tb[D * nfull + D - 1]) : tt0;
    const __m256i ctl = short_tail ? _mm512_castsi512_si256(cr[nfull]) : _mm256_setzero_si256();
    const float *ts = (const float *)(tf + 2 * nfull); // the short step's table
    const uint8_t *is = v->p.part[GQ_VQP_IDX];
    const int8_t *p0 = X->pl, *p1 = X->pl + X->pstride;
    const bool outl = v->p.h.n_out > 0;
    int r = ra;
    for (; r + 4 <= rb; r += 4) {
        const uint8_t *ib = is + (size_t)r * rowb;
        const uint16_t *w = v->nidx + (size_t)r * nsteps;
        for (int o = 0; o < 4 * rowb; o += 64) _mm_prefetch((const char *)(ib + 8 * (size_t)rowb + o), _MM_HINT_T0);
        __m512 f0 = _mm512_setzero_ps(), f1 = _mm512_setzero_ps(), f2 = _mm512_setzero_ps(), f3 = _mm512_setzero_ps();
#define NIBN4(s, nb)                                                                                                   \
    {                                                                                                                  \
        const __m512i x0 = _mm512_loadu_si512(p0 + 64 * (s)), x1 = D == 2 ? _mm512_loadu_si512(p1 + 64 * (s)) : x0;   \
        const __m512 ta = tf[2 * (s)], tb2 = tf[2 * (s) + 1];                                                         \
        const __m512i c = cr[s];                                                                                       \
        f0 = nibn_step(f0, nib_idx(ib + 32 * (s), nb), tb + D * (s), c, ta, tb2, w + (s), x0, x1, D);                 \
        f1 = nibn_step(f1, nib_idx(ib + rowb + 32 * (s), nb), tb + D * (s), c, ta, tb2, w + nsteps + (s), x0, x1, D); \
        f2 = nibn_step(f2, nib_idx(ib + 2 * rowb + 32 * (s), nb), tb + D * (s), c, ta, tb2, w + 2 * nsteps + (s), x0, x1, D); \
        f3 = nibn_step(f3, nib_idx(ib + 3 * rowb + 32 * (s), nb), tb + D * (s), c, ta, tb2, w + 3 * nsteps + (s), x0, x1, D); \
    }
        for (int s = 0; s < nfull; s++) NIBN4(s, 32) // (the full steps apart: no test of nb inside)
        if (nst > nfull) NIBN4(nfull, tail)
#undef NIBN4
        if (short_tail) {
            const int8_t *xa = p0 + 64 * nfull, *xb = p1 + 64 * nfull;
            f0 = nibn_tail(f0, ib + 32 * nfull, tail, tt0, tt1, ctl, ts[w[nfull] & 15], xa, xb, D);
            f1 = nibn_tail(f1, ib + rowb + 32 * nfull, tail, tt0, tt1, ctl, ts[w[nsteps + nfull] & 15], xa, xb, D);
            f2 = nibn_tail(f2, ib + 2 * rowb + 32 * nfull, tail, tt0, tt1, ctl, ts[w[2 * nsteps + nfull] & 15], xa, xb, D);
            f3 = nibn_tail(f3, ib + 3 * rowb + 32 * nfull, tail, tt0, tt1, ctl, ts[w[3 * nsteps + nfull] & 15], xa, xb, D);
        }
        float o[4];
        _mm_storeu_ps(o, gq_hsum4_512(f0, f1, f2, f3));
        for (int q = 0; q < 4; q++) {
            if (outl) o[q] += vq_outl(v, X->xp, r + q);
            y[r + q] = accumulate ? y[r + q] + o[q] : o[q];
        }
    }
    for (; r < rb; r++) {
        const uint8_t *ib = is + (size_t)r * rowb;
        const uint16_t *w = v->nidx + (size_t)r * nsteps;
        __m512 f = _mm512_setzero_ps();
        for (int s = 0; s < nst; s++) {
            const __m512i x0 = _mm512_loadu_si512(p0 + 64 * s), x1 = D == 2 ? _mm512_loadu_si512(p1 + 64 * s) : x0;
            f = nibn_step(f, nib_idx(ib + 32 * s, s < nfull ? 32 : tail), tb + D * s, cr[s], tf[2 * s], tf[2 * s + 1], w + s, x0, x1, D);
        }
        if (short_tail) f = nibn_tail(f, ib + 32 * nfull, tail, tt0, tt1, ctl, ts[w[nfull] & 15], p0 + 64 * nfull, p1 + 64 * nfull, D);
        float o = _mm512_reduce_add_ps(f);
        if (outl) o += vq_outl(v, X->xp, r);
        y[r] = accumulate ? y[r] + o : o;
    }
}

// NIB: per row tile, the step tables (coordinate j's 16-entry tables of the
// two halves' groups: lanes 0 and 2 the first half's, 1 and 3 the second's)
// and scales (int32 lanes 0-3 and 8-11 / 4-7 and 12-15), then per row 64
// vectors a step. K: the tiles' −128 · Σ x corrections.
AVX512_FN static void vq_nib_tile_avx512(const struct gq_vqrt *v, const struct vqx *X, int rt, int ra, int rb,
                                         __m512i *tb, __m512 *sv, float *y, bool accumulate) {
    const struct gq_vqpack_hdr *h = &v->p.h;
    const int nv = v->nv, d = h->d, nsteps = (nv + 63) / 64;
    const bool packed = v->rt_start[rt + 1] - v->rt_start[rt] < 24;
    if (v->bv) { // normalisation: tables as below, the halves' float scale tables, the lanes' corrections
        __m512 *tf = (__m512 *)(tb + 2 * nsteps);
        const __m512i *cr = (const __m512i *)X->cr;
        for (int s = 0; s < nsteps; s++) {
            const uint8_t *t[2];
            for (int hh = 0; hh < 2; hh++) {
                const int half = 2 * s + hh, hv = gq_min_i(half, (nv - 1) / 32); // past the end: the last group, x = 0
                const int ct = v->half_ct[hv];
                const int64_t g = (int64_t)rt * h->n_ct + ct;
                tf[2 * s + hh] = _mm512_mul_ps(_mm512_set1_ps(half == hv ? v->cbs[g] * X->xs[ct] : 0), _mm512_loadu_ps(v->nsc + 16 * g));
                t[hh] = v->tab + (size_t)g * 16 * d;
            }
            if (s == nv / 64 && nv % 64 <= 32) t[1] = t[0], tf[2 * s + 1] = tf[2 * s]; // the short last step
            for (int j = 0; j < d; j++)
                tb[d * s + j] = _mm512_broadcast_i64x4(
                    _mm256_inserti128_si256(_mm256_castsi128_si256(_mm_loadu_si128((const __m128i *)(t[0] + 16 * j))),
                                            _mm_loadu_si128((const __m128i *)(t[1] + 16 * j)), 1));
        }
        if (d == 1) nibn_rows_avx512(v, X, ra, rb, tb, tf, cr, 1, y, accumulate);
        else nibn_rows_avx512(v, X, ra, rb, tb, tf, cr, 2, y, accumulate);
        return;
    }
    float K = 0;
    for (int s = 0; s < nsteps; s++) {
        float sc[2];
        const uint8_t *t[2];
        for (int hh = 0; hh < 2; hh++) {
            const int half = 2 * s + hh, hv = gq_min_i(half, (nv - 1) / 32); // past the end: the last group, x = 0
            const int ct = v->half_ct[hv];
            const int64_t g = (int64_t)rt * h->n_ct + ct;
            sc[hh] = half == hv ? v->cbs[g] * X->xs[ct] : 0;
            if (half == hv) K -= 128 * sc[hh] * (float)X->sum[half];
            t[hh] = v->tab + (size_t)g * 16 * d;
        }
        if (s == nv / 64 && nv % 64 <= 32) t[1] = t[0], sc[1] = sc[0]; // the short last step: one half in both lanes
        if (packed) { // nibp_rows' one table per step
            const int tb_b = 16 * d;
            tb[s] = t[1] == t[0] + tb_b && d == 2 ? _mm512_loadu_si512(t[0])
                                                  : _mm512_inserti64x4(_mm512_castsi256_si512(d == 2 ? _mm256_loadu_si256((const __m256i *)t[0])
                                                                                                      : _mm256_inserti128_si256(_mm256_castsi128_si256(_mm_loadu_si128((const __m128i *)t[0])), _mm_loadu_si128((const __m128i *)t[1]), 1)),
                                                                       d == 2 ? _mm256_loadu_si256((const __m256i *)t[1]) : _mm256_setzero_si256(), 1);
            sv[s] = _mm512_castsi512_ps(_mm512_broadcast_i64x4(_mm256_castps_si256(
                _mm256_insertf128_ps(_mm256_castps128_ps256(_mm_set1_ps(sc[0])), _mm_set1_ps(sc[1]), 1))));
            continue;
        }
        for (int j = 0; j < d; j++)
            tb[d * s + j] = _mm512_broadcast_i64x4(
                _mm256_inserti128_si256(_mm256_castsi128_si256(_mm_loadu_si128((const __m128i *)(t[0] + 16 * j))),
                                        _mm_loadu_si128((const __m128i *)(t[1] + 16 * j)), 1));
        sv[s] = _mm512_castsi512_ps(_mm512_broadcast_i64x4(_mm256_castps_si256(
            _mm256_insertf128_ps(_mm256_castps128_ps256(_mm_set1_ps(sc[0])), _mm_set1_ps(sc[1]), 1))));
    }
    if (packed && d == 1) nibp_rows_avx512(v, X, ra, rb, tb, sv, K, 1, y, accumulate);
    else if (packed) nibp_rows_avx512(v, X, ra, rb, tb, sv, K, 2, y, accumulate);
    else if (d == 1) nib_rows_avx512(v, X, ra, rb, tb, sv, K, 1, y, accumulate);
    else nib_rows_avx512(v, X, ra, rb, tb, sv, K, 2, y, accumulate);
}

// D2K64: per row and column tile, chunks of 64 vectors: 48 index bytes
// spread to one 6-byte group per qword, 8 indices per qword by a
// multishift, looked up in the two 64-entry coordinate tables.
AVX512_FN static void vq_d2k64_tile_avx512(const struct gq_vqrt *v, const struct vqx *X, int rt, int ra, int rb, float *tmp) {
    const struct gq_vqpack_hdr *h = &v->p.h;
    const int nv = v->nv, nct = h->n_ct;
    const uint8_t *is = v->p.part[GQ_VQP_IDX];
    const __m512i spread = _mm512_set_epi8(47, 47, 47, 46, 45, 44, 43, 42, 41, 41, 41, 40, 39, 38, 37, 36, 35, 35, 35, 34, 33,
                                           32, 31, 30, 29, 29, 29, 28, 27, 26, 25, 24, 23, 23, 23, 22, 21, 20, 19, 18, 17, 17,
                                           17, 16, 15, 14, 13, 12, 11, 11, 11, 10, 9, 8, 7, 6, 5, 5, 5, 4, 3, 2, 1, 0);
    const __m512i shifts = _mm512_set1_epi64(0x2A241E18120C0600ll); // bytes 0, 6, 12, .., 42
    float K = 0;
    for (int ct = 0; ct < nct; ct++) K -= 128 * v->cbs[(int64_t)rt * nct + ct] * X->xs[ct] * (float)X->sum[ct];
    const int8_t *p0 = X->pl, *p1 = X->pl + X->pstride;
    for (int r = ra; r < rb; r++) {
        const uint8_t *ib = is + (size_t)r * nv * 3 / 4;
        __m512 f = _mm512_setzero_ps();
        for (int ct = 0; ct < nct; ct++) {
            const int64_t g = (int64_t)rt * nct + ct;
            const __m512i t0 = _mm512_loadu_si512(v->tab + (size_t)g * 128), t1 = _mm512_loadu_si512(v->tab + (size_t)g * 128 + 64);
            __m512i a = _mm512_setzero_si512();
            for (int vec = v->vt_start[ct]; vec < v->vt_start[ct + 1]; vec += 64) {
                const int n = gq_min_i(64, v->vt_start[ct + 1] - vec), nb = n * 3 / 4;
                const __mmask64 kb = nb == 64 ? ~0ull : (1ull << nb) - 1, kx = n == 64 ? ~0ull : (1ull << n) - 1;
                const __m512i raw = _mm512_maskz_loadu_epi8(kb, ib + (size_t)vec * 3 / 4);
                const __m512i ix = _mm512_multishift_epi64_epi8(shifts, _mm512_permutexvar_epi8(spread, raw));
                a = _mm512_dpbusd_epi32(a, _mm512_permutexvar_epi8(ix, t0), _mm512_maskz_loadu_epi8(kx, p0 + vec));
                a = _mm512_dpbusd_epi32(a, _mm512_permutexvar_epi8(ix, t1), _mm512_maskz_loadu_epi8(kx, p1 + vec));
            }
            f = _mm512_fmadd_ps(_mm512_cvtepi32_ps(a), _mm512_set1_ps(v->cbs[g] * X->xs[ct]), f);
        }
        tmp[r - ra] += _mm512_reduce_add_ps(f) + K;
    }
}

// D2K64H: D2K64 where column tiles start at multiples of 32 vectors: each
// 64-vector step meets at most two groups, one per half; per coordinate a
// two-table vpermi2b whose index bit 6 picks the half's table. Tables,
// scales and the −128 · Σ x correction per row tile, as NIB. NRM
// (normalisation in blocks of whole halves): as nibn_step, the lanes 8-15
// holding the second half.
AVX512_FN static GQ_INLINE void d2k64h_rows_avx512(const struct gq_vqrt *v, const struct vqx *X, int ra, int rb,
                                                   const __m512i *tb, const __m512 *sv, const __m512 *tf,
                                                   const __m512i *cr, float K, float *y, bool accumulate, const bool NRM) {
    const int nv = v->nv, nsteps = (nv + 63) / 64, rowb = nv * 3 / 4;
    const __m512i spread = _mm512_set_epi8(47, 47, 47, 46, 45, 44, 43, 42, 41, 41, 41, 40, 39, 38, 37, 36, 35, 35, 35, 34, 33,
                                           32, 31, 30, 29, 29, 29, 28, 27, 26, 25, 24, 23, 23, 23, 22, 21, 20, 19, 18, 17, 17,
                                           17, 16, 15, 14, 13, 12, 11, 11, 11, 10, 9, 8, 7, 6, 5, 5, 5, 4, 3, 2, 1, 0);
    const __m512i shifts = _mm512_set1_epi64(0x2A241E18120C0600ll);
    const __m512i hsel = _mm512_inserti64x4(_mm512_setzero_si512(), _mm256_set1_epi8(0x40), 1); // bytes 32-63: second table
    const __m512i m6 = _mm512_set1_epi8(0x3F);
    const __m512i nsh = _mm512_inserti64x4(_mm512_setzero_si512(), _mm256_set1_epi32(8), 1); // lanes 8-15: the high code
    const int8_t *p0 = X->pl, *p1 = X->pl + X->pstride;
    const bool outl = v->p.h.n_out > 0;
#define D2K64H_STEP(f, ib, w)                                                                                         \
    {                                                                                                                 \
        const __m512i raw = _mm512_maskz_loadu_epi8(kb, (ib) + 48 * s);                                               \
        const __m512i ix = _mm512_ternarylogic_epi32(                                                                 \
            _mm512_multishift_epi64_epi8(shifts, _mm512_permutexvar_epi8(spread, raw)), m6, hsel, 0xEA); /* a&b|c */  \
        __m512i a = _mm512_dpbusd_epi32(NRM ? cr[s] : _mm512_setzero_si512(), _mm512_permutex2var_epi8(tb[4 * s], ix, tb[4 * s + 1]), x0); \
        a = _mm512_dpbusd_epi32(a, _mm512_permutex2var_epi8(tb[4 * s + 2], ix, tb[4 * s + 3]), x1);                 \
        const __m512 sc = NRM ? _mm512_permutex2var_ps(tf[2 * s], _mm512_srlv_epi32(_mm512_set1_epi16((short)(w)), nsh), tf[2 * s + 1]) : sv[s]; \
        f = _mm512_fmadd_ps(_mm512_cvtepi32_ps(a), sc, f);                                                             \
    }
    int r = ra;
    for (; r + 4 <= rb; r += 4) {
        const uint8_t *ib = v->p.part[GQ_VQP_IDX] + (size_t)r * rowb;
        const uint16_t *w = NRM ? v->nidx + (size_t)r * nsteps : NULL;
        for (int o = 0; o < 4 * rowb; o += 64) _mm_prefetch((const char *)(ib + 8 * (size_t)rowb + o), _MM_HINT_T0);
        __m512 f0 = _mm512_setzero_ps(), f1 = _mm512_setzero_ps(), f2 = _mm512_setzero_ps(), f3 = _mm512_setzero_ps();
        for (int s = 0; s < nsteps; s++) {
            const int n = gq_min_i(64, nv - 64 * s), nb = n * 3 / 4;
            const __mmask64 kb = nb >= 64 ? ~0ull : (1ull << nb) - 1;
            const __m512i x0 = _mm512_loadu_si512(p0 + 64 * s), x1 = _mm512_loadu_si512(p1 + 64 * s);
            D2K64H_STEP(f0, ib, NRM ? w[s] : 0) D2K64H_STEP(f1, ib + rowb, NRM ? w[nsteps + s] : 0)
            D2K64H_STEP(f2, ib + 2 * rowb, NRM ? w[2 * nsteps + s] : 0) D2K64H_STEP(f3, ib + 3 * rowb, NRM ? w[3 * nsteps + s] : 0)
        }
        float o[4];
        _mm_storeu_ps(o, _mm_add_ps(gq_hsum4_512(f0, f1, f2, f3), _mm_set1_ps(K)));
        for (int q = 0; q < 4; q++) {
            if (outl) o[q] += vq_outl(v, X->xp, r + q);
            put(y, r + q, o[q], accumulate);
        }
    }
    for (; r < rb; r++) {
        const uint8_t *ib = v->p.part[GQ_VQP_IDX] + (size_t)r * rowb;
        const uint16_t *w = NRM ? v->nidx + (size_t)r * nsteps : NULL;
        __m512 f = _mm512_setzero_ps();
        for (int s = 0; s < nsteps; s++) {
            const int n = gq_min_i(64, nv - 64 * s), nb = n * 3 / 4;
            const __mmask64 kb = nb >= 64 ? ~0ull : (1ull << nb) - 1;
            const __m512i x0 = _mm512_loadu_si512(p0 + 64 * s), x1 = _mm512_loadu_si512(p1 + 64 * s);
            D2K64H_STEP(f, ib, NRM ? w[s] : 0)
        }
        float o = _mm512_reduce_add_ps(f) + K;
        if (outl) o += vq_outl(v, X->xp, r);
        put(y, r, o, accumulate);
    }
#undef D2K64H_STEP
}

AVX512_FN static void vq_d2k64h_tile_avx512(const struct gq_vqrt *v, const struct vqx *X, int rt, int ra, int rb,
                                           __m512i *tb, __m512 *sv, float *y, bool accumulate) {
    const struct gq_vqpack_hdr *h = &v->p.h;
    const int nv = v->nv, nsteps = (nv + 63) / 64;
    __m512 *tf = (__m512 *)(tb + 4 * nsteps); // with normalisation: 2 scale tables a step, then the corrections
    __m512i *cr = (__m512i *)(tf + 2 * nsteps);
    const __m512i one = _mm512_set1_epi8(1);
    float K = 0;
    for (int s = 0; s < nsteps; s++) {
        float sc[2];
        const uint8_t *t[2];
        for (int hh = 0; hh < 2; hh++) {
            const int half = 2 * s + hh, hv = gq_min_i(half, (nv - 1) / 32);
            const int ct = v->half_ct[hv];
            const int64_t g = (int64_t)rt * h->n_ct + ct;
            sc[hh] = half == hv ? v->cbs[g] * X->xs[ct] : 0;
            if (half == hv) K -= 128 * sc[hh] * (float)X->sum[half];
            t[hh] = v->tab + (size_t)g * 128;
            if (v->bv) tf[2 * s + hh] = _mm512_mul_ps(_mm512_set1_ps(sc[hh]), _mm512_loadu_ps(v->nsc + 16 * g));
        }
        for (int j = 0; j < 2; j++)
            tb[4 * s + 2 * j] = _mm512_loadu_si512(t[0] + 64 * j), tb[4 * s + 2 * j + 1] = _mm512_loadu_si512(t[1] + 64 * j);
        sv[s] = _mm512_insertf32x8(_mm512_set1_ps(sc[0]), _mm256_set1_ps(sc[1]), 1);
        if (v->bv)
            cr[s] = _mm512_sub_epi32(_mm512_setzero_si512(),
                                     _mm512_slli_epi32(_mm512_dpbusd_epi32(_mm512_dpbusd_epi32(_mm512_setzero_si512(), one, _mm512_loadu_si512(X->pl + 64 * s)),
                                                                           one, _mm512_loadu_si512(X->pl + X->pstride + 64 * s)), 7));
    }
    if (v->bv) d2k64h_rows_avx512(v, X, ra, rb, tb, sv, tf, cr, 0, y, accumulate, true);
    else d2k64h_rows_avx512(v, X, ra, rb, tb, sv, tf, cr, K, y, accumulate, false);
}

// D4K256 (D2K256): a group of rows at a time (4; normalised 8), and for
// them per column tile its group's 16 (8) table registers, loaded from L1,
// and the x loads shared: per row the exact int32 sum of the tile
// (bit-identical to the scalar reference), four sums reduced together.
AVX512_FN static GQ_INLINE __m128i hsum4_epi32(__m512i a0, __m512i a1, __m512i a2, __m512i a3) {
    const __m512i a = _mm512_add_epi32(_mm512_unpacklo_epi32(a0, a1), _mm512_unpackhi_epi32(a0, a1));
    const __m512i b = _mm512_add_epi32(_mm512_unpacklo_epi32(a2, a3), _mm512_unpackhi_epi32(a2, a3));
    const __m512i c = _mm512_add_epi32(_mm512_unpacklo_epi64(a, b), _mm512_unpackhi_epi64(a, b)); // (r0 r1 r2 r3) per lane
    const __m256i d = _mm256_add_epi32(_mm512_castsi512_si256(c), _mm512_extracti64x4_epi64(c, 1));
    return _mm_add_epi32(_mm256_castsi256_si128(d), _mm256_extracti128_si256(d, 1));
}

AVX512_FN static GQ_INLINE void vq_k256_tile_avx512(const struct gq_vqrt *v, const struct vqx *X, int rt, int ra, int rb, float *tmp,
                                                    const int D) {
    const struct gq_vqpack_hdr *h = &v->p.h;
    const int nv = v->nv, nct = h->n_ct, nch = v->bv ? v->ch0[nct] : 0;
    const uint8_t *is = v->p.part[GQ_VQP_IDX];
    const int8_t *p0 = X->pl, *p1 = p0 + X->pstride, *p2 = D == 4 ? p1 + X->pstride : p0, *p3 = D == 4 ? p2 + X->pstride : p0;
    const __m512i qsh = _mm512_setr_epi32(0, 0, 0, 0, 4, 4, 4, 4, 8, 8, 8, 8, 12, 12, 12, 12), one = _mm512_set1_epi8(1);
#define D4K256_ROW(a, ib)                                                                                       \
    {                                                                                                           \
        const __m512i ix = _mm512_maskz_loadu_epi8(kx, (ib) + vec);                                             \
        const __mmask64 hi = _mm512_movepi8_mask(ix);                                                           \
        a = _mm512_dpbusd_epi32(a, _mm512_mask_blend_epi8(hi, _mm512_permutex2var_epi8(T[0], ix, T[1]),         \
                                                          _mm512_permutex2var_epi8(T[2], ix, T[3])), x0);       \
        a = _mm512_dpbusd_epi32(a, _mm512_mask_blend_epi8(hi, _mm512_permutex2var_epi8(T[4], ix, T[5]),         \
                                                          _mm512_permutex2var_epi8(T[6], ix, T[7])), x1);       \
        if (D == 4) {                                                                                           \
            a = _mm512_dpbusd_epi32(a, _mm512_mask_blend_epi8(hi, _mm512_permutex2var_epi8(T[8], ix, T[9]),     \
                                                              _mm512_permutex2var_epi8(T[10], ix, T[11])), x2); \
            a = _mm512_dpbusd_epi32(a, _mm512_mask_blend_epi8(hi, _mm512_permutex2var_epi8(T[12], ix, T[13]),   \
                                                              _mm512_permutex2var_epi8(T[14], ix, T[15])), x3); \
        }                                                                                                       \
    }
#define X4()                                                                                                    \
    const int n = gq_min_i(64, v1 - vec);                                                                       \
    const __mmask64 kx = n == 64 ? ~0ull : (1ull << n) - 1;                                                     \
    const __m512i x0 = _mm512_maskz_loadu_epi8(kx, p0 + vec), x1 = _mm512_maskz_loadu_epi8(kx, p1 + vec);       \
    const __m512i x2 = D == 4 ? _mm512_maskz_loadu_epi8(kx, p2 + vec) : x0, x3 = D == 4 ? _mm512_maskz_loadu_epi8(kx, p3 + vec) : x0;
    // rows outer, column tiles inner: the rows' indices stream in order (a
    // tile's slice of a row can be under a cache line, and sweeping all rows
    // per column tile left the loads waiting on memory); the group's tables
    // reload from L1 per column tile, for G rows (normalised: 8, sharing the
    // tables, x loads and corrections; else 4)
    const int G = v->bv ? 8 : 4;
    for (int r = ra; r < rb; r += G) {
        const int nr = gq_min_i(G, rb - r);
        const uint8_t *ib = is + (size_t)r * nv;
        for (int q = G; q < 2 * G && r + q < rb; q++) // the next group's rows
            for (int o = 0; o < nv; o += 64) _mm_prefetch((const char *)(ib + (size_t)q * nv + o), _MM_HINT_T0);
        for (int ct = 0; ct < nct; ct++) {
            const int64_t g = (int64_t)rt * nct + ct;
            const uint8_t *tg = v->tab + (size_t)g * 256 * D;
            __m512i T[16];
            for (int i = 0; i < 4 * D; i++) T[i] = _mm512_loadu_si512(tg + 64 * i);
            const float sc = v->cbs[g] * X->xs[ct];
            const int v0 = v->vt_start[ct], v1 = v->vt_start[ct + 1];
            if (v->bv) { // normalisation: per 64-vector chunk the exact sums (−128 · Σ x preloaded per lane) × the
                         // scale of each 16-vector quarter's block (lanes 4q..4q+3), the row's codes in nidx
                const __m512 tbl = _mm512_mul_ps(_mm512_set1_ps(sc), _mm512_loadu_ps(v->nsc + 16 * g));
                const uint16_t *w = v->nidx + (size_t)r * nch + v->ch0[ct];
                __m512 f[8];
                for (int q = 0; q < 8; q++) f[q] = _mm512_setzero_ps();
                for (int vec = v0, c = 0; vec < v1; vec += 64, c++) {
                    X4()
                    __m512i sx = _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(_mm512_setzero_si512(), one, x0), one, x1);
                    if (D == 4) sx = _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(sx, one, x2), one, x3);
                    const __m512i cr = _mm512_sub_epi32(_mm512_setzero_si512(), _mm512_slli_epi32(sx, 7));
                    for (int q = 0; q < nr; q++) {
                        __m512i a = cr;
                        D4K256_ROW(a, ib + (size_t)q * nv)
                        const __m512 s4 = _mm512_permutexvar_ps(_mm512_srlv_epi32(_mm512_set1_epi32(w[(size_t)q * nch + c]), qsh), tbl);
                        f[q] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(a), s4, f[q]);
                    }
                }
                float o[8];
                _mm_storeu_ps(o, gq_hsum4_512(f[0], f[1], f[2], f[3]));
                if (nr > 4) _mm_storeu_ps(o + 4, gq_hsum4_512(f[4], f[5], f[6], f[7]));
                for (int q = 0; q < nr; q++) tmp[r + q - ra] += o[q];
                continue;
            }
            const int32_t corr = -128 * X->sum[ct];
            if (nr == 4) {
                __m512i a0 = _mm512_setzero_si512(), a1 = a0, a2 = a0, a3 = a0;
                for (int vec = v0; vec < v1; vec += 64) {
                    X4()
                    D4K256_ROW(a0, ib) D4K256_ROW(a1, ib + nv) D4K256_ROW(a2, ib + 2 * (size_t)nv) D4K256_ROW(a3, ib + 3 * (size_t)nv)
                }
                int32_t sum[4];
                _mm_storeu_si128((__m128i *)sum, hsum4_epi32(a0, a1, a2, a3));
                for (int q = 0; q < 4; q++) tmp[r + q - ra] += (float)(sum[q] + corr) * sc;
                continue;
            }
            for (int q = 0; q < nr; q++) {
                __m512i a = _mm512_setzero_si512();
                for (int vec = v0; vec < v1; vec += 64) {
                    X4()
                    D4K256_ROW(a, ib + (size_t)q * nv)
                }
                tmp[r + q - ra] += (float)(_mm512_reduce_add_epi32(a) + corr) * sc;
            }
        }
    }
#undef X4
#undef D4K256_ROW
}
AVX512_FN static void vq_d4k256_tile_avx512(const struct gq_vqrt *v, const struct vqx *X, int rt, int ra, int rb, float *tmp) {
    vq_k256_tile_avx512(v, X, rt, ra, rb, tmp, 4);
}
AVX512_FN static void vq_d2k256_tile_avx512(const struct gq_vqrt *v, const struct vqx *X, int rt, int ra, int rb, float *tmp) {
    vq_k256_tile_avx512(v, X, rt, ra, rb, tmp, 2);
}

// ---------------------------------------------------------------------------

enum gq_status gq_gemv_vq(float *y, const float *x, const struct gq_qweight *w, int r0, int r1, bool accumulate) {
    const struct gq_vqrt *v = w->vq;
    const enum gq_isa isa = gq_qmatmul_isa();
    if (r0 >= r1) return GQ_OK;
    struct vqx X;
    GQ_TRY(vq_prep_x(v, x, isa, &X));
    const int maxrows = r1 - r0; // a tile's clipped rows never exceed the range
    float *tmp = gq_kscratch(GQ_SCR_TMP, sizeof(float) * (size_t)maxrows + 64);
    if (!tmp) return gq_fail(GQ_ERR_NOMEM, "qmatmul: scratch of %d rows", maxrows);
    if (isa == GQ_ISA_SCALAR) {
        if (v->q8) vq_q8_scalar(v, &X, y, r0, r1, accumulate, tmp);
        else vq_float_scalar(v, &X, y, r0, r1, accumulate, tmp);
        return GQ_OK;
    }
    __m512i *tb = NULL;
    __m512 *sv = NULL;
    if (isa == GQ_ISA_AVX512 && (v->fast == GQ_VQF_NIB || v->fast == GQ_VQF_D2K64H)) {
        const int nsteps = (v->nv + 63) / 64; // up to 4 tables, a scale and (normalisation) 2 tables and a correction a step
        tb = gq_kscratch(GQ_SCR_TAB, (size_t)nsteps * (4 + 1 + 3) * 64 + 64);
        if (!tb) return gq_fail(GQ_ERR_NOMEM, "qmatmul: step tables");
        sv = (__m512 *)(tb + 7 * nsteps);
    }
    FOR_ROW_TILES(v, r0, r1, rt, ra, rb) {
        if (isa == GQ_ISA_AVX512 && v->fast == GQ_VQF_NIB) { // these two write y themselves
            vq_nib_tile_avx512(v, &X, rt, ra, rb, tb, sv, y, accumulate);
            continue;
        }
        if (isa == GQ_ISA_AVX512 && v->fast == GQ_VQF_D2K64H) {
            vq_d2k64h_tile_avx512(v, &X, rt, ra, rb, tb, sv, y, accumulate);
            continue;
        }
        for (int r = ra; r < rb; r++) tmp[r - ra] = vq_outl(v, X.xp, r);
        if (!v->q8) vq_float_tile_avx2(v, &X, rt, ra, rb, tmp);
        else if (isa == GQ_ISA_AVX512 && v->fast == GQ_VQF_D2K64) vq_d2k64_tile_avx512(v, &X, rt, ra, rb, tmp);
        else if (isa == GQ_ISA_AVX512 && v->fast == GQ_VQF_D4K256) vq_d4k256_tile_avx512(v, &X, rt, ra, rb, tmp);
        else if (isa == GQ_ISA_AVX512 && v->fast == GQ_VQF_D2K256) vq_d2k256_tile_avx512(v, &X, rt, ra, rb, tmp);
        else vq_q8_tile_avx2(v, &X, rt, ra, rb, tmp);
        for (int r = ra; r < rb; r++) put(y, r, tmp[r - ra], accumulate);
    }
    return GQ_OK;
}
