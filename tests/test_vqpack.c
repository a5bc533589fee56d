// test_vqpack.c - the packed form of GPTVQ matrices (src/format/vqpack.c):
//  [1] round trip: quantize → pack → unpack → decode is bit-identical to the
//      quantizer's fake-quant output for d = 1, 2, 4, 8, int8 / fp16 / f32
//      codebooks, normalisation, residual, outliers, codebook SVD, with and
//      without act-order; the parts hold exactly ceil(bits / 8) bytes and the
//      bits add up to gq_vq_tensor_bits;
//  [2] bit streams against a bit-by-bit reference;
//  [3] corrupt packs (wrong index width, codebook count mismatch, truncated
//      part, not a permutation, wrong version, NaN codebook) are refused with
//      a message naming the tensor and the problem;
//  [4] the same in a GGUF file: a packed matrix written as its header key and
//      part tensors reads back bit for bit, and a file whose header, part
//      sizes or part types disagree, or which is truncated, is refused with
//      one error naming the file and tensor.
#include "format/vqpack.h"
#include "test.h"
#include "test_rand.h"
#include "test_vqcases.h"
#include "util/common.h"
#include "util/hadamard.h"
#include "io/gguf.h"
#include "io/gguf_write.h"

#include <unistd.h>


static void test_round_trip(void) {
    for (int ci = 0; ci < N_CASES; ci++) {
        const struct cfg *c = &vq_cases[ci];
        size_t nw = (size_t)c->rows * c->cols;
        float *Q = malloc(sizeof(float) * nw), *D = malloc(sizeof(float) * nw);
        struct gq_vq_tensor t, u;
        quantize(c, &t, Q);
        struct gq_vqpack p;
        uint8_t *buf;
        CHECK_OK(gq_vqpack_pack(&t, &p, &buf));
        int64_t bits[GQ_VQP_COUNT], sum = 0;
        CHECK_OK(gq_vqpack_layout(&p.h, "t", bits));
        size_t bytes = 0;
        for (int i = 0; i < GQ_VQP_COUNT; i++) {
            sum += bits[i], bytes += p.bytes[i];
            CHECK(p.bytes[i] == (size_t)(bits[i] + 7) / 8);
            if (bits[i]) { // the GGUF element type covers the part exactly
                int type;
                int64_t ne;
                gq_vqpack_part_type(&p.h, i, bits[i], &type, &ne);
                int64_t eb = type == 0 ? 4 : type == 1 ? 2 : 1; // F32, F16, I8
                CHECKF(ne * eb == (int64_t)p.bytes[i], "case %d part %s: %lld elements of %lld bytes for %zu", ci,
                       gq_vqpack_suffix(i), (long long)ne, (long long)eb, p.bytes[i]);
            }
        }
        CHECKF(sum == gq_vq_tensor_bits(&t), "case %d: parts %lld bits, tensor %lld", ci, (long long)sum,
               (long long)gq_vq_tensor_bits(&t));
        CHECK(bytes * 8 - sum < 8 * GQ_VQP_COUNT);
        CHECK_OK(gq_vqpack_unpack(&p, "t", &u));
        gq_vq_decode(&u, D);
        size_t diff = 0;
        for (size_t i = 0; i < nw; i++) diff += memcmp(&D[i], &Q[i], 4) != 0;
        CHECKF(diff == 0, "case %d (d %d k %d fmt %d norm %d stages %d svd %d): %zu of %zu values differ", ci, c->d,
               c->k, c->f, c->norm, c->stages, c->svd, diff, nw);
        gq_vq_tensor_free(&u);
        gq_vq_tensor_free(&t);
        free(buf), free(Q), free(D);
    }
    fprintf(stderr, "  [1] %d configurations: pack -> unpack -> decode bit-identical\n", N_CASES);
}

static void test_bits(void) {
    uint8_t s[64];
    for (int w = 1; w <= 16; w++) {
        memset(s, 0, sizeof s);
        uint32_t vals[24];
        for (int i = 0; i < 24; i++) vals[i] = (uint32_t)(rng_u64() & ((1u << w) - 1)), gq_bits_put(s, i, w, vals[i]);
        for (int i = 0; i < 24; i++) {
            uint32_t ref = 0; // bit by bit, LSB first
            for (int j = 0; j < w; j++) ref |= (uint32_t)((s[(i * w + j) / 8] >> ((i * w + j) % 8)) & 1) << j;
            CHECK(ref == vals[i] && gq_bits_get(s, i, w) == vals[i]);
        }
    }
}

static void expect_bad(const struct gq_vqpack *p, const char *msg) {
    struct gq_vq_tensor u;
    enum gq_status s = gq_vqpack_unpack(p, "blk.3.ffn_up.weight", &u);
    CHECKF(s == GQ_ERR_FORMAT && strstr(gq_last_error(), msg) && strstr(gq_last_error(), "blk.3.ffn_up.weight"),
           "expected '%s': %s: %s", msg, gq_status_str(s), gq_last_error());
    if (s == GQ_OK) gq_vq_tensor_free(&u);
}

static void test_corrupt(void) {
    const struct cfg c = {2, 16, 32, 72, 384, GQ_CB_INT8, 8, 1, 0, 0.1, true};
    float *Q = malloc(sizeof(float) * c.rows * c.cols);
    struct gq_vq_tensor t;
    quantize(&c, &t, Q);
    struct gq_vqpack p, q;
    uint8_t *buf;
    CHECK_OK(gq_vqpack_pack(&t, &p, &buf));
    q = p, q.h.k = 32; // 5-bit indices against 4-bit data
    expect_bad(&q, "bytes");
    q = p, q.h.n_ct = p.h.n_ct + 1; // codebook count
    expect_bad(&q, "bytes");
    q = p, q.h.n_ct = 1000;
    expect_bad(&q, "codebook count");
    q = p, q.bytes[GQ_VQP_IDX]--; // truncated
    expect_bad(&q, "truncated");
    q = p, q.part[GQ_VQP_CB] = NULL;
    expect_bad(&q, "missing");
    q = p, q.h.version = 3;
    expect_bad(&q, "version");
    q = p, q.h.rot = 1; // a rotation needs a version 2 header
    expect_bad(&q, "rotation");
    q = p, q.h.version = 2, q.h.rot = 2;
    expect_bad(&q, "rotation");
    q = p, q.h.d = 3;
    expect_bad(&q, "dimension");
    // duplicate permutation entry
    uint8_t *copy = malloc(p.bytes[GQ_VQP_PERM]);
    memcpy(copy, p.part[GQ_VQP_PERM], p.bytes[GQ_VQP_PERM]);
    int w = 0;
    while ((1 << w) < c.cols) w++;
    uint32_t first = gq_bits_get(copy, 0, w), second = gq_bits_get(copy, 1, w);
    for (int j = 0; j < w; j++) // entry 1 := entry 0
        if (((first ^ second) >> j) & 1) copy[(w + j) / 8] ^= (uint8_t)(1u << ((w + j) % 8));
    q = p, q.part[GQ_VQP_PERM] = copy;
    expect_bad(&q, "not a permutation");
    free(copy);
    // NaN scale -> non-finite codebook
    copy = malloc(p.bytes[GQ_VQP_CBS]);
    memcpy(copy, p.part[GQ_VQP_CBS], p.bytes[GQ_VQP_CBS]);
    copy[0] = 0x00, copy[1] = 0x7e; // fp16 NaN
    q = p, q.part[GQ_VQP_CBS] = copy;
    expect_bad(&q, "non-finite codebook");
    free(copy);
    gq_vq_tensor_free(&t);
    free(buf), free(Q);
}

// Writes the packed matrix p as "m.weight" with the given corruption:
// 0 none, 1 header k doubled, 2 n_ct + 1, 3 index part one byte short,
// 4 codebook part missing, 5 codebook part typed F16, 6 a version 2 header
// stored with 13 fields, 7 a version 1 header with 16; 8: none, as a rotated
// version 2 header of 16 fields.
static void write_gguf(const char *path, const struct gq_vqpack *p, int corrupt) {
    struct gq_gguf_writer *w = gq_gguf_writer_new(32);
    struct gq_vqpack_hdr h = p->h;
    if (corrupt == 1) h.k *= 2;
    if (corrupt == 2) h.n_ct += 1;
    if (corrupt == 6 || corrupt == 8) h.version = 2;
    if (corrupt == 8) h.rot = 1, h.rot_seed_lo = 77;
    const size_t nh = corrupt == 7 || corrupt == 8 ? GQ_VQPACK_HDR_N_V2 : GQ_VQPACK_HDR_N;
    CHECK_OK(gq_gguf_writer_set_arr(w, "gptvq.vq.m.weight", GQ_GGUF_INT32, &h, nh));
    int64_t bits[GQ_VQP_COUNT];
    CHECK_OK(gq_vqpack_layout(&p->h, "m", bits));
    for (int i = 0; i < GQ_VQP_COUNT; i++) {
        if (!bits[i] || (corrupt == 4 && i == GQ_VQP_CB)) continue;
        int type;
        int64_t ne;
        gq_vqpack_part_type(&p->h, i, bits[i], &type, &ne);
        size_t nb = p->bytes[i];
        if (corrupt == 3 && i == GQ_VQP_IDX) ne--, nb--;
        if (corrupt == 5 && i == GQ_VQP_CB) type = GQ_TYPE_F16, ne /= 2, nb = (size_t)ne * 2;
        char tn[64];
        snprintf(tn, sizeof tn, "m.weight.%s", gq_vqpack_suffix(i));
        CHECK_OK(gq_gguf_writer_add_tensor(w, tn, (enum gq_ggml_type)type, 1, &ne, p->part[i], nb));
    }
    CHECK_OK(gq_gguf_writer_write(w, path));
    gq_gguf_writer_free(w);
}

static void test_gguf_file(void) {
    const struct cfg c = {2, 16, 32, 72, 384, GQ_CB_INT8, 8, 1, 0, 0.1, true};
    float *Q = malloc(sizeof(float) * c.rows * c.cols), *D = malloc(sizeof(float) * c.rows * c.cols);
    struct gq_vq_tensor t, u;
    quantize(&c, &t, Q);
    struct gq_vqpack p, q;
    uint8_t *buf;
    CHECK_OK(gq_vqpack_pack(&t, &p, &buf));
    char path[64];
    snprintf(path, sizeof path, "/tmp/test_vqpack_%d.gguf", (int)getpid());
    const char *msgs[] = {NULL, "index width", "codebook count", "index width", "missing tensor", "F16",
                          "a version 2 header has 16", "a version 1 header has 13"};
    for (int corrupt = 0; corrupt < 9; corrupt++) {
        write_gguf(path, &p, corrupt);
        struct gq_gguf *g = NULL;
        CHECK_OK(gq_gguf_open(path, &g));
        if (!g) continue;
        bool found = false;
        enum gq_status s = gq_vqpack_from_gguf(g, "m.weight", c.rows, c.cols, &q, &found);
        if (corrupt == 8) { // read back with its rotation: decodes to the rows of Q rotated back
            CHECK_OK(s);
            CHECK(found && q.h.version == 2 && q.h.rot == 1);
            CHECK_OK(gq_vqpack_unpack(&q, "m.weight", &u));
            CHECK(u.rot && u.rot_seed == 77);
            gq_vq_decode(&u, D);
            struct gq_rot R;
            CHECK_OK(gq_rot_init(&R, c.cols, 77));
            float *row = malloc(sizeof(float) * c.cols);
            int bad = 0;
            for (int r = 0; r < c.rows; r++) {
                memcpy(row, Q + (size_t)r * c.cols, sizeof(float) * c.cols);
                gq_rot_apply_t(&R, row);
                bad += memcmp(row, D + (size_t)r * c.cols, sizeof(float) * c.cols) != 0;
            }
            CHECKF(bad == 0, "rotated header: %d rows are not the unrotated decode rotated back", bad);
            free(row), gq_rot_free(&R), gq_vq_tensor_free(&u);
        } else if (!corrupt) {
            CHECK_OK(s);
            CHECK(found);
            CHECK_OK(gq_vqpack_unpack(&q, "m.weight", &u));
            gq_vq_decode(&u, D);
            CHECK(memcmp(D, Q, sizeof(float) * c.rows * c.cols) == 0);
            gq_vq_tensor_free(&u);
            bool f2 = true;
            CHECK_OK(gq_vqpack_from_gguf(g, "other.weight", c.rows, c.cols, &q, &f2));
            CHECK(!f2);
        } else {
            CHECKF(s == GQ_ERR_FORMAT && strstr(gq_last_error(), msgs[corrupt]) && strstr(gq_last_error(), path) &&
                       strstr(gq_last_error(), "m.weight"),
                   "corruption %d: %s: %s", corrupt, gq_status_str(s), gq_last_error());
        }
        gq_gguf_close(g);
    }
    // truncated file: the reader refuses it before any part is used
    write_gguf(path, &p, 0);
    FILE *f = fopen(path, "rb+");
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fclose(f);
    CHECK(truncate(path, size - 40) == 0);
    struct gq_gguf *g = NULL;
    enum gq_status s = gq_gguf_open(path, &g);
    CHECKF(s == GQ_ERR_FORMAT && strstr(gq_last_error(), path), "truncated: %s: %s", gq_status_str(s), gq_last_error());
    if (g) gq_gguf_close(g);
    remove(path);
    gq_vq_tensor_free(&t);
    free(buf), free(Q), free(D);
}

int main(void) {
    test_bits();
    test_round_trip();
    test_corrupt();
    test_gguf_file();
    return test_done("test_vqpack");
}
