// test_zeroshot - `gptvq eval` scoring (src/eval/zeroshot.c):
//  [1] SmolLM2, the first 50 examples of each of the seven tasks against the
//      independent reference (tests/reference/zeroshot_ref.py: the harness's
//      conventions written out in Python over the float64 numpy forward;
//      golden tests/golden/zeroshot_smollm2_first50.jsonl): the same token
//      counts, every log-likelihood within 1e-3 relative, the same choice
//      (acc and acc_norm) on all 350, the same greedy verdict on LAMBADA;
//  [2] malformed data files are refused with "FILE:LINE: problem".
#include "gptvq.h"
#include "test.h"

#include <cjson/cJSON.h>
#include <sys/stat.h>

#define SMOL "models/SmolLM2-135M-Instruct.Q4_1.gguf"
#define GOLDEN "tests/golden/zeroshot_smollm2_first50.jsonl"


static int argmax(const double *v, int n) {
    int a = 0;
    for (int i = 1; i < n; i++) a = v[i] > v[a] ? i : a;
    return a;
}

static double worst_rel = 0;

static void test_golden(const struct gq_model *m, const char *zsdir) {
    size_t n_text;
    char *text = test_read_file(GOLDEN, &n_text);
    CHECKF(text != NULL, "cannot read %s", GOLDEN);
    if (!text) return;
    struct gq_zs_params p = {.data_dir = zsdir, .limit = 50};
    struct gq_zs_result r[GQ_ZS_N_TASKS];
    for (int t = 0; t < GQ_ZS_N_TASKS; t++) {
        CHECK_OK(gq_zs_eval(m, t, &p, &r[t]));
        fprintf(stderr, "  %-13s acc %.2f%s  (%.1fs, %lld tokens run)\n", gq_zs_task_name(t), r[t].acc,
                r[t].has_acc_norm ? "" : "", r[t].seconds, (long long)r[t].n_tokens_run);
    }
    int seen[GQ_ZS_N_TASKS] = {0}, n_lines = 0, agree = 0;
    for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
        cJSON *o = cJSON_Parse(line);
        CHECK(o != NULL);
        if (!o) continue;
        n_lines++;
        const int t = gq_zs_task_find(cJSON_GetObjectItem(o, "task")->valuestring);
        CHECK(t >= 0);
        if (t < 0 || seen[t] >= r[t].n) {
            CHECKF(0, "golden line %d: task or example beyond the run", n_lines);
            cJSON_Delete(o);
            continue;
        }
        const struct gq_zs_example *e = &r[t].ex[seen[t]++];
        const cJSON *ll = cJSON_GetObjectItem(o, "ll"), *cn = cJSON_GetObjectItem(o, "cont_ntok"),
                    *xn = cJSON_GetObjectItem(o, "ctx_ntok"), *ch = cJSON_GetObjectItem(o, "choice_chars"),
                    *gr = cJSON_GetObjectItem(o, "is_greedy");
        const int nr = cJSON_GetArraySize(ll);
        CHECKF(e->idx == cJSON_GetObjectItem(o, "idx")->valueint && e->gold == cJSON_GetObjectItem(o, "gold")->valueint &&
                   e->n_req == nr,
               "%s example %d: index, gold or choice count differ", gq_zs_task_name(t), e->idx);
        if (e->n_req != nr) {
            cJSON_Delete(o);
            continue;
        }
        double ref[GQ_ZS_MAX_CHOICES], norm[GQ_ZS_MAX_CHOICES], mine_norm[GQ_ZS_MAX_CHOICES];
        bool tok_ok = true, ll_ok = true;
        for (int j = 0; j < nr; j++) {
            ref[j] = cJSON_GetArrayItem(ll, j)->valuedouble;
            norm[j] = ref[j] / cJSON_GetArrayItem(ch, j)->valueint;
            mine_norm[j] = e->ll[j] / e->chars[j];
            tok_ok = tok_ok && e->cont_ntok[j] == cJSON_GetArrayItem(cn, j)->valueint &&
                     e->ctx_ntok[j] == cJSON_GetArrayItem(xn, j)->valueint;
            if (r[t].has_acc_norm) tok_ok = tok_ok && e->chars[j] == cJSON_GetArrayItem(ch, j)->valueint;
            const double rel = fabs(e->ll[j] - ref[j]) / fmax(fabs(ref[j]), 1e-3);
            worst_rel = fmax(worst_rel, rel);
            ll_ok = ll_ok && rel <= 1e-3;
        }
        CHECKF(tok_ok, "%s example %d: token counts or choice lengths differ from the reference", gq_zs_task_name(t),
               e->idx);
        CHECKF(ll_ok, "%s example %d: log-likelihood off by more than 1e-3 relative (first: %.6f vs %.6f)",
               gq_zs_task_name(t), e->idx, e->ll[0], ref[0]);
        bool same;
        if (t == GQ_ZS_LAMBADA) {
            same = e->greedy[0] == cJSON_IsTrue(cJSON_GetArrayItem(gr, 0));
        } else {
            same = e->pred == argmax(ref, nr) && e->pred == argmax(e->ll, nr);
            if (r[t].has_acc_norm) same = same && e->pred_norm == argmax(norm, nr) && e->pred_norm == argmax(mine_norm, nr);
        }
        agree += same;
        CHECKF(same, "%s example %d: a different choice than the reference", gq_zs_task_name(t), e->idx);
        cJSON_Delete(o);
    }
    CHECKF(n_lines == 7 * 50, "golden has %d examples, expected 350", n_lines);
    for (int t = 0; t < GQ_ZS_N_TASKS; t++) CHECKF(seen[t] == 50, "%s: %d golden examples", gq_zs_task_name(t), seen[t]);
    fprintf(stderr, "  choices agree on %d of %d; worst |ll - ref| / |ref| = %.3g (tolerance 1e-3)\n", agree, n_lines,
            worst_rel);
    for (int t = 0; t < GQ_ZS_N_TASKS; t++) gq_zs_result_free(&r[t]);
    free(text);
}

// A data directory with one file; the evaluation must fail naming file:line.
static void expect_bad(const struct gq_model *m, int task, const char *rel, const char *content, const char *labels,
                       const char *want) {
    char dir[] = "/tmp/gq_zs_XXXXXX", path[512];
    CHECK(mkdtemp(dir) != NULL);
    char sub[512];
    snprintf(sub, sizeof sub, "%s/%s", dir, rel);
    *strrchr(sub, '/') = 0;
    mkdir(sub, 0755);
    snprintf(path, sizeof path, "%s/%s", dir, rel);
    FILE *f = fopen(path, "w");
    fputs(content, f);
    fclose(f);
    char lpath[512] = "";
    if (labels) {
        snprintf(lpath, sizeof lpath, "%s/piqa/valid-labels.lst", dir);
        f = fopen(lpath, "w");
        fputs(labels, f);
        fclose(f);
    }
    struct gq_zs_params p = {.data_dir = dir};
    struct gq_zs_result r;
    enum gq_status s = gq_zs_eval(m, task, &p, &r);
    const char *msg = gq_last_error();
    CHECKF(s == GQ_ERR_FORMAT && strstr(msg, want), "%s: got \"%s\", want \"%s\"", rel, msg, want);
    if (s == GQ_OK) gq_zs_result_free(&r);
    remove(path);
    if (labels) remove(lpath);
    rmdir(sub);
    rmdir(dir);
}

static void test_malformed(const struct gq_model *m) {
    const char *arc = "{\"query\": \"Question: q\\nAnswer:\", \"choices\": [\"a\", \"b\"], \"gold\": 1}\n";
    char buf[1024];
    snprintf(buf, sizeof buf, "%s%s{\"query\": \"Q\", \"choices\": [\"a\", \"b\"], \"gold\": 2}\n", arc, arc);
    expect_bad(m, GQ_ZS_ARC_EASY, "arc_easy/test.jsonl", buf, NULL, "test.jsonl:3: gold 2 out of range (2 choices)");
    snprintf(buf, sizeof buf, "%s{\"query\": \"Q\", \"choices\": [\"a\", \"b\"], \"gold\": 0\n", arc);
    expect_bad(m, GQ_ZS_ARC_CHALLENGE, "arc_challenge/test.jsonl", buf, NULL, "test.jsonl:2: not a JSON object");
    expect_bad(m, GQ_ZS_BOOLQ, "boolq/validation.jsonl", "{\"question\": \"q\", \"passage\": \"p\"}\n", NULL,
               "validation.jsonl:1: missing or non-boolean field \"answer\"");
    expect_bad(m, GQ_ZS_WINOGRANDE, "winogrande/validation.jsonl",
               "{\"sentence\": \"A _ b.\", \"option1\": \"x\", \"option2\": \"y\", \"answer\": \"3\"}\n", NULL,
               "validation.jsonl:1: answer \"3\" is not \"1\" or \"2\"");
    expect_bad(m, GQ_ZS_HELLASWAG, "hellaswag/validation.jsonl",
               "{\"activity_label\": \"a\", \"ctx_a\": \"b\", \"ctx_b\": \"c\", \"endings\": [\"d\", \"e\"], "
               "\"label\": \"2\"}\n",
               NULL, "validation.jsonl:1: label \"2\" out of range (2 endings)");
    expect_bad(m, GQ_ZS_PIQA, "piqa/valid.jsonl", "{\"goal\": \"g\", \"sol1\": \"a\"}\n", "0\n",
               "valid.jsonl:1: missing field \"sol2\"");
    expect_bad(m, GQ_ZS_PIQA, "piqa/valid.jsonl", "{\"goal\": \"g\", \"sol1\": \"a\", \"sol2\": \"b\"}\n", "2\n",
               "valid-labels.lst: line 1: label \"2\" is not 0 or 1");
    expect_bad(m, GQ_ZS_LAMBADA, "lambada/lambada_test.jsonl", "{\"text\": 5}\n", NULL,
               "lambada_test.jsonl:1: field \"text\" is not a string");
}

// A LAMBADA text without a space: empty context, scored after [EOS] (the
// harness's rule); the continuation keeps all of its tokens.
static void test_empty_context(const struct gq_model *m) {
    char dir[] = "/tmp/gq_zs_XXXXXX", sub[512], path[600];
    CHECK(mkdtemp(dir) != NULL);
    snprintf(sub, sizeof sub, "%s/lambada", dir);
    mkdir(sub, 0755);
    snprintf(path, sizeof path, "%s/lambada_test.jsonl", sub);
    FILE *f = fopen(path, "w");
    fputs("{\"text\": \"Hello\"}\n{\"text\": \"Hello there\"}\n", f);
    fclose(f);
    struct gq_zs_params p = {.data_dir = dir};
    struct gq_zs_result r;
    CHECK_OK(gq_zs_eval(m, GQ_ZS_LAMBADA, &p, &r));
    if (r.n == 2) {
        CHECKF(r.ex[0].ctx_ntok[0] == 1 && r.ex[0].cont_ntok[0] == 1, "empty context: %d + %d tokens, want 1 + 1",
               r.ex[0].ctx_ntok[0], r.ex[0].cont_ntok[0]);
        CHECK(r.ex[1].ctx_ntok[0] == 1 && r.ex[1].cont_ntok[0] == 1 && isfinite(r.ex[0].ll[0]) && r.ex[0].ll[0] < 0);
        gq_zs_result_free(&r);
    }
    remove(path), rmdir(sub), rmdir(dir);
}

int main(void) {
    if (access(SMOL, R_OK) != 0) SKIP("%s missing (run scripts/setup.sh)", SMOL);
    char zsdir[1024];
    snprintf(zsdir, sizeof zsdir, "%s/zeroshot", data_dir());
    if (access(zsdir, R_OK) != 0) SKIP("%s missing", zsdir);
    struct gq_model *m = NULL;
    struct gq_load_params lp = {.keep_quantized = true};
    CHECK_OK(gq_model_load(SMOL, &lp, &m));
    if (!m) return test_done("test_zeroshot");
    test_malformed(m);
    test_empty_context(m);
    test_golden(m, zsdir);
    gq_model_free(m);
    return test_done("test_zeroshot");
}
