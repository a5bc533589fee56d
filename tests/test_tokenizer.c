// test_tokenizer.c - native tokenizers against the Python references
// (HF tokenizers / SentencePiece goldens in tests/golden/tok_*), plus
// round trips, the llama2.c greedy golden and hostile inputs.
//
// Needs tests/setup_fixtures.sh to have written build/fixtures/*/tokenizer.json
// for the tokenizer.json checks (skipped with a message otherwise).
#include "test.h"
#include "model/tok_internal.h"
#include "io/gguf_write.h"

#include <cjson/cJSON.h>
#include <stdint.h>
#include <time.h>
#include <unistd.h>

#if defined(__SANITIZE_ADDRESS__)
#define UNDER_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define UNDER_ASAN 1
#endif
#endif
#ifndef UNDER_ASAN
#define UNDER_ASAN 0
#endif


static int32_t *read_i32(const char *path, size_t *n) {
    size_t bytes;
    char *d = test_read_file(path, &bytes);
    if (!d) return NULL;
    *n = bytes / 4;
    int32_t *v = malloc(bytes + 4);
    for (size_t i = 0; i < *n; i++) {
        const unsigned char *p = (const unsigned char *)d + 4 * i;
        v[i] = (int32_t)((uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24);
    }
    free(d);
    return v;
}

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

// Compares ids with a golden; reports the first mismatch with context.
static void check_ids(const char *what, const struct gq_tokenizer *t, const int32_t *got, size_t n_got,
                      const int32_t *want, size_t n_want) {
    size_t n = n_got < n_want ? n_got : n_want, i = 0;
    while (i < n && got[i] == want[i]) i++;
    CHECKF(i == n && n_got == n_want, "%s: %zu ids vs %zu expected, first mismatch at %zu", what, n_got, n_want, i);
    if (i == n && n_got == n_want) return;
    size_t lo = i > 5 ? i - 5 : 0;
    for (int side = 0; side < 2; side++) {
        const int32_t *v = side ? want : got;
        size_t nv = side ? n_want : n_got;
        fprintf(stderr, "  %s:", side ? "want" : "got ");
        for (size_t k = lo; k < i + 6 && k < nv; k++) {
            char b[64];
            size_t w = gq_token_to_bytes(t, v[k], b, sizeof b - 1);
            b[w < sizeof b - 1 ? w : sizeof b - 1] = 0;
            for (char *c = b; *c; c++)
                if (*c == '\n') *c = '|';
            fprintf(stderr, " %d'%s'", v[k], b);
        }
        fputc('\n', stderr);
    }
}

// Checks every case of a tok_*_misc.txt golden (JSON lines).
static void check_misc(const char *name, const struct gq_tokenizer *t, const char *golden, bool spm_ref) {
    size_t n;
    char *d = test_read_file(golden, &n);
    CHECKF(d != NULL, "cannot read %s", golden);
    if (!d) return;
    int cases = 0;
    for (char *line = strtok(d, "\n"); line; line = strtok(NULL, "\n")) {
        cJSON *j = cJSON_Parse(line);
        CHECKF(j != NULL, "%s: bad JSON line", golden);
        if (!j) continue;
        const char *text = cJSON_GetObjectItem(j, "text")->valuestring;
        bool add_bos = cJSON_IsTrue(cJSON_GetObjectItem(j, "add_bos"));
        bool special = cJSON_IsTrue(cJSON_GetObjectItem(j, "parse_special"));
        const cJSON *ids = cJSON_GetObjectItem(j, "ids");
        size_t nw = (size_t)cJSON_GetArraySize(ids);
        int32_t *want = malloc((nw + 1) * sizeof *want);
        for (size_t i = 0; i < nw; i++) want[i] = (int32_t)cJSON_GetArrayItem(ids, (int)i)->valuedouble;
        int32_t *got = NULL;
        size_t ng = 0;
        CHECK_OK(gq_tokenize(t, text, strlen(text), add_bos, special, &got, &ng));
        char what[160];
        snprintf(what, sizeof what, "%s misc '%.40s' bos=%d special=%d", name, text, add_bos, special);
        check_ids(what, t, got, ng, want, nw);
        // decode(encode(x)) == x (control tokens printed when they were parsed)
        char *dec = NULL;
        size_t nd = 0;
        size_t skip = add_bos && ng > 0 ? 1 : 0; // BOS is not part of the text
        CHECK_OK(gq_detokenize(t, got + skip, ng - skip, special, &dec, &nd));
        CHECKF(dec && nd == strlen(text) && memcmp(dec, text, nd) == 0, "%s: decodes to '%s'", what, dec ? dec : "");
        (void)spm_ref;
        free(dec);
        free(got);
        free(want);
        cJSON_Delete(j);
        cases++;
    }
    CHECKF(cases >= 10, "%s: only %d cases", golden, cases);
    free(d);
}

// t written as GGUF tokenizer metadata alone (gq_tokenizer_write_gguf, no
// tokenizer.json) and read back tokenizes `text` to `want`, with the pre name
// (NULL: none written).
static void check_gguf_roundtrip(const char *tag, const struct gq_tokenizer *t, const char *pre, const char *text,
                                 size_t n_text, const int32_t *want, size_t n_want) {
    char path[] = "/tmp/gq_tok_rt_XXXXXX";
    int fd = mkstemp(path);
    CHECKF(fd >= 0, "mkstemp");
    if (fd < 0) return;
    close(fd);
    struct gq_gguf_writer *w = gq_gguf_writer_new(0);
    CHECK_OK(gq_gguf_writer_set_str(w, "general.architecture", "llama"));
    CHECK_OK(gq_tokenizer_write_gguf(t, w, NULL));
    CHECK_OK(gq_gguf_writer_write(w, path));
    gq_gguf_writer_free(w);
    struct gq_gguf *g = NULL;
    struct gq_tokenizer *t2 = NULL;
    CHECK_OK(gq_gguf_open(path, &g));
    if (g) {
        char *got = NULL;
        if (pre) {
            CHECK_OK(gq_gguf_get_str(g, "tokenizer.ggml.pre", &got));
            CHECKF(got && !strcmp(got, pre), "%s: pre '%s', want '%s'", tag, got ? got : "(none)", pre);
        } else {
            CHECKF(!gq_gguf_find_kv(g, "tokenizer.ggml.pre"), "%s: a pre name for a SentencePiece vocab", tag);
        }
        free(got);
        CHECK(!gq_gguf_find_kv(g, "tokenizer.huggingface.json"));
        CHECK_OK(gq_tokenizer_from_gguf(g, &t2));
        gq_gguf_close(g);
    }
    if (t2) {
        int32_t *ids = NULL;
        size_t n = 0;
        CHECK(gq_tokenizer_bos(t2) == gq_tokenizer_bos(t) && gq_tokenizer_eos(t2) == gq_tokenizer_eos(t) &&
              gq_tokenizer_add_bos(t2) == gq_tokenizer_add_bos(t));
        CHECK_OK(gq_tokenize(t2, text, n_text, false, false, &ids, &n));
        check_ids(tag, t2, ids, n, want, n_want);
        free(ids);
        gq_tokenizer_free(t2);
    }
    unlink(path);
}

static void test_smollm2(const char *dd) {
    const char *model = "models/SmolLM2-135M-Instruct.Q4_1.gguf";
    if (!file_exists(model)) {
        fprintf(stderr, "note: %s missing, SmolLM2 checks skipped\n", model);
        return;
    }
    struct gq_gguf *g = NULL;
    struct gq_tokenizer *t = NULL;
    CHECK_OK(gq_gguf_open(model, &g));
    if (!g) return;
    CHECK_OK(gq_tokenizer_from_gguf(g, &t));
    gq_gguf_close(g);
    if (!t) return;
    CHECK(!strcmp(gq_tokenizer_kind(t), "gpt2"));
    CHECK(gq_tokenizer_n_vocab(t) == 49152);
    CHECK(gq_tokenizer_add_bos(t) == false);
    CHECK(gq_tokenizer_find(t, "<|im_start|>") == 1);
    CHECK(gq_tokenizer_find(t, "no such token here") == -1);
    CHECK(gq_tokenizer_is_eog(t, gq_tokenizer_find(t, "<|im_end|>")));
    CHECK(gq_tokenizer_is_eog(t, gq_tokenizer_find(t, "<|endoftext|>")));
    CHECK(!gq_tokenizer_is_eog(t, gq_tokenizer_find(t, "Hello")));
    char b[16];
    CHECK(gq_token_to_bytes(t, gq_tokenizer_find(t, "<|im_start|>"), b, sizeof b) == 0);
    CHECK(gq_token_to_bytes(t, gq_tokenizer_find(t, "\xc4\xa0the"), b, sizeof b) == 4 && !memcmp(b, " the", 4));
    check_misc("smollm2", t, "tests/golden/tok_smollm2_misc.txt", false);

    // Invalid UTF-8 is an error for the byte-level regex path, not a crash.
    int32_t *ids = NULL;
    size_t n_ids = 0;
    CHECK(gq_tokenize(t, "ab\xff" "cd", 5, false, false, &ids, &n_ids) == GQ_ERR_ARG);
    free(ids);

    char path[512];
    snprintf(path, sizeof path, "%s/wikitext-2-raw/wiki.test.raw", dd);
    size_t n_text, n_want;
    char *text = test_read_file(path, &n_text);
    int32_t *want = read_i32("tests/golden/tok_smollm2_wikitext_test.i32", &n_want);
    CHECKF(text && want, "cannot read %s or the golden", path);
    if (text && want) {
        double t0 = now();
        CHECK_OK(gq_tokenize(t, text, n_text, false, false, &ids, &n_ids));
        double t1 = now();
        fprintf(stderr, "smollm2: wiki.test.raw %zu bytes -> %zu tokens in %.3f s%s\n", n_text, n_ids, t1 - t0,
                UNDER_ASAN ? " (ASan build)" : "");
        check_ids("smollm2 wiki.test.raw", t, ids, n_ids, want, n_want);
        char *dec = NULL;
        size_t nd = 0;
        CHECK_OK(gq_detokenize(t, ids, n_ids, false, &dec, &nd));
        CHECKF(dec && nd == n_text && memcmp(dec, text, nd) == 0, "wiki.test.raw does not round-trip (%zu vs %zu bytes)", nd, n_text);
        free(dec);

        // The same vocabulary through tokenizer.json.
        const char *json = "build/fixtures/smollm2/tokenizer.json";
        if (!file_exists(json)) {
            fprintf(stderr, "note: %s missing (run tests/setup_fixtures.sh), tokenizer.json checks skipped\n", json);
        } else {
            struct gq_tokenizer *tj = NULL;
            CHECK_OK(gq_tokenizer_from_json(json, &tj));
            if (tj) {
                int32_t *ids2 = NULL;
                size_t n2 = 0;
                CHECK(!strcmp(gq_tokenizer_kind(tj), "gpt2"));
                CHECK(gq_tokenizer_n_vocab(tj) == 49152);
                // BOS/EOS/add_bos from tokenizer_config.json beside it.
                CHECK(gq_tokenizer_bos(tj) == 1 && gq_tokenizer_eos(tj) == 2 && !gq_tokenizer_add_bos(tj));
                CHECK(gq_tokenizer_is_eog(tj, 0) && gq_tokenizer_is_eog(tj, 2));
                CHECK_OK(gq_tokenize(tj, text, n_text, false, false, &ids2, &n2));
                check_ids("smollm2 tokenizer.json wiki.test.raw", tj, ids2, n2, want, n_want);
                free(ids2);
                check_misc("smollm2-json", tj, "tests/golden/tok_smollm2_misc.txt", false);
                // carried into GGUF metadata (a Hugging Face directory converted)
                check_gguf_roundtrip("smollm2 tokenizer.json -> GGUF tokenizer.ggml.*", tj, "smollm", text, n_text,
                                     want, n_want);
                gq_tokenizer_free(tj);
            }
        }
        // A Llama-3-style Split regex over the same vocab, against HF tokenizers.
        const char *j3 = "build/fixtures/smollm2_llama3pre/tokenizer.json";
        size_t n3 = 0;
        int32_t *want3 = read_i32("build/fixtures/smollm2_llama3pre/wiki_test_ids.i32", &n3);
        if (!file_exists(j3) || !want3) {
            fprintf(stderr, "note: %s missing (run tests/setup_fixtures.sh), Split-regex check skipped\n", j3);
        } else {
            struct gq_tokenizer *tj = NULL;
            CHECK_OK(gq_tokenizer_from_json(j3, &tj));
            if (tj) {
                int32_t *ids3 = NULL;
                size_t ng3 = 0;
                CHECK_OK(gq_tokenize(tj, text, n_text, false, false, &ids3, &ng3));
                check_ids("smollm2 llama3-style Split regex wiki.test.raw", tj, ids3, ng3, want3, n3);
                free(ids3);
                // SmolLM2's vocab gives the same ids for both regexes, so compare
                // the pieces themselves with HF's pre_tokenize_str.
                size_t ne = 0, np_ = 0, *ends = NULL, k = 0;
                int32_t *want_e = read_i32("build/fixtures/smollm2_llama3pre/wiki_test_pre_ends.i32", &ne);
                CHECK_OK(tok_pre_split(tj, text, n_text, &ends, &np_));
                if (want_e && ends) {
                    while (k < ne && k < np_ && ends[k] == (size_t)want_e[k]) k++;
                    CHECKF(k == ne && np_ == ne, "llama3 regex pieces: %zu vs HF %zu, first difference at piece %zu (byte %zu)",
                           np_, ne, k, k < np_ ? ends[k] : 0);
                    fprintf(stderr, "llama3-style regex: %zu pieces, HF %zu\n", np_, ne);
                }
                free(ends);
                free(want_e);
                gq_tokenizer_free(tj);
            }
        }
        free(want3);
    }
    free(ids);
    free(text);
    free(want);
    gq_tokenizer_free(t);
}

static void test_stories(const char *dd) {
    char path[512], tokbin[512];
    snprintf(path, sizeof path, "%s/models/stories260K/stories260K.gguf", dd);
    snprintf(tokbin, sizeof tokbin, "%s/models/stories260K/tok512.bin", dd);
    if (!file_exists(path)) {
        fprintf(stderr, "note: %s missing, stories260K checks skipped\n", path);
        return;
    }
    char sample[512];
    snprintf(sample, sizeof sample, "%s/tinystories/tinystories_sample.txt", dd);
    size_t n_text = 0, n_want = 0;
    char *text = test_read_file(sample, &n_text);
    int32_t *want = read_i32("tests/golden/tok_stories260k_tinystories.i32", &n_want);
    CHECKF(text && want, "cannot read %s or its golden", sample);

    struct gq_tokenizer *tk[3] = {NULL, NULL, NULL};
    const char *names[3] = {"stories260K gguf", "stories260K tokenizer.json", "stories260K tok512.bin"};
    struct gq_gguf *g = NULL;
    CHECK_OK(gq_gguf_open(path, &g));
    if (g) CHECK_OK(gq_tokenizer_from_gguf(g, &tk[0]));
    gq_gguf_close(g);
    const char *json = "build/fixtures/stories260k/tokenizer.json";
    if (file_exists(json))
        CHECK_OK(gq_tokenizer_from_json(json, &tk[1]));
    else
        fprintf(stderr, "note: %s missing (run tests/setup_fixtures.sh), tokenizer.json checks skipped\n", json);
    CHECK_OK(gq_tokenizer_from_llama2c(tokbin, 512, &tk[2]));

    for (int k = 0; k < 3; k++) {
        struct gq_tokenizer *t = tk[k];
        if (!t) continue;
        CHECK(gq_tokenizer_n_vocab(t) == 512);
        CHECKF(gq_tokenizer_bos(t) == 1 && gq_tokenizer_eos(t) == 2, "%s: bos %d eos %d", names[k],
               gq_tokenizer_bos(t), gq_tokenizer_eos(t));
        CHECK(gq_tokenizer_add_bos(t));
        CHECK(gq_tokenizer_is_eog(t, 2));
        if (text && want) {
            int32_t *ids = NULL;
            size_t n = 0;
            CHECK_OK(gq_tokenize(t, text, n_text, false, false, &ids, &n));
            char what[128];
            snprintf(what, sizeof what, "%s tinystories_sample", names[k]);
            check_ids(what, t, ids, n, want, n_want);
            char *dec = NULL;
            size_t nd = 0;
            CHECK_OK(gq_detokenize(t, ids, n, false, &dec, &nd));
            CHECKF(dec && nd == n_text && !memcmp(dec, text, nd), "%s: sample does not round-trip", names[k]);
            free(dec);
            free(ids);
            if (k == 0) // SentencePiece with scores, written back as GGUF metadata
                check_gguf_roundtrip("stories260K gguf -> GGUF tokenizer.ggml.*", t, NULL, text, n_text, want, n_want);
        }
        if (k < 2) {
            CHECK(!strcmp(gq_tokenizer_kind(t), "llama"));
            // parse_special: "<s>" is BOS; the text after it gets the dummy prefix
            // (llama.cpp), so "<s>Once" == BOS + encode("Once").
            int32_t *a = NULL, *b2 = NULL;
            size_t na = 0, nb = 0;
            CHECK_OK(gq_tokenize(t, "<s>Once", 7, false, true, &a, &na));
            CHECK_OK(gq_tokenize(t, "Once", 4, true, false, &b2, &nb));
            CHECK(a && b2 && na == nb && na > 1 && !memcmp(a, b2, na * sizeof *a));
            free(a), free(b2);
            CHECK_OK(gq_tokenize(t, "<s>", 3, false, false, &a, &na));
            CHECK(na > 1); // as text without parse_special
            free(a);
            check_misc(names[k], t, "tests/golden/tok_stories260k_misc.txt", true);
        } else {
            CHECK(!strcmp(gq_tokenizer_kind(t), "llama2c"));
            check_misc(names[k], t, "tests/golden/tok_stories260k_misc.txt", true);
        }
    }

    // Greedy golden: BOS + 256 ids decode (run.c rules) to greedy_t0.txt.
    if (tk[2]) {
        char p1[512], p2[512];
        snprintf(p1, sizeof p1, "%s/models/stories260K/greedy_t0_tokens.txt", dd);
        snprintf(p2, sizeof p2, "%s/models/stories260K/greedy_t0.txt", dd);
        size_t n1, n2;
        char *toks = test_read_file(p1, &n1), *exp = test_read_file(p2, &n2);
        CHECKF(toks && exp, "cannot read the greedy goldens");
        if (toks && exp) {
            int32_t ids[1024];
            size_t n = 0;
            ids[n++] = 1;
            for (char *s = strtok(toks, " \n"); s && n < 1024; s = strtok(NULL, " \n")) ids[n++] = atoi(s);
            CHECK(n == 257);
            char *dec = NULL;
            size_t nd = 0;
            CHECK_OK(gq_detokenize(tk[2], ids, n, false, &dec, &nd));
            // greedy_t0.txt ends with a newline added to the documented text.
            size_t ne = n2 > 0 && exp[n2 - 1] == '\n' ? n2 - 1 : n2;
            CHECKF(dec && nd == ne && !memcmp(dec, exp, ne), "greedy decode differs:\n%s\n---\n%.*s", dec ? dec : "",
                   (int)ne, exp);
            // Streaming form used by generation: token by token with prev.
            char buf[64], acc[2048];
            size_t w = 0;
            for (size_t i = 1; i < n; i++) {
                size_t k = gq_token_to_bytes_after(tk[2], ids[i - 1], ids[i], buf, sizeof buf);
                if (w + k < sizeof acc) memcpy(acc + w, buf, k), w += k;
            }
            CHECK(w == ne && !memcmp(acc, exp, ne));
            free(dec);
        }
        free(toks);
        free(exp);
    }
    for (int k = 0; k < 3; k++) gq_tokenizer_free(tk[k]);
    free(text);
    free(want);
}

static void write_file(const char *path, const void *d, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f) return;
    fwrite(d, 1, n, f);
    fclose(f);
}

// Every failure must be a clean status with a message naming the file.
static void expect_fail(enum gq_status s, const char *path, const char *what) {
    CHECKF(s != GQ_OK, "%s: accepted", what);
    if (s != GQ_OK) CHECKF(strstr(gq_last_error(), path) != NULL, "%s: message '%s' lacks the path", what, gq_last_error());
}

static void test_hostile(const char *dd) {
    const char *dir = "build/fixtures/hostile";
    if (system("mkdir -p build/fixtures/hostile") != 0) return;
    char bad[256];
    snprintf(bad, sizeof bad, "%s/tok.bin", dir);
    struct gq_tokenizer *t = NULL;

    // llama2.c tokenizer.bin
    char tokbin[512];
    snprintf(tokbin, sizeof tokbin, "%s/models/stories260K/tok512.bin", dd);
    size_t n;
    char *d = test_read_file(tokbin, &n);
    if (d) {
        expect_fail(gq_tokenizer_from_llama2c(tokbin, 513, &t), tokbin, "tok512.bin with vocab 513");
        CHECK(strstr(gq_last_error(), "truncated") != NULL);
        expect_fail(gq_tokenizer_from_llama2c(tokbin, 500, &t), tokbin, "tok512.bin with vocab 500");
        expect_fail(gq_tokenizer_from_llama2c(tokbin, 0, &t), tokbin, "vocab 0");
        int step = 13;
        for (size_t cut = 0; cut < n; cut += (size_t)step) {
            write_file(bad, d, cut);
            expect_fail(gq_tokenizer_from_llama2c(bad, 512, &t), bad, "truncated tok512.bin");
        }
        char *m = malloc(n + 16);
        memcpy(m, d, n);
        int32_t neg = -5, huge = 1 << 30;
        memcpy(m + 8, &neg, 4); // token 0 length
        write_file(bad, m, n);
        expect_fail(gq_tokenizer_from_llama2c(bad, 512, &t), bad, "negative token length");
        memcpy(m + 8, &huge, 4);
        write_file(bad, m, n);
        expect_fail(gq_tokenizer_from_llama2c(bad, 512, &t), bad, "huge token length");
        memcpy(m, d, n);
        uint32_t ml = 0;
        memcpy(m, &ml, 4);
        write_file(bad, m, n);
        expect_fail(gq_tokenizer_from_llama2c(bad, 512, &t), bad, "max_token_length 0");
        memcpy(m, d, n);
        float nan = NAN;
        memcpy(m + 4, &nan, 4);
        write_file(bad, m, n);
        expect_fail(gq_tokenizer_from_llama2c(bad, 512, &t), bad, "NaN score");
        memcpy(m, d, n);
        memcpy(m + n, "extra", 5);
        write_file(bad, m, n + 5);
        expect_fail(gq_tokenizer_from_llama2c(bad, 512, &t), bad, "trailing bytes");
        free(m);
        free(d);
    }
    expect_fail(gq_tokenizer_from_llama2c("build/fixtures/hostile/nonexistent.bin", 512, &t),
                "build/fixtures/hostile/nonexistent.bin", "missing file");

    // GGUFs with broken tokenizer metadata (tests/setup_fixtures.sh).
    static const struct {
        const char *file;
        enum gq_status want;
    } gcases[] = {
        {"tok_bad_pre.gguf", GQ_ERR_UNSUPPORTED},  {"tok_bad_types.gguf", GQ_ERR_FORMAT},
        {"tok_bad_scores.gguf", GQ_ERR_FORMAT},    {"tok_bad_bos.gguf", GQ_ERR_FORMAT},
        {"tok_bad_model.gguf", GQ_ERR_UNSUPPORTED}, {"tok_bad_merge.gguf", GQ_ERR_FORMAT},
        {"tok_no_merges.gguf", GQ_ERR_FORMAT},     {"tok_bad_type_value.gguf", GQ_ERR_FORMAT},
        {"tok_no_model.gguf", GQ_ERR_FORMAT},
    };
    for (size_t i = 0; i < sizeof gcases / sizeof *gcases; i++) {
        char gp[256];
        snprintf(gp, sizeof gp, "%s/%s", dir, gcases[i].file);
        struct gq_gguf *g = NULL;
        if (!file_exists(gp) || gq_gguf_open(gp, &g) != GQ_OK) {
            fprintf(stderr, "note: %s not readable (run tests/setup_fixtures.sh): %s\n", gp, gq_last_error());
            continue;
        }
        t = NULL;
        enum gq_status st = gq_tokenizer_from_gguf(g, &t);
        CHECKF(st == gcases[i].want, "%s: got %s (%s)", gp, gq_status_str(st), gq_last_error());
        if (st != GQ_OK) CHECKF(strstr(gq_last_error(), gp) != NULL, "%s: message '%s' lacks the path", gp, gq_last_error());
        gq_tokenizer_free(t);
        gq_gguf_close(g);
    }

    // tokenizer.json
    snprintf(bad, sizeof bad, "%s/tokenizer.json", dir);
    static const char *const cases[] = {
        "",
        "[]",
        "{\"model\": 3}",
        "{\"model\": {\"type\": \"Unigram\", \"vocab\": []}}",
        "{\"model\": {\"type\": \"BPE\", \"vocab\": [], \"merges\": []}}",
        "{\"model\": {\"type\": \"BPE\", \"vocab\": {}, \"merges\": []}}",
        "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": -1}, \"merges\": []}}",
        "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 1.5}, \"merges\": []}}",
        "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 99999999999}, \"merges\": []}}",
        "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 0}, \"merges\": []}, \"pre_tokenizer\": {\"type\": \"ByteLevel\"}}",
        "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 1}, \"merges\": [\"ab\"]}, \"pre_tokenizer\": {\"type\": \"ByteLevel\"}}",
        "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 1}, \"merges\": [[\"a\"]]}, \"pre_tokenizer\": {\"type\": \"ByteLevel\"}}",
        "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": []}, \"pre_tokenizer\": {\"type\": \"Whitespace\"}}",
        "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": []}, \"pre_tokenizer\": {\"type\": \"Split\", \"pattern\": {\"Regex\": \"(\"}, \"behavior\": \"Isolated\"}}",
        "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": []}, \"pre_tokenizer\": {\"type\": \"Split\", \"pattern\": {\"Regex\": \"a\"}, \"behavior\": \"Removed\"}}",
        "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": []}, \"added_tokens\": [{\"id\": 0, \"content\": \"b\"}], \"pre_tokenizer\": {\"type\": \"ByteLevel\"}}",
        "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": []}, \"added_tokens\": [{\"content\": \"b\"}]}",
        "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": [], \"byte_fallback\": true}, \"normalizer\": {\"type\": \"NFKC\"}}",
        "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": [], \"byte_fallback\": true}}",
        "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": []}}",
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        write_file(bad, cases[i], strlen(cases[i]));
        char what[64];
        snprintf(what, sizeof what, "hostile tokenizer.json case %zu", i);
        t = NULL;
        expect_fail(gq_tokenizer_from_json(bad, &t), bad, what);
        gq_tokenizer_free(t);
    }
    // Truncations of a real tokenizer.json.
    d = test_read_file("build/fixtures/stories260k/tokenizer.json", &n);
    if (d) {
        size_t step = 211;
        for (size_t cut = 0; cut < n - 1; cut += step) {
            write_file(bad, d, cut);
            t = NULL;
            expect_fail(gq_tokenizer_from_json(bad, &t), bad, "truncated tokenizer.json");
            gq_tokenizer_free(t);
        }
        free(d);
    }
}

// Every llama.cpp pre-tokenizer name we map compiles; unknown names fail.
static void test_pre_names(void) {
    static const char *const ok[] = {"default", "gpt-2", "smollm", "llama-bpe", "llama3", "qwen2", "starcoder"};
    for (size_t i = 0; i < sizeof ok / sizeof *ok; i++) {
        struct gq_tokenizer *t = NULL;
        CHECK_OK(tok_alloc(1, GQ_TOK_GPT2, &t));
        if (t) CHECK_OK(tok_set_pre(t, ok[i], "test"));
        gq_tokenizer_free(t);
    }
    struct gq_tokenizer *t = NULL;
    CHECK_OK(tok_alloc(1, GQ_TOK_GPT2, &t));
    if (t) CHECK(tok_set_pre(t, "frobnicate", "test") == GQ_ERR_UNSUPPORTED);
    gq_tokenizer_free(t);
}

int main(void) {
    const char *dd = data_dir();
    char p[512];
    snprintf(p, sizeof p, "%s/models/stories260K/stories260K.gguf", dd);
    if (!file_exists(p) && !file_exists("models/SmolLM2-135M-Instruct.Q4_1.gguf"))
        SKIP("neither %s nor models/SmolLM2-135M-Instruct.Q4_1.gguf found", p);
    // The test runner calls tests/setup_fixtures.sh first; run it here too
    // when its outputs are missing (it is idempotent).
    if (!file_exists("build/fixtures/stories260k/tokenizer.json") && system("bash tests/setup_fixtures.sh") != 0)
        fprintf(stderr, "note: tests/setup_fixtures.sh failed; fixture-based checks will be skipped\n");
    test_smollm2(dd);
    test_stories(dd);
    test_hostile(dd);
    test_pre_names();
    return test_done("test_tokenizer");
}
