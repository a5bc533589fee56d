// fuzz_tokenizer - the tokenizer readers (tokenizer.json, llama2.c
// tokenizer.bin) on hostile input, and encode/decode with whatever vocabulary
// they accept. Input: byte 0 selects the reader (and the vocab size for
// tokenizer.bin), the rest is the file; a fixed text is then tokenized.
#include "gptvq.h"
#include "model/tokenizer.h"

#include <stdint.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    struct gq_tokenizer *t = NULL;
    const char *body = (const char *)data + 1;
    size_t n = size - 1;
    enum gq_status s = (data[0] & 1) ? gq_tokenizer_from_json_memory(body, n, "fuzz.json", &t)
                                     : gq_tokenizer_from_llama2c_memory(body, n, "fuzz.bin", 1 + (data[0] >> 1) * 4, &t);
    if (s != GQ_OK) return 0;
    static const char text[] = "Hello world! 12345 caf\xc3\xa9 <s> \xf0\x9f\x98\x80  tabs\tand\nnewlines";
    int32_t *ids = NULL;
    size_t n_ids = 0;
    for (int special = 0; special < 2; special++) {
        if (gq_tokenize(t, text, sizeof text - 1, true, special, &ids, &n_ids) == GQ_OK) {
            char buf[64];
            for (size_t i = 0; i < n_ids; i++) gq_token_to_bytes(t, ids[i], buf, sizeof buf);
        }
        free(ids);
        ids = NULL;
    }
    gq_tokenizer_free(t);
    return 0;
}
