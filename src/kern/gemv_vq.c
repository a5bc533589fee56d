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
//     scale · xs[ct]). Scalar reference; AVX2: pshufb tables (d 2, k 16;
//     d 2, k 64: four per coordinate and two blends), 4-byte gathers (d 4,
//     k 256) or gathers of padded centroids (any other d, k); AVX-512 VNNI: codes + 128 as unsigned bytes (the 128 · Σ x
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
//     (The AVX-512 kernels live in gemv_vq512.c.)
#include "kern/gemv_vq.h"

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
    bool k64 = h->d == 2 && h->k == 64 && !m128 && nalign && v->nv % 4 == 0; // K64: blocks start a byte of indices
    for (int c = 1; c < h->n_ct; c++) k64 &= v->vt_start[c] % 4 == 0;
    v->q8 = h->d == 2 && h->k == 16 && !m128 && nalign ? GQ_VQ_Q8_NIB2
          : k64                                       ? GQ_VQ_Q8_K64
          : h->d == 4 && h->k == 256 && !m128         ? GQ_VQ_Q8_BYTE4
                                                      : GQ_VQ_Q8_GENERIC;
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
        if (v->fast) { // x's plane permutes (gq_vq_prep_avx512)
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
        gq_vq_prep_avx512(v, x, X);
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
        } else { // NIB2: per block of 32 vectors from each tile start, byte 32H + 16L + 2i + j = coord j of vector 16H + 2i + L;
            X->xabs = o + n;
            memcpy(X->xa, xc, (size_t)nv * d);
            // K64: byte 32H + 16L + 2i + j = coord j of vector 16L + 8H + i
            if (v->q8 == GQ_VQ_Q8_NIB2 || v->q8 == GQ_VQ_Q8_K64)
                for (int ct = 0; ct < nct; ct++)
                    for (int bb = v->vt_start[ct]; bb + 32 <= v->vt_start[ct + 1]; bb += 32)
                        for (int H = 0; H < 2; H++)
                            for (int L = 0; L < 2; L++)
                                for (int i = 0; i < 8; i++)
                                    for (int j = 0; j < 2; j++)
                                        X->xa[2 * bb + H * 32 + L * 16 + 2 * i + j] =
                                            xc[2 * (v->q8 == GQ_VQ_Q8_NIB2 ? bb + 16 * H + 2 * i + L : bb + 16 * L + 8 * H + i) + j];
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

// K64 (d 2, k 64): the 32 6-bit indices of vectors e .. e + 31 (e a
// multiple of 4: the group of 4 starts a byte), in order: each dword gets
// the 3 bytes of its 4 indices (a cross-lane dword permute, then pshufb),
// which then move apart to one byte each.
AVX2_FN static GQ_INLINE __m256i k64_idx(const uint8_t *s, int64_t e) {
    const __m256i raw = _mm256_loadu_si256((const __m256i *)(s + e / 4 * 3));
    const __m256i w = _mm256_shuffle_epi8(_mm256_permutevar8x32_epi32(raw, _mm256_setr_epi32(0, 1, 2, 0, 3, 4, 5, 0)),
                                          _mm256_setr_epi8(0, 1, 2, -1, 3, 4, 5, -1, 6, 7, 8, -1, 9, 10, 11, -1, 0, 1, 2, -1, 3,
                                                           4, 5, -1, 6, 7, 8, -1, 9, 10, 11, -1));
    const __m256i m = _mm256_set1_epi32(0x3F);
    return _mm256_or_si256(
        _mm256_or_si256(_mm256_and_si256(w, m), _mm256_and_si256(_mm256_slli_epi32(w, 2), _mm256_slli_epi32(m, 8))),
        _mm256_or_si256(_mm256_and_si256(_mm256_slli_epi32(w, 4), _mm256_slli_epi32(m, 16)),
                        _mm256_and_si256(_mm256_slli_epi32(w, 6), _mm256_slli_epi32(m, 24))));
}

// K64: coordinate j's 64 signed codes of group g as four pshufb tables of 16
// (both lanes), T[4j .. 4j + 3].
AVX2_FN static GQ_INLINE void k64_tables(const struct gq_vqrt *v, int64_t g, int j, __m256i *T) {
    for (int q = 0; q < 4; q++)
        T[4 * j + q] = _mm256_broadcastsi128_si256(
            _mm_xor_si128(_mm_loadu_si128((const __m128i *)(v->tab + (size_t)g * 128 + 64 * j + 16 * q)), _mm_set1_epi8((char)0x80)));
}

// K64: 32 codes of one coordinate: the four tables' bytes, picked by index
// bits 4 and 5 (moved to bit 7 for the blends).
AVX2_FN static GQ_INLINE __m256i k64_look(const __m256i *T, __m256i ix) {
    const __m256i b4 = _mm256_slli_epi16(ix, 3), b5 = _mm256_slli_epi16(ix, 2);
    return _mm256_blendv_epi8(_mm256_blendv_epi8(_mm256_shuffle_epi8(T[0], ix), _mm256_shuffle_epi8(T[1], ix), b4),
                              _mm256_blendv_epi8(_mm256_shuffle_epi8(T[2], ix), _mm256_shuffle_epi8(T[3], ix), b4), b5);
}

// K64: one block of 32 vectors from index element e (8 int32 partial sums);
// x arranged so that byte 32H + 16L + 2i + j is coordinate j of vector
// 16L + 8H + i (the byte order of unpacklo / unpackhi of the two coordinates).
AVX2_FN static GQ_INLINE __m256i k64_block(const uint8_t *is, int64_t e, const __m256i *T, const int8_t *xb, const int8_t *ab) {
    const __m256i ix = k64_idx(is, e), c0 = k64_look(T, ix), c1 = k64_look(T + 4, ix);
    return _mm256_add_epi32(
        dot_i8(_mm256_unpacklo_epi8(c0, c1), _mm256_loadu_si256((const __m256i *)xb), _mm256_loadu_si256((const __m256i *)ab)),
        dot_i8(_mm256_unpackhi_epi8(c0, c1), _mm256_loadu_si256((const __m256i *)(xb + 32)),
               _mm256_loadu_si256((const __m256i *)(ab + 32))));
}

// NIB2 (K 16) or K64 (K 64) tables of group g: T[0], T[1] (NIB2) or T[0..7].
AVX2_FN static GQ_INLINE void lut_tables(const struct gq_vqrt *v, int64_t g, __m256i *T, const int K) {
    if (K == 16) T[0] = nib2_table(v, g, 0), T[1] = nib2_table(v, g, 1);
    else k64_tables(v, g, 0, T), k64_tables(v, g, 1, T);
}
// The 32 vectors from element e fit in the index stream.
static inline bool lut_fits(int64_t e, size_t ibytes, const int K) {
    return K == 16 ? (size_t)(e >> 1) + 17 <= ibytes : (size_t)(e / 4 * 3) + 32 <= ibytes;
}
AVX2_FN static GQ_INLINE __m256i lut_block(const uint8_t *is, int64_t e, const __m256i *T, const int8_t *xb, const int8_t *ab,
                                           const int K) {
    return K == 16 ? nib2_block(is, e, T[0], T[1], xb, ab) : k64_block(is, e, T, xb, ab);
}

// NIB2 / K64, rows r and r + 1 of row tile rt across all column tiles.
AVX2_FN static GQ_INLINE void vq_rows2_lut(const struct gq_vqrt *v, const struct vqx *X, int r, int rt, float *o, const int K) {
    const uint8_t *is = v->p.part[GQ_VQP_IDX];
    const size_t ibytes = v->p.bytes[GQ_VQP_IDX];
    const int nct = v->p.h.n_ct;
    const int64_t e0 = (int64_t)r * v->nv, e1 = e0 + v->nv;
    __m256 f0 = _mm256_setzero_ps(), f1 = _mm256_setzero_ps();
    float rest0 = 0, rest1 = 0;
    for (int ct = 0; ct < nct; ct++) {
        const int64_t g = (int64_t)rt * nct + ct;
        const int v0 = v->vt_start[ct], v1 = v->vt_start[ct + 1];
        __m256i T[8];
        lut_tables(v, g, T, K);
        const float sc = v->cbs[g] * X->xs[ct];
        for (int s0 = v0; s0 < v1;) { // the normalisation blocks (or the whole tile)
            const int s1 = seg_end(v, ct, s0), vend = s0 + ((s1 - s0) & ~31);
            __m256i a0 = _mm256_setzero_si256(), a1 = _mm256_setzero_si256();
            int vec = s0;
            for (; vec < vend && lut_fits(e1 + vec, ibytes, K); vec += 32) {
                a0 = _mm256_add_epi32(a0, lut_block(is, e0 + vec, T, X->xa + 2 * vec, X->xabs + 2 * vec, K));
                a1 = _mm256_add_epi32(a1, lut_block(is, e1 + vec, T, X->xa + 2 * vec, X->xabs + 2 * vec, K));
            }
            const float sc0 = sc * seg_scale(v, g, r, ct, s0), sc1 = sc * seg_scale(v, g, r + 1, ct, s0);
            f0 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(a0), _mm256_set1_ps(sc0), f0);
            f1 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(a1), _mm256_set1_ps(sc1), f1);
            if (vec < s1) {
                const int8_t *cb = (const int8_t *)v->p.part[GQ_VQP_CB] + (size_t)g * 2 * K;
                rest0 += (float)vq_q8_rest(v, r, vec, s1, cb, X->xq) * sc0;
                rest1 += (float)vq_q8_rest(v, r + 1, vec, s1, cb, X->xq) * sc1;
            }
            s0 = s1;
        }
    }
    o[0] += gq_hsum256(f0) + rest0;
    o[1] += gq_hsum256(f1) + rest1;
}

AVX2_FN static void vq_q8_tile_avx2(const struct gq_vqrt *v, const struct vqx *X, int rt, int ra, int rb, float *tmp) {
    const struct gq_vqpack_hdr *h = &v->p.h;
    const int d = h->d, nv = v->nv, nct = h->n_ct;
    const uint8_t *is = v->p.part[GQ_VQP_IDX];
    const int8_t *cbs = (const int8_t *)v->p.part[GQ_VQP_CB];
    const size_t ibytes = v->p.bytes[GQ_VQP_IDX], kd = (size_t)h->k * d;
    int r = ra;
    // two rows at a time share the tables and x loads
    if (v->q8 == GQ_VQ_Q8_NIB2)
        for (; r + 2 <= rb; r += 2) vq_rows2_lut(v, X, r, rt, tmp + (r - ra), 16);
    if (v->q8 == GQ_VQ_Q8_K64)
        for (; r + 2 <= rb; r += 2) vq_rows2_lut(v, X, r, rt, tmp + (r - ra), 64);
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
                if (v->q8 == GQ_VQ_Q8_NIB2 || v->q8 == GQ_VQ_Q8_K64) {
                    const int K = v->q8 == GQ_VQ_Q8_NIB2 ? 16 : 64, vend = s0 + ((v1 - s0) & ~31);
                    __m256i T[8];
                    if (K == 16) lut_tables(v, g, T, 16);
                    else lut_tables(v, g, T, 64);
                    for (; vec < vend && lut_fits(e0 + vec, ibytes, K); vec += 32)
                        acc = _mm256_add_epi32(acc, K == 16 ? lut_block(is, e0 + vec, T, X->xa + 2 * vec, X->xabs + 2 * vec, 16)
                                                            : lut_block(is, e0 + vec, T, X->xa + 2 * vec, X->xabs + 2 * vec, 64));
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
            gq_vq_nib_tile_avx512(v, &X, rt, ra, rb, tb, sv, y, accumulate);
            continue;
        }
        if (isa == GQ_ISA_AVX512 && v->fast == GQ_VQF_D2K64H) {
            gq_vq_d2k64h_tile_avx512(v, &X, rt, ra, rb, tb, sv, y, accumulate);
            continue;
        }
        for (int r = ra; r < rb; r++) tmp[r - ra] = vq_outl(v, X.xp, r);
        if (!v->q8) vq_float_tile_avx2(v, &X, rt, ra, rb, tmp);
        else if (isa == GQ_ISA_AVX512 && v->fast == GQ_VQF_D2K64) gq_vq_d2k64_tile_avx512(v, &X, rt, ra, rb, tmp);
        else if (isa == GQ_ISA_AVX512 && v->fast == GQ_VQF_D4K256) gq_vq_d4k256_tile_avx512(v, &X, rt, ra, rb, tmp);
        else if (isa == GQ_ISA_AVX512 && v->fast == GQ_VQF_D2K256) gq_vq_d2k256_tile_avx512(v, &X, rt, ra, rb, tmp);
        else vq_q8_tile_avx2(v, &X, rt, ra, rb, tmp);
        for (int r = ra; r < rb; r++) put(y, r, tmp[r - ra], accumulate);
    }
    return GQ_OK;
}
