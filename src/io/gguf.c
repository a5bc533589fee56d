// gguf.c - GGUF v2/v3 reader.
//
// Layout (little-endian): "GGUF" u32 version, u64 n_tensors, u64 n_kv,
// n_kv x (string key, u32 type, value), n_tensors x (string name, u32 n_dims,
// i64 ne[n_dims], u32 type, u64 offset), padding to general.alignment
// (default 32), then the data section. Strings are u64 length + bytes.
//
// Nothing read from the file is trusted: every read is bounds-checked against
// the buffer, counts are checked against the bytes that could hold them
// before anything is allocated, and sizes use overflow-checked arithmetic.
#include "io/gguf.h"

#include <stdint.h>

#define GGUF_DEFAULT_ALIGNMENT 32

// Smallest possible encodings, used to reject hostile counts before allocating:
// a KV is at least a 1-byte key (8 + 1), a type (4) and a 1-byte value;
// a tensor info is at least a 1-byte name (8 + 1), n_dims (4), one ne (8),
// type (4) and offset (8).
#define MIN_KV_BYTES 14u
#define MIN_TENSOR_INFO_BYTES 33u

struct reader {
    const unsigned char *p;
    size_t size, pos;
    const char *name;
};

static enum gq_status rd_fail(const struct reader *r, enum gq_status s, size_t offset,
                              const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static enum gq_status rd_fail(const struct reader *r, enum gq_status s, size_t offset,
                              const char *fmt, ...) {
    char msg[768];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return gq_fail(s, "%s: %s (offset %llu)", r->name, msg, (unsigned long long)offset);
}

static bool rd_has(const struct reader *r, size_t n) { return n <= r->size - r->pos; }

static enum gq_status rd_need(const struct reader *r, size_t n, const char *what) {
    if (rd_has(r, n)) return GQ_OK;
    return rd_fail(r, GQ_ERR_FORMAT, r->pos, "truncated: %s needs %zu bytes, file has %zu left", what,
                   n, r->size - r->pos);
}

static uint64_t load_le(const unsigned char *p, int n) {
    uint64_t v = 0;
    for (int i = n - 1; i >= 0; i--) v = (v << 8) | p[i];
    return v;
}

static enum gq_status rd_u32(struct reader *r, uint32_t *v, const char *what) {
    GQ_TRY(rd_need(r, 4, what));
    *v = (uint32_t)load_le(r->p + r->pos, 4);
    r->pos += 4;
    return GQ_OK;
}

static enum gq_status rd_u64(struct reader *r, uint64_t *v, const char *what) {
    GQ_TRY(rd_need(r, 8, what));
    *v = load_le(r->p + r->pos, 8);
    r->pos += 8;
    return GQ_OK;
}

static enum gq_status rd_str(struct reader *r, struct gq_gguf_str *s, const char *what) {
    uint64_t len;
    size_t at = r->pos;
    GQ_TRY(rd_u64(r, &len, what));
    if (len > r->size - r->pos)
        return rd_fail(r, GQ_ERR_FORMAT, at, "%s length %llu past end of file (%zu bytes left)", what,
                       (unsigned long long)len, r->size - r->pos);
    s->len = len;
    s->data = (const char *)r->p + r->pos;
    r->pos += (size_t)len;
    return GQ_OK;
}

// Strict UTF-8 (no overlongs, no surrogates, <= U+10FFFF). Control characters
// are rejected too: keys and tensor names end up in one-line error messages.
bool gq_gguf_valid_name(const char *str, size_t n) {
    const unsigned char *s = (const unsigned char *)str;
    size_t i = 0;
    while (i < n) {
        unsigned c = s[i];
        if (c < 0x80) {
            if (c < 0x20 || c == 0x7f) return false;
            i++;
            continue;
        }
        int len;
        unsigned cp, min;
        if ((c & 0xe0) == 0xc0) len = 2, cp = c & 0x1f, min = 0x80;
        else if ((c & 0xf0) == 0xe0) len = 3, cp = c & 0x0f, min = 0x800;
        else if ((c & 0xf8) == 0xf0) len = 4, cp = c & 0x07, min = 0x10000;
        else return false;
        if ((size_t)len > n - i) return false;
        for (int k = 1; k < len; k++) {
            if ((s[i + k] & 0xc0) != 0x80) return false;
            cp = (cp << 6) | (s[i + k] & 0x3f);
        }
        if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return false;
        i += (size_t)len;
    }
    return true;
}

static enum gq_status rd_name(struct reader *r, char **out, const char *what) {
    struct gq_gguf_str s;
    size_t at = r->pos;
    GQ_TRY(rd_str(r, &s, what));
    if (s.len == 0) return rd_fail(r, GQ_ERR_FORMAT, at, "empty %s", what);
    if (!gq_gguf_valid_name(s.data, (size_t)s.len))
        return rd_fail(r, GQ_ERR_FORMAT, at, "%s is not valid UTF-8 text (or has control characters)",
                       what);
    *out = malloc((size_t)s.len + 1);
    if (!*out) return gq_fail(GQ_ERR_NOMEM, "%s: out of memory", r->name);
    memcpy(*out, s.data, (size_t)s.len);
    (*out)[s.len] = 0;
    return GQ_OK;
}

// ---------------------------------------------------------------------------
// Value types

static const char *const vtype_names[] = {"uint8", "int8", "uint16", "int16", "uint32",
                                          "int32", "float32", "bool", "string", "array",
                                          "uint64", "int64", "float64"};

const char *gq_gguf_vtype_name(enum gq_gguf_vtype t) {
    if ((unsigned)t < sizeof vtype_names / sizeof vtype_names[0]) return vtype_names[t];
    return "?";
}

size_t gq_gguf_vtype_size(uint32_t t) {
    switch (t) {
    case GQ_GGUF_UINT8: case GQ_GGUF_INT8: case GQ_GGUF_BOOL: return 1;
    case GQ_GGUF_UINT16: case GQ_GGUF_INT16: return 2;
    case GQ_GGUF_UINT32: case GQ_GGUF_INT32: case GQ_GGUF_FLOAT32: return 4;
    case GQ_GGUF_UINT64: case GQ_GGUF_INT64: case GQ_GGUF_FLOAT64: return 8;
    default: return 0;
    }
}

static bool vtype_is_int(enum gq_gguf_vtype t) {
    switch (t) {
    case GQ_GGUF_UINT8: case GQ_GGUF_INT8: case GQ_GGUF_UINT16: case GQ_GGUF_INT16:
    case GQ_GGUF_UINT32: case GQ_GGUF_INT32: case GQ_GGUF_UINT64: case GQ_GGUF_INT64: return true;
    default: return false;
    }
}

static bool vtype_is_signed(enum gq_gguf_vtype t) {
    return t == GQ_GGUF_INT8 || t == GQ_GGUF_INT16 || t == GQ_GGUF_INT32 || t == GQ_GGUF_INT64;
}

static float f32_from_bits(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static double f64_from_bits(uint64_t u) {
    double f;
    memcpy(&f, &u, 8);
    return f;
}

// Decodes one fixed-size value at p into the KV's union.
static void decode_scalar(enum gq_gguf_vtype t, const unsigned char *p, struct gq_gguf_kv *kv) {
    uint64_t raw = load_le(p, (int)gq_gguf_vtype_size(t));
    switch (t) {
    case GQ_GGUF_INT8: kv->v.i64 = (int8_t)raw; break;
    case GQ_GGUF_INT16: kv->v.i64 = (int16_t)raw; break;
    case GQ_GGUF_INT32: kv->v.i64 = (int32_t)raw; break;
    case GQ_GGUF_INT64: kv->v.i64 = (int64_t)raw; break;
    case GQ_GGUF_FLOAT32: kv->v.f64 = f32_from_bits((uint32_t)raw); break;
    case GQ_GGUF_FLOAT64: kv->v.f64 = f64_from_bits(raw); break;
    default: kv->v.u64 = raw; break;
    }
}

static enum gq_status parse_value(struct reader *r, struct gq_gguf_kv *kv) {
    size_t at = r->pos;
    uint32_t t;
    GQ_TRY(rd_u32(r, &t, "value type"));
    if (t > GQ_GGUF_FLOAT64)
        return rd_fail(r, GQ_ERR_FORMAT, at, "key '%s': unknown value type %u", kv->key, t);
    kv->type = (enum gq_gguf_vtype)t;
    if (t == GQ_GGUF_STRING) return rd_str(r, &kv->v.str, "string value");
    if (t != GQ_GGUF_ARRAY) {
        size_t n = gq_gguf_vtype_size(t);
        GQ_TRY(rd_need(r, n, "value"));
        if (t == GQ_GGUF_BOOL && r->p[r->pos] > 1)
            return rd_fail(r, GQ_ERR_FORMAT, r->pos, "key '%s': bool value %u is not 0 or 1", kv->key,
                           r->p[r->pos]);
        decode_scalar(kv->type, r->p + r->pos, kv);
        r->pos += n;
        return GQ_OK;
    }
    uint32_t et;
    at = r->pos;
    GQ_TRY(rd_u32(r, &et, "array element type"));
    if (et == GQ_GGUF_ARRAY)
        return rd_fail(r, GQ_ERR_UNSUPPORTED, at, "key '%s': nested arrays are not supported", kv->key);
    if (et > GQ_GGUF_FLOAT64)
        return rd_fail(r, GQ_ERR_FORMAT, at, "key '%s': unknown array element type %u", kv->key, et);
    kv->arr_type = (enum gq_gguf_vtype)et;
    uint64_t n;
    at = r->pos;
    GQ_TRY(rd_u64(r, &n, "array length"));
    size_t left = r->size - r->pos;
    if (et == GQ_GGUF_STRING) {
        // Each string takes at least its 8-byte length.
        if (n > left / 8)
            return rd_fail(r, GQ_ERR_FORMAT, at, "key '%s': %llu strings cannot fit in %zu bytes",
                           kv->key, (unsigned long long)n, left);
        kv->arr_n = n;
        if (n) {
            kv->arr_str = calloc((size_t)n, sizeof *kv->arr_str);
            if (!kv->arr_str) return gq_fail(GQ_ERR_NOMEM, "%s: out of memory", r->name);
        }
        for (uint64_t i = 0; i < n; i++) GQ_TRY(rd_str(r, &kv->arr_str[i], "array string"));
        return GQ_OK;
    }
    size_t es = gq_gguf_vtype_size(et);
    if (n > left / es)
        return rd_fail(r, GQ_ERR_FORMAT, at, "key '%s': %llu x %s array past end of file (%zu bytes left)",
                       kv->key, (unsigned long long)n, gq_gguf_vtype_name(kv->arr_type), left);
    kv->arr_n = n;
    kv->arr_data = r->p + r->pos;
    if (et == GQ_GGUF_BOOL) {
        for (uint64_t i = 0; i < n; i++)
            if (kv->arr_data[i] > 1)
                return rd_fail(r, GQ_ERR_FORMAT, r->pos + (size_t)i,
                               "key '%s': bool array element %llu is %u, not 0 or 1", kv->key,
                               (unsigned long long)i, kv->arr_data[i]);
    }
    r->pos += (size_t)n * es;
    return GQ_OK;
}

// ---------------------------------------------------------------------------
// Duplicate detection: an open-addressing set of indices into a name array.

struct name_set {
    uint32_t *slot; // index + 1; 0 = empty
    size_t mask;
};

static uint64_t hash_str(const char *s) {
    uint64_t h = 1469598103934665603ull; // FNV-1a
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

static bool set_init(struct name_set *set, size_t n) {
    size_t cap = 16;
    while (cap < 2 * n) cap *= 2;
    set->slot = calloc(cap, sizeof *set->slot);
    set->mask = cap - 1;
    return set->slot != NULL;
}

// Inserts names[i]; returns false if an equal name is already in the set.
static bool set_insert(struct name_set *set, char *const *names, size_t stride, uint32_t i) {
#define NAME_AT(k) (*(char *const *)((const char *)names + (size_t)(k) * stride))
    size_t h = (size_t)hash_str(NAME_AT(i)) & set->mask;
    while (set->slot[h]) {
        if (strcmp(NAME_AT(set->slot[h] - 1), NAME_AT(i)) == 0) return false;
        h = (h + 1) & set->mask;
    }
    set->slot[h] = i + 1;
    return true;
#undef NAME_AT
}

// ---------------------------------------------------------------------------
// ggml type table

struct type_info {
    const char *name;
    int block_size;
    int type_size;
};

static const struct type_info type_table[GQ_TYPE_COUNT_] = {
    [GQ_TYPE_F32] = {"F32", 1, 4},       [GQ_TYPE_F16] = {"F16", 1, 2},
    [GQ_TYPE_Q4_0] = {"Q4_0", 32, 18},   [GQ_TYPE_Q4_1] = {"Q4_1", 32, 20},
    [GQ_TYPE_Q5_0] = {"Q5_0", 32, 22},   [GQ_TYPE_Q5_1] = {"Q5_1", 32, 24},
    [GQ_TYPE_Q8_0] = {"Q8_0", 32, 34},   [GQ_TYPE_Q8_1] = {"Q8_1", 32, 36},
    [GQ_TYPE_Q2_K] = {"Q2_K", 256, 84},  [GQ_TYPE_Q3_K] = {"Q3_K", 256, 110},
    [GQ_TYPE_Q4_K] = {"Q4_K", 256, 144}, [GQ_TYPE_Q5_K] = {"Q5_K", 256, 176},
    [GQ_TYPE_Q6_K] = {"Q6_K", 256, 210}, [GQ_TYPE_Q8_K] = {"Q8_K", 256, 292},
    [16] = {"IQ2_XXS", 256, 66},         [17] = {"IQ2_XS", 256, 74},
    [18] = {"IQ3_XXS", 256, 98},         [19] = {"IQ1_S", 256, 50},
    [20] = {"IQ4_NL", 32, 18},           [21] = {"IQ3_S", 256, 110},
    [22] = {"IQ2_S", 256, 82},           [23] = {"IQ4_XS", 256, 136},
    [GQ_TYPE_I8] = {"I8", 1, 1},         [GQ_TYPE_I16] = {"I16", 1, 2},
    [GQ_TYPE_I32] = {"I32", 1, 4},       [GQ_TYPE_I64] = {"I64", 1, 8},
    [GQ_TYPE_F64] = {"F64", 1, 8},       [29] = {"IQ1_M", 256, 56},
    [GQ_TYPE_BF16] = {"BF16", 1, 2},     [34] = {"TQ1_0", 256, 54},
    [35] = {"TQ2_0", 256, 66},           [39] = {"MXFP4", 32, 17},
    [40] = {"NVFP4", 64, 36},            [41] = {"Q1_0", 128, 18},
};

const char *gq_ggml_type_name(enum gq_ggml_type t) {
    if ((unsigned)t < GQ_TYPE_COUNT_ && type_table[t].name) return type_table[t].name;
    return "?";
}

int gq_ggml_block_size(enum gq_ggml_type t) {
    return (unsigned)t < GQ_TYPE_COUNT_ ? type_table[t].block_size : 0;
}

size_t gq_ggml_type_size(enum gq_ggml_type t) {
    return (unsigned)t < GQ_TYPE_COUNT_ ? (size_t)type_table[t].type_size : 0;
}

size_t gq_ggml_row_size(enum gq_ggml_type t, int64_t n) {
    int bs = gq_ggml_block_size(t);
    if (bs <= 0 || n < 0 || n % bs != 0) return 0;
    size_t out;
    if (!gq_mul_ok((size_t)(n / bs), gq_ggml_type_size(t), &out)) return 0;
    return out;
}

uint32_t gq_ggml_llama_ftype(enum gq_ggml_type t) {
    switch (t) {
    case GQ_TYPE_F16: return 1;
    case GQ_TYPE_Q4_0: return 2;
    case GQ_TYPE_Q4_1: return 3;
    case GQ_TYPE_Q8_0: return 7;
    case GQ_TYPE_Q5_0: return 8;
    case GQ_TYPE_Q5_1: return 9;
    default: return 0;
    }
}

int64_t gq_gguf_tensor_nelements(const struct gq_gguf_tensor *t) {
    return t->ne[0] * t->ne[1] * t->ne[2] * t->ne[3];
}

// ---------------------------------------------------------------------------
// Open / close

void gq_gguf_close(struct gq_gguf *g) {
    if (!g) return;
    if (g->kv)
        for (uint64_t i = 0; i < g->n_kv; i++) {
            free(g->kv[i].key);
            free(g->kv[i].arr_str);
        }
    if (g->tensors)
        for (uint64_t i = 0; i < g->n_tensors; i++) free(g->tensors[i].name);
    free(g->kv);
    free(g->tensors);
    if (g->owns_mapping) gq_unmap_file(&g->file);
    else free(g->file.path);
    free(g);
}

static enum gq_status parse_header(struct gq_gguf *g, struct reader *r) {
    if (r->size < 4)
        return rd_fail(r, GQ_ERR_FORMAT, 0, "truncated: %zu bytes is too small for a GGUF header",
                       r->size);
    if (memcmp(r->p, "GGUF", 4) != 0) {
        if (memcmp(r->p, "FUGG", 4) == 0)
            return rd_fail(r, GQ_ERR_UNSUPPORTED, 0, "big-endian GGUF is not supported");
        return rd_fail(r, GQ_ERR_FORMAT, 0,
                       "bad magic %02x %02x %02x %02x, expected 'GGUF' (47 47 55 46)", r->p[0],
                       r->p[1], r->p[2], r->p[3]);
    }
    r->pos = 4;
    GQ_TRY(rd_u32(r, &g->version, "version"));
    uint32_t v = g->version;
    if (v == 1)
        return rd_fail(r, GQ_ERR_UNSUPPORTED, 4, "GGUF v1 is not supported (only v2 and v3)");
    if (v != 2 && v != 3) {
        // A big-endian writer stores version 3 as 03 00 00 00 read backwards.
        if ((v & 0xffff) == 0 && v != 0)
            return rd_fail(r, GQ_ERR_UNSUPPORTED, 4,
                           "version 0x%08x looks byte-swapped: big-endian GGUF is not supported", v);
        if (v == 0) return rd_fail(r, GQ_ERR_FORMAT, 4, "invalid GGUF version 0");
        return rd_fail(r, GQ_ERR_UNSUPPORTED, 4, "GGUF version %u is not supported (only v2 and v3)",
                       v);
    }
    GQ_TRY(rd_u64(r, &g->n_tensors, "tensor count"));
    GQ_TRY(rd_u64(r, &g->n_kv, "KV count"));
    size_t left = r->size - r->pos;
    uint64_t nt = g->n_tensors, nkv = g->n_kv;
    if (nkv > left / MIN_KV_BYTES || nt > left / MIN_TENSOR_INFO_BYTES ||
        nkv * MIN_KV_BYTES + nt * MIN_TENSOR_INFO_BYTES > left) {
        g->n_kv = g->n_tensors = 0; // nothing allocated yet: close must not walk the arrays
        return rd_fail(r, GQ_ERR_FORMAT, 8,
                       "%llu KVs and %llu tensors cannot fit in the %zu bytes after the header",
                       (unsigned long long)nkv, (unsigned long long)nt, left);
    }
    return GQ_OK;
}

static enum gq_status parse_kvs(struct gq_gguf *g, struct reader *r) {
    enum gq_status s = GQ_OK;
    struct name_set set = {0};
    size_t align_at = 0;
    if (!set_init(&set, (size_t)g->n_kv)) return gq_fail(GQ_ERR_NOMEM, "%s: out of memory", r->name);
    for (uint64_t i = 0; i < g->n_kv && s == GQ_OK; i++) {
        struct gq_gguf_kv *kv = &g->kv[i];
        size_t at = r->pos;
        s = rd_name(r, &kv->key, "key");
        if (s == GQ_OK && !set_insert(&set, &g->kv[0].key, sizeof *kv, (uint32_t)i))
            s = rd_fail(r, GQ_ERR_FORMAT, at, "duplicate key '%s'", kv->key);
        if (s == GQ_OK && strcmp(kv->key, "general.alignment") == 0) align_at = at;
        if (s == GQ_OK) s = parse_value(r, kv);
    }
    free(set.slot);
    if (s != GQ_OK) return s;

    g->alignment = GGUF_DEFAULT_ALIGNMENT;
    const struct gq_gguf_kv *a = gq_gguf_find_kv(g, "general.alignment");
    if (a) {
        if (a->type != GQ_GGUF_UINT32)
            return rd_fail(r, GQ_ERR_FORMAT, align_at, "general.alignment has type %s, expected uint32",
                           gq_gguf_vtype_name(a->type));
        if (a->v.u64 == 0 || (a->v.u64 & (a->v.u64 - 1)) != 0)
            return rd_fail(r, GQ_ERR_FORMAT, align_at, "general.alignment %llu is not a power of two",
                           (unsigned long long)a->v.u64);
        g->alignment = (uint32_t)a->v.u64;
    }
    return GQ_OK;
}

static enum gq_status parse_tensor_info(struct gq_gguf *g, struct reader *r,
                                        struct gq_gguf_tensor *t, size_t at) {
    GQ_TRY(rd_name(r, &t->name, "tensor name"));
    uint32_t n_dims;
    size_t dims_at = r->pos;
    GQ_TRY(rd_u32(r, &n_dims, "n_dims"));
    if (n_dims < 1 || n_dims > 4)
        return rd_fail(r, GQ_ERR_FORMAT, dims_at, "tensor '%s': n_dims %u not in 1..4", t->name,
                       n_dims);
    t->n_dims = (int)n_dims;
    int64_t n_elem = 1;
    for (int d = 0; d < 4; d++) {
        t->ne[d] = 1;
        if (d >= (int)n_dims) continue;
        uint64_t raw;
        size_t ne_at = r->pos;
        GQ_TRY(rd_u64(r, &raw, "tensor shape"));
        if ((int64_t)raw < 0)
            return rd_fail(r, GQ_ERR_FORMAT, ne_at, "tensor '%s': ne[%d] = %lld is negative", t->name,
                           d, (long long)(int64_t)raw);
        t->ne[d] = (int64_t)raw;
        if (__builtin_mul_overflow(n_elem, t->ne[d], &n_elem))
            return rd_fail(r, GQ_ERR_FORMAT, ne_at, "tensor '%s': element count overflows", t->name);
    }
    uint32_t type;
    size_t type_at = r->pos;
    GQ_TRY(rd_u32(r, &type, "tensor type"));
    if (gq_ggml_block_size((enum gq_ggml_type)type) == 0)
        return rd_fail(r, GQ_ERR_FORMAT, type_at, "tensor '%s': unknown ggml type %u", t->name, type);
    t->type = (enum gq_ggml_type)type;
    int bs = gq_ggml_block_size(t->type);
    if (t->ne[0] % bs != 0)
        return rd_fail(r, GQ_ERR_FORMAT, dims_at, "tensor '%s': row length %lld is not a multiple of "
                       "the %s block size %d", t->name, (long long)t->ne[0],
                       gq_ggml_type_name(t->type), bs);
    size_t nbytes = gq_ggml_row_size(t->type, t->ne[0]);
    if (t->ne[0] > 0 && nbytes == 0)
        return rd_fail(r, GQ_ERR_FORMAT, dims_at, "tensor '%s': row size overflows", t->name);
    for (int d = 1; d < 4; d++)
        if (!gq_mul_ok(nbytes, (size_t)t->ne[d], &nbytes))
            return rd_fail(r, GQ_ERR_FORMAT, dims_at, "tensor '%s': byte size overflows", t->name);
    t->nbytes = nbytes;
    GQ_TRY(rd_u64(r, &t->offset, "tensor offset"));
    if (t->offset % g->alignment != 0)
        return rd_fail(r, GQ_ERR_FORMAT, at, "tensor '%s': data offset %llu is not a multiple of the "
                       "alignment %u", t->name, (unsigned long long)t->offset, g->alignment);
    return GQ_OK;
}

struct span {
    uint64_t start, end;
    uint32_t idx;
};

static int cmp_span(const void *a, const void *b) {
    const struct span *x = a, *y = b;
    return x->start < y->start ? -1 : x->start > y->start ? 1 : 0;
}

static enum gq_status parse_tensors(struct gq_gguf *g, struct reader *r) {
    enum gq_status s = GQ_OK;
    struct name_set set = {0};
    size_t *info_at = calloc((size_t)g->n_tensors + 1, sizeof *info_at);
    if (!info_at || !set_init(&set, (size_t)g->n_tensors)) {
        free(info_at);
        return gq_fail(GQ_ERR_NOMEM, "%s: out of memory", r->name);
    }
    for (uint64_t i = 0; i < g->n_tensors && s == GQ_OK; i++) {
        info_at[i] = r->pos;
        s = parse_tensor_info(g, r, &g->tensors[i], r->pos);
        if (s == GQ_OK && !set_insert(&set, &g->tensors[0].name, sizeof g->tensors[0], (uint32_t)i))
            s = rd_fail(r, GQ_ERR_FORMAT, info_at[i], "duplicate tensor name '%s'",
                        g->tensors[i].name);
    }
    free(set.slot);

    // The data section starts at the first aligned offset after the infos.
    uint64_t data_off = ((uint64_t)r->pos + g->alignment - 1) / g->alignment * g->alignment;
    g->data_offset = data_off;
    if (s == GQ_OK && g->n_tensors > 0 && data_off > r->size)
        s = rd_fail(r, GQ_ERR_FORMAT, r->pos, "truncated: data section starts at %llu, past end of "
                    "file (size %zu)", (unsigned long long)data_off, r->size);

    struct span *spans = NULL;
    if (s == GQ_OK && g->n_tensors > 0) {
        spans = malloc((size_t)g->n_tensors * sizeof *spans);
        if (!spans) s = gq_fail(GQ_ERR_NOMEM, "%s: out of memory", r->name);
    }
    size_t n_spans = 0;
    for (uint64_t i = 0; i < g->n_tensors && s == GQ_OK; i++) {
        struct gq_gguf_tensor *t = &g->tensors[i];
        size_t avail = r->size - (size_t)data_off;
        if (t->offset > avail || t->nbytes > avail - t->offset) {
            // Saturate: a hostile offset near 2^64 must not print a wrapped range.
            uint64_t a, b;
            if (__builtin_add_overflow(data_off, t->offset, &a)) a = UINT64_MAX;
            if (__builtin_add_overflow(a, (uint64_t)t->nbytes, &b)) b = UINT64_MAX;
            s = rd_fail(r, GQ_ERR_FORMAT, info_at[i],
                        "tensor '%s' data [%llu, %llu) past end of file (size %zu)", t->name,
                        (unsigned long long)a, (unsigned long long)b, r->size);
            break;
        }
        t->data = r->p + data_off + t->offset;
        if (t->nbytes > 0)
            spans[n_spans++] = (struct span){t->offset, t->offset + t->nbytes, (uint32_t)i};
    }
    if (s == GQ_OK && n_spans > 1) {
        qsort(spans, n_spans, sizeof *spans, cmp_span);
        for (size_t k = 1; k < n_spans; k++) {
            if (spans[k].start < spans[k - 1].end) {
                const struct gq_gguf_tensor *a = &g->tensors[spans[k - 1].idx];
                const struct gq_gguf_tensor *b = &g->tensors[spans[k].idx];
                s = rd_fail(r, GQ_ERR_FORMAT, info_at[spans[k].idx],
                            "tensor '%s' data [%llu, %llu) overlaps tensor '%s' [%llu, %llu)",
                            b->name, (unsigned long long)spans[k].start,
                            (unsigned long long)spans[k].end, a->name,
                            (unsigned long long)spans[k - 1].start,
                            (unsigned long long)spans[k - 1].end);
                break;
            }
        }
    }
    free(spans);
    free(info_at);
    return s;
}

enum gq_status gq_gguf_open_memory(const void *data, size_t size, const char *name,
                                   struct gq_gguf **out) {
    *out = NULL;
    if (!data && size) return gq_fail(GQ_ERR_ARG, "%s: NULL buffer", name);
    struct gq_gguf *g = calloc(1, sizeof *g);
    if (!g) return gq_fail(GQ_ERR_NOMEM, "%s: out of memory", name);
    g->file.data = data;
    g->file.size = size;
    g->file.path = strdup(name);
    if (!g->file.path) {
        free(g);
        return gq_fail(GQ_ERR_NOMEM, "%s: out of memory", name);
    }
    struct reader r = {data, size, 0, g->file.path};
    enum gq_status s = parse_header(g, &r);
    if (s == GQ_OK) {
        // Counts were checked against the remaining bytes, so these are bounded by the file size.
        g->kv = calloc((size_t)g->n_kv + 1, sizeof *g->kv);
        g->tensors = calloc((size_t)g->n_tensors + 1, sizeof *g->tensors);
        if (!g->kv || !g->tensors) s = gq_fail(GQ_ERR_NOMEM, "%s: out of memory", name);
    }
    if (s == GQ_OK) s = parse_kvs(g, &r);
    if (s == GQ_OK) s = parse_tensors(g, &r);
    if (s != GQ_OK) {
        gq_gguf_close(g);
        return s;
    }
    *out = g;
    return GQ_OK;
}

enum gq_status gq_gguf_open(const char *path, struct gq_gguf **out) {
    *out = NULL;
    struct gq_mapped_file f;
    GQ_TRY(gq_map_file(path, &f));
    struct gq_gguf *g;
    enum gq_status s = gq_gguf_open_memory(f.data, f.size, path, &g);
    if (s != GQ_OK) {
        gq_unmap_file(&f);
        return s;
    }
    // Hand the mapping to the handle (it already has its own copy of the path).
    free(g->file.path);
    g->file = f;
    g->owns_mapping = true;
    *out = g;
    return GQ_OK;
}

// ---------------------------------------------------------------------------
// Lookup and typed getters

const struct gq_gguf_kv *gq_gguf_find_kv(const struct gq_gguf *g, const char *key) {
    for (uint64_t i = 0; i < g->n_kv; i++)
        if (g->kv[i].key && strcmp(g->kv[i].key, key) == 0) return &g->kv[i];
    return NULL;
}

const struct gq_gguf_tensor *gq_gguf_find_tensor(const struct gq_gguf *g, const char *name) {
    for (uint64_t i = 0; i < g->n_tensors; i++)
        if (g->tensors[i].name && strcmp(g->tensors[i].name, name) == 0) return &g->tensors[i];
    return NULL;
}

static enum gq_status find_or_fail(const struct gq_gguf *g, const char *key,
                                   const struct gq_gguf_kv **kv) {
    *kv = gq_gguf_find_kv(g, key);
    if (!*kv) return gq_fail(GQ_ERR_FORMAT, "%s: missing key '%s'", g->file.path, key);
    return GQ_OK;
}

static enum gq_status wrong_type(const struct gq_gguf *g, const struct gq_gguf_kv *kv,
                                 const char *expected) {
    if (kv->type == GQ_GGUF_ARRAY)
        return gq_fail(GQ_ERR_FORMAT, "%s: key '%s': expected %s, found array of %s", g->file.path,
                       kv->key, expected, gq_gguf_vtype_name(kv->arr_type));
    return gq_fail(GQ_ERR_FORMAT, "%s: key '%s': expected %s, found %s", g->file.path, kv->key,
                   expected, gq_gguf_vtype_name(kv->type));
}

enum gq_status gq_gguf_get_i64(const struct gq_gguf *g, const char *key, int64_t *out) {
    const struct gq_gguf_kv *kv;
    GQ_TRY(find_or_fail(g, key, &kv));
    if (!vtype_is_int(kv->type)) return wrong_type(g, kv, "an integer");
    if (!vtype_is_signed(kv->type) && kv->v.u64 > (uint64_t)INT64_MAX)
        return gq_fail(GQ_ERR_FORMAT, "%s: key '%s': value %llu does not fit in int64", g->file.path,
                       key, (unsigned long long)kv->v.u64);
    *out = vtype_is_signed(kv->type) ? kv->v.i64 : (int64_t)kv->v.u64;
    return GQ_OK;
}

enum gq_status gq_gguf_get_f64(const struct gq_gguf *g, const char *key, double *out) {
    const struct gq_gguf_kv *kv;
    GQ_TRY(find_or_fail(g, key, &kv));
    if (kv->type == GQ_GGUF_FLOAT32 || kv->type == GQ_GGUF_FLOAT64) *out = kv->v.f64;
    else if (vtype_is_int(kv->type))
        *out = vtype_is_signed(kv->type) ? (double)kv->v.i64 : (double)kv->v.u64;
    else return wrong_type(g, kv, "a number");
    return GQ_OK;
}

enum gq_status gq_gguf_get_bool(const struct gq_gguf *g, const char *key, bool *out) {
    const struct gq_gguf_kv *kv;
    GQ_TRY(find_or_fail(g, key, &kv));
    if (kv->type != GQ_GGUF_BOOL) return wrong_type(g, kv, "bool");
    *out = kv->v.u64 != 0;
    return GQ_OK;
}

enum gq_status gq_gguf_get_str(const struct gq_gguf *g, const char *key, char **out) {
    const struct gq_gguf_kv *kv;
    *out = NULL;
    GQ_TRY(find_or_fail(g, key, &kv));
    if (kv->type != GQ_GGUF_STRING) return wrong_type(g, kv, "string");
    char *s = malloc((size_t)kv->v.str.len + 1);
    if (!s) return gq_fail(GQ_ERR_NOMEM, "%s: out of memory", g->file.path);
    if (kv->v.str.len) memcpy(s, kv->v.str.data, (size_t)kv->v.str.len);
    s[kv->v.str.len] = 0;
    *out = s;
    return GQ_OK;
}

enum gq_status gq_gguf_get_array(const struct gq_gguf *g, const char *key,
                                 enum gq_gguf_vtype elem_type, const struct gq_gguf_kv **out) {
    const struct gq_gguf_kv *kv;
    *out = NULL;
    GQ_TRY(find_or_fail(g, key, &kv));
    if (kv->type != GQ_GGUF_ARRAY || kv->arr_type != elem_type) {
        char want[32];
        snprintf(want, sizeof want, "array of %s", gq_gguf_vtype_name(elem_type));
        return wrong_type(g, kv, want);
    }
    *out = kv;
    return GQ_OK;
}

// Element i of a scalar array, decoded like a scalar KV.
static struct gq_gguf_kv arr_elem(const struct gq_gguf_kv *kv, uint64_t i) {
    GQ_ASSERT(kv->type == GQ_GGUF_ARRAY && i < kv->arr_n);
    size_t es = gq_gguf_vtype_size(kv->arr_type);
    GQ_ASSERT(es > 0);
    struct gq_gguf_kv tmp = {.type = kv->arr_type};
    decode_scalar(kv->arr_type, kv->arr_data + (size_t)i * es, &tmp);
    return tmp;
}

int64_t gq_gguf_arr_i64(const struct gq_gguf_kv *kv, uint64_t i) {
    struct gq_gguf_kv tmp = arr_elem(kv, i);
    if (kv->arr_type == GQ_GGUF_FLOAT32 || kv->arr_type == GQ_GGUF_FLOAT64) {
        // Out-of-range (or NaN) float -> int conversion is undefined; saturate instead.
        double f = tmp.v.f64;
        if (!(f > -9.2e18)) return f < 0 ? INT64_MIN : 0;
        return f < 9.2e18 ? (int64_t)f : INT64_MAX;
    }
    return tmp.v.i64; // same bits as u64 for unsigned types
}

double gq_gguf_arr_f64(const struct gq_gguf_kv *kv, uint64_t i) {
    struct gq_gguf_kv tmp = arr_elem(kv, i);
    if (kv->arr_type == GQ_GGUF_FLOAT32 || kv->arr_type == GQ_GGUF_FLOAT64) return tmp.v.f64;
    if (vtype_is_signed(kv->arr_type)) return (double)tmp.v.i64;
    return (double)tmp.v.u64;
}
