// fuzz_safetensors.c - libFuzzer target for the safetensors header parser.
//   make B=build-C build-C/fuzz/fuzz_safetensors
//   ./build-C/fuzz/fuzz_safetensors -max_total_time=120 tests/fuzz/corpus-work/safetensors tests/fuzz/corpus/safetensors
// Every input must either parse or fail with a one-line message; when it
// parses, every tensor must lie inside the buffer, be found by name, and
// small ones are converted to f32 (ASan checks the reads).
#include "io/safetensors.h"

#include <stdint.h>

static void st_check_msg(void) {
    const char *m = gq_last_error();
    if (!m[0] || strchr(m, '\n')) abort(); // messages must be one non-empty line
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    // Exact-size heap copy so reads past the end are caught.
    unsigned char *buf = malloc(size ? size : 1);
    if (!buf) return 0;
    if (size) memcpy(buf, data, size);
    struct gq_st_file *f = NULL;
    if (gq_st_open_memory(buf, size, "fuzz.safetensors", &f) != GQ_OK) {
        st_check_msg();
        free(buf);
        return 0;
    }
    size_t covered = 0;
    for (size_t i = 0; i < f->n_tensors; i++) {
        const struct gq_st_tensor *t = &f->tensors[i];
        if (gq_st_find(f, t->name) != t) abort(); // names are unique
        const unsigned char *p = t->data;
        if (p < f->data || t->end - t->begin > size || p + (t->end - t->begin) > buf + size) abort();
        covered += t->end - t->begin;
        if (t->numel <= (1 << 16)) {
            float *y = NULL;
            if (gq_st_to_f32(f, t, &y) != GQ_OK) st_check_msg();
            else {
                volatile float acc = 0;
                for (int64_t k = 0; k < t->numel; k++) acc += y[k];
                (void)acc;
            }
            free(y);
        }
    }
    if (covered != f->data_size) abort(); // tensors tile the data buffer
    for (size_t i = 0; i < f->n_meta; i++)
        if (gq_st_meta(f, f->meta[2 * i]) == NULL) abort();
    gq_st_close(f);
    free(buf);
    return 0;
}
