// safetensors.c - safetensors header parsing and validation, f32 conversion.
#include "io/safetensors.h"

#include <cjson/cJSON.h>
#include <float.h>
#include <math.h>

static const struct {
    const char *name;
    enum gq_st_dtype t;
    size_t size;
} k_dtypes[] = {
    {"BOOL", GQ_ST_BOOL, 1}, {"U8", GQ_ST_U8, 1},     {"I8", GQ_ST_I8, 1},
    {"F8_E4M3", GQ_ST_F8_E4M3, 1}, {"F8_E5M2", GQ_ST_F8_E5M2, 1},
    {"I16", GQ_ST_I16, 2},   {"U16", GQ_ST_U16, 2},   {"F16", GQ_ST_F16, 2},
    {"BF16", GQ_ST_BF16, 2}, {"I32", GQ_ST_I32, 4},   {"U32", GQ_ST_U32, 4},
    {"F32", GQ_ST_F32, 4},   {"I64", GQ_ST_I64, 8},   {"U64", GQ_ST_U64, 8},
    {"F64", GQ_ST_F64, 8},
};

size_t gq_st_dtype_size(enum gq_st_dtype t) {
    for (size_t i = 0; i < sizeof k_dtypes / sizeof k_dtypes[0]; i++)
        if (k_dtypes[i].t == t) return k_dtypes[i].size;
    return 0;
}

void gq_st_close(struct gq_st_file *f) {
    if (!f) return;
    for (size_t i = 0; i < f->n_tensors; i++) free(f->tensors[i].name);
    free(f->tensors);
    free(f->by_name);
    for (size_t i = 0; i < 2 * f->n_meta; i++) free(f->meta[i]);
    free(f->meta);
    if (f->owns_mapping) gq_unmap_file(&f->file);
    else free(f->file.path);
    free(f);
}

// A JSON number that is an exact non-negative integer below 2^53 (where
// doubles stop representing every integer).
static bool json_uint(const cJSON *v, uint64_t *out) {
    if (!cJSON_IsNumber(v)) return false;
    double d = v->valuedouble;
    if (!(d >= 0 && d <= 9007199254740992.0) || d != floor(d)) return false;
    *out = (uint64_t)d;
    return true;
}

// Sort helpers (qsort has no context argument, so the arrays are indices into
// a file-scope pointer; the parse is not re-entrant across threads otherwise,
// hence _Thread_local).
static _Thread_local const struct gq_st_tensor *g_sort_t;
static int cmp_name(const void *a, const void *b) {
    return strcmp(g_sort_t[*(const size_t *)a].name, g_sort_t[*(const size_t *)b].name);
}
static int cmp_begin(const void *a, const void *b) {
    const struct gq_st_tensor *x = &g_sort_t[*(const size_t *)a], *y = &g_sort_t[*(const size_t *)b];
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end) return x->end < y->end ? -1 : 1;
    return 0;
}

// Names and dtypes are printed in error messages, which must stay one line.
static bool printable(const char *s) {
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 || *s == 0x7f) return false;
    return true;
}

static enum gq_status parse_tensor(struct gq_st_file *f, const cJSON *e, struct gq_st_tensor *t) {
    const char *path = f->file.path;
    if (!cJSON_IsObject(e))
        return gq_fail(GQ_ERR_FORMAT, "%s: header entry '%s' is not an object", path, t->name);
    const cJSON *dt = cJSON_GetObjectItemCaseSensitive(e, "dtype");
    const cJSON *sh = cJSON_GetObjectItemCaseSensitive(e, "shape");
    const cJSON *of = cJSON_GetObjectItemCaseSensitive(e, "data_offsets");
    if (!cJSON_IsString(dt) || !cJSON_IsArray(sh) || !cJSON_IsArray(of))
        return gq_fail(GQ_ERR_FORMAT, "%s: tensor '%s' needs a string 'dtype', an array 'shape' and an array 'data_offsets'",
                       path, t->name);
    if (!printable(dt->valuestring))
        return gq_fail(GQ_ERR_FORMAT, "%s: tensor '%s' dtype contains control characters", path, t->name);
    snprintf(t->dtype_name, sizeof t->dtype_name, "%s", dt->valuestring);
    t->dtype = GQ_ST_UNKNOWN;
    for (size_t i = 0; i < sizeof k_dtypes / sizeof k_dtypes[0]; i++)
        if (strcmp(dt->valuestring, k_dtypes[i].name) == 0) t->dtype = k_dtypes[i].t;
    int nd = cJSON_GetArraySize(sh);
    if (nd > GQ_ST_MAX_DIMS)
        return gq_fail(GQ_ERR_FORMAT, "%s: tensor '%s' has %d dimensions (at most %d supported)", path, t->name, nd,
                       GQ_ST_MAX_DIMS);
    t->n_dims = nd;
    size_t numel = 1;
    int d = 0;
    for (const cJSON *x = sh->child; x; x = x->next, d++) {
        uint64_t v;
        if (!json_uint(x, &v) || v > INT64_MAX)
            return gq_fail(GQ_ERR_FORMAT, "%s: tensor '%s' shape[%d] is not a non-negative integer", path, t->name, d);
        t->shape[d] = (int64_t)v;
        if (!gq_mul_ok(numel, (size_t)v, &numel) || numel > INT64_MAX)
            return gq_fail(GQ_ERR_FORMAT, "%s: tensor '%s' element count overflows", path, t->name);
    }
    t->numel = (int64_t)numel;
    if (cJSON_GetArraySize(of) != 2 || !json_uint(of->child, &t->begin) || !json_uint(of->child->next, &t->end))
        return gq_fail(GQ_ERR_FORMAT, "%s: tensor '%s' data_offsets must be two non-negative integers", path, t->name);
    if (t->begin > t->end)
        return gq_fail(GQ_ERR_FORMAT, "%s: tensor '%s' data_offsets [%llu, %llu) end before they begin", path, t->name,
                       (unsigned long long)t->begin, (unsigned long long)t->end);
    if (t->end > f->data_size)
        return gq_fail(GQ_ERR_FORMAT, "%s: tensor '%s' data_offsets [%llu, %llu) outside the data buffer "
                       "(%zu bytes at offset %llu)", path, t->name, (unsigned long long)t->begin,
                       (unsigned long long)t->end, f->data_size, (unsigned long long)(8 + f->header_len));
    size_t es = gq_st_dtype_size(t->dtype), nbytes;
    if (es) {
        if (!gq_mul_ok(numel, es, &nbytes))
            return gq_fail(GQ_ERR_FORMAT, "%s: tensor '%s' byte size overflows", path, t->name);
        if (nbytes != t->end - t->begin)
            return gq_fail(GQ_ERR_FORMAT, "%s: tensor '%s' (%s, %zu elements) needs %zu bytes but data_offsets "
                           "[%llu, %llu) hold %llu", path, t->name, t->dtype_name, numel, nbytes,
                           (unsigned long long)t->begin, (unsigned long long)t->end,
                           (unsigned long long)(t->end - t->begin));
    }
    t->data = f->data + t->begin;
    return GQ_OK;
}

static enum gq_status parse_meta(struct gq_st_file *f, const cJSON *e) {
    if (!cJSON_IsObject(e)) return gq_fail(GQ_ERR_FORMAT, "%s: __metadata__ is not an object", f->file.path);
    size_t n = (size_t)cJSON_GetArraySize(e);
    f->meta = calloc(2 * n + 1, sizeof *f->meta);
    if (!f->meta) return gq_fail(GQ_ERR_NOMEM, "out of memory");
    for (const cJSON *x = e->child; x; x = x->next) {
        if (!printable(x->string))
            return gq_fail(GQ_ERR_FORMAT, "%s: a __metadata__ key contains control characters", f->file.path);
        if (!cJSON_IsString(x))
            return gq_fail(GQ_ERR_FORMAT, "%s: __metadata__ value '%s' is not a string", f->file.path, x->string);
        char *k = strdup(x->string), *v = strdup(x->valuestring);
        f->meta[2 * f->n_meta] = k;
        f->meta[2 * f->n_meta + 1] = v;
        f->n_meta++;
        if (!k || !v) return gq_fail(GQ_ERR_NOMEM, "out of memory");
    }
    return GQ_OK;
}

static enum gq_status parse(struct gq_st_file *f) {
    const char *path = f->file.path;
    const unsigned char *p = f->file.data;
    size_t size = f->file.size;
    if (size < 8) return gq_fail(GQ_ERR_FORMAT, "%s: %zu bytes, too short for a safetensors header", path, size);
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--) n = n << 8 | p[i];
    if (n > size - 8)
        return gq_fail(GQ_ERR_FORMAT, "%s: header length %llu runs past the end of the file (size %zu)", path,
                       (unsigned long long)n, size);
    if (n > GQ_ST_MAX_HEADER)
        return gq_fail(GQ_ERR_FORMAT, "%s: header length %llu exceeds the %u-byte limit", path,
                       (unsigned long long)n, GQ_ST_MAX_HEADER);
    if (n < 2 || p[8] != '{')
        return gq_fail(GQ_ERR_FORMAT, "%s: header (offset 8) does not start with '{': not a safetensors file", path);
    f->header_len = n;
    f->data = p + 8 + n;
    f->data_size = size - 8 - (size_t)n;

    const char *json = (const char *)p + 8, *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(json, (size_t)n, &end, false);
    if (!root) {
        const char *e = cJSON_GetErrorPtr();
        size_t off = e && e >= json && e <= json + n ? (size_t)(e - json) + 8 : 8;
        return gq_fail(GQ_ERR_FORMAT, "%s: header is not valid JSON (near offset %zu)", path, off);
    }
    enum gq_status s = GQ_OK;
    // The writer pads the header with spaces to an 8-byte boundary; anything
    // else after the JSON value is corruption.
    for (const char *q = end; q && q < json + n; q++)
        if (*q != ' ' && *q != '\t' && *q != '\n' && *q != '\r' && *q != 0) {
            s = gq_fail(GQ_ERR_FORMAT, "%s: garbage after the header JSON (offset %zu)", path,
                        (size_t)(q - json) + 8);
            goto out;
        }
    if (!cJSON_IsObject(root)) {
        s = gq_fail(GQ_ERR_FORMAT, "%s: header is not a JSON object", path);
        goto out;
    }
    size_t cap = (size_t)cJSON_GetArraySize(root);
    f->tensors = calloc(cap + 1, sizeof *f->tensors);
    f->by_name = calloc(cap + 1, sizeof *f->by_name);
    if (!f->tensors || !f->by_name) {
        s = gq_fail(GQ_ERR_NOMEM, "out of memory");
        goto out;
    }
    bool have_meta = false;
    for (const cJSON *e = root->child; e; e = e->next) {
        if (!printable(e->string)) {
            s = gq_fail(GQ_ERR_FORMAT, "%s: header entry %zu has a name with control characters", path,
                        f->n_tensors + (have_meta ? 1 : 0));
            goto out;
        }
        if (strcmp(e->string, "__metadata__") == 0) {
            if (have_meta) {
                s = gq_fail(GQ_ERR_FORMAT, "%s: __metadata__ appears twice", path);
                goto out;
            }
            have_meta = true;
            if ((s = parse_meta(f, e)) != GQ_OK) goto out;
            continue;
        }
        struct gq_st_tensor *t = &f->tensors[f->n_tensors];
        if (!(t->name = strdup(e->string))) {
            s = gq_fail(GQ_ERR_NOMEM, "out of memory");
            goto out;
        }
        f->n_tensors++;
        if ((s = parse_tensor(f, e, t)) != GQ_OK) goto out;
    }

    // Names unique (cJSON keeps duplicate keys).
    g_sort_t = f->tensors;
    for (size_t i = 0; i < f->n_tensors; i++) f->by_name[i] = i;
    qsort(f->by_name, f->n_tensors, sizeof *f->by_name, cmp_name);
    for (size_t i = 1; i < f->n_tensors; i++)
        if (strcmp(f->tensors[f->by_name[i]].name, f->tensors[f->by_name[i - 1]].name) == 0) {
            s = gq_fail(GQ_ERR_FORMAT, "%s: tensor '%s' is listed twice", path, f->tensors[f->by_name[i]].name);
            goto out;
        }
    // The tensors, sorted by offset, must tile [0, data_size) exactly.
    size_t *ord = malloc((f->n_tensors + 1) * sizeof *ord);
    if (!ord) {
        s = gq_fail(GQ_ERR_NOMEM, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < f->n_tensors; i++) ord[i] = i;
    qsort(ord, f->n_tensors, sizeof *ord, cmp_begin);
    uint64_t at = 0;
    for (size_t i = 0; i < f->n_tensors && s == GQ_OK; i++) {
        const struct gq_st_tensor *t = &f->tensors[ord[i]];
        if (t->begin < at)
            s = gq_fail(GQ_ERR_FORMAT, "%s: tensor '%s' data [%llu, %llu) overlaps the previous tensor (ending at %llu)",
                        path, t->name, (unsigned long long)t->begin, (unsigned long long)t->end,
                        (unsigned long long)at);
        else if (t->begin > at)
            s = gq_fail(GQ_ERR_FORMAT, "%s: hole in the data buffer: bytes [%llu, %llu) belong to no tensor", path,
                        (unsigned long long)at, (unsigned long long)t->begin);
        at = t->end;
    }
    free(ord);
    if (s == GQ_OK && at != f->data_size)
        s = gq_fail(GQ_ERR_FORMAT, "%s: tensors cover %llu bytes of the %zu-byte data buffer", path,
                    (unsigned long long)at, f->data_size);
out:
    g_sort_t = NULL;
    cJSON_Delete(root);
    return s;
}

static enum gq_status open_common(struct gq_st_file *f, struct gq_st_file **out) {
    enum gq_status s = parse(f);
    if (s != GQ_OK) {
        gq_st_close(f);
        return s;
    }
    *out = f;
    return GQ_OK;
}

enum gq_status gq_st_open(const char *path, struct gq_st_file **out) {
    *out = NULL;
    struct gq_st_file *f = calloc(1, sizeof *f);
    if (!f) return gq_fail(GQ_ERR_NOMEM, "out of memory");
    enum gq_status s = gq_map_file(path, &f->file);
    if (s != GQ_OK) {
        free(f);
        return s;
    }
    f->owns_mapping = true;
    return open_common(f, out);
}

enum gq_status gq_st_open_memory(const void *data, size_t size, const char *name, struct gq_st_file **out) {
    *out = NULL;
    struct gq_st_file *f = calloc(1, sizeof *f);
    if (!f || !(f->file.path = strdup(name ? name : "<memory>"))) {
        free(f);
        return gq_fail(GQ_ERR_NOMEM, "out of memory");
    }
    f->file.data = data;
    f->file.size = size;
    return open_common(f, out);
}

const struct gq_st_tensor *gq_st_find(const struct gq_st_file *f, const char *name) {
    size_t lo = 0, hi = f->n_tensors;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        const struct gq_st_tensor *t = &f->tensors[f->by_name[mid]];
        int c = strcmp(name, t->name);
        if (c == 0) return t;
        if (c < 0) hi = mid;
        else lo = mid + 1;
    }
    return NULL;
}

const char *gq_st_meta(const struct gq_st_file *f, const char *key) {
    for (size_t i = 0; i < f->n_meta; i++)
        if (strcmp(f->meta[2 * i], key) == 0) return f->meta[2 * i + 1];
    return NULL;
}

enum gq_status gq_st_to_f32(const struct gq_st_file *f, const struct gq_st_tensor *t, float **out) {
    *out = NULL;
    if (t->dtype != GQ_ST_F32 && t->dtype != GQ_ST_F16 && t->dtype != GQ_ST_BF16 && t->dtype != GQ_ST_F64)
        return gq_fail(GQ_ERR_UNSUPPORTED, "%s: tensor '%s' has dtype %s; only F32, F16, BF16 and F64 are supported",
                       f->file.path, t->name, t->dtype_name);
    size_t n = (size_t)t->numel, bytes;
    if (!gq_mul_ok(n ? n : 1, sizeof(float), &bytes)) return gq_fail(GQ_ERR_NOMEM, "out of memory");
    float *y = malloc(bytes);
    if (!y) return gq_fail(GQ_ERR_NOMEM, "%s: out of memory for tensor '%s' (%zu bytes)", f->file.path, t->name, bytes);
    const unsigned char *p = t->data; // may be unaligned: memcpy every element
    switch (t->dtype) {
    case GQ_ST_F32:
        memcpy(y, p, n * 4);
        break;
    case GQ_ST_F16:
        for (size_t i = 0; i < n; i++) {
            uint16_t h;
            memcpy(&h, p + 2 * i, 2);
            y[i] = gq_f16_to_f32(h);
        }
        break;
    case GQ_ST_BF16:
        for (size_t i = 0; i < n; i++) {
            uint16_t h;
            memcpy(&h, p + 2 * i, 2);
            y[i] = gq_bf16_to_f32(h);
        }
        break;
    default: // F64
        for (size_t i = 0; i < n; i++) {
            double d;
            memcpy(&d, p + 8 * i, 8);
            // Out-of-range double -> float conversion is undefined behaviour.
            y[i] = d > FLT_MAX ? INFINITY : d < -FLT_MAX ? -INFINITY : (float)d;
        }
        break;
    }
    *out = y;
    return GQ_OK;
}
