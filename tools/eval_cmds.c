// eval_cmds.c - gptvq eval (zero-shot tasks) and gptvq report (a source
// model and its quantized files side by side).
#include "gptvq.h"
#include "cli.h"
#include "util/common.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

// gq_write_file_atomic; returns 0, or die()'s code with the error.
static int write_file_atomic(const char *path, const char *text, size_t len) {
    enum gq_status s = gq_write_file_atomic(path, text, len);
    return s == GQ_OK ? 0 : die_status(s);
}

// ---------------------------------------------------------------------------
static const char *EVAL_HELP =
    "usage: gptvq eval MODEL [options]\n"
    "\n"
    "Zero-shot accuracy on the standard tasks, scored as lm-evaluation-harness (v0.4) does,\n"
    "for any model gptvq reads or writes (original, fake-quant, packed GPTVQ).\n"
    "\n"
    "options:\n"
    "  --tasks LIST       comma-separated, default all seven:\n"
    "                     piqa,arc_easy,arc_challenge,hellaswag,winogrande,boolq,lambada\n"
    "  --data-dir DIR     the JSON-lines sets (default ../shared/data/zeroshot)\n"
    "  --limit N          only the first N examples of each task\n"
    "  --offset N         skip the first N examples (with --limit: run a long task in pieces)\n"
    "  --threads N        OpenMP threads (default: all cores)\n"
    "  --json FILE        metrics, conventions and settings as JSON\n"
    "  --samples FILE     one JSON line per example: log-likelihoods, token counts, prediction\n"
    "  --dequantize       run on f32 weights instead of the compressed kernels\n"
    "  --quiet            no progress lines\n"
    "\n"
    "conventions (the harness's):\n"
    "  prompts   piqa \"Question: <goal>\\nAnswer:\"; arc <query> = \"Question: ...\\nAnswer:\";\n"
    "            hellaswag activity_label + \": \" + ctx_a + \" \" + ctx_b.capitalize(), cleaned\n"
    "            (strip, \" [title]\" -> \". \", [tags] removed, double spaces -> one), endings cleaned;\n"
    "            winogrande partial scoring (the text after \"_\" given each option substituted);\n"
    "            boolq passage + \"\\nQuestion: \" + question + \"?\\nAnswer:\" with \" no\" / \" yes\";\n"
    "            lambada (OpenAI) the last \" \"-separated word given the text before it\n"
    "  target    the continuation is \" \" + choice\n"
    "  tokens    context and context+continuation are encoded, the continuation is the\n"
    "            difference (trailing spaces of the context move to the continuation); BOS\n"
    "            in front only when the model adds one; inputs longer than the model's\n"
    "            context are cut from the left\n"
    "  acc       argmax of the summed log-likelihood of each continuation = gold\n"
    "  acc_norm  argmax of log-likelihood / length of the choice in characters (piqa, arc,\n"
    "            hellaswag)\n"
    "  lambada   acc: the greedy continuation is the whole last word; ppl = exp(-mean ll)\n"
    "  stderr    sqrt(p(1-p)/(n-1)); the mean over tasks has sqrt(sum se^2)/tasks\n"
    "  The context's KV cache is computed once and reused by each of its choices.\n";

int cmd_eval(int argc, char **argv) {
    const char *model = NULL, *tasks = "piqa,arc_easy,arc_challenge,hellaswag,winogrande,boolq,lambada";
    const char *json = NULL, *samples = NULL;
    struct gq_zs_params p = {.progress = true};
    bool dequant = false;
    long threads = 0, limit = 0, offset = 0;
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            fputs(EVAL_HELP, stdout);
            return 0;
        }
        INT_OPT("--limit", limit, 1, 1 << 30);
        INT_OPT("--offset", offset, 0, 1 << 30);
        INT_OPT("--threads", threads, 0, 4096);
        if (!strcmp(a, "--tasks") || !strcmp(a, "--data-dir") || !strcmp(a, "--json") || !strcmp(a, "--samples")) {
            const char *v = opt_value(argc, argv, &i);
            if (!v) return 2;
            *(!strcmp(a, "--tasks") ? &tasks : !strcmp(a, "--data-dir") ? &p.data_dir : !strcmp(a, "--json") ? &json : &samples) = v;
            continue;
        }
        if (!strcmp(a, "--dequantize")) { dequant = true; continue; }
        if (!strcmp(a, "--quiet")) { p.progress = false; continue; }
        if (a[0] == '-' && a[1]) return die("eval: unknown option '%s' (see gptvq eval --help)", a), 2;
        if (!model) model = a;
        else return die("eval: unexpected argument '%s'", a), 2;
    }
    if (!model) {
        fputs(EVAL_HELP, stderr);
        return 2;
    }
    int list[GQ_ZS_N_TASKS], nt = 0;
    for (const char *t = tasks; *t;) {
        size_t n = strcspn(t, ",");
        char name[32];
        snprintf(name, sizeof name, "%.*s", (int)(n < 31 ? n : 31), t);
        int id = gq_zs_task_find(name);
        if (id < 0) return die("--tasks: unknown task '%s' (piqa, arc_easy, arc_challenge, hellaswag, winogrande, boolq, lambada)", name), 2;
        for (int k = 0; k < nt; k++)
            if (list[k] == id) return die("--tasks: '%s' given twice", name), 2;
        list[nt++] = id;
        t += n + (t[n] == ',');
    }
    p.limit = (int)limit, p.offset = (int)offset;
    gq_set_threads((int)threads);
    struct gq_model *m = NULL;
    if (load_model(model, NULL, !dequant, &m)) return 1;
    struct gq_zs_result r[GQ_ZS_N_TASKS];
    memset(r, 0, sizeof r);
    for (int k = 0; k < nt; k++) {
        enum gq_status s = gq_zs_eval(m, list[k], &p, &r[k]);
        if (s != GQ_OK) {
            for (int j = 0; j < k; j++) gq_zs_result_free(&r[j]);
            gq_model_free(m);
            return die_status(s);
        }
        fprintf(stderr, "eval: %s: %d examples, %lld tokens run, %.1fs (%.2f examples/s)\n", gq_zs_task_name(list[k]),
                r[k].n, (long long)r[k].n_tokens_run, r[k].seconds, r[k].n / r[k].seconds);
    }
    gq_model_free(m);
    printf("| task | n | acc | ± | acc_norm | ± | other | seconds | examples/s |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- |\n");
    double macc = 0, mse = 0;
    for (int k = 0; k < nt; k++) {
        const struct gq_zs_result *q = &r[k];
        char norm[64] = "|", other[48] = "";
        if (q->has_acc_norm) snprintf(norm, sizeof norm, "%.4f | %.4f", q->acc_norm, q->acc_norm_stderr);
        if (q->task == GQ_ZS_LAMBADA) snprintf(other, sizeof other, "ppl %.3f", q->ppl);
        printf("| %s | %d | %.4f | %.4f | %s | %s | %.1f | %.2f |\n", gq_zs_task_name(q->task), q->n, q->acc,
               q->acc_stderr, norm, other, q->seconds, q->n / q->seconds);
        macc += q->acc / nt, mse += q->acc_stderr * q->acc_stderr;
    }
    mse = sqrt(mse) / nt;
    printf("| mean acc | | %.4f | %.4f | | | | | |\n", macc, mse);
    int rc = 0;
    char *text = NULL;
    size_t len = 0;
    FILE *f;
    if (samples && (f = open_memstream(&text, &len))) { // one line per example
        for (int k = 0; k < nt; k++)
            for (int i = 0; i < r[k].n; i++) {
                const struct gq_zs_example *e = &r[k].ex[i];
                fprintf(f, "{\"task\": \"%s\", \"idx\": %d, \"gold\": %d, \"pred\": %d, \"pred_norm\": %d, \"ll\": [",
                        gq_zs_task_name(r[k].task), e->idx, e->gold, e->pred, e->pred_norm);
                for (int j = 0; j < e->n_req; j++) fprintf(f, "%s%.17g", j ? ", " : "", e->ll[j]);
                fprintf(f, "], \"is_greedy\": [");
                for (int j = 0; j < e->n_req; j++) fprintf(f, "%s%s", j ? ", " : "", e->greedy[j] ? "true" : "false");
                fprintf(f, "], \"ctx_ntok\": [");
                for (int j = 0; j < e->n_req; j++) fprintf(f, "%s%d", j ? ", " : "", e->ctx_ntok[j]);
                fprintf(f, "], \"cont_ntok\": [");
                for (int j = 0; j < e->n_req; j++) fprintf(f, "%s%d", j ? ", " : "", e->cont_ntok[j]);
                fprintf(f, "], \"choice_chars\": [");
                for (int j = 0; j < e->n_req; j++) fprintf(f, "%s%d", j ? ", " : "", e->chars[j]);
                fprintf(f, "]}\n");
            }
        fclose(f);
        rc = write_file_atomic(samples, text, len);
        free(text), text = NULL;
    } else if (samples) {
        rc = die("out of memory");
    }
    if (json && !rc && (f = open_memstream(&text, &len))) {
        cJSON *js = cJSON_CreateString(model); // the path, escaped
        char *jm = js ? cJSON_PrintUnformatted(js) : NULL;
        fprintf(f, "{\n  \"model\": %s,\n  \"gptvq_version\": \"%s\",\n  \"offset\": %d,\n  \"limit\": %d,\n  \"weights\": \"%s\",\n",
                jm ? jm : "null", GQ_VERSION_STRING, p.offset, p.limit, dequant ? "f32" : "as stored");
        free(jm), cJSON_Delete(js);
        fprintf(f, "  \"conventions\": {\"harness\": \"lm-evaluation-harness v0.4\", \"target_delimiter\": \" \", "
                   "\"acc\": \"argmax sum log-likelihood\", \"acc_norm\": \"argmax log-likelihood / choice length in characters\", "
                   "\"tokenization\": \"ctx=encode(context), cont=encode(context+continuation)[len(ctx):], trailing context spaces moved to the continuation\", "
                   "\"bos\": \"only when the model adds one\", \"winogrande\": \"partial scoring\", "
                   "\"lambada\": \"acc = greedy continuation equals the last word; ppl = exp(-mean ll)\", "
                   "\"stderr\": \"sqrt(p(1-p)/(n-1))\"},\n  \"results\": {\n");
        for (int k = 0; k < nt; k++) {
            const struct gq_zs_result *q = &r[k];
            fprintf(f, "    \"%s\": {\"n\": %d, \"acc\": %.6f, \"acc_stderr\": %.6f", gq_zs_task_name(q->task), q->n, q->acc,
                    q->acc_stderr);
            if (q->has_acc_norm) fprintf(f, ", \"acc_norm\": %.6f, \"acc_norm_stderr\": %.6f", q->acc_norm, q->acc_norm_stderr);
            if (q->task == GQ_ZS_LAMBADA) fprintf(f, ", \"ppl\": %.6f", q->ppl);
            fprintf(f, ", \"seconds\": %.3f, \"examples_per_s\": %.3f, \"tokens_run\": %lld}%s\n", q->seconds,
                    q->n / q->seconds, (long long)q->n_tokens_run, k + 1 < nt ? "," : "");
        }
        fprintf(f, "  },\n  \"mean_acc\": %.6f,\n  \"mean_acc_stderr\": %.6f\n}\n", macc, mse);
        fclose(f);
        rc = write_file_atomic(json, text, len);
        free(text);
    } else if (json && !rc) {
        rc = die("out of memory");
    }
    for (int k = 0; k < nt; k++) gq_zs_result_free(&r[k]);
    return rc ? 1 : 0;
}

// ---------------------------------------------------------------------------
static const char *REPORT_HELP =
    "usage: gptvq report FILE.gguf [FILE.gguf ...] [-o DIR] [options]\n"
    "\n"
    "Writes DIR/report.md (default DIR: the first FILE + \".report\") about quantized GGUF files\n"
    "(GPTVQ, GPTQ, RTN, llama.cpp's types) and their source: each file's size, the bits per value\n"
    "of the block linears by matrix kind and of the embedding / output head, the settings and the\n"
    "command that made it (from FILE.report.json), and the relative output error of every\n"
    "linear as `gptvq quantize` recorded it, pictured by layer and matrix kind (DIR/error_N.svg).\n"
    "With --text, each file's perplexity is measured too and the report gets a picture of\n"
    "perplexity against file size (DIR/ppl_vs_size.svg): GPTVQ against GPTQ, RTN and the source\n"
    "(the first file not made by gptvq quantize; later ones are \"other GGUF\"). The table is\n"
    "printed too.\n"
    "\n"
    "options:\n"
    "  -o DIR                the report folder\n"
    "  --text FILE           measure perplexity on FILE (e.g. wiki.test.raw)\n"
    "  --protocol gptq|llama.cpp, --ctx N, --max-windows N\n"
    "                        as gptvq ppl (default gptq, ctx 2048, all windows)\n"
    "  --threads N           threads (default: all cores)\n"
    "  --quiet               no progress lines\n";

int cmd_report(int argc, char **argv) {
    const char *files[64], *out = NULL, *text_path = NULL;
    int n = 0;
    struct gq_ppl_params pp = {.protocol = GQ_PPL_GPTQ, .wikitext = -1, .progress = true};
    long threads = 0, ctx = 0, maxw = 0;
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            fputs(REPORT_HELP, stdout);
            return 0;
        }
        INT_OPT("--threads", threads, 0, 4096);
        INT_OPT("--ctx", ctx, 2, 1 << 20);
        INT_OPT("--max-windows", maxw, 1, 1 << 30);
        if (!strcmp(a, "-o") || !strcmp(a, "--text") || !strcmp(a, "--protocol")) {
            const char *v = opt_value(argc, argv, &i);
            if (!v) return 2;
            if (!strcmp(a, "-o")) out = v;
            else if (!strcmp(a, "--text")) text_path = v;
            else if (!parse_protocol(v, &pp.protocol)) return 2;
            continue;
        }
        if (!strcmp(a, "--quiet")) { pp.progress = false; continue; }
        if (a[0] == '-' && a[1]) return die("report: unknown option '%s' (see gptvq report --help)", a), 2;
        if (n == 64) return die("report: at most 64 files"), 2;
        files[n++] = a;
    }
    if (!n) {
        fputs(REPORT_HELP, stderr);
        return 2;
    }
    for (int i = 0; i < n; i++) { // every file a GGUF before any perplexity run
        const char *fmt;
        if (gq_model_path_format(files[i], &fmt) != GQ_OK) return die("%s", gq_last_error()), 1;
        if (strcmp(fmt, "gguf") != 0) return die("%s: report reads GGUF files (this one is %s)", files[i], fmt), 2;
    }
    char dir[4096];
    if (!out) snprintf(dir, sizeof dir, "%s.report", files[0]), out = dir;
    double ppl[64];
    char desc[512] = "";
    char *text = NULL;
    size_t len = 0;
    if (text_path) {
        if (gq_read_file(text_path, &text, &len) != GQ_OK) return die("%s", gq_last_error()), 1;
        pp.n_ctx = (int)ctx, pp.max_windows = (int)maxw;
        pp.wikitext = pp.protocol == GQ_PPL_GPTQ && gq_ppl_is_wikitext_file(text_path);
        gq_set_threads((int)threads);
    }
    struct stat st;
    const bool existed = stat(out, &st) == 0;
    if (gq_mkdir_p(out) != GQ_OK) return free(text), die("%s", gq_last_error()), 1; // before minutes of perplexity
    int rc = 0;
    for (int i = 0; i < n && !rc; i++) {
        ppl[i] = NAN;
        if (!text) continue;
        struct gq_model *m = NULL;
        if ((rc = load_model(files[i], NULL, true, &m))) break;
        struct gq_ppl_result r;
        enum gq_status s = gq_perplexity(m, text, len, &pp, &r);
        gq_model_free(m);
        if (s != GQ_OK) {
            rc = die_status(s);
            break;
        }
        ppl[i] = r.ppl;
        if (pp.progress) fprintf(stderr, "report: %s: ppl %.4f (%.1fs)\n", files[i], r.ppl, r.seconds);
        snprintf(desc, sizeof desc, "%s, protocol %s, ctx %d, %d of %d windows (%lld tokens scored)",
                 base_name_of(text_path), pp.protocol == GQ_PPL_GPTQ ? "gptq" : "llama.cpp", r.n_ctx, r.n_windows,
                 r.n_windows_total, (long long)r.n_scored);
    }
    free(text);
    if (!rc) {
        enum gq_status s = gq_report_write(files, ppl, n, text_path ? desc : NULL, out, stdout);
        if (s != GQ_OK) rc = die_status(s);
    }
    if (rc) {
        if (!existed) rmdir(out); // only when empty: nothing of an earlier report goes
        return rc;
    }
    printf("wrote %s/report.md\n", out);
    return 0;
}

// ---------------------------------------------------------------------------
