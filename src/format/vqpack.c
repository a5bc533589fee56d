// vqpack.c - packing and unpacking one GPTVQ matrix (contract: vqpack.h,
// layout: docs/format.md).
#include "format/vqpack.h"
#include "io/gguf.h"
#include "util/common.h"

static const char *const suffixes[GQ_VQP_COUNT] = {"vq_idx",   "vq_cb",   "vq_cbs",  "vq_svdu", "vq_svdus",
                                                    "vq_svdv",  "vq_nsint", "vq_npar", "vq_outl", "vq_perm"};

const char *gq_vqpack_suffix(int part) { return part >= 0 && part < GQ_VQP_COUNT ? suffixes[part] : "?"; }

static int ceil_log2(int64_t x) {
    int b = 0;
    while (((int64_t)1 << b) < x) b++;
    return b;
}

// Tile bounds: the formulas gptvq.c cuts tiles with.
static int ct_start(const struct gq_vqpack_hdr *h, int c) {
    int nv = (h->cols - h->n_out) / h->d;
    return h->n_out + (int)((int64_t)nv * c / h->n_ct) * h->d;
}
static int rt_start(const struct gq_vqpack_hdr *h, int r) { return (int)((int64_t)h->rows * r / h->n_rt); }
static int64_t norm_blocks(const struct gq_vqpack_hdr *h) {
    int64_t n = 0;
    for (int c = 0; h->norm_block && c < h->n_ct; c++)
        n += (ct_start(h, c + 1) - ct_start(h, c) + h->norm_block - 1) / h->norm_block;
    return n;
}
static int cb_bits(int f) { return f == GQ_CB_INT8 ? 8 : f == GQ_CB_FP16 ? 16 : 32; }

enum gq_status gq_vqpack_layout(const struct gq_vqpack_hdr *h, const char *what, int64_t bits[GQ_VQP_COUNT]) {
    int64_t b[GQ_VQP_COUNT] = {0};
    if (h->version < 1 || h->version > GQ_VQPACK_VERSION)
        return gq_fail(GQ_ERR_FORMAT, "%s: packed VQ format version %d (this build reads 1 to %d)", what, h->version,
                       GQ_VQPACK_VERSION);
    if (h->rot != 0 && (h->rot != 1 || h->version < 2))
        return gq_fail(GQ_ERR_FORMAT, "%s: rotation field %d in a version %d header", what, h->rot, h->version);
    if (h->rows < 1 || h->cols < 1) return gq_fail(GQ_ERR_FORMAT, "%s: bad shape (%d, %d)", what, h->rows, h->cols);
    if (h->d != 1 && h->d != 2 && h->d != 4 && h->d != 8)
        return gq_fail(GQ_ERR_FORMAT, "%s: VQ dimension %d (expected 1, 2, 4 or 8)", what, h->d);
    if (h->k < 2 || h->k > 65536 || (h->k & (h->k - 1)))
        return gq_fail(GQ_ERR_FORMAT, "%s: codebook size k = %d (expected a power of two in [2, 65536])", what, h->k);
    if (h->stages < 1 || h->stages > 2) return gq_fail(GQ_ERR_FORMAT, "%s: %d codebook stages", what, h->stages);
    if (h->n_out < 0 || h->n_out >= h->cols || (h->cols - h->n_out) % h->d)
        return gq_fail(GQ_ERR_FORMAT, "%s: %d outlier columns do not leave whole %d-vectors of %d columns", what,
                       h->n_out, h->d, h->cols);
    int nv = (h->cols - h->n_out) / h->d;
    if (h->n_ct < 1 || h->n_ct > nv || h->n_rt < 1 || h->n_rt > h->rows)
        return gq_fail(GQ_ERR_FORMAT, "%s: codebook count mismatch: %d x %d tiles for %d rows and %d vectors", what,
                       h->n_rt, h->n_ct, h->rows, nv);
    if (h->norm_block < 0 || (h->norm_block && h->norm_block % h->d))
        return gq_fail(GQ_ERR_FORMAT, "%s: normalisation block %d", what, h->norm_block);
    if (h->cb_format < GQ_CB_INT8 || h->cb_format > GQ_CB_F32)
        return gq_fail(GQ_ERR_FORMAT, "%s: codebook format %d", what, h->cb_format);
    if (h->svd_rank < 0 || h->svd_rank > h->k || h->svd_rank > 256 || (h->svd_rank && (h->d != 1 || h->stages != 1)))
        return gq_fail(GQ_ERR_FORMAT, "%s: codebook SVD rank %d", what, h->svd_rank);
    if (h->has_perm != 0 && h->has_perm != 1) return gq_fail(GQ_ERR_FORMAT, "%s: has_perm = %d", what, h->has_perm);
    const int64_t groups = (int64_t)h->n_rt * h->n_ct, cbb = cb_bits(h->cb_format);
    b[GQ_VQP_IDX] = (int64_t)h->stages * h->rows * nv * ceil_log2(h->k);
    if (h->svd_rank) {
        b[GQ_VQP_SVDU] = groups * h->svd_rank * cbb;
        if (h->cb_format == GQ_CB_INT8) b[GQ_VQP_SVDUS] = (int64_t)h->svd_rank * 16;
        b[GQ_VQP_SVDV] = (int64_t)h->k * h->svd_rank * (h->cb_format == GQ_CB_F32 ? 32 : 16);
    } else {
        b[GQ_VQP_CB] = h->stages * groups * h->k * h->d * cbb;
        if (h->cb_format == GQ_CB_INT8) b[GQ_VQP_CBS] = h->stages * groups * 16;
    }
    if (h->norm_block) b[GQ_VQP_NSINT] = (int64_t)h->rows * norm_blocks(h) * 4, b[GQ_VQP_NPAR] = groups * 32;
    b[GQ_VQP_OUTL] = (int64_t)h->rows * h->n_out * 16;
    if (h->has_perm) b[GQ_VQP_PERM] = (int64_t)h->cols * ceil_log2(h->cols);
    if (bits) memcpy(bits, b, sizeof b);
    return GQ_OK;
}

void gq_vqpack_part_type(const struct gq_vqpack_hdr *h, int part, int64_t bits, int *type, int64_t *ne) {
    *type = GQ_TYPE_I8, *ne = (bits + 7) / 8;
    bool coded = part == GQ_VQP_CB || part == GQ_VQP_SVDU;
    if ((coded && h->cb_format == GQ_CB_FP16) || part == GQ_VQP_CBS || part == GQ_VQP_SVDUS || part == GQ_VQP_NPAR ||
        part == GQ_VQP_OUTL || (part == GQ_VQP_SVDV && h->cb_format != GQ_CB_F32))
        *type = GQ_TYPE_F16, *ne = bits / 16;
    else if ((coded || part == GQ_VQP_SVDV) && h->cb_format == GQ_CB_F32)
        *type = GQ_TYPE_F32, *ne = bits / 32;
}

static int8_t int8_code(float v, float s) { return s > 0 ? (int8_t)lrintf(v / s) : 0; }

enum gq_status gq_vqpack_pack(const struct gq_vq_tensor *t, struct gq_vqpack *p, uint8_t **owned) {
    memset(p, 0, sizeof *p);
    *owned = NULL;
    struct gq_vqpack_hdr *h = &p->h;
    h->rows = t->rows, h->cols = t->cols, h->d = t->d, h->k = t->k;
    h->stages = t->stages, h->n_out = t->n_out, h->n_ct = t->n_ct, h->n_rt = t->n_rt, h->norm_block = t->norm_block;
    h->cb_format = t->cb_format, h->svd_rank = t->svd_rank;
    for (int i = 0; i < t->cols; i++) h->has_perm |= t->perm[i] != i;
    if (t->rot) // version 2 only where needed: other files stay version 1, byte for byte
        h->version = 2, h->rot = 1, h->rot_seed_lo = (int32_t)(uint32_t)t->rot_seed,
        h->rot_seed_hi = (int32_t)(uint32_t)(t->rot_seed >> 32);
    else
        h->version = 1;
    int64_t bits[GQ_VQP_COUNT];
    GQ_TRY(gq_vqpack_layout(h, "gptvq: pack", bits));
    size_t total = 0, off[GQ_VQP_COUNT];
    for (int i = 0; i < GQ_VQP_COUNT; i++) off[i] = total, p->bytes[i] = (size_t)(bits[i] + 7) / 8, total += p->bytes[i];
    uint8_t *buf = calloc(total ? total : 1, 1);
    if (!buf) return gq_fail(GQ_ERR_NOMEM, "gptvq: packing %zu bytes", total);
    for (int i = 0; i < GQ_VQP_COUNT; i++) p->part[i] = p->bytes[i] ? buf + off[i] : NULL;
    const int nv = (t->cols - t->n_out) / t->d, lk = ceil_log2(t->k), r = t->svd_rank;
    const int64_t groups = (int64_t)t->n_rt * t->n_ct, kd = (int64_t)t->k * t->d;
    uint8_t *idx = buf + off[GQ_VQP_IDX];
    for (int64_t i = 0; i < (int64_t)t->stages * t->rows * nv; i++) gq_bits_put(idx, i, lk, t->idx[i]);
    // values of a coded array in the format (int8 codes with scales, fp16, f32)
#define PUT_CODED(PART, SCALEPART, N, VAL, SCALE)                                                                      \
    do {                                                                                                               \
        uint8_t *dst = buf + off[PART];                                                                                \
        for (int64_t i_ = 0; i_ < (N); i_++) {                                                                         \
            float v_ = (VAL);                                                                                          \
            if (t->cb_format == GQ_CB_INT8) ((int8_t *)dst)[i_] = int8_code(v_, (SCALE));                              \
            else if (t->cb_format == GQ_CB_FP16) { uint16_t h_ = gq_f32_to_f16(v_); memcpy(dst + 2 * i_, &h_, 2); }    \
            else memcpy(dst + 4 * i_, &v_, 4);                                                                         \
        }                                                                                                              \
        (void)(SCALEPART);                                                                                             \
    } while (0)
    if (!r) {
        PUT_CODED(GQ_VQP_CB, 0, t->stages * groups * kd, t->cb[i_], t->cb_scale[i_ / kd]);
        if (t->cb_format == GQ_CB_INT8)
            for (int64_t g = 0; g < t->stages * groups; g++) {
                uint16_t hs = gq_f32_to_f16(t->cb_scale[g]);
                memcpy(buf + off[GQ_VQP_CBS] + 2 * g, &hs, 2);
            }
    } else {
        PUT_CODED(GQ_VQP_SVDU, 0, groups * r, t->svd_u[i_], t->svd_uscale[i_ % r]);
        for (int j = 0; j < r && t->cb_format == GQ_CB_INT8; j++) {
            uint16_t hs = gq_f32_to_f16(t->svd_uscale[j]);
            memcpy(buf + off[GQ_VQP_SVDUS] + 2 * j, &hs, 2);
        }
        for (int64_t i = 0; i < (int64_t)t->k * r; i++) {
            if (t->cb_format == GQ_CB_F32) {
                memcpy(buf + off[GQ_VQP_SVDV] + 4 * i, &t->svd_v[i], 4);
            } else {
                uint16_t hv = gq_f32_to_f16(t->svd_v[i]);
                memcpy(buf + off[GQ_VQP_SVDV] + 2 * i, &hv, 2);
            }
        }
    }
#undef PUT_CODED
    if (t->norm_block) {
        for (int64_t i = 0; i < (int64_t)t->rows * t->n_nblk; i++) gq_bits_put(buf + off[GQ_VQP_NSINT], i, 4, t->sint[i]);
        for (int64_t g = 0; g < groups; g++) {
            uint16_t az[2] = {gq_f32_to_f16(t->norm[g].a), gq_f32_to_f16(t->norm[g].z)};
            memcpy(buf + off[GQ_VQP_NPAR] + 4 * g, az, 4);
        }
    }
    if (t->n_out) memcpy(buf + off[GQ_VQP_OUTL], t->outl, sizeof(uint16_t) * (size_t)t->rows * t->n_out);
    if (h->has_perm)
        for (int i = 0; i < t->cols; i++) gq_bits_put(buf + off[GQ_VQP_PERM], i, ceil_log2(t->cols), (uint32_t)t->perm[i]);
    *owned = buf;
    return GQ_OK;
}

void gq_vqpack_codebook(const struct gq_vqpack *p, int s, int64_t g, float *cb) {
    const struct gq_vqpack_hdr *h = &p->h;
    const int f = h->cb_format, kd = h->k * h->d;
    if (h->svd_rank) { // c[m] = Σ_j u[j] · v[m][j] in float, j ascending
        const int r = h->svd_rank;
        float u[256];
        for (int j = 0; j < r; j++)
            u[j] = gq_vqp_coded(f, p->part[GQ_VQP_SVDU], g * r + j,
                                f == GQ_CB_INT8 ? gq_vqp_f16(p->part[GQ_VQP_SVDUS], j) : 1.0f);
        const int vf = f == GQ_CB_F32 ? GQ_CB_F32 : GQ_CB_FP16;
        for (int c = 0; c < h->k; c++) {
            float acc = 0;
            for (int j = 0; j < r; j++) acc += u[j] * gq_vqp_coded(vf, p->part[GQ_VQP_SVDV], (int64_t)c * r + j, 1);
            cb[c] = acc;
        }
        return;
    }
    const int64_t gi = (int64_t)s * h->n_rt * h->n_ct + g;
    const float sc = f == GQ_CB_INT8 ? gq_vqp_f16(p->part[GQ_VQP_CBS], gi) : 1.0f;
    for (int i = 0; i < kd; i++) cb[i] = gq_vqp_coded(f, p->part[GQ_VQP_CB], gi * kd + i, sc);
}

enum gq_status gq_vqpack_unpack(const struct gq_vqpack *p, const char *what, struct gq_vq_tensor *t) {
    const struct gq_vqpack_hdr *h = &p->h;
    int64_t bits[GQ_VQP_COUNT];
    memset(t, 0, sizeof *t);
    GQ_TRY(gq_vqpack_layout(h, what, bits));
    for (int i = 0; i < GQ_VQP_COUNT; i++) {
        size_t want = (size_t)(bits[i] + 7) / 8;
        if (want && !p->part[i]) return gq_fail(GQ_ERR_FORMAT, "%s: missing part %s", what, suffixes[i]);
        if (p->bytes[i] != want)
            return gq_fail(GQ_ERR_FORMAT, "%s.%s: %zu bytes, the header implies %zu (index width, codebook count "
                           "or shape mismatch, or a truncated tensor)", what, suffixes[i], p->bytes[i], want);
    }
    const int nv = (h->cols - h->n_out) / h->d, lk = ceil_log2(h->k), r = h->svd_rank, f = h->cb_format;
    const int64_t groups = (int64_t)h->n_rt * h->n_ct, kd = (int64_t)h->k * h->d;
    t->rows = h->rows, t->cols = h->cols, t->d = h->d, t->k = h->k, t->stages = h->stages, t->n_out = h->n_out;
    t->n_ct = h->n_ct, t->n_rt = h->n_rt, t->cb_format = (enum gq_cb_format)f, t->norm_block = h->norm_block;
    t->svd_rank = r;
    t->rot = h->rot != 0, t->rot_seed = (uint64_t)(uint32_t)h->rot_seed_lo | (uint64_t)(uint32_t)h->rot_seed_hi << 32;
    t->perm = malloc(sizeof(int32_t) * h->cols);
    t->ct_start = malloc(sizeof(int) * (h->n_ct + 1)), t->rt_start = malloc(sizeof(int) * (h->n_rt + 1));
    t->cb = malloc(sizeof(float) * h->stages * groups * kd), t->cb_scale = malloc(sizeof(float) * h->stages * groups);
    t->idx = malloc(sizeof(uint16_t) * ((size_t)h->stages * h->rows * nv + 1));
    t->outl = malloc(sizeof(uint16_t) * ((size_t)h->rows * h->n_out + 1));
    t->n_nblk = (int)norm_blocks(h);
    if (h->norm_block) t->sint = malloc((size_t)h->rows * t->n_nblk), t->norm = malloc(sizeof *t->norm * groups);
    if (r) {
        t->svd_u = malloc(sizeof(float) * groups * r), t->svd_uscale = malloc(sizeof(float) * r);
        t->svd_v = malloc(sizeof(float) * h->k * r);
    }
    if (!t->perm || !t->ct_start || !t->rt_start || !t->cb || !t->cb_scale || !t->idx || !t->outl ||
        (h->norm_block && (!t->sint || !t->norm)) || (r && (!t->svd_u || !t->svd_uscale || !t->svd_v))) {
        gq_vq_tensor_free(t);
        return gq_fail(GQ_ERR_NOMEM, "%s: unpacking", what);
    }
    for (int c = 0; c <= h->n_ct; c++) t->ct_start[c] = ct_start(h, c);
    for (int q = 0; q <= h->n_rt; q++) t->rt_start[q] = rt_start(h, q);
    enum gq_status st = GQ_OK;
    if (h->has_perm) {
        char *seen = calloc((size_t)h->cols, 1);
        if (!seen) st = gq_fail(GQ_ERR_NOMEM, "%s: unpacking", what);
        for (int i = 0; st == GQ_OK && i < h->cols; i++) {
            uint32_t c = gq_bits_get(p->part[GQ_VQP_PERM], i, ceil_log2(h->cols));
            if (c >= (uint32_t)h->cols || seen[c])
                st = gq_fail(GQ_ERR_FORMAT, "%s.%s: not a permutation of %d columns (entry %d = %u)", what,
                             suffixes[GQ_VQP_PERM], h->cols, i, c);
            else
                seen[c] = 1, t->perm[i] = (int32_t)c;
        }
        free(seen);
    } else {
        for (int i = 0; i < h->cols; i++) t->perm[i] = i;
    }
    for (int64_t i = 0; i < (int64_t)h->stages * h->rows * nv; i++)
        t->idx[i] = (uint16_t)gq_bits_get(p->part[GQ_VQP_IDX], i, lk);
    for (int stg = 0; stg < h->stages; stg++)
        for (int64_t g = 0; g < groups; g++) {
            const int64_t gi = stg * groups + g;
            gq_vqpack_codebook(p, stg, g, t->cb + gi * kd);
            t->cb_scale[gi] = f == GQ_CB_INT8 && !r ? gq_vqp_f16(p->part[GQ_VQP_CBS], gi) : 1.0f;
        }
    if (r) { // the factors too, for a tensor that can be packed again
        for (int j = 0; j < r; j++) t->svd_uscale[j] = f == GQ_CB_INT8 ? gq_vqp_f16(p->part[GQ_VQP_SVDUS], j) : 1.0f;
        for (int64_t i = 0; i < groups * r; i++)
            t->svd_u[i] = gq_vqp_coded(f, p->part[GQ_VQP_SVDU], i, t->svd_uscale[i % r]);
        for (int64_t i = 0; i < (int64_t)h->k * r; i++)
            t->svd_v[i] = gq_vqp_coded(f == GQ_CB_F32 ? GQ_CB_F32 : GQ_CB_FP16, p->part[GQ_VQP_SVDV], i, 1);
    }
    if (h->norm_block) {
        for (int64_t i = 0; i < (int64_t)h->rows * t->n_nblk; i++)
            t->sint[i] = (uint8_t)gq_bits_get(p->part[GQ_VQP_NSINT], i, 4);
        for (int64_t g = 0; g < groups; g++)
            t->norm[g].a = gq_vqp_f16(p->part[GQ_VQP_NPAR], 2 * g), t->norm[g].z = gq_vqp_f16(p->part[GQ_VQP_NPAR], 2 * g + 1);
    }
    if (h->n_out) memcpy(t->outl, p->part[GQ_VQP_OUTL], sizeof(uint16_t) * (size_t)h->rows * h->n_out);
    // every stored value finite (a NaN or Inf would poison whole rows)
    for (int64_t i = 0; st == GQ_OK && i < h->stages * groups * kd; i++)
        if (!isfinite(t->cb[i])) st = gq_fail(GQ_ERR_FORMAT, "%s: non-finite codebook value", what);
    for (int64_t i = 0; st == GQ_OK && h->norm_block && i < groups; i++)
        if (!isfinite(t->norm[i].a) || !isfinite(t->norm[i].z))
            st = gq_fail(GQ_ERR_FORMAT, "%s: non-finite normalisation parameter", what);
    for (int64_t i = 0; st == GQ_OK && i < (int64_t)h->rows * h->n_out; i++)
        if (!isfinite(gq_f16_to_f32(t->outl[i]))) st = gq_fail(GQ_ERR_FORMAT, "%s: non-finite outlier value", what);
    if (st != GQ_OK) gq_vq_tensor_free(t);
    return st;
}

enum gq_status gq_vqpack_hdr_read(struct gq_vqpack_hdr *h, const void *data, uint64_t n, const char *path,
                                  const char *key) {
    memset(h, 0, sizeof *h);
    if (n >= 1) memcpy(&h->version, data, 4);
    if (n < 1 || n != (uint64_t)gq_vqpack_hdr_n(h))
        return gq_fail(GQ_ERR_FORMAT, "%s: '%s' has %llu int32, a version %d header has %d", path, key,
                       (unsigned long long)n, h->version, gq_vqpack_hdr_n(h));
    memcpy(h, data, 4 * (size_t)n);
    return GQ_OK;
}

// Packed GPTVQ matrix `name` (docs/format.md): header "gptvq.vq.<name>" (13
// or 16 int32) and the part tensors "<name>.<suffix>", each of exactly the type
// and size the header implies. *found false: not a packed matrix.
enum gq_status gq_vqpack_from_gguf(const struct gq_gguf *g, const char *name, int64_t rows, int64_t cols,
                                   struct gq_vqpack *p, bool *found) {
    char key[256];
    snprintf(key, sizeof key, "gptvq.vq.%s", name);
    const struct gq_gguf_kv *kv = gq_gguf_find_kv(g, key);
    *found = kv != NULL;
    if (!kv) return GQ_OK;
    memset(p, 0, sizeof *p);
    if (kv->type != GQ_GGUF_ARRAY || kv->arr_type != GQ_GGUF_INT32)
        return gq_fail(GQ_ERR_FORMAT, "%s: '%s' is not an int32 array", g->file.path, key);
    GQ_TRY(gq_vqpack_hdr_read(&p->h, kv->arr_data, kv->arr_n, g->file.path, key));
    if (p->h.rows != rows || p->h.cols != cols)
        return gq_fail(GQ_ERR_FORMAT, "%s: packed '%s' is (%d, %d), expected (%lld, %lld)", g->file.path, name,
                       p->h.rows, p->h.cols, (long long)rows, (long long)cols);
    int64_t bits[GQ_VQP_COUNT];
    char what[200];
    snprintf(what, sizeof what, "%s: %s", g->file.path, name);
    GQ_TRY(gq_vqpack_layout(&p->h, what, bits));
    for (int i = 0; i < GQ_VQP_COUNT; i++) {
        char tn[256];
        snprintf(tn, sizeof tn, "%s.%s", name, gq_vqpack_suffix(i));
        const struct gq_gguf_tensor *t = gq_gguf_find_tensor(g, tn);
        if (!bits[i]) {
            if (t) return gq_fail(GQ_ERR_FORMAT, "%s: tensor '%s' is not part of this packed matrix", g->file.path, tn);
            continue;
        }
        if (!t) return gq_fail(GQ_ERR_FORMAT, "%s: missing tensor '%s'", g->file.path, tn);
        int type;
        int64_t ne;
        gq_vqpack_part_type(&p->h, i, bits[i], &type, &ne);
        if ((int)t->type != type || t->n_dims != 1 || t->ne[0] != ne)
            return gq_fail(GQ_ERR_FORMAT,
                           "%s: tensor '%s' is %s [%lld], the header implies %s [%lld] (index width, codebook count "
                           "or shape mismatch)",
                           g->file.path, tn, gq_ggml_type_name(t->type), (long long)t->ne[0],
                           gq_ggml_type_name((enum gq_ggml_type)type), (long long)ne);
        p->part[i] = t->data, p->bytes[i] = t->nbytes;
    }
    return GQ_OK;
}

enum gq_status gq_vqpack_summary(const struct gq_gguf *g, FILE *out) {
    int64_t n_mat = 0, weights = 0, bits = 0, pbytes = 0, all_bytes = 0;
    bool exact = true;
    for (uint64_t i = 0; i < g->n_tensors; i++) all_bytes += (int64_t)g->tensors[i].nbytes;
    for (uint64_t i = 0; i < g->n_kv; i++) {
        const struct gq_gguf_kv *kv = &g->kv[i];
        if (strncmp(kv->key, "gptvq.vq.", 9) != 0) continue;
        const char *name = kv->key + 9;
        if (kv->type != GQ_GGUF_ARRAY || kv->arr_type != GQ_GGUF_INT32)
            return gq_fail(GQ_ERR_FORMAT, "%s: '%s' is not an int32 array", g->file.path, kv->key);
        struct gq_vqpack_hdr h;
        GQ_TRY(gq_vqpack_hdr_read(&h, kv->arr_data, kv->arr_n, g->file.path, kv->key));
        int64_t b[GQ_VQP_COUNT], tb = 0, by = 0;
        GQ_TRY(gq_vqpack_layout(&h, name, b));
        for (int p = 0; p < GQ_VQP_COUNT; p++) {
            if (!b[p]) continue;
            char tn[256];
            snprintf(tn, sizeof tn, "%s.%s", name, suffixes[p]);
            const struct gq_gguf_tensor *t = gq_gguf_find_tensor(g, tn);
            if (!t) return gq_fail(GQ_ERR_FORMAT, "%s: missing tensor '%s'", g->file.path, tn);
            tb += b[p], by += (int64_t)t->nbytes;
            exact &= (int64_t)t->nbytes == (b[p] + 7) / 8;
        }
        if (n_mat == 0)
            fprintf(out, "\npacked GPTVQ matrices (bits: what the bpv counts; bytes: the part tensors)\n"
                         "%-32s %12s %2s %6s %9s %6s %12s %10s %8s\n",
                    "tensor", "shape", "d", "k", "l", "stages", "bits", "bytes", "bpv");
        int64_t l = (int64_t)((h.rows + h.n_rt - 1) / h.n_rt) * (((h.cols - h.n_out) / h.d + h.n_ct - 1) / h.n_ct) * h.d;
        char shape[32];
        snprintf(shape, sizeof shape, "%dx%d", h.rows, h.cols);
        fprintf(out, "%-32s %12s %2d %6d %9lld %6d %12lld %10lld %8.4f%s%s\n", name, shape, h.d, h.k, (long long)l,
                h.stages, (long long)tb, (long long)by, (double)tb / ((double)h.rows * h.cols),
                h.norm_block ? " norm" : "", h.svd_rank ? " svd" : "");
        n_mat++, weights += (int64_t)h.rows * h.cols, bits += tb, pbytes += by;
    }
    if (!n_mat) return GQ_OK;
    fprintf(out,
            "total: %lld matrices, %lld weights, %lld bits = %.4f bpv achieved; part bytes %lld (%s ceil(bits/8) per "
            "part)\nfile %lld bytes = packed parts %lld + other tensors %lld + header and alignment %lld\n",
            (long long)n_mat, (long long)weights, (long long)bits, (double)bits / (double)weights, (long long)pbytes,
            exact ? "exactly" : "NOT", (long long)g->file.size, (long long)pbytes, (long long)(all_bytes - pbytes),
            (long long)((int64_t)g->file.size - all_bytes));
    return GQ_OK;
}
