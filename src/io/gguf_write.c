// gguf_write.c - GGUF v3 writer.
//
// Layout written (little-endian, as read by gguf.c): "GGUF" u32 3, u64
// n_tensors, u64 n_kv, the KVs (string key, u32 type, value), the tensor infos
// (string name, u32 n_dims, i64 ne[n_dims], u32 type, u64 offset), zero
// padding to the alignment, then each tensor's data followed by zero padding
// to the alignment (as ggml and gguf-py do, so the file ends aligned).
//
// A KV is kept serialized (the bytes after its type field) from the moment it
// is set, so scalars, arrays and values copied from a reader handle all take
// the same path, and writing the header is a plain concatenation.
#include "io/gguf_write.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <sys/stat.h>
#include <unistd.h>

#define GGUF_DEFAULT_ALIGNMENT 32
#define GGUF_WRITE_VERSION 3
// ggml's GGML_MAX_NAME: llama.cpp rejects tensor names of 64 bytes or more.
#define GGUF_MAX_TENSOR_NAME 64
#define OUT_BUF_SIZE (1u << 20)

struct wkv {
    char *key;
    enum gq_gguf_vtype type;
    unsigned char *val; // serialized value (after the type field)
    size_t len;
};

struct wtensor {
    char *name;
    enum gq_ggml_type type;
    int n_dims;
    int64_t ne[4];
    size_t nbytes;
    const void *data; // borrowed, or == owned
    void *owned;
    gq_gguf_tensor_fill fill;
    void *user;
    uint64_t offset; // in the data section, set at write time
};

struct gq_gguf_writer {
    uint32_t alignment;
    struct wkv *kv;
    size_t n_kv, cap_kv;
    struct wtensor *t;
    size_t n_t, cap_t;
};

// ---------------------------------------------------------------------------
// Byte builder for serialized values

struct bbuf {
    unsigned char *p;
    size_t n, cap;
    bool oom;
};

static void bb_reserve(struct bbuf *b, size_t extra) {
    if (b->oom) return;
    size_t need;
    if (!gq_add_ok(b->n, extra, &need)) {
        b->oom = true;
        return;
    }
    if (need <= b->cap) return;
    size_t cap = b->cap ? b->cap : 64;
    while (cap < need) {
        if (cap > SIZE_MAX / 2) {
            cap = need;
            break;
        }
        cap *= 2;
    }
    unsigned char *p = realloc(b->p, cap);
    if (!p) {
        b->oom = true;
        return;
    }
    b->p = p;
    b->cap = cap;
}

static void bb_bytes(struct bbuf *b, const void *src, size_t n) {
    bb_reserve(b, n);
    if (b->oom || n == 0) return;
    memcpy(b->p + b->n, src, n);
    b->n += n;
}

static void bb_le(struct bbuf *b, uint64_t v, size_t n) {
    unsigned char tmp[8];
    for (size_t i = 0; i < n; i++) tmp[i] = (unsigned char)(v >> (8 * i));
    bb_bytes(b, tmp, n);
}

static void bb_str(struct bbuf *b, const char *s, uint64_t len) {
    bb_le(b, len, 8);
    bb_bytes(b, s, (size_t)len);
}

// ---------------------------------------------------------------------------
// Validation helpers (names and value sizes: gq_gguf_valid_name and
// gq_gguf_vtype_size from the reader, so whatever we write we can read back)

static bool is_pow2(uint64_t v) { return v != 0 && (v & (v - 1)) == 0; }

// ---------------------------------------------------------------------------
// Writer lifetime

struct gq_gguf_writer *gq_gguf_writer_new(uint32_t alignment) {
    if (alignment == 0) alignment = GGUF_DEFAULT_ALIGNMENT;
    if (!is_pow2(alignment)) return NULL;
    struct gq_gguf_writer *w = calloc(1, sizeof *w);
    if (!w) return NULL;
    w->alignment = GGUF_DEFAULT_ALIGNMENT;
    if (alignment != GGUF_DEFAULT_ALIGNMENT &&
        gq_gguf_writer_set_u32(w, "general.alignment", alignment) != GQ_OK) {
        gq_gguf_writer_free(w);
        return NULL;
    }
    return w;
}

void gq_gguf_writer_free(struct gq_gguf_writer *w) {
    if (!w) return;
    for (size_t i = 0; i < w->n_kv; i++) {
        free(w->kv[i].key);
        free(w->kv[i].val);
    }
    for (size_t i = 0; i < w->n_t; i++) {
        free(w->t[i].name);
        free(w->t[i].owned);
    }
    free(w->kv);
    free(w->t);
    free(w);
}

size_t gq_gguf_writer_n_kv(const struct gq_gguf_writer *w) { return w->n_kv; }
size_t gq_gguf_writer_n_tensors(const struct gq_gguf_writer *w) { return w->n_t; }

// ---------------------------------------------------------------------------
// KVs

static struct wkv *find_kv(struct gq_gguf_writer *w, const char *key) {
    for (size_t i = 0; i < w->n_kv; i++)
        if (strcmp(w->kv[i].key, key) == 0) return &w->kv[i];
    return NULL;
}

// Takes ownership of b->p in every case.
static enum gq_status set_kv(struct gq_gguf_writer *w, const char *key, enum gq_gguf_vtype type,
                             struct bbuf *b) {
    enum gq_status s = GQ_OK;
    if (!key || !*key || !gq_gguf_valid_name(key, strlen(key)))
        s = gq_fail(GQ_ERR_ARG, "gguf writer: key '%s' is empty or not valid UTF-8 text",
                    key ? key : "(null)");
    else if (b->oom) s = gq_fail(GQ_ERR_NOMEM, "gguf writer: key '%s': out of memory", key);
    else if (strcmp(key, "general.alignment") == 0) {
        uint32_t a = 0;
        if (type == GQ_GGUF_UINT32 && b->n == 4)
            a = (uint32_t)b->p[0] | (uint32_t)b->p[1] << 8 | (uint32_t)b->p[2] << 16 |
                (uint32_t)b->p[3] << 24;
        if (type != GQ_GGUF_UINT32)
            s = gq_fail(GQ_ERR_ARG, "gguf writer: general.alignment must be uint32, got %s",
                        gq_gguf_vtype_name(type));
        else if (!is_pow2(a))
            s = gq_fail(GQ_ERR_ARG, "gguf writer: general.alignment %u is not a power of two", a);
        else w->alignment = a;
    }
    if (s != GQ_OK) {
        free(b->p);
        return s;
    }
    struct wkv *kv = find_kv(w, key);
    if (kv) {
        free(kv->val);
    } else {
        if (w->n_kv == w->cap_kv) {
            size_t cap = w->cap_kv ? 2 * w->cap_kv : 32;
            struct wkv *p = realloc(w->kv, cap * sizeof *p);
            if (!p) {
                free(b->p);
                return gq_fail(GQ_ERR_NOMEM, "gguf writer: key '%s': out of memory", key);
            }
            w->kv = p;
            w->cap_kv = cap;
        }
        char *k = strdup(key);
        if (!k) {
            free(b->p);
            return gq_fail(GQ_ERR_NOMEM, "gguf writer: key '%s': out of memory", key);
        }
        kv = &w->kv[w->n_kv++];
        kv->key = k;
    }
    kv->type = type;
    kv->val = b->p;
    kv->len = b->n;
    return GQ_OK;
}

static enum gq_status set_scalar(struct gq_gguf_writer *w, const char *key, enum gq_gguf_vtype t,
                                 uint64_t bits) {
    struct bbuf b = {0};
    bb_le(&b, bits, gq_gguf_vtype_size(t));
    return set_kv(w, key, t, &b);
}

enum gq_status gq_gguf_writer_set_u8(struct gq_gguf_writer *w, const char *key, uint8_t v) {
    return set_scalar(w, key, GQ_GGUF_UINT8, v);
}
enum gq_status gq_gguf_writer_set_i8(struct gq_gguf_writer *w, const char *key, int8_t v) {
    return set_scalar(w, key, GQ_GGUF_INT8, (uint8_t)v);
}
enum gq_status gq_gguf_writer_set_u16(struct gq_gguf_writer *w, const char *key, uint16_t v) {
    return set_scalar(w, key, GQ_GGUF_UINT16, v);
}
enum gq_status gq_gguf_writer_set_i16(struct gq_gguf_writer *w, const char *key, int16_t v) {
    return set_scalar(w, key, GQ_GGUF_INT16, (uint16_t)v);
}
enum gq_status gq_gguf_writer_set_u32(struct gq_gguf_writer *w, const char *key, uint32_t v) {
    return set_scalar(w, key, GQ_GGUF_UINT32, v);
}
enum gq_status gq_gguf_writer_set_i32(struct gq_gguf_writer *w, const char *key, int32_t v) {
    return set_scalar(w, key, GQ_GGUF_INT32, (uint32_t)v);
}
enum gq_status gq_gguf_writer_set_u64(struct gq_gguf_writer *w, const char *key, uint64_t v) {
    return set_scalar(w, key, GQ_GGUF_UINT64, v);
}
enum gq_status gq_gguf_writer_set_i64(struct gq_gguf_writer *w, const char *key, int64_t v) {
    return set_scalar(w, key, GQ_GGUF_INT64, (uint64_t)v);
}
enum gq_status gq_gguf_writer_set_f32(struct gq_gguf_writer *w, const char *key, float v) {
    uint32_t u;
    memcpy(&u, &v, 4);
    return set_scalar(w, key, GQ_GGUF_FLOAT32, u);
}
enum gq_status gq_gguf_writer_set_f64(struct gq_gguf_writer *w, const char *key, double v) {
    uint64_t u;
    memcpy(&u, &v, 8);
    return set_scalar(w, key, GQ_GGUF_FLOAT64, u);
}
enum gq_status gq_gguf_writer_set_bool(struct gq_gguf_writer *w, const char *key, bool v) {
    return set_scalar(w, key, GQ_GGUF_BOOL, v ? 1 : 0);
}

enum gq_status gq_gguf_writer_set_strn(struct gq_gguf_writer *w, const char *key, const char *v,
                                       size_t len) {
    if (!v && len) return gq_fail(GQ_ERR_ARG, "gguf writer: key '%s': NULL string", key);
    struct bbuf b = {0};
    bb_str(&b, v, len);
    return set_kv(w, key, GQ_GGUF_STRING, &b);
}

enum gq_status gq_gguf_writer_set_str(struct gq_gguf_writer *w, const char *key, const char *v) {
    if (!v) return gq_fail(GQ_ERR_ARG, "gguf writer: key '%s': NULL string", key);
    return gq_gguf_writer_set_strn(w, key, v, strlen(v));
}

enum gq_status gq_gguf_writer_set_arr(struct gq_gguf_writer *w, const char *key,
                                      enum gq_gguf_vtype vtype, const void *data, size_t n) {
    size_t es = gq_gguf_vtype_size(vtype);
    if (es == 0)
        return gq_fail(GQ_ERR_ARG, "gguf writer: key '%s': array element type %s is not a scalar",
                       key, gq_gguf_vtype_name(vtype));
    if (!data && n) return gq_fail(GQ_ERR_ARG, "gguf writer: key '%s': NULL array data", key);
    const unsigned char *p = data;
    struct bbuf b = {0};
    bb_le(&b, (uint64_t)vtype, 4);
    bb_le(&b, (uint64_t)n, 8);
    size_t total;
    if (!gq_mul_ok(n, es, &total)) b.oom = true;
    bb_reserve(&b, total);
    for (size_t i = 0; i < n && !b.oom; i++) {
        uint64_t v = 0;
        // Host-order element of the natural C type -> little-endian bytes.
        switch (es) {
        case 1: v = p[i]; break;
        case 2: { uint16_t x; memcpy(&x, p + 2 * i, 2); v = x; break; }
        case 4: { uint32_t x; memcpy(&x, p + 4 * i, 4); v = x; break; }
        default: memcpy(&v, p + 8 * i, 8); break;
        }
        if (vtype == GQ_GGUF_BOOL && v > 1) {
            free(b.p);
            return gq_fail(GQ_ERR_ARG, "gguf writer: key '%s': bool array element %zu is %u, not 0 or 1",
                           key, i, (unsigned)v);
        }
        bb_le(&b, v, es);
    }
    return set_kv(w, key, GQ_GGUF_ARRAY, &b);
}

enum gq_status gq_gguf_writer_set_arr_str(struct gq_gguf_writer *w, const char *key,
                                          const char *const *strs, size_t n) {
    if (!strs && n) return gq_fail(GQ_ERR_ARG, "gguf writer: key '%s': NULL string array", key);
    struct bbuf b = {0};
    bb_le(&b, GQ_GGUF_STRING, 4);
    bb_le(&b, (uint64_t)n, 8);
    for (size_t i = 0; i < n; i++) {
        if (!strs[i]) {
            free(b.p);
            return gq_fail(GQ_ERR_ARG, "gguf writer: key '%s': string %zu is NULL", key, i);
        }
        bb_str(&b, strs[i], strlen(strs[i]));
    }
    return set_kv(w, key, GQ_GGUF_ARRAY, &b);
}

// Re-serializes a KV parsed by the reader (its union holds decoded values;
// non-string arrays are raw little-endian bytes of the mapping).
static enum gq_status copy_kv(struct gq_gguf_writer *w, const struct gq_gguf_kv *kv) {
    struct bbuf b = {0};
    switch (kv->type) {
    case GQ_GGUF_STRING: bb_str(&b, kv->v.str.data, kv->v.str.len); break;
    case GQ_GGUF_FLOAT32: {
        float f = (float)kv->v.f64; // exact: the reader widened a float32
        uint32_t u;
        memcpy(&u, &f, 4);
        bb_le(&b, u, 4);
        break;
    }
    case GQ_GGUF_FLOAT64: {
        uint64_t u;
        memcpy(&u, &kv->v.f64, 8);
        bb_le(&b, u, 8);
        break;
    }
    case GQ_GGUF_INT8: case GQ_GGUF_INT16: case GQ_GGUF_INT32: case GQ_GGUF_INT64:
        bb_le(&b, (uint64_t)kv->v.i64, gq_gguf_vtype_size(kv->type));
        break;
    case GQ_GGUF_ARRAY:
        bb_le(&b, (uint64_t)kv->arr_type, 4);
        bb_le(&b, kv->arr_n, 8);
        if (kv->arr_type == GQ_GGUF_STRING) {
            for (uint64_t i = 0; i < kv->arr_n; i++) bb_str(&b, kv->arr_str[i].data, kv->arr_str[i].len);
        } else {
            size_t n;
            if (!gq_mul_ok((size_t)kv->arr_n, gq_gguf_vtype_size(kv->arr_type), &n)) b.oom = true;
            else bb_bytes(&b, kv->arr_data, n);
        }
        break;
    default: bb_le(&b, kv->v.u64, gq_gguf_vtype_size(kv->type)); break; // unsigned ints, bool
    }
    return set_kv(w, kv->key, kv->type, &b);
}

enum gq_status gq_gguf_writer_copy_kv(struct gq_gguf_writer *w, const struct gq_gguf *g,
                                      const char *key) {
    const struct gq_gguf_kv *kv = gq_gguf_find_kv(g, key);
    if (!kv) return gq_fail(GQ_ERR_ARG, "%s: no key '%s' to copy", g->file.path, key);
    return copy_kv(w, kv);
}

enum gq_status gq_gguf_writer_copy_kvs(struct gq_gguf_writer *w, const struct gq_gguf *g,
                                       const char *const *skip_prefixes) {
    for (uint64_t i = 0; i < g->n_kv; i++) {
        const struct gq_gguf_kv *kv = &g->kv[i];
        if (strcmp(kv->key, "general.alignment") == 0) continue;
        bool skip = false;
        for (const char *const *p = skip_prefixes; p && *p && !skip; p++)
            skip = strncmp(kv->key, *p, strlen(*p)) == 0;
        if (!skip) GQ_TRY(copy_kv(w, kv));
    }
    return GQ_OK;
}

bool gq_gguf_writer_remove_kv(struct gq_gguf_writer *w, const char *key) {
    struct wkv *kv = find_kv(w, key);
    if (!kv) return false;
    if (strcmp(key, "general.alignment") == 0) w->alignment = GGUF_DEFAULT_ALIGNMENT;
    free(kv->key);
    free(kv->val);
    size_t i = (size_t)(kv - w->kv);
    memmove(&w->kv[i], &w->kv[i + 1], (w->n_kv - i - 1) * sizeof *w->kv);
    w->n_kv--;
    return true;
}

// ---------------------------------------------------------------------------
// Tensors

static enum gq_status add_tensor(struct gq_gguf_writer *w, const char *name,
                                 enum gq_ggml_type type, int n_dims, const int64_t *ne,
                                 const void *data, size_t nbytes, bool copy,
                                 gq_gguf_tensor_fill fill, void *user) {
    if (!name || !*name || !gq_gguf_valid_name(name, strlen(name)))
        return gq_fail(GQ_ERR_ARG, "gguf writer: tensor name '%s' is empty or not valid UTF-8 text",
                       name ? name : "(null)");
    if (strlen(name) >= GGUF_MAX_TENSOR_NAME)
        return gq_fail(GQ_ERR_ARG, "gguf writer: tensor name '%s' has %zu bytes, at most %d allowed",
                       name, strlen(name), GGUF_MAX_TENSOR_NAME - 1);
    for (size_t i = 0; i < w->n_t; i++)
        if (strcmp(w->t[i].name, name) == 0)
            return gq_fail(GQ_ERR_ARG, "gguf writer: duplicate tensor name '%s'", name);
    int bs = gq_ggml_block_size(type);
    if (bs <= 0)
        return gq_fail(GQ_ERR_ARG, "gguf writer: tensor '%s': unknown ggml type %d", name, (int)type);
    if (n_dims < 1 || n_dims > 4 || !ne)
        return gq_fail(GQ_ERR_ARG, "gguf writer: tensor '%s': n_dims %d not in 1..4", name, n_dims);
    int64_t nel = 1;
    for (int d = 0; d < n_dims; d++) {
        if (ne[d] < 0)
            return gq_fail(GQ_ERR_ARG, "gguf writer: tensor '%s': ne[%d] = %lld is negative", name, d,
                           (long long)ne[d]);
        if (__builtin_mul_overflow(nel, ne[d], &nel))
            return gq_fail(GQ_ERR_ARG, "gguf writer: tensor '%s': element count overflows", name);
    }
    if (ne[0] % bs != 0)
        return gq_fail(GQ_ERR_ARG, "gguf writer: tensor '%s': row length %lld is not a multiple of "
                       "the %s block size %d", name, (long long)ne[0], gq_ggml_type_name(type), bs);
    size_t want = gq_ggml_row_size(type, ne[0]);
    bool ovf = ne[0] > 0 && want == 0;
    for (int d = 1; d < n_dims && !ovf; d++) ovf = !gq_mul_ok(want, (size_t)ne[d], &want);
    if (ovf) return gq_fail(GQ_ERR_ARG, "gguf writer: tensor '%s': byte size overflows", name);
    if (nbytes != want)
        return gq_fail(GQ_ERR_ARG, "gguf writer: tensor '%s': %zu data bytes, expected %zu for %s "
                       "[%lld, %lld, %lld, %lld]", name, nbytes, want, gq_ggml_type_name(type),
                       (long long)ne[0], (long long)(n_dims > 1 ? ne[1] : 1),
                       (long long)(n_dims > 2 ? ne[2] : 1), (long long)(n_dims > 3 ? ne[3] : 1));
    if (!fill && !data && nbytes)
        return gq_fail(GQ_ERR_ARG, "gguf writer: tensor '%s': NULL data", name);

    if (w->n_t == w->cap_t) {
        size_t cap = w->cap_t ? 2 * w->cap_t : 64;
        struct wtensor *p = realloc(w->t, cap * sizeof *p);
        if (!p) return gq_fail(GQ_ERR_NOMEM, "gguf writer: tensor '%s': out of memory", name);
        w->t = p;
        w->cap_t = cap;
    }
    struct wtensor t = {.type = type, .n_dims = n_dims, .nbytes = nbytes, .data = data,
                        .fill = fill, .user = user};
    for (int d = 0; d < 4; d++) t.ne[d] = d < n_dims ? ne[d] : 1;
    t.name = strdup(name);
    if (copy && nbytes) {
        t.owned = malloc(nbytes);
        if (t.owned) memcpy(t.owned, data, nbytes);
        t.data = t.owned;
    }
    if (!t.name || (copy && nbytes && !t.owned)) {
        free(t.name);
        free(t.owned);
        return gq_fail(GQ_ERR_NOMEM, "gguf writer: tensor '%s' (%zu bytes): out of memory", name,
                       nbytes);
    }
    w->t[w->n_t++] = t;
    return GQ_OK;
}

enum gq_status gq_gguf_writer_add_tensor(struct gq_gguf_writer *w, const char *name,
                                         enum gq_ggml_type type, int n_dims, const int64_t *ne,
                                         const void *data, size_t nbytes) {
    return add_tensor(w, name, type, n_dims, ne, data, nbytes, false, NULL, NULL);
}

enum gq_status gq_gguf_writer_add_tensor_copy(struct gq_gguf_writer *w, const char *name,
                                              enum gq_ggml_type type, int n_dims,
                                              const int64_t *ne, const void *data, size_t nbytes) {
    return add_tensor(w, name, type, n_dims, ne, data, nbytes, true, NULL, NULL);
}

enum gq_status gq_gguf_writer_add_tensor_fill(struct gq_gguf_writer *w, const char *name,
                                              enum gq_ggml_type type, int n_dims,
                                              const int64_t *ne, size_t nbytes,
                                              gq_gguf_tensor_fill fill, void *user) {
    if (!fill) return gq_fail(GQ_ERR_ARG, "gguf writer: tensor '%s': NULL fill function", name);
    return add_tensor(w, name, type, n_dims, ne, NULL, nbytes, false, fill, user);
}

enum gq_status gq_gguf_writer_copy_tensor(struct gq_gguf_writer *w, const struct gq_gguf *g,
                                          const struct gq_gguf_tensor *t, const char *name) {
    (void)g;
    return add_tensor(w, name ? name : t->name, t->type, t->n_dims, t->ne, t->data, t->nbytes,
                      false, NULL, NULL);
}

// ---------------------------------------------------------------------------
// Output

struct out {
    int fd;
    unsigned char *buf;
    size_t n;
    uint64_t pos; // bytes handed to write() so far + buffered
    const char *path, *tmp;
};

static enum gq_status write_all(struct out *o, const unsigned char *p, size_t n) {
    uint64_t at = o->pos - o->n; // file offset of p[0] when flushing the buffer
    while (n > 0) {
        ssize_t k = write(o->fd, p, n > ((size_t)1 << 30) ? ((size_t)1 << 30) : n);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0)
            return gq_fail(GQ_ERR_IO, "%s: write to %s failed at offset %llu: %s", o->path, o->tmp,
                           (unsigned long long)at, k < 0 ? strerror(errno) : "wrote 0 bytes");
        p += k;
        n -= (size_t)k;
        at += (uint64_t)k;
    }
    return GQ_OK;
}

static enum gq_status out_flush(struct out *o) {
    enum gq_status s = write_all(o, o->buf, o->n);
    o->n = 0;
    return s;
}

static enum gq_status out_bytes(struct out *o, const void *src, size_t n) {
    const unsigned char *p = src;
    if (n == 0) return GQ_OK; // src may be NULL (empty tensor or string)
    if (n <= OUT_BUF_SIZE - o->n) {
        memcpy(o->buf + o->n, p, n);
        o->n += n;
        o->pos += n;
        return GQ_OK;
    }
    GQ_TRY(out_flush(o));
    if (n < OUT_BUF_SIZE) {
        memcpy(o->buf, p, n);
        o->n = n;
        o->pos += n;
        return GQ_OK;
    }
    // Large tensor data goes straight from the caller's buffer (no extra copy).
    enum gq_status s = write_all(o, p, n);
    o->pos += n;
    return s;
}

static enum gq_status out_le(struct out *o, uint64_t v, size_t n) {
    unsigned char tmp[8];
    for (size_t i = 0; i < n; i++) tmp[i] = (unsigned char)(v >> (8 * i));
    return out_bytes(o, tmp, n);
}

static enum gq_status out_str(struct out *o, const char *s) {
    size_t len = strlen(s);
    GQ_TRY(out_le(o, len, 8));
    return out_bytes(o, s, len);
}

static enum gq_status out_pad(struct out *o, uint32_t alignment) {
    static const unsigned char zeros[256];
    while (o->pos % alignment != 0) {
        size_t k = alignment - (size_t)(o->pos % alignment);
        GQ_TRY(out_bytes(o, zeros, k < sizeof zeros ? k : sizeof zeros));
    }
    return GQ_OK;
}

static enum gq_status write_body(struct gq_gguf_writer *w, struct out *o, void *scratch) {
    GQ_TRY(out_bytes(o, "GGUF", 4));
    GQ_TRY(out_le(o, GGUF_WRITE_VERSION, 4));
    GQ_TRY(out_le(o, w->n_t, 8));
    GQ_TRY(out_le(o, w->n_kv, 8));
    for (size_t i = 0; i < w->n_kv; i++) {
        GQ_TRY(out_str(o, w->kv[i].key));
        GQ_TRY(out_le(o, (uint64_t)w->kv[i].type, 4));
        GQ_TRY(out_bytes(o, w->kv[i].val, w->kv[i].len));
    }
    for (size_t i = 0; i < w->n_t; i++) {
        const struct wtensor *t = &w->t[i];
        GQ_TRY(out_str(o, t->name));
        GQ_TRY(out_le(o, (uint64_t)t->n_dims, 4));
        for (int d = 0; d < t->n_dims; d++) GQ_TRY(out_le(o, (uint64_t)t->ne[d], 8));
        GQ_TRY(out_le(o, (uint64_t)t->type, 4));
        GQ_TRY(out_le(o, t->offset, 8));
    }
    GQ_TRY(out_pad(o, w->alignment));
    uint64_t data_start = o->pos;
    for (size_t i = 0; i < w->n_t; i++) {
        const struct wtensor *t = &w->t[i];
        GQ_ASSERT(o->pos - data_start == t->offset);
        const void *src = t->data;
        if (t->fill) {
            enum gq_status s = t->fill(t->user, t->name, scratch, t->nbytes);
            if (s != GQ_OK) {
                gq_error_prefix("%s: tensor '%s'", o->path, t->name);
                return s;
            }
            src = scratch;
        }
        GQ_TRY(out_bytes(o, src, t->nbytes));
        GQ_TRY(out_pad(o, w->alignment));
    }
    return out_flush(o);
}

enum gq_status gq_gguf_writer_write(struct gq_gguf_writer *w, const char *path) {
    // Data offsets: each tensor starts aligned within the data section.
    uint64_t off = 0;
    size_t max_fill = 0;
    for (size_t i = 0; i < w->n_t; i++) {
        struct wtensor *t = &w->t[i];
        t->offset = off;
        uint64_t padded = ((uint64_t)t->nbytes + w->alignment - 1) / w->alignment * w->alignment;
        if (padded < t->nbytes || __builtin_add_overflow(off, padded, &off))
            return gq_fail(GQ_ERR_ARG, "%s: data section size overflows", path);
        if (t->fill && t->nbytes > max_fill) max_fill = t->nbytes;
    }

    size_t plen = strlen(path);
    char *tmp = malloc(plen + 32);
    unsigned char *buf = malloc(OUT_BUF_SIZE);
    void *scratch = max_fill ? malloc(max_fill) : NULL;
    if (!tmp || !buf || (max_fill && !scratch)) {
        free(tmp);
        free(buf);
        free(scratch);
        return gq_fail(GQ_ERR_NOMEM, "%s: out of memory", path);
    }
    snprintf(tmp, plen + 32, "%s.tmp.%ld", path, (long)getpid());

    enum gq_status s = GQ_OK;
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0644);
    if (fd < 0) {
        s = gq_fail(GQ_ERR_IO, "%s: cannot create temporary file %s: %s", path, tmp, strerror(errno));
    } else {
        struct out o = {.fd = fd, .buf = buf, .path = path, .tmp = tmp};
        s = write_body(w, &o, scratch);
        if (s == GQ_OK && fsync(fd) != 0)
            s = gq_fail(GQ_ERR_IO, "%s: fsync of %s failed: %s", path, tmp, strerror(errno));
        if (close(fd) != 0 && s == GQ_OK)
            s = gq_fail(GQ_ERR_IO, "%s: close of %s failed: %s", path, tmp, strerror(errno));
        if (s == GQ_OK && rename(tmp, path) != 0)
            s = gq_fail(GQ_ERR_IO, "%s: cannot rename %s to it: %s", path, tmp, strerror(errno));
        if (s != GQ_OK) unlink(tmp);
    }
    if (s == GQ_OK) {
        // Make the rename itself durable (best effort: some filesystems refuse).
        char *slash = strrchr(path, '/');
        char *dir = slash ? strndup(path, (size_t)(slash - path) + 1) : strdup(".");
        int dfd = dir ? open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC) : -1;
        if (dfd >= 0) {
            (void)fsync(dfd);
            close(dfd);
        }
        free(dir);
    }
    free(tmp);
    free(buf);
    free(scratch);
    return s;
}
