// fuzz_llama2c.c - libFuzzer target for the llama2.c checkpoint header
// validation and weight layout (v0, v1, v2), from memory.
//   make B=build-C build-C/fuzz/fuzz_llama2c
//   ./build-C/fuzz/fuzz_llama2c -max_total_time=120 tests/fuzz/corpus-work/llama2c tests/fuzz/corpus/llama2c
// Every input must either be rejected with a one-line message or yield
// weights that all lie inside the buffer (ASan checks the reads).
#include "model/llama2c.h"

#include <stdint.h>

static void l2c_check_msg(void) {
    const char *m = gq_last_error();
    if (!m[0] || strchr(m, '\n')) abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    unsigned char *buf = malloc(size ? size : 1); // malloc: aligned, exact size
    if (!buf) return 0;
    if (size) memcpy(buf, data, size);
    struct gq_llama2c_layout L;
    if (gq_llama2c_parse_header(buf, size, "fuzz.bin", &L) != GQ_OK) {
        l2c_check_msg();
        free(buf);
        return 0;
    }
    if (L.file_size != size) abort();
    struct gq_model *m = gq_model_alloc();
    if (m) {
        if (gq_llama2c_build(buf, size, "fuzz.bin", m) != GQ_OK) {
            l2c_check_msg();
        } else {
            // Touch the last element of every weight.
            const struct gq_hparams *hp = &m->hp;
            size_t dim = (size_t)hp->dim, kv = (size_t)hp->n_kv_heads * (size_t)hp->head_dim,
                   hid = (size_t)hp->hidden_dim;
            volatile float acc = m->tok_embd[(size_t)hp->n_vocab * dim - 1] + m->output[(size_t)hp->n_vocab * dim - 1] +
                                 m->output_norm[dim - 1];
            for (int l = 0; l < hp->n_layers; l++) {
                const struct gq_layer_w *w = &m->layers[l];
                acc += w->attn_norm[dim - 1] + w->ffn_norm[dim - 1] + w->wq[dim * dim - 1] + w->wk[kv * dim - 1] +
                       w->wv[kv * dim - 1] + w->wo[dim * dim - 1] + w->w_gate[hid * dim - 1] +
                       w->w_up[hid * dim - 1] + w->w_down[dim * hid - 1];
            }
            (void)acc;
        }
        gq_model_free(m);
    }
    free(buf);
    return 0;
}
