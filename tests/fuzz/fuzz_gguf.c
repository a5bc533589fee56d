// fuzz_gguf.c - libFuzzer target for the GGUF reader and dequantization.
//   make B=build-A build-A/fuzz/fuzz_gguf
//   ./build-A/fuzz/fuzz_gguf -max_total_time=120 tests/fuzz/corpus-work/gguf tests/fuzz/corpus/gguf
// Every input must either parse or fail with a one-line message; when it
// parses, every KV is read back through the getters and small tensors are
// dequantized (the data must lie inside the buffer, which ASan checks).
#include "format/ggml.h"

#include <stdint.h>

static void check_msg(void) {
    const char *m = gq_last_error();
    if (!m[0] || strchr(m, '\n')) abort(); // messages must be one non-empty line
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    // Exact-size heap copy so reads past the end are caught even when libFuzzer's buffer is larger.
    unsigned char *buf = malloc(size ? size : 1);
    if (!buf) return 0;
    if (size) memcpy(buf, data, size);
    struct gq_gguf *g = NULL;
    enum gq_status s = gq_gguf_open_memory(buf, size, "fuzz.gguf", &g);
    if (s != GQ_OK) {
        check_msg();
        free(buf);
        return 0;
    }
    for (uint64_t i = 0; i < g->n_kv; i++) {
        const struct gq_gguf_kv *kv = &g->kv[i];
        int64_t i64;
        double f64;
        bool b;
        char *str = NULL;
        if (gq_gguf_find_kv(g, kv->key) != kv) abort(); // keys are unique
        if (gq_gguf_get_i64(g, kv->key, &i64) != GQ_OK) check_msg();
        if (gq_gguf_get_f64(g, kv->key, &f64) != GQ_OK) check_msg();
        if (gq_gguf_get_bool(g, kv->key, &b) != GQ_OK) check_msg();
        if (gq_gguf_get_str(g, kv->key, &str) != GQ_OK) check_msg();
        free(str);
        if (kv->type == GQ_GGUF_ARRAY) {
            const struct gq_gguf_kv *a;
            if (gq_gguf_get_array(g, kv->key, kv->arr_type, &a) != GQ_OK || a != kv) abort();
            volatile double acc = 0;
            for (uint64_t k = 0; k < kv->arr_n && k < 4096; k++) {
                if (kv->arr_type == GQ_GGUF_STRING) {
                    const struct gq_gguf_str *e = &kv->arr_str[k];
                    if (e->len) acc += (unsigned char)e->data[e->len - 1];
                } else {
                    acc += gq_gguf_arr_f64(kv, k) + (double)gq_gguf_arr_i64(kv, k);
                }
            }
            (void)acc;
        }
    }
    FILE *devnull = fopen("/dev/null", "w");
    if (devnull) {
        gq_gguf_dump(g, devnull, false);
        fclose(devnull);
    }
    int done = 0;
    for (uint64_t i = 0; i < g->n_tensors && done < 8; i++) {
        const struct gq_gguf_tensor *t = &g->tensors[i];
        if (gq_gguf_find_tensor(g, t->name) != t) abort(); // names are unique
        if (gq_gguf_tensor_nelements(t) > (1 << 16)) continue;
        if ((const unsigned char *)t->data < buf || (const unsigned char *)t->data + t->nbytes > buf + size)
            abort();
        float *y = NULL;
        if (gq_gguf_tensor_to_f32(g, t, &y) != GQ_OK) check_msg();
        free(y);
        done++;
    }
    gq_gguf_close(g);
    free(buf);
    return 0;
}
