// test_fuzz_replay - replays every fuzz target's committed corpus
// (tests/fuzz/corpus/<target>/*: seeds plus inputs the fuzzer found
// interesting, crash regressions included) through the same entry points,
// built with ASan/UBSan in the test suite.
#include "test.h"

#include <dirent.h>
#include <stdint.h>

#define LLVMFuzzerTestOneInput fuzz_gguf_one
#include "fuzz/fuzz_gguf.c"
#undef LLVMFuzzerTestOneInput
#define LLVMFuzzerTestOneInput fuzz_safetensors_one
#include "fuzz/fuzz_safetensors.c"
#undef LLVMFuzzerTestOneInput
#define LLVMFuzzerTestOneInput fuzz_llama2c_one
#include "fuzz/fuzz_llama2c.c"
#undef LLVMFuzzerTestOneInput
#define LLVMFuzzerTestOneInput fuzz_tokenizer_one
#include "fuzz/fuzz_tokenizer.c"
#undef LLVMFuzzerTestOneInput

static int replay(const char *dir, int (*fn)(const uint8_t *, size_t)) {
    DIR *d = opendir(dir);
    if (!d) return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        char path[2048];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        FILE *f = fopen(path, "rb");
        if (!f) continue;
        fseek(f, 0, SEEK_END);
        long sz = ftell(f);
        fseek(f, 0, SEEK_SET);
        uint8_t *buf = malloc(sz > 0 ? (size_t)sz : 1);
        size_t got = fread(buf, 1, (size_t)sz, f);
        fclose(f);
        fn(buf, got);
        free(buf);
        n++;
    }
    closedir(d);
    return n;
}

int main(void) {
    static const struct {
        const char *dir;
        int (*fn)(const uint8_t *, size_t);
    } targets[] = {
        {"tests/fuzz/corpus/gguf", fuzz_gguf_one},
        {"tests/fuzz/corpus/safetensors", fuzz_safetensors_one},
        {"tests/fuzz/corpus/llama2c", fuzz_llama2c_one},
        {"tests/fuzz/corpus/tokenizer", fuzz_tokenizer_one},
    };
    for (size_t i = 0; i < sizeof targets / sizeof targets[0]; i++) {
        int n = replay(targets[i].dir, targets[i].fn);
        fprintf(stderr, "%s: replayed %d inputs\n", targets[i].dir, n);
        CHECKF(n > 0, "no corpus in %s", targets[i].dir);
    }
    return test_done("test_fuzz_replay");
}
