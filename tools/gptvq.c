// gptvq - command-line interface: parse arguments -> params -> one library call.
#include "gptvq.h"
#include "cli.h"
#include "../src/io/gguf.h"
#include "format/vqpack.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

const char *g_prog = "gptvq";

int die(const char *fmt, ...) {
    va_list ap;
    // Several ranks: most errors (a bad option, an unreadable file) strike
    // every rank. Rank 0 says it and ends the run (gq_dist_abort) at once; the
    // others wait a moment first, so theirs is printed only when rank 0 did
    // not fail: one error line either way.
    if (gq_dist_size() > 1 && gq_dist_rank() != 0) sleep(3);
    va_start(ap, fmt);
    fprintf(stderr, "%s: error: ", g_prog);
    if (gq_dist_size() > 1) fprintf(stderr, "rank %d of %d: ", gq_dist_rank(), gq_dist_size());
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    return 1;
}
int die_status(enum gq_status s) { return die("%s", *gq_last_error() ? gq_last_error() : gq_status_str(s)); }

bool parse_int(const char *s, long lo, long hi, long *out) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi) return false;
    *out = v;
    return true;
}
bool parse_float(const char *s, double *out) {
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !isfinite(v)) return false;
    *out = v;
    return true;
}

// Common option parsing: returns the value of option `argv[*i]` or NULL.
const char *opt_value(int argc, char **argv, int *i) {
    if (*i + 1 >= argc) {
        die("option %s needs a value", argv[*i]);
        return NULL;
    }
    return argv[++*i];
}

void print_model_line(const struct gq_model *m) {
    struct gq_model_info in;
    gq_model_get_info(m, &in);
    fprintf(stderr, "model: %s (%s, %s) %d layers, dim %d, %d/%d heads, ffn %d, vocab %d, ctx %d, %.1fM params\n",
            in.name && *in.name ? in.name : "?", in.arch, in.source_format, in.n_layers, in.dim, in.n_heads,
            in.n_kv_heads, in.hidden_dim, in.n_vocab, in.ctx_len, in.n_params / 1e6);
}

// keep: run packed / F16 / Q8_0 / Q4_x weights with the compressed kernels
// (ppl, generate); false: everything f32 (export). quantize streams the
// source (keep) but only decodes it: no copies in the kernels' layout.
int load_model_as(const char *path, const char *tok_path, bool keep, bool repack, struct gq_model **m) {
    struct gq_load_params lp = {.tokenizer_path = tok_path, .keep_quantized = keep, .no_repack = !repack};
    enum gq_status s = gq_model_load(path, &lp, m);
    if (s != GQ_OK) return die_status(s);
    if (gq_dist_rank() == 0) print_model_line(*m);
    return 0;
}
int load_model(const char *path, const char *tok_path, bool keep, struct gq_model **m) {
    return load_model_as(path, tok_path, keep, true, m);
}

// --protocol's value; false (the error printed) when it is none of them.
bool parse_protocol(const char *v, enum gq_ppl_protocol *out) {
    if (!strcmp(v, "gptq")) *out = GQ_PPL_GPTQ;
    else if (!strcmp(v, "llama.cpp") || !strcmp(v, "llamacpp")) *out = GQ_PPL_LLAMACPP;
    else return die("--protocol: expected gptq or llama.cpp, got '%s'", v), false;
    return true;
}

// ---------------------------------------------------------------------------
// --device of ppl / generate: checked (and the CUDA plug-in loaded) before the
// model is; prints the device. Returns nonzero after an error message.
int use_device(const char *cmd, const char *device) {
    if (!device || !strcmp(device, "cpu")) return 0;
    if (gq_set_device(device) != GQ_OK) return die("%s: %s", cmd, gq_last_error()), 1; // names checked there
    fprintf(stderr, "%s: device %s\n", cmd, gq_device_name());
    return 0;
}

static const char *PPL_HELP =
    "usage: gptvq ppl MODEL TEXT [options]\n"
    "\n"
    "Perplexity of MODEL (GGUF file, HF directory or llama2.c .bin) on TEXT.\n"
    "\n"
    "  --protocol gptq|llama.cpp  how the text is windowed and scored (default gptq)\n"
    "      gptq:      what GPTQ, GPTVQ, AQLM and QuIP# report. WikiText files (wiki.*.raw,\n"
    "                 or --wikitext) are the dataset rows joined with \"\\n\\n\" (a row is a\n"
    "                 line with its newline; a blank line is an empty row); other files as is.\n"
    "                 Tokenized once with one BOS at the start if the model adds BOS, cut\n"
    "                 into non-overlapping windows of --ctx tokens (remainder dropped); every\n"
    "                 position after the first of each window is scored; ppl = exp(mean NLL).\n"
    "      llama.cpp: what llama.cpp's perplexity tool reports: the raw file, windows of\n"
    "                 --ctx (default 512), each window's first token replaced by BOS when\n"
    "                 the model adds BOS (as llama.cpp does), only the second half of each\n"
    "                 window scored.\n"
    "  --ctx N               window length (default: gptq 2048 or the model's context if\n"
    "                        smaller; llama.cpp 512)\n"
    "  --max-windows N       score only the first N windows (default all)\n"
    "  --wikitext / --no-wikitext  force the WikiText row joining on/off (gptq protocol)\n"
    "  --json                print the result as one JSON object on stdout\n"
    "  --threads N           threads (default: all cores)\n"
    "  --tokenizer FILE      llama2.c tokenizer.bin (default: beside the model)\n"
    "  --dequantize          load every weight as f32 (default: packed GPTVQ, F16, Q8_0, Q4_0,\n"
    "                        Q4_1, Q5_0 and Q5_1 weights stay compressed and run with their kernels)\n"
    "  --device cpu|cuda     where the forward runs (default cpu). cuda: weights copied to the\n"
    "                        GPU compressed (packed VQ without normalisation, F16, Q8_0, Q4_0,\n"
    "                        Q4_1; other formats decoded to f32), TF32 tensor-core GEMMs for\n"
    "                        prefill (environment GPTVQ_CUDA_TF32=0: FP32 GEMMs; GPTVQ_CUDA_GEMV=smem:\n"
    "                        the VQ GEMV with codebooks in shared memory)\n"
    "  --quiet               no progress bar\n"
    "\n"
    "The last line of stdout is machine-readable: ppl=... protocol=... ctx=... windows=...\n";

static int cmd_ppl(int argc, char **argv) {
    const char *model = NULL, *text = NULL, *tok = NULL;
    struct gq_ppl_params p = {.protocol = GQ_PPL_GPTQ, .wikitext = -1, .progress = true};
    bool json = false, dequant = false;
    long threads = 0, ctx = 0, maxw = 0;
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            fputs(PPL_HELP, stdout);
            return 0;
        }
        INT_OPT("--ctx", ctx, 2, 1 << 20);
        INT_OPT("--max-windows", maxw, 0, 1 << 30);
        INT_OPT("--threads", threads, 0, 4096);
        if (!strcmp(a, "--protocol")) {
            const char *v = opt_value(argc, argv, &i);
            if (!v) return 2;
            if (!parse_protocol(v, &p.protocol)) return 2;
            continue;
        }
        if (!strcmp(a, "--tokenizer")) {
            if (!(tok = opt_value(argc, argv, &i))) return 2;
            continue;
        }
        if (!strcmp(a, "--device")) {
            if (!(p.device = opt_value(argc, argv, &i))) return 2;
            continue;
        }
        if (!strcmp(a, "--json")) { json = true; continue; }
        if (!strcmp(a, "--dequantize")) { dequant = true; continue; }
        if (!strcmp(a, "--quiet")) { p.progress = false; continue; }
        if (!strcmp(a, "--wikitext")) { p.wikitext = 1; continue; }
        if (!strcmp(a, "--no-wikitext")) { p.wikitext = 0; continue; }
        if (a[0] == '-' && a[1]) return die("ppl: unknown option '%s' (see gptvq ppl --help)", a), 2;
        if (!model) model = a;
        else if (!text) text = a;
        else return die("ppl: unexpected argument '%s'", a), 2;
    }
    if (!model || !text) {
        fputs(PPL_HELP, stderr);
        return 2;
    }
    p.n_ctx = (int)ctx;
    p.max_windows = (int)maxw;
    if (p.wikitext < 0) p.wikitext = gq_ppl_is_wikitext_file(text);
    if (p.protocol != GQ_PPL_GPTQ) p.wikitext = 0;
    gq_set_threads((int)threads);
    if (use_device("ppl", p.device)) return 2;
    char *buf = NULL;
    size_t len = 0;
    FILE *fp = fopen(text, "rb");
    if (!fp) return die("%s: cannot open: %s", text, strerror(errno));
    fseek(fp, 0, SEEK_END);
    long sz = ftell(fp);
    fseek(fp, 0, SEEK_SET);
    buf = malloc((size_t)(sz > 0 ? sz : 0) + 1);
    if (!buf) return die("out of memory");
    len = fread(buf, 1, (size_t)sz, fp);
    fclose(fp);
    buf[len] = 0;
    struct gq_model *m = NULL;
    if (load_model(model, tok, !dequant, &m)) {
        free(buf);
        return 1;
    }
    const char *proto = p.protocol == GQ_PPL_GPTQ ? "gptq" : "llama.cpp";
    fprintf(stderr, "ppl: protocol %s%s, text %s (%zu bytes)\n", proto,
            p.wikitext == 1 ? " (WikiText rows joined with \\n\\n)" : "", text, len);
    struct gq_ppl_result r;
    enum gq_status s = gq_perplexity(m, buf, len, &p, &r);
    free(buf);
    gq_model_free(m);
    if (s != GQ_OK) return die("%s: %s", text, gq_last_error());
    fprintf(stderr, "ppl: %lld tokens in the text, %d of %d windows of %d, %lld tokens scored, %.1fs; "
                    "windows %.2fs (%.1f tok/s)\n",
            (long long)r.n_tokens_text, r.n_windows, r.n_windows_total, r.n_ctx, (long long)r.n_scored,
            r.seconds, r.seconds_eval, (double)r.n_windows * r.n_ctx / r.seconds_eval);
    if (r.device_f32) fprintf(stderr, "ppl: %d linears ran decoded to f32 on the GPU (no kernel for their format)\n",
                              r.device_f32);
    if (json)
        printf("{\"ppl\": %.6f, \"nll_mean\": %.8f, \"nll_stderr\": %.8f, \"protocol\": \"%s\", \"ctx\": %d, "
               "\"windows\": %d, \"windows_total\": %d, \"tokens_scored\": %lld, \"tokens_text\": %lld, "
               "\"seconds\": %.3f, \"seconds_windows\": %.3f, \"tokens_per_second\": %.2f}\n",
               r.ppl, r.nll_mean, r.nll_stderr, proto, r.n_ctx, r.n_windows, r.n_windows_total,
               (long long)r.n_scored, (long long)r.n_tokens_text, r.seconds, r.seconds_eval,
               (double)r.n_windows * r.n_ctx / r.seconds_eval);
    else
        printf("ppl=%.4f protocol=%s ctx=%d windows=%d/%d scored=%lld nll=%.6f+-%.6f\n", r.ppl, proto, r.n_ctx,
               r.n_windows, r.n_windows_total, (long long)r.n_scored, r.nll_mean, r.nll_stderr);
    return 0;
}

// ---------------------------------------------------------------------------
static const char *GEN_HELP =
    "usage: gptvq generate MODEL [-p PROMPT] [options]\n"
    "\n"
    "Streams a continuation of PROMPT to stdout.\n"
    "\n"
    "  -p, --prompt TEXT   prompt (default: empty, i.e. start from BOS)\n"
    "  -n N                tokens to generate (default 128)\n"
    "  --temp T            temperature; 0 = greedy argmax (default 0)\n"
    "  --top-p P           nucleus sampling threshold (default 0.95; with --temp > 0)\n"
    "  --seed S            RNG seed for sampling (default 42)\n"
    "  --chat              wrap the prompt in the model's chat format (ChatML for SmolLM2)\n"
    "  --ignore-eos        do not stop at end-of-generation tokens\n"
    "  --ids               print generated token ids, one per line, instead of text\n"
    "  --threads N         threads (default: all cores)\n"
    "  --tokenizer FILE    llama2.c tokenizer.bin (default: beside the model)\n"
    "  --dequantize        load every weight as f32 (default: packed GPTVQ, F16, Q8_0, Q4_0,\n"
    "                      Q4_1, Q5_0 and Q5_1 weights stay compressed and run with their kernels)\n"
    "  --device cpu|cuda   where the forward runs (default cpu); cuda: as in gptvq ppl --help\n"
    "\n"
    "Speed (prompt and generation tokens/s) goes to stderr.\n";

static bool print_piece(void *user, int32_t id, const char *bytes, size_t n) {
    bool ids = *(bool *)user;
    if (ids) printf("%d\n", id);
    else fwrite(bytes, 1, n, stdout);
    fflush(stdout);
    return true;
}

static int cmd_generate(int argc, char **argv) {
    const char *model = NULL, *tok = NULL;
    struct gq_gen_params p = {.prompt = "", .n_predict = 128, .temperature = 0, .top_p = 0.95f, .seed = 42,
                              .stop_at_eog = true};
    long n = 128, threads = 0, seed = 42;
    double temp = 0, top_p = 0.95;
    bool ids = false, dequant = false;
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            fputs(GEN_HELP, stdout);
            return 0;
        }
        INT_OPT("-n", n, 0, 1 << 20);
        INT_OPT("--threads", threads, 0, 4096);
        INT_OPT("--seed", seed, 0, 0x7fffffffL);
        FLOAT_OPT("--temp", temp);
        FLOAT_OPT("--top-p", top_p);
        if (!strcmp(a, "-p") || !strcmp(a, "--prompt")) {
            if (!(p.prompt = opt_value(argc, argv, &i))) return 2;
            continue;
        }
        if (!strcmp(a, "--tokenizer")) {
            if (!(tok = opt_value(argc, argv, &i))) return 2;
            continue;
        }
        if (!strcmp(a, "--chat")) { p.chat = true; continue; }
        if (!strcmp(a, "--ignore-eos")) { p.stop_at_eog = false; continue; }
        if (!strcmp(a, "--device")) {
            if (!(p.device = opt_value(argc, argv, &i))) return 2;
            continue;
        }
        if (!strcmp(a, "--ids")) { ids = true; continue; }
        if (!strcmp(a, "--dequantize")) { dequant = true; continue; }
        if (a[0] == '-' && a[1]) return die("generate: unknown option '%s' (see gptvq generate --help)", a), 2;
        if (!model) model = a;
        else return die("generate: unexpected argument '%s'", a), 2;
    }
    if (!model) {
        fputs(GEN_HELP, stderr);
        return 2;
    }
    p.n_predict = (int)n;
    p.temperature = (float)temp;
    p.top_p = (float)top_p;
    p.seed = (uint64_t)seed;
    gq_set_threads((int)threads);
    if (use_device("generate", p.device)) return 2;
    struct gq_model *m = NULL;
    if (load_model(model, tok, !dequant, &m)) return 1;
    struct gq_gen_stats st;
    enum gq_status s = gq_generate(m, &p, print_piece, &ids, &st);
    gq_model_free(m);
    if (!ids) printf("\n");
    if (s != GQ_OK) return die_status(s);
    fprintf(stderr, "generate: prompt %d tokens in %.3fs (%.1f tok/s), generated %d tokens in %.3fs (%.1f tok/s)\n",
            st.n_prompt, st.prompt_seconds, st.n_prompt / (st.prompt_seconds > 0 ? st.prompt_seconds : 1e-9),
            st.n_generated, st.gen_seconds, st.n_generated / (st.gen_seconds > 0 ? st.gen_seconds : 1e-9));
    if (st.device_f32)
        fprintf(stderr, "generate: %d linears ran decoded to f32 on the GPU (no kernel for their format)\n",
                st.device_f32);
    return 0;
}

// ---------------------------------------------------------------------------
static const char *BENCH_HELP =
    "usage: gptvq bench MODEL [-p N] [-n N] [-t N] [-r N] [-o md|csv|json]\n"
    "\n"
    "Prompt and generation speed, measured as llama.cpp's llama-bench measures them, so\n"
    "that the two tables can be read side by side: test ppN processes N prompt tokens\n"
    "in one batch from an empty context (logits of the last token); tgN decodes N\n"
    "tokens one at a time from an empty context. Tokens: BOS where the model adds one,\n"
    "then pseudo-random ids (fixed seed). Each test runs once to warm up, then R times;\n"
    "t/s is the mean over the repetitions ± their standard deviation.\n"
    "\n"
    "  -p N                prompt tokens (default 512; 0: no prompt test)\n"
    "  -n N                generated tokens (default 128; 0: no generation test)\n"
    "  -t, --threads N     threads (default: the physical cores)\n"
    "  -r N                repetitions (default 5)\n"
    "  -o md|csv|json      output: a Markdown table (default), CSV or JSON lines\n"
    "  --dequantize        every weight as f32 (default: the compressed kernels)\n"
    "  --device cpu|cuda   where the forward runs (default cpu)\n"
    "\n"
    "Columns: model (architecture, parameters, format of the block linears), size (the\n"
    "weights as held in memory), params, backend (with the CPU kernels in use), threads,\n"
    "test, t/s. CSV and JSON add bytes_per_token (the weights one decoded token reads:\n"
    "block linears, output head, norms) and every repetition's t/s; JSON also\n"
    "blas_kernels, OpenBLAS's kernel set (prompts use its sgemm). An OPENBLAS_CORETYPE in\n"
    "the environment overrides OpenBLAS's own choice; bench says so on stderr.\n";

static int cmd_bench(int argc, char **argv) {
    const char *model = NULL, *fmt = "md", *device = NULL;
    long np = 512, ng = 128, threads = 0, reps = 5;
    bool dequant = false;
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            fputs(BENCH_HELP, stdout);
            return 0;
        }
        INT_OPT("-p", np, 0, 1 << 20);
        INT_OPT("-n", ng, 0, 1 << 20);
        INT_OPT("-t", threads, 0, 4096);
        INT_OPT("--threads", threads, 0, 4096);
        INT_OPT("-r", reps, 1, 1000);
        if (!strcmp(a, "-o")) {
            if (!(fmt = opt_value(argc, argv, &i))) return 2;
            if (strcmp(fmt, "md") && strcmp(fmt, "csv") && strcmp(fmt, "json"))
                return die("bench: -o expects md, csv or json, got '%s'", fmt), 2;
            continue;
        }
        if (!strcmp(a, "--device")) {
            if (!(device = opt_value(argc, argv, &i))) return 2;
            continue;
        }
        if (!strcmp(a, "--dequantize")) { dequant = true; continue; }
        if (a[0] == '-' && a[1]) return die("bench: unknown option '%s' (see gptvq bench --help)", a), 2;
        if (!model) model = a;
        else return die("bench: unexpected argument '%s'", a), 2;
    }
    if (!model) {
        fputs(BENCH_HELP, stderr);
        return 2;
    }
    if (np == 0 && ng == 0) return die("bench: nothing to measure (-p 0 and -n 0)"), 2;
    gq_set_threads((int)threads);
    const int nt = threads > 0 ? (int)threads : gq_default_threads();
    if (use_device("bench", device)) return 2;
    struct gq_model *m = NULL;
    if (load_model(model, NULL, !dequant, &m)) return 1;
    struct gq_model_info mi;
    gq_model_get_info(m, &mi);
    char desc[128], backend[32];
    snprintf(desc, sizeof desc, "%s %.1fM %s", mi.arch, (double)mi.n_params / 1e6, mi.linears_desc);
    snprintf(backend, sizeof backend, "%s", device && !strcmp(device, "cuda") ? "CUDA" : "CPU");
    if (!device || strcmp(device, "cuda")) {
        snprintf(backend, sizeof backend, "CPU %s", gq_cpu_kernels());
    }
    const long tests[2][2] = {{np, 0}, {0, ng}};
    // the prefill's float products and attention are OpenBLAS's sgemm
    const char *coretype = getenv("OPENBLAS_CORETYPE");
    if (coretype)
        fprintf(stderr, "note: OPENBLAS_CORETYPE=%s in the environment: OpenBLAS uses its %s kernels, not the ones it "
                        "would pick for this CPU\n", coretype, gq_blas_kernels());
    if (!strcmp(fmt, "md")) {
        printf("| %-30s | %10s | %10s | %-10s | %7s | %15s | %20s |\n", "model", "size", "params", "backend", "threads",
               "test", "t/s");
        printf("| ------------------------------ | ---------: | ---------: | ---------- | ------: | --------------: | "
               "-------------------: |\n");
    } else if (!strcmp(fmt, "csv")) {
        printf("model,model_size,model_n_params,backend,n_threads,n_prompt,n_gen,test,avg_ts,stddev_ts,bytes_per_token,samples_ts\n");
    }
    double *ts = malloc(sizeof(double) * (size_t)reps);
    int rc = 0;
    for (int k = 0; k < 2 && !rc; k++) {
        const long p = tests[k][0], g = tests[k][1];
        if (p + g == 0) continue;
        enum gq_status s = gq_bench(m, (int)p, (int)g, (int)reps, device, ts);
        if (s != GQ_OK) {
            rc = die_status(s);
            break;
        }
        double mean = 0, var = 0;
        for (int r = 0; r < reps; r++) mean += ts[r] / reps;
        for (int r = 0; r < reps; r++) var += (ts[r] - mean) * (ts[r] - mean);
        const double sd = reps > 1 ? sqrt(var / (reps - 1)) : 0;
        char test[32], size[32];
        snprintf(test, sizeof test, "%s%ld", p ? "pp" : "tg", p ? p : g);
        const double mib = mi.bytes_held / (1024.0 * 1024.0);
        if (mib >= 1024) snprintf(size, sizeof size, "%.2f GiB", mib / 1024);
        else snprintf(size, sizeof size, "%.2f MiB", mib);
        if (!strcmp(fmt, "md")) {
            char tsb[48];
            snprintf(tsb, sizeof tsb, "%.2f ± %.2f", mean, sd);
            printf("| %-30s | %10s | %8.2f M | %-10s | %7d | %15s | %20s |\n", desc, size, (double)mi.n_params / 1e6, backend,
                   nt, test, tsb);
        } else {
            char samples[4096] = "";
            for (int r = 0, o = 0; r < reps && o < (int)sizeof samples - 32; r++)
                o += snprintf(samples + o, sizeof samples - (size_t)o, "%s%.4f", r ? (fmt[0] == 'c' ? ";" : ", ") : "", ts[r]);
            if (!strcmp(fmt, "csv"))
                printf("\"%s\",%.0f,%lld,\"%s\",%d,%ld,%ld,%s,%.4f,%.4f,%.0f,\"%s\"\n", desc, mi.bytes_held,
                       (long long)mi.n_params, backend, nt, p, g, test, mean, sd, mi.bytes_per_token, samples);
            else
                printf("{\"model\": \"%s\", \"model_size\": %.0f, \"model_n_params\": %lld, \"backend\": \"%s\", "
                       "\"n_threads\": %d, \"n_prompt\": %ld, \"n_gen\": %ld, \"test\": \"%s\", \"avg_ts\": %.4f, "
                       "\"stddev_ts\": %.4f, \"bytes_per_token\": %.0f, \"blas_kernels\": \"%s\", \"samples_ts\": [%s]}\n",
                       desc, mi.bytes_held, (long long)mi.n_params, backend, nt, p, g, test, mean, sd, mi.bytes_per_token,
                       gq_blas_kernels(), samples);
        }
        fflush(stdout);
    }
    free(ts);
    gq_model_free(m);
    return rc;
}

// ---------------------------------------------------------------------------
static const char *INSPECT_HELP =
    "usage: gptvq inspect FILE [--full]\n"
    "\n"
    "GGUF: header, every metadata key, every tensor (type, shape, bytes, offset) and totals;\n"
    "packed GPTVQ files also a table of every packed matrix (d, k, group size l, stored bits,\n"
    "bytes, bpv) and the total achieved bpv, with the file size split into packed parts,\n"
    "other tensors and header + alignment.\n"
    "HF directory / llama2.c .bin: the model's hyperparameters and tokenizer.\n"
    "  --full   print long strings and arrays in full\n";

static int cmd_inspect(int argc, char **argv) {
    const char *path = NULL;
    bool full = false;
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            fputs(INSPECT_HELP, stdout);
            return 0;
        }
        if (!strcmp(a, "--full")) { full = true; continue; }
        if (a[0] == '-' && a[1]) return die("inspect: unknown option '%s'", a), 2;
        if (!path) path = a;
        else return die("inspect: unexpected argument '%s'", a), 2;
    }
    if (!path) {
        fputs(INSPECT_HELP, stderr);
        return 2;
    }
    unsigned char magic[4] = {0};
    FILE *fp = fopen(path, "rb");
    if (fp) {
        if (fread(magic, 1, 4, fp) != 4) memset(magic, 0, 4);
        fclose(fp);
    }
    if (memcmp(magic, "GGUF", 4) == 0) {
        struct gq_gguf *g = NULL;
        enum gq_status s = gq_gguf_open(path, &g);
        if (s != GQ_OK) return die_status(s);
        gq_gguf_dump(g, stdout, full);
        s = gq_vqpack_summary(g, stdout);
        gq_gguf_close(g);
        return s == GQ_OK ? 0 : die_status(s);
    }
    struct gq_model *m = NULL;
    struct gq_load_params lp = {0};
    enum gq_status s = gq_model_load(path, &lp, &m);
    if (s != GQ_OK) return die_status(s);
    struct gq_model_info in;
    gq_model_get_info(m, &in);
    printf("file: %s\nformat: %s\narch: %s\nname: %s\n", path, in.source_format, in.arch, in.name);
    printf("layers: %d\ndim: %d\nheads: %d\nkv_heads: %d\nhead_dim: %d\nffn: %d\nvocab: %d\nctx: %d\n",
           in.n_layers, in.dim, in.n_heads, in.n_kv_heads, in.head_dim, in.hidden_dim, in.n_vocab, in.ctx_len);
    printf("rope_theta: %g\nrope_layout: %s\nrms_eps: %g\ntied_output: %s\nqkv_bias: %s\nparams: %lld\n",
           in.rope_theta, in.rope_interleaved ? "interleaved" : "rotate-half", in.rms_eps,
           in.tied_output ? "yes" : "no", in.qkv_bias ? "yes" : "no", (long long)in.n_params);
    printf("bos: %d\neos: %d\nadd_bos: %s\n", in.bos_id, in.eos_id, in.add_bos ? "yes" : "no");
    gq_model_free(m);
    return 0;
}


// ---------------------------------------------------------------------------
static const char *QUANT_HELP =
    "usage: gptvq quantize MODEL -o OUT.gguf [options]\n"
    "\n"
    "Quantizes every linear layer of the decoder blocks (embeddings, norms and the head keep\n"
    "their precision) and writes OUT.gguf with the quantized weights (GPTVQ: packed; RTN /\n"
    "GPTQ: GGUF Q4_0 / Q4_1 / Q5_0 / Q5_1 / Q8_0 blocks where the grid is one, see --packed,\n"
    "else dequantized F32, \"fake-quant\"), gptvq.* metadata, and a JSON report OUT.gguf.report.json with\n"
    "each linear's relative output error (GPTQ: also RTN's error through the same Hessian;\n"
    "a layer where GPTQ would lose to RTN keeps RTN's result and says so). MODEL is a GGUF\n"
    "file or a Hugging Face directory (config.json, *.safetensors F32/F16/BF16, sharded or not,\n"
    "tokenizer.json): a directory is first written as a GGUF of the same weights beside OUT\n"
    "(OUT.hf-source.gguf, removed at the end; its size on disk is needed once more), so the\n"
    "output carries the architecture and the tokenizer as GGUF metadata either way.\n"
    "\n"
    "Several processes, on one machine or many (a build with Open MPI: gptvq version):\n"
    "  mpirun -np N gptvq quantize MODEL -o OUT.gguf [options]\n"
    "splits the calibration windows between the N ranks (their Hessians summed exactly) and\n"
    "each GPTVQ linear by row slabs (--row-slab; an RTN / GPTQ linear goes whole to one\n"
    "rank); rank 0 alone writes OUT and the checkpoint. The file is byte-identical to a\n"
    "one-process run's with the same --threads per process, and a checkpoint resumes with\n"
    "any N. MODEL, the calibration text and the checkpoint folder must be where every rank\n"
    "sees them (a directory MODEL is written as GGUF by rank 0). Each rank's default threads:\n"
    "its share of the cores. With --device cuda each rank takes GPU (its number on its\n"
    "machine mod the GPUs there) and the ranks exchange through NCCL (not byte-identical\n"
    "across N: each GPU sums its windows' Hessian in double). A rank that fails or dies ends\n"
    "the run (no output file; finished blocks stay in the checkpoint). mpirun -q keeps\n"
    "mpirun's own notices out of the output.\n"
    "\n"
    "  --method rtn|gptq|gptvq\n"
    "                        round-to-nearest, GPTQ, or GPTVQ vector quantization (default gptq)\n"
    "  --wbits N             bits per weight, 2..8 (default 4)\n"
    "  --group-size N        columns per scale/zero group; 0 = one per row (default 128)\n"
    "  --sym                 symmetric grid (default asymmetric min/max)\n"
    "  --mse                 per-group clipping search (GPTQ's --mse)\n"
    "  --act-order           GPTQ: quantize columns by descending diag(H), group scales from\n"
    "                        the original weights (default; on SmolLM2 W4 g128 it lowers the\n"
    "                        perplexity GPTQ reaches, see docs/results.md)\n"
    "  --no-act-order        GPTQ: columns left to right, group scales from the updated weights\n"
    "  --static-groups       GPTQ: group scales from the original weights\n"
    "  --sink-weight F       GPTQ: weight of each calibration window's first token in the\n"
    "                        Hessians (default seqlen/32, e.g. 16 for 512-token windows; 1 =\n"
    "                        plain GPTQ). LLMs make the first token an attention sink that\n"
    "                        every later token reads, so its errors reach the whole window;\n"
    "                        on SmolLM2 W4 g128 the default cuts GPTQ's perplexity loss by\n"
    "                        a third (docs/results.md)\n"
    "  --token-weights none|residual\n"
    "                        GPTQ: residual = weight each token in the Hessians of o and down\n"
    "                        by dim/|residual after the add|^2 (default none; measured slightly\n"
    "                        worse on SmolLM2, kept for experiments)\n"
    "  --fp-target           GPTQ / GPTVQ: asymmetric calibration. The source model runs beside\n"
    "                        the quantized one, and each linear is quantized to reproduce the\n"
    "                        source model's output on the source model's inputs instead of its\n"
    "                        own output on the quantized inputs (off by default; one process,\n"
    "                        CPU, cannot resume from a checkpoint yet; twice the calibration passes)\n"
    "  --rotate, --no-rotate incoherence processing (QuIP#): each linear quantized in a randomized\n"
    "                        Hadamard basis of its input (W R^T with the Hessian R H R^T; R drawn\n"
    "                        from --seed). Default: on for GPTVQ (it won at 2.125, 3.125 and\n"
    "                        4.125 bpv on both texts, docs/results.md), off for RTN / GPTQ, whose\n"
    "                        GGUF blocks cannot carry it (--rotate with --fake-quant only). Packed\n"
    "                        files store it (format version 2); the runtime rotates each input\n"
    "                        once per token. The output head is not rotated\n"
    "  --finetune N          GPTVQ: after each block, N Adam steps on the codebooks of its seven\n"
    "                        linears (indices fixed) against the source block's output on the\n"
    "                        calibration windows; kept only if the block's error drops. Default:\n"
    "                        20 for packed GPTVQ at 2 to 4 index bits per value (2 < --bpv <= 5)\n"
    "                        with calibration passes on the CPU (on SmolLM2 with 128 x 512\n"
    "                        calibration tokens it lowered both texts' perplexity at 2.125, 3.125\n"
    "                        and 4.125, docs/results.md), else 0: off.\n"
    "                        CPU only; under mpirun every rank gathers the windows it reads\n"
    "                        and runs the same steps (the file does not depend on the ranks;\n"
    "                        its time does not shrink with them)\n"
    "  --ft-lr F             --finetune step size, relative to each codebook's largest entry\n"
    "                        (default 0.003)\n"
    "  --ft-batch N          --finetune: calibration windows per step, taken in turn (default 4;\n"
    "                        0: all)\n"
    "  --damp F              GPTQ damping, fraction of mean(diag H) (default 0.01)\n"
    "  --block-size N        GPTQ lazy batch size (default 128)\n"
    "  --calib FILE          calibration text (GPTQ); WikiText files are joined as in ppl.\n"
    "                        Never calibrate on the evaluation text. Without --calib the\n"
    "                        calibration is data-free: N sequences sampled from the model itself\n"
    "                        (first token uniform over the vocabulary, then temperature-1 sampling,\n"
    "                        end-of-text tokens masked; seeded by --seed)\n"
    "  --calib-mix N         with --calib: N of the windows sampled from the model as without\n"
    "                        --calib, the others drawn from the text (default 0: text only)\n"
    "  --nsamples N          calibration windows (default 128)\n"
    "  --seqlen N            tokens per window (default 2048, data-free or --calib-mix 512; at most\n"
    "                        the model's context)\n"
    "  --seed N              window sampling seed (default 0)\n"
    "  --save-hessians DIR   GPTQ: also write each linear group's Hessian to DIR\n"
    "                        (blk.<layer>.<input>.hessian, with its token count)\n"
    "  --load-hessians DIR   GPTQ: take every Hessian from DIR instead of calibrating (no\n"
    "                        --calib, no forward passes). Later blocks' Hessians depend on how\n"
    "                        earlier blocks were quantized: with the saving run's settings the\n"
    "                        output is identical; with others it reuses that run's curvature.\n"
    "  --bit-alloc DIR       GPTVQ: budgets per linear (beyond the paper). Each block linear is\n"
    "                        quantized with its Hessian from DIR (--save-hessians of an earlier\n"
    "                        run of this model) at --bpv + j/d, j = -1..2; its loss sensitivity is\n"
    "                        the calibration NLL with it alone quantized at --bpv; each linear\n"
    "                        gets the budget that minimises the summed estimated loss within the\n"
    "                        bits of every linear at --bpv; then the run quantizes each linear at\n"
    "                        its budget (first 4 quantizations and one forward per linear).\n"
    "                        Experimental: on stories260K it lost (docs/results.md, \"Bit\n"
    "                        allocation\")\n"
    "  --checkpoint DIR      where each finished block is saved (default OUT.gguf.ckpt). A run\n"
    "                        that stops (killed, out of time, --stop-after) keeps DIR; the same\n"
    "                        command run again restores the finished blocks, replays their\n"
    "                        calibration forward and continues: its output is byte-identical\n"
    "                        to an uninterrupted run with the same --threads. DIR written with\n"
    "                        other settings or another model is refused. Removed after success.\n"
    "  --no-checkpoint       no checkpoint (streamed GPTQ / RTN runs then hold every quantized\n"
    "                        block in memory until the file is written)\n"
    "  --stream / --no-stream\n"
    "                        streaming: the linears stay in the file's F16/Q8_0/Q4_x form,\n"
    "                        mapped, and each block is decoded when it is quantized; finished\n"
    "                        blocks leave memory (packed GPTVQ keeps its packed form, f32\n"
    "                        output is read back from the checkpoint when the file is written),\n"
    "                        so memory holds about one block in f32;\n"
    "                        no-stream: every weight is loaded as f32 up front. Same output\n"
    "                        either way with --calib or --load-hessians, where streaming is\n"
    "                        the default. Data-free calibration samples its windows through\n"
    "                        the whole model, which streaming runs with the compressed\n"
    "                        kernels (slightly different windows), so there the default is\n"
    "                        --no-stream and results match earlier releases\n"
    "  --stop-after N        stop once N blocks are quantized and checkpointed (exit code 3;\n"
    "                        split a long run into pieces: rerun without it to continue)\n"
    "  --threads N           threads (default: all cores)\n"
    "  --device cpu|cuda     where the calibration passes (block forwards and Hessian sums)\n"
    "                        and the quantizers' numerical primitives (GEMMs, Cholesky\n"
    "                        factors and solves, the codebook update's normal equations, EM\n"
    "                        of large groups) run; default cpu, the reference. cuda needs\n"
    "                        build/libgptvq_cuda.so (built when nvcc is found) and a GPU;\n"
    "                        results match the CPU's within rounding, not bit for bit\n"
    "  --quiet               no progress bar\n"
    "\n"
    "GPTVQ (--method gptvq; the calibration, Hessian, --act-order, --damp, --block-size and\n"
    "--sink-weight options above apply too):\n"
    "  --bpv F               target bits per value (default 2.125). Index bits per value b = the\n"
    "                        largest integer below F, k = 2^(b*d) centroids, and the group size\n"
    "                        l = k*d*b_c / (F - b) from the paper's formula bpv = log2(k)/d +\n"
    "                        k*d*b_c/l (b_c = codebook bits). 2D 2.125 -> k 16, l 2048; 4D 2.125 ->\n"
    "                        k 256, l 65536. The run prints k, l and the achieved bpv counted\n"
    "                        from every stored bit (codebook scales, normalisation codes,\n"
    "                        outliers, column order included), which is slightly above F.\n"
    "  --vq-dim D            VQ dimension d: 1, 2, 4 or 8. Default: 4 where --bpv leaves 2 index\n"
    "                        bits per value (2 < --bpv <= 3: k 256 over 4-D vectors; on SmolLM2 at\n"
    "                        2.125 it beat 2D by 11-12 % on both texts) and every block linear\n"
    "                        holds half a 4-D group or more, with none of --k, --group-size,\n"
    "                        --residual 2, --outlier-frac, --cb-svd, --bit-alloc; else 2.\n"
    "                        --head-bpv takes the same rule at its own budget. The run prints\n"
    "                        what it chose\n"
    "  --k N                 centroids per codebook (overrides the one from --bpv)\n"
    "  --group-size N        with gptvq: weights per codebook l (overrides the one from --bpv)\n"
    "  --em-iters N          EM iterations of each codebook's initialisation (default 100)\n"
    "  --em-init mahalanobis|kmeans++\n"
    "                        EM seeds (default mahalanobis: points sorted by Mahalanobis distance\n"
    "                        to their mean, k of them evenly spaced)\n"
    "  --cb-update exact|gd|none\n"
    "                        codebook update after all assignments (default exact: the convex\n"
    "                        quadratic solved by Cholesky, or conjugate gradients when large; gd:\n"
    "                        the paper's gradient descent, --gd-iters steps with exact line\n"
    "                        search). A result that does not lower the layer error is dropped.\n"
    "  --gd-iters N          steps of --cb-update gd (default 25)\n"
    "  --cb-format int8|fp16|f32\n"
    "                        codebook storage (default int8 with an fp16 scale per codebook)\n"
    "  --feedback exact|diag error feedback of the d columns: exact d x d solve (default) or the\n"
    "                        reference code's diagonal-only update\n"
    "  --full-subhessian     assign with the full d x d inverse sub-Hessian instead of its diagonal\n"
    "  --norm-block N        blockwise normalisation: per N weights of a row, a 4-bit log2 scale\n"
    "                        (default 64; 0 = off; paid from the overhead budget)\n"
    "  --residual 1|2        2 = a second codebook quantizes the residual (VPTQ); counted in bpv\n"
    "  --outlier-frac F      fraction of columns (highest |W_c|^2 H_cc) kept in fp16 (default 0)\n"
    "  --row-slab N          GPTVQ and GPTQ: rows per unit of work (default 256; 0 = the whole\n"
    "                        matrix). GPTVQ: runs of whole codebook groups, each with its own\n"
    "                        codebook update, kept only where it lowers that unit's error;\n"
    "                        GPTQ: each falls back to RTN on its own. Under mpirun the ranks\n"
    "                        split a linear by them; the file does not depend on the number\n"
    "                        of ranks\n"
    "  --packed              write the packed GPTVQ format (default; docs/format.md): indices,\n"
    "                        codebooks and scales as GGUF tensors, the file size follows the\n"
    "                        achieved bpv; gptvq ppl / generate run it directly.\n"
    "                        RTN / GPTQ with --group-size 32 and --wbits 4 or 5 (or 8 with\n"
    "                        --sym): the default too. The grid is then the GGUF block's own\n"
    "                        (f16 scale, and min when asymmetric) and the linears are written\n"
    "                        as Q4_1 / Q5_1 (--sym: Q4_0 / Q5_0 / Q8_0) blocks that llama.cpp\n"
    "                        runs; a linear whose width is not whole blocks of 32 stays F32.\n"
    "                        Other RTN / GPTQ grids are written as F32\n"
    "  --fake-quant          write the dequantized weights as F32 instead (research)\n"
    "  --head-bpv B          GPTVQ: quantize the output head too (and with it the token embedding\n"
    "                        when they are tied, as in SmolLM2), at B bits per value with the\n"
    "                        same --vq-dim, codebook format and normalisation, once every block\n"
    "                        is done, through the Hessian of the final norm of the calibration\n"
    "                        activations (default: the head as in the source). Counted in the\n"
    "                        file size and reported as its own line, not in the linears' bpv.\n"
    "                        Caution: a tied embedding needs more bits than the linears; on\n"
    "                        SmolLM2 4 bits break its chat answers (docs/results.md)\n"
    "  --embed-type keep|f16|q8_0|q4_0\n"
    "                        the token embedding and output head (tied or not) as in the source\n"
    "                        (default keep) or re-encoded from its values with llama.cpp's\n"
    "                        reference rounding when the file is written; counted in the file\n"
    "                        size, not in the bits per value of the linears\n"
    "  --cb-svd R            --vq-dim 1: codebook SVD (paper App. H). The sorted codebooks of a\n"
    "                        matrix are stacked and factored to rank R <= k: a group stores R\n"
    "                        values (in --cb-format, one scale per factor column) instead of k,\n"
    "                        so --bpv gives l = R*b_c/overhead (R = k/2 halves l). The factors\n"
    "                        are refined by alternating exact least squares (--cb-update exact;\n"
    "                        none: truncation only). Default 0 = off.\n";

const char *base_name_of(const char *p) {
    const char *b = strrchr(p, '/');
    return b ? b + 1 : p;
}

// "gptvq ARG ..." with arguments holding spaces or quotes single-quoted, as a
// shell would need them (recorded in the output's JSON report).
static void command_line(int argc, char **argv, char *buf, size_t cap) {
    size_t n = (size_t)snprintf(buf, cap, "gptvq");
    for (int i = 1; i < argc && n < cap; i++) {
        const bool quote = !argv[i][0] || strpbrk(argv[i], " \t'\"$\\`|&;<>()*?!#~") != NULL;
        n += (size_t)snprintf(buf + n, cap - n, quote ? " '%s'" : " %s", argv[i]);
    }
}

// The temporary GGUF of a Hugging Face source goes on Ctrl-C / SIGTERM too.
static char tmp_on_signal[4096];
static void remove_tmp_and_exit(int sig) {
    if (tmp_on_signal[0]) unlink(tmp_on_signal); // async-signal-safe
    signal(sig, SIG_DFL);
    raise(sig);
}

// "f16", "q8_0", "q4_0" as an enum gq_export_type; -1 for anything else.
static int export_type(const char *v) {
    return !strcmp(v, "f16") ? GQ_EXPORT_F16 : !strcmp(v, "q8_0") ? GQ_EXPORT_Q8_0 : !strcmp(v, "q4_0") ? GQ_EXPORT_Q4_0 : -1;
}

static void unlink_tmp(const char *tmp) {
    if (tmp[0]) unlink(tmp);
    tmp_on_signal[0] = 0;
}

// A Hugging Face directory is first written as a GGUF of the same weights
// (gq_hf_to_gguf: llama.cpp's layout, the source dtypes) beside OUT, as
// OUT.hf-source.gguf; quantize and export then read it block by block like
// any GGUF, and the output carries its metadata (architecture, tokenizer).
// *model becomes that file; tmp its path, to remove when done ("" for a GGUF
// source). Returns 0 or an exit code (the error printed).
static int hf_as_gguf(const char *cmd, const char **model, const char *out, bool progress, char tmp[4096]) {
    tmp[0] = 0;
    const char *fmt;
    if (gq_model_path_format(*model, &fmt) != GQ_OK) return die("%s", gq_last_error()), 1;
    if (!strcmp(fmt, "gguf")) return 0;
    if (strcmp(fmt, "safetensors") != 0)
        return die("%s: %s needs a GGUF file or a Hugging Face directory (this one is %s)", *model, cmd, fmt), 2;
    if ((size_t)snprintf(tmp, 4096, "%s.hf-source.gguf", out) >= 4096) return die("%s: path too long", out), 2;
    memcpy(tmp_on_signal, tmp, 4096);
    for (int k = 0; k < 2; k++) { // a signal the caller ignores (nohup, `cmd &` in a script) stays ignored
        const int sig = k ? SIGTERM : SIGINT;
        struct sigaction old;
        if (sigaction(sig, NULL, &old) == 0 && old.sa_handler != SIG_IGN) signal(sig, remove_tmp_and_exit);
    }
    const double t0 = gq_time_s();
    enum gq_status s = gq_hf_to_gguf(*model, tmp);
    if (s != GQ_OK) {
        tmp[0] = tmp_on_signal[0] = 0;
        return die_status(s);
    }
    if (progress)
        fprintf(stderr, "%s: %s written as GGUF in %.1fs (%s, removed at the end)\n", cmd, *model, gq_time_s() - t0, tmp);
    *model = tmp;
    return 0;
}

static int cmd_quantize(int argc, char **argv) {
    const char *model = NULL, *out = NULL;
    struct gq_quantize_params p;
    gq_quantize_params_default(&p);
    long wbits = p.wbits, group = p.group_size, block = p.block_size, nsamples = p.nsamples, seqlen = 0, seed = 0,
         threads = 0, calib_mix = 0, finetune = p.finetune_steps, ft_batch = p.ft_batch;
    double ft_lr = p.ft_lr;
    double damp = p.damp, sink_weight = p.sink_weight, bpv = p.vq.bpv, outlier_frac = 0;
    long vq_dim = p.vq.dim, vq_k = 0, em_iters = p.vq.em_iters, gd_iters = p.vq.gd_iters, norm_block = p.vq.norm_block, row_slab = p.vq.slab_rows,
         residual = 1, cb_svd = 0;
    int packed = -1; // -1: default (packed for gptvq)
    bool group_given = false, no_ckpt = false;
    int stream = -1; // -1: default (streaming unless data-free)
    long stop_after = 0;
    const char *ckpt = NULL, *device = "cpu";
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            fputs(QUANT_HELP, stdout);
            return 0;
        }
        INT_OPT("--wbits", wbits, 2, 8);
        if (!strcmp(a, "--group-size")) group_given = true;
        INT_OPT("--group-size", group, 0, 1L << 30);
        INT_OPT("--vq-dim", vq_dim, 1, 8);
        INT_OPT("--k", vq_k, 2, 65536);
        INT_OPT("--em-iters", em_iters, 0, 100000);
        INT_OPT("--gd-iters", gd_iters, 0, 100000);
        INT_OPT("--norm-block", norm_block, 0, 4096);
        INT_OPT("--row-slab", row_slab, 0, 1 << 30);
        INT_OPT("--residual", residual, 1, 2);
        INT_OPT("--cb-svd", cb_svd, 0, 65536);
        FLOAT_OPT("--bpv", bpv);
        FLOAT_OPT("--outlier-frac", outlier_frac);
        INT_OPT("--block-size", block, 1, 1 << 20);
        INT_OPT("--nsamples", nsamples, 1, 1 << 20);
        INT_OPT("--calib-mix", calib_mix, 1, 1 << 20);
        INT_OPT("--finetune", finetune, 0, 100000);
        FLOAT_OPT("--ft-lr", ft_lr);
        INT_OPT("--ft-batch", ft_batch, 0, 1 << 20);
        INT_OPT("--seqlen", seqlen, 2, 1 << 20);
        INT_OPT("--seed", seed, 0, 0x7fffffffL);
        INT_OPT("--threads", threads, 0, 4096);
        INT_OPT("--stop-after", stop_after, 1, 1 << 20);
        FLOAT_OPT("--damp", damp);
        FLOAT_OPT("--sink-weight", sink_weight);
        if (!strcmp(a, "-o") || !strcmp(a, "--output")) {
            if (!(out = opt_value(argc, argv, &i))) return 2;
            continue;
        }
        if (!strcmp(a, "--calib")) {
            if (!(p.calib_path = opt_value(argc, argv, &i))) return 2;
            continue;
        }
        if (!strcmp(a, "--save-hessians")) {
            if (!(p.save_hessians = opt_value(argc, argv, &i))) return 2;
            continue;
        }
        if (!strcmp(a, "--checkpoint")) {
            if (!(ckpt = opt_value(argc, argv, &i))) return 2;
            continue;
        }
        if (!strcmp(a, "--no-checkpoint")) { no_ckpt = true; continue; }
        if (!strcmp(a, "--no-stream")) { stream = 0; continue; }
        if (!strcmp(a, "--stream")) { stream = 1; continue; }
        if (!strcmp(a, "--device")) {
            if (!(device = opt_value(argc, argv, &i))) return 2;
            continue;
        }
        if (!strcmp(a, "--bit-alloc")) {
            if (!(p.bit_alloc = opt_value(argc, argv, &i))) return 2;
            continue;
        }
        if (!strcmp(a, "--load-hessians")) {
            if (!(p.load_hessians = opt_value(argc, argv, &i))) return 2;
            continue;
        }
        if (!strcmp(a, "--method")) {
            const char *v = opt_value(argc, argv, &i);
            if (!v) return 2;
            if (!strcmp(v, "rtn")) p.method = GQ_METHOD_RTN;
            else if (!strcmp(v, "gptq")) p.method = GQ_METHOD_GPTQ;
            else if (!strcmp(v, "gptvq")) p.method = GQ_METHOD_GPTVQ;
            else return die("--method: expected rtn, gptq or gptvq, got '%s'", v), 2;
            continue;
        }
        if (!strcmp(a, "--em-init")) {
            const char *v = opt_value(argc, argv, &i);
            if (!v) return 2;
            if (!strcmp(v, "mahalanobis")) p.vq.em_init = GQ_VQ_INIT_MAHALANOBIS;
            else if (!strcmp(v, "kmeans++")) p.vq.em_init = GQ_VQ_INIT_KMEANSPP;
            else return die("--em-init: expected mahalanobis or kmeans++, got '%s'", v), 2;
            continue;
        }
        if (!strcmp(a, "--cb-update")) {
            const char *v = opt_value(argc, argv, &i);
            if (!v) return 2;
            if (!strcmp(v, "exact")) p.vq.cb_update = GQ_CB_UPDATE_EXACT;
            else if (!strcmp(v, "gd")) p.vq.cb_update = GQ_CB_UPDATE_GD;
            else if (!strcmp(v, "none")) p.vq.cb_update = GQ_CB_UPDATE_NONE;
            else return die("--cb-update: expected exact, gd or none, got '%s'", v), 2;
            continue;
        }
        if (!strcmp(a, "--cb-format")) {
            const char *v = opt_value(argc, argv, &i);
            if (!v) return 2;
            if (!strcmp(v, "int8")) p.vq.cb_format = GQ_CB_INT8;
            else if (!strcmp(v, "fp16")) p.vq.cb_format = GQ_CB_FP16;
            else if (!strcmp(v, "f32")) p.vq.cb_format = GQ_CB_F32;
            else return die("--cb-format: expected int8, fp16 or f32, got '%s'", v), 2;
            continue;
        }
        if (!strcmp(a, "--feedback")) {
            const char *v = opt_value(argc, argv, &i);
            if (!v) return 2;
            if (!strcmp(v, "exact")) p.vq.feedback_diag = false;
            else if (!strcmp(v, "diag")) p.vq.feedback_diag = true;
            else return die("--feedback: expected exact or diag, got '%s'", v), 2;
            continue;
        }
        if (!strcmp(a, "--full-subhessian")) { p.vq.full_subhessian = true; continue; }
        if (!strcmp(a, "--token-weights")) {
            const char *v = opt_value(argc, argv, &i);
            if (!v) return 2;
            if (!strcmp(v, "residual")) p.token_weights = GQ_TW_RESIDUAL;
            else if (!strcmp(v, "none")) p.token_weights = GQ_TW_NONE;
            else return die("--token-weights: expected residual or none, got '%s'", v), 2;
            continue;
        }
        if (!strcmp(a, "--sym")) { p.sym = true; continue; }
        if (!strcmp(a, "--mse")) { p.mse_clip = true; continue; }
        if (!strcmp(a, "--act-order")) { p.act_order = true; continue; }
        if (!strcmp(a, "--no-act-order")) { p.act_order = false; continue; }
        if (!strcmp(a, "--static-groups")) { p.static_groups = true; continue; }
        if (!strcmp(a, "--fp-target")) { p.fp_target = true; continue; }
        if (!strcmp(a, "--rotate")) { p.rotate = 1; continue; }
        if (!strcmp(a, "--no-rotate")) { p.rotate = 0; continue; }
        if (!strcmp(a, "--packed")) { packed = 1; continue; }
        if (!strcmp(a, "--fake-quant")) { packed = 0; continue; }
        if (!strcmp(a, "--quiet")) { p.progress = false; continue; }
        FLOAT_OPT("--head-bpv", p.head_bpv);
        if (!strcmp(a, "--embed-type")) {
            const char *v = opt_value(argc, argv, &i);
            if (!v) return 2;
            if (strcmp(v, "keep") != 0 && export_type(v) < 0)
                return die("--embed-type: expected keep, f16, q8_0 or q4_0, got '%s'", v), 2;
            p.embed_type = export_type(v); // keep: -1
            continue;
        }
        if (a[0] == '-' && a[1]) return die("quantize: unknown option '%s' (see gptvq quantize --help)", a), 2;
        if (!model) model = a;
        else return die("quantize: unexpected argument '%s'", a), 2;
    }
    if (!model || !out) {
        fputs(QUANT_HELP, stderr);
        return 2;
    }
    if (!(damp >= 0 && damp < 10)) return die("--damp: expected a value in [0, 10), got %g", damp), 2;
    if (sink_weight != p.sink_weight && !(sink_weight >= 1 && sink_weight <= 1e6))
        return die("--sink-weight: expected a value in [1, 1e6], got %g", sink_weight), 2;
    p.sink_weight = (float)sink_weight;
    if (p.method == GQ_METHOD_RTN && (p.save_hessians || p.load_hessians))
        return die("quantize: --save-hessians/--load-hessians need --method gptq or gptvq"), 2;
    if (!(bpv > 0 && bpv <= 16)) return die("--bpv: expected a value in (0, 16], got %g", bpv), 2;
    if (!(outlier_frac >= 0 && outlier_frac < 0.5))
        return die("--outlier-frac: expected a value in [0, 0.5), got %g", outlier_frac), 2;
    if (vq_dim && vq_dim != 1 && vq_dim != 2 && vq_dim != 4 && vq_dim != 8)
        return die("--vq-dim must be 1, 2, 4 or 8 (got %ld)", vq_dim), 2;
    if (vq_k && (vq_k & (vq_k - 1))) return die("--k must be a power of two (got %ld)", vq_k), 2;
    p.vq.bpv = bpv;
    p.vq.dim = (int)vq_dim;
    p.vq.k = (int)vq_k;
    p.vq.group = p.method == GQ_METHOD_GPTVQ && group_given ? group : 0;
    p.vq.em_iters = (int)em_iters;
    p.vq.gd_iters = (int)gd_iters;
    p.vq.norm_block = (int)norm_block;
    p.vq.slab_rows = (int)row_slab;
    p.vq.stages = (int)residual;
    p.vq.outlier_frac = outlier_frac;
    p.vq.cb_svd_rank = (int)cb_svd;
    p.fake_quant = packed == 0;
    if (p.save_hessians && p.load_hessians) return die("quantize: --save-hessians and --load-hessians exclude each other"), 2;
    if (p.bit_alloc && (p.method != GQ_METHOD_GPTVQ || p.fake_quant))
        return die("quantize: --bit-alloc allocates packed GPTVQ budgets (--method gptvq)"), 2;
    if (p.bit_alloc && (vq_k || p.vq.group))
        return die("quantize: --bit-alloc chooses k and the group size of each linear: drop --k / --group"), 2;
    if (p.bit_alloc && access(p.bit_alloc, R_OK | X_OK) != 0)
        return die("%s: cannot read the Hessian folder: %s", p.bit_alloc, strerror(errno));
    if (p.load_hessians && access(p.load_hessians, R_OK | X_OK) != 0)
        return die("%s: cannot read the Hessian folder: %s", p.load_hessians, strerror(errno));
    if (p.save_hessians && mkdir(p.save_hessians, 0777) != 0 && errno != EEXIST)
        return die("%s: cannot create the Hessian folder: %s", p.save_hessians, strerror(errno));
    // Fail before hours of calibration, not after: the output folder must be writable.
    char dir[4096];
    snprintf(dir, sizeof dir, "%s", out);
    char *slash = strrchr(dir, '/');
    if (slash) *slash = 0;
    if (access(slash ? (dir[0] ? dir : "/") : ".", W_OK) != 0)
        return die("%s: cannot write into the output folder: %s", out, strerror(errno));
    p.wbits = (int)wbits;
    p.group_size = (int)group;
    if (packed == 1 && p.method != GQ_METHOD_GPTVQ && gq_quantize_gguf_type(&p) < 0)
        return die("--packed: W%ld g%ld%s is no GGUF block type; RTN and GPTQ pack groups of 32 with 4 or 5 bits "
                   "(Q4_1 / Q5_1, --sym: Q4_0 / Q5_0) or 8 bits --sym (Q8_0)", wbits, group, p.sym ? " --sym" : ""), 2;
    p.block_size = (int)block;
    p.nsamples = (int)nsamples;
    if (calib_mix && !p.calib_path) return die("--calib-mix: give the text with --calib (without it every window is sampled)"), 2;
    if (calib_mix > nsamples) return die("--calib-mix %ld: more than the %ld windows of --nsamples", calib_mix, nsamples), 2;
    p.calib_mix = (int)calib_mix;
    if (finetune > 0 && p.method != GQ_METHOD_GPTVQ) return die("--finetune tunes packed GPTVQ codebooks (--method gptvq)"), 2;
    if (p.fp_target && p.method == GQ_METHOD_RTN) return die("--fp-target: RTN uses no calibration"), 2;
    if (p.rotate > 0 && p.method != GQ_METHOD_GPTVQ && !p.fake_quant)
        return die("--rotate: RTN / GPTQ grids in a rotated basis are written with --fake-quant only (GGUF blocks have "
                   "no rotation)"), 2;
    p.finetune_steps = (int)finetune;
    p.ft_lr = ft_lr;
    p.ft_batch = (int)ft_batch;
    p.seqlen = (int)seqlen;
    p.seed = (uint64_t)seed;
    p.damp = (float)damp;
    char ckpt_default[4200];
    snprintf(ckpt_default, sizeof ckpt_default, "%s.ckpt", out);
    if (no_ckpt && (ckpt || stop_after)) return die("quantize: --no-checkpoint excludes --checkpoint and --stop-after"), 2;
    p.checkpoint_dir = no_ckpt ? NULL : ckpt ? ckpt : ckpt_default;
    p.stop_after_blocks = (int)stop_after;
    char cmdline[2048];
    command_line(argc, argv, cmdline, sizeof cmdline);
    p.command = cmdline;
    if (gq_set_device(device) != GQ_OK) return die("%s", gq_last_error()), 2;
    if (p.progress && strcmp(device, "cpu") != 0) fprintf(stderr, "quantize: device %s\n", gq_device_name());
    gq_set_threads((int)threads);
    struct gq_model *m = NULL;
    // Streaming: the linears stay in the source's compressed form (mapped) and
    // are decoded block by block (gq_quantize), so host memory holds one
    // block's f32 weights, not the whole model's.
    if (stream < 0) stream = (p.calib_path && !p.calib_mix) || p.load_hessians || p.method == GQ_METHOD_RTN;
    // The output is built from the source GGUF's metadata and tensors: refuse
    // other sources before loading (a 70B Hugging Face model would be read
    // into f32 first) and long before hours of quantization.
    if (gq_dist_rank() != 0) p.progress = false; // rank 0 reports and writes
    char tmp[4096];
    int rc = 0;
    if (gq_dist_size() == 1) {
        rc = hf_as_gguf("quantize", &model, out, p.progress, tmp);
    } else { // several ranks: rank 0 writes the GGUF of a directory, the others wait and read it
        if (gq_dist_rank() == 0) rc = hf_as_gguf("quantize", &model, out, p.progress, tmp);
        int32_t shared[2] = {rc, gq_dist_rank() == 0 && tmp[0]};
        if (gq_dist_bcast(shared, sizeof shared, 0) != GQ_OK) return die_status(GQ_ERR_IO);
        if (gq_dist_rank() != 0) {
            if (shared[0]) return die("%s: rank 0 could not write it as GGUF", model), shared[0];
            tmp[0] = 0; // rank 0 removes it
            static char converted[4096];
            if (shared[1]) snprintf(converted, sizeof converted, "%s.hf-source.gguf", out), model = converted;
        }
    }
    if (rc) return rc;
    if (load_model_as(model, NULL, stream, false, &m)) return unlink_tmp(tmp), 1;
    // the defaults that follow from the budget and the run (gq_quantize_resolve)
    const bool dim_auto = p.vq.dim == 0, ft_auto = p.finetune_steps < 0;
    gq_quantize_resolve(&p, m);
    if (p.progress && p.method == GQ_METHOD_GPTVQ && (dim_auto || ft_auto) && gq_dist_rank() == 0) {
        fprintf(stderr, "quantize: defaults at %g bpv:", p.vq.bpv);
        if (dim_auto) fprintf(stderr, " --vq-dim %d", p.vq.dim);
        if (ft_auto) fprintf(stderr, " --finetune %d", p.finetune_steps);
        fputc('\n', stderr);
    }
    struct gq_quant_report rep;
    enum gq_status s = gq_quantize(m, &p, &rep);
    if (gq_dist_rank() != 0) { // rank 0 writes the file
        gq_quant_report_free(&rep);
        gq_model_free(m);
        if (s == GQ_STOPPED) return 3;
        return s == GQ_OK ? 0 : die_status(s);
    }
    char report[4096];
    snprintf(report, sizeof report, "%s.report.json", out);
    if (s == GQ_OK) s = gq_quant_report_write_json(&rep, &p, report);
    if (s == GQ_OK) {
        s = gq_model_save_gguf(m, out, &p, &rep);
        if (s != GQ_OK) remove(report); // no partial output
    }
    if (s == GQ_OK && p.checkpoint_dir && gq_quantize_checkpoint_remove(p.checkpoint_dir) != GQ_OK)
        fprintf(stderr, "quantize: warning: %s\n", gq_last_error());
    if (s == GQ_STOPPED) {
        fprintf(stderr, "quantize: %s\n", gq_last_error());
        gq_quant_report_free(&rep);
        gq_model_free(m);
        unlink_tmp(tmp);
        return 3;
    }
    bool kept = s != GQ_OK && p.checkpoint_dir && access(p.checkpoint_dir, F_OK) == 0;
    if (s == GQ_OK) {
        double worst = 0, mean = 0;
        for (int i = 0; i < rep.n; i++) {
            mean += rep.layers[i].rel_error / rep.n;
            if (rep.layers[i].rel_error > worst) worst = rep.layers[i].rel_error;
        }
        int n_fb = 0;
        double mean_rtn = 0;
        for (int i = 0; i < rep.n; i++) n_fb += rep.layers[i].rtn_fallback, mean_rtn += rep.layers[i].rel_error_rtn / rep.n;
        fprintf(stderr, "quantize: %d linears, relative output error mean %.4g, worst %.4g", rep.n, mean, worst);
        if (p.method == GQ_METHOD_GPTQ)
            fprintf(stderr, " (RTN through the same H: mean %.4g; %d layers kept RTN)", mean_rtn, n_fb);
        fputc('\n', stderr);
        if (p.method == GQ_METHOD_GPTVQ) {
            double em = 0, as = 0, fb = 0, up = 0;
            int kept = 0, slabs = 0;
            for (int i = 0; i < rep.n; i++) {
                const struct gq_quant_layer_report *r = &rep.layers[i];
                em += r->t_em, as += r->t_assign, fb += r->t_feedback, up += r->t_update;
                kept += r->n_kept, slabs += r->n_slab;
            }
            fprintf(stderr,
                    "quantize: gptvq %lld bits for %lld weights = %.4f bpv achieved; codebook update kept on %d/%d "
                    "slabs; time EM %.1fs, assignment + in-block feedback %.1fs, lazy feedback %.1fs, "
                    "codebook update %.1fs\n",
                    (long long)rep.vq_bits, (long long)rep.vq_weights,
                    rep.vq_weights ? (double)rep.vq_bits / rep.vq_weights : 0, kept, slabs, em, as, fb, up);
        }
        fprintf(stderr, "quantize: %.1fs total (", rep.seconds_total);
        if (rep.seconds_sampling > 0) fprintf(stderr, "sampling calibration sequences %.1fs, ", rep.seconds_sampling);
        fprintf(stderr, "calibration forward %.1fs, quantization %.1fs)\n", rep.seconds_forward, rep.seconds_quant);
        printf("wrote %s and %s\n", out, report);
    }
    gq_quant_report_free(&rep);
    gq_model_free(m);
    unlink_tmp(tmp);
    if (s != GQ_OK) {
        die_status(s);
        if (kept) fprintf(stderr, "quantize: finished blocks are kept in %s: the same command continues from there\n", p.checkpoint_dir);
        return 1;
    }
    return 0;
}

// ---------------------------------------------------------------------------
static const char *EXPORT_HELP =
    "usage: gptvq export MODEL -o OUT --to f16|q8_0|q4_0\n"
    "       gptvq export HF_DIR -o OUT\n"
    "\n"
    "Without --to, a Hugging Face directory is written as GGUF the way llama.cpp's\n"
    "convert_hf_to_gguf.py does: its tensors in their own dtype (F32, F16, BF16), q/k permuted\n"
    "for llama.cpp's RoPE, the tokenizer as tokenizer.ggml.* plus tokenizer.json whole.\n"
    "\n"
    "With --to:\n"
    "Writes a standard GGUF that llama.cpp, transformers and other GGUF runtimes load: every 2-D\n"
    "weight (linears, embedding, output head) of MODEL as F16, Q8_0 or Q4_0 (llama.cpp's\n"
    "reference rounding), 1-D tensors as F32, the metadata of MODEL without the packed-format\n"
    "keys. MODEL: a GGUF file, typically a packed GPTVQ model (its matrices are decoded first),\n"
    "or a Hugging Face directory.\n"
    "Q8_0 / Q4_0 need every row length to be a multiple of 32.\n"
    "  --threads N           threads (default: all cores)\n";

static int cmd_export(int argc, char **argv) {
    const char *model = NULL, *out = NULL, *to = NULL;
    long threads = 0;
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            fputs(EXPORT_HELP, stdout);
            return 0;
        }
        INT_OPT("--threads", threads, 0, 4096);
        if (!strcmp(a, "-o")) {
            if (!(out = opt_value(argc, argv, &i))) return 2;
            continue;
        }
        if (!strcmp(a, "--to")) {
            if (!(to = opt_value(argc, argv, &i))) return 2;
            continue;
        }
        if (a[0] == '-' && a[1]) return die("export: unknown option '%s' (see gptvq export --help)", a), 2;
        if (!model) model = a;
        else return die("export: unexpected argument '%s'", a), 2;
    }
    if (!model || !out) {
        fputs(EXPORT_HELP, stderr);
        return 2;
    }
    const char *fmt;
    if (gq_model_path_format(model, &fmt) != GQ_OK) return die("%s", gq_last_error()), 1;
    if (!to && !strcmp(fmt, "safetensors")) { // a Hugging Face directory as GGUF, dtypes kept
        enum gq_status s = gq_hf_to_gguf(model, out);
        if (s != GQ_OK) return die_status(s);
        printf("wrote %s\n", out);
        return 0;
    }
    if (!to) return die("export: --to is needed for a %s source", fmt), 2;
    if (export_type(to) < 0) return die("--to: expected f16, q8_0 or q4_0, got '%s'", to), 2;
    const enum gq_export_type type = (enum gq_export_type)export_type(to);
    gq_set_threads((int)threads);
    char tmp[4096];
    int rc = hf_as_gguf("export", &model, out, false, tmp);
    if (rc) return rc;
    struct gq_model *m = NULL;
    if (load_model(model, NULL, false, &m)) return unlink_tmp(tmp), 1;
    enum gq_status s = gq_model_export_gguf(m, out, type);
    gq_model_free(m);
    unlink_tmp(tmp);
    if (s != GQ_OK) return die_status(s);
    printf("wrote %s\n", out);
    return 0;
}

static const char *MAIN_HELP =
    "gptvq " GQ_VERSION_STRING " - GPTVQ vector quantization for LLMs, and a runtime for the results\n"
    "\n"
    "usage: gptvq COMMAND [options]    (gptvq COMMAND --help for details)\n"
    "\n"
    "commands:\n"
    "  ppl MODEL TEXT        perplexity (protocols gptq and llama.cpp)\n"
    "  generate MODEL        text generation (greedy or sampled), streamed\n"
    "  bench MODEL           prompt and generation speed, as llama.cpp's llama-bench measures it\n"
    "  inspect FILE          metadata, tensors, shapes, types, sizes\n"
    "  quantize MODEL -o OUT RTN, GPTQ or GPTVQ quantization (GPTVQ: packed GGUF; RTN, GPTQ:\n"
    "                        Q4_0..Q8_0 blocks for groups of 32 at 4, 5 or 8 bits, else F32)\n"
    "  eval MODEL            zero-shot accuracy: piqa, arc_easy, arc_challenge, hellaswag,\n"
    "                        winogrande, boolq, lambada (lm-evaluation-harness scoring)\n"
    "  export MODEL -o OUT --to f16|q8_0|q4_0\n"
    "                        a standard GGUF (e.g. of a packed GPTVQ model) for other runtimes;\n"
    "                        without --to, a Hugging Face directory as GGUF\n"
    "  report FILE...        report.md with pictures: size, bits, per-layer error, perplexity\n"
    "  version               print the version (and the MPI library, if built with one)\n"
    "\n"
    "Several processes: mpirun -np N gptvq quantize ... (Open MPI builds; quantize --help).\n"
    "\n"
    "MODEL is a GGUF file (F32/F16/BF16/Q8_0/Q4_0/Q4_1/Q5_0/Q5_1/Q4_K/Q5_K/Q6_K tensors), a Hugging\n"
    "Face model directory (config.json, *.safetensors, tokenizer.json) or a llama2.c .bin\n"
    "(with tokenizer.bin beside it or --tokenizer). Architectures: llama, qwen2.\n"
    "\n"
    "From a Hugging Face checkpoint to a GPTVQ model, and a comparison with its source:\n"
    "  gptvq quantize HF_DIR -o m.gguf --method gptvq --bpv 2.125 --calib wiki.valid.raw\n"
    "  gptvq generate m.gguf --chat -p \"Hello\"\n"
    "  gptvq export HF_DIR -o source.gguf      (the source as GGUF, for the report)\n"
    "  gptvq report source.gguf m.gguf --text wiki.test.raw --max-windows 8\n";

int main(int argc, char **argv) {
    if (argc < 2 || !strcmp(argv[1], "-h") || !strcmp(argv[1], "--help") || !strcmp(argv[1], "help")) {
        fputs(MAIN_HELP, argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    const char *cmd = argv[1];
    if (!strcmp(cmd, "ppl")) return cmd_ppl(argc, argv);
    if (!strcmp(cmd, "generate")) return cmd_generate(argc, argv);
    if (!strcmp(cmd, "inspect")) return cmd_inspect(argc, argv);
    if (!strcmp(cmd, "quantize")) {
        // mpirun -np N: N ranks share the run; a rank that fails ends them all
        if (gq_dist_init() != GQ_OK) return die_status(GQ_ERR_UNSUPPORTED), 2; // one line: rank 0's (die)
        int rc = cmd_quantize(argc, argv);
        if (rc != 0 && rc != 3) gq_dist_abort(rc);
        gq_dist_finalize();
        return rc;
    }
    if (!strcmp(cmd, "export")) return cmd_export(argc, argv);
    if (!strcmp(cmd, "eval")) return cmd_eval(argc, argv);
    if (!strcmp(cmd, "bench")) return cmd_bench(argc, argv);
    if (!strcmp(cmd, "report")) return cmd_report(argc, argv);
    if (!strcmp(cmd, "version") || !strcmp(cmd, "--version")) {
        printf("gptvq %s\n", GQ_VERSION_STRING);
        const char *mpi = gq_dist_library();
        printf("mpi: %s\n", mpi ? mpi : "none (one process; install Open MPI and rebuild for mpirun -np N gptvq quantize)");
        printf("cpu kernels: %s; OpenBLAS kernels: %s\n", gq_cpu_kernels(), gq_blas_kernels());
        return 0;
    }
    die("unknown command '%s' (see gptvq --help)", cmd);
    return 2;
}
