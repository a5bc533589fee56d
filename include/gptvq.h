// gptvq.h - the one public header of the gptvq library.
//
// Conventions: every fallible call returns enum gq_status; on failure
// gq_last_error() holds one line saying what was expected and what was found
// (with the file and offset where there is one). Handles are opaque, created
// by *_load/*_open and released by *_free. The library never calls exit().
#ifndef GPTVQ_H
#define GPTVQ_H

#include <stddef.h>
#include <stdio.h>
#include <stdint.h>
#include <stdbool.h>

#ifdef __cplusplus
extern "C" {
#endif

#define GQ_VERSION_STRING "0.1.0"

enum gq_status {
    GQ_OK = 0,
    GQ_ERR_IO,          // open/read/mmap/write failed
    GQ_ERR_FORMAT,      // file is corrupt, truncated or not what it claims
    GQ_ERR_UNSUPPORTED, // valid file, but a feature we do not implement
    GQ_ERR_NOMEM,       // allocation failed or size overflow
    GQ_ERR_ARG,         // bad argument / impossible option
    GQ_ERR_NUMERIC,     // NaN/Inf or a numerical failure
    GQ_STOPPED,         // stopped on request (gq_quantize_params.stop_after_blocks): not an error,
                        // the checkpoint holds the finished blocks
};

// Message of the last error on this thread ("" if none).
const char *gq_last_error(void);
const char *gq_status_str(enum gq_status s);

// ---------------------------------------------------------------------------
// Models

struct gq_model;      // weights + hyperparameters + tokenizer
struct gq_tokenizer;  // owned by the model

struct gq_load_params {
    const char *tokenizer_path; // llama2.c tokenizer.bin (NULL: tokenizer.bin / tok512.bin beside the model)
    bool verbose;
    // GGUF: keep packed GPTVQ matrices and F16 / Q8_0 / Q4_0 / Q4_1 tensors
    // compressed in memory and run them with the compressed kernels (ppl,
    // generate, bench). false: every weight dequantized to f32 (what
    // quantize and export need).
    bool keep_quantized;
    // keep_quantized without the copy in the SIMD kernels' layout (the 16-row
    // groups of Q8_0 / Q4_x / Q5_x, made at load): for a model that is only
    // decoded block by block (quantize), not run; the kernels then read the
    // rows as stored, more slowly.
    bool no_repack;
};

// Loads a GGUF file, a Hugging Face model directory (config.json +
// *.safetensors + tokenizer.json) or a llama2.c checkpoint (.bin).
// What gq_model_load would read at path, without loading it: *format
// "gguf", "safetensors" (a Hugging Face directory) or "llama2c" (a .bin), as
// gq_model_info.source_format; an error (with its message) otherwise.
enum gq_status gq_model_path_format(const char *path, const char **format);
enum gq_status gq_model_load(const char *path, const struct gq_load_params *params,
                             struct gq_model **out);
void gq_model_free(struct gq_model *m);
// Writes the Hugging Face model directory `dir` (config.json, safetensors,
// tokenizer.json) as a GGUF file at `out` the way llama.cpp's
// convert_hf_to_gguf.py lays one out: 2-D tensors keep their dtype (F32, F16,
// BF16), the tokenizer.json travels whole in tokenizer.huggingface.json.
// Presence, shape and dtype of every tensor are checked before writing.
enum gq_status gq_hf_to_gguf(const char *dir, const char *out);

// ---------------------------------------------------------------------------
// Report

// Writes out_dir/report.md about the GGUF files paths[0..n): per file its
// size, the bits per value of the block linears (by matrix kind and in
// total), its settings (gptvq.* metadata), the command that made it (from
// FILE.report.json) and the relative output error of each linear as gptvq
// quantize recorded it, pictured by layer and matrix kind
// (out_dir/error_I.svg). With perplexities (ppl[i], NAN where not measured;
// ppl may be NULL): a table and a picture of perplexity against file size
// (out_dir/ppl_vs_size.svg), GPTVQ against GPTQ, RTN and the source (the
// first file not made by gptvq quantize; later ones are "other GGUF").
// ppl_desc says how perplexity was measured; summary (optional) gets the
// table as Markdown.
enum gq_status gq_report_write(const char *const *paths, const double *ppl, int n, const char *ppl_desc,
                               const char *out_dir, FILE *summary);

struct gq_model_info {
    const char *arch;        // "llama", "qwen2", ...
    const char *name;
    const char *source_format; // "gguf", "safetensors", "llama2c"
    int n_vocab, dim, n_layers, n_heads, n_kv_heads, head_dim, hidden_dim, ctx_len;
    float rope_theta, rms_eps;
    bool rope_interleaved, tied_output, qkv_bias;
    int64_t n_params;
    size_t weight_bytes;     // bytes of weights as used by the forward (f32)
    int bos_id, eos_id;
    bool add_bos;
    // Weights as this model holds them (compressed where it was loaded with
    // keep_quantized): all of them, and those one decoded token reads (the
    // block linears, the output head and the norms; not the embedding,
    // from which one row is read); the block linears' format: "Q4_0",
    // "F16", "VQ 2D k16", "mixed", ...
    double bytes_held, bytes_per_token, bytes_linears;
    char linears_desc[48];
};
void gq_model_get_info(const struct gq_model *m, struct gq_model_info *info);
const struct gq_tokenizer *gq_model_tokenizer(const struct gq_model *m);

// ---------------------------------------------------------------------------
// Tokenizer

// Tokenizes text. add_bos: prepend BOS (ignored if the vocab has none).
// parse_special: recognise special/control tokens written in the text.
// *ids is malloc'd; caller frees.
enum gq_status gq_tokenize(const struct gq_tokenizer *t, const char *text, size_t len,
                           bool add_bos, bool parse_special, int32_t **ids, size_t *n_ids);
// Bytes that token `id` stands for when printed (byte-level and <0xNN>
// fallback decoded). Writes at most cap bytes, returns the full length.
size_t gq_token_to_bytes(const struct gq_tokenizer *t, int32_t id, char *buf, size_t cap);
int gq_tokenizer_n_vocab(const struct gq_tokenizer *t);
int32_t gq_tokenizer_find(const struct gq_tokenizer *t, const char *piece); // -1 if absent

// ---------------------------------------------------------------------------
// Inference

struct gq_context; // KV cache + scratch for one sequence

enum gq_status gq_context_new(const struct gq_model *m, int n_ctx, struct gq_context **out);
// A context whose gq_forward runs on `device`: "cpu" (or NULL: as
// gq_context_new) or "cuda". A CUDA context copies the model's weights to
// the GPU (the linears compressed as they are in memory when a kernel takes
// their format: packed VQ without normalisation, F16, Q8_0, Q4_0, Q4_1;
// others decoded to f32) and keeps its KV cache there; one token runs the
// GEMV kernels, several the decode-to-tile TF32 tensor-core GEMM. The
// embedding lookup stays on the host. Only gq_forward runs on a CUDA context.
enum gq_status gq_context_new_device(const struct gq_model *m, int n_ctx, const char *device,
                                     struct gq_context **out);
// Linears of a CUDA context that run decoded to f32 (no kernel for their format); 0 on the CPU.
int gq_context_device_f32(const struct gq_context *c);
void gq_context_free(struct gq_context *c);
void gq_context_reset(struct gq_context *c);
// Keeps the first pos cached tokens (no-op when pos >= the current length).
void gq_context_truncate(struct gq_context *c, int pos);
int gq_context_pos(const struct gq_context *c);

// Runs n tokens at positions pos..pos+n-1 (pos = current cache length) and
// appends them to the KV cache. logits: NULL, or (n, n_vocab) row-major when
// all_logits, else (n_vocab) for the last token only.
enum gq_status gq_forward(struct gq_context *c, const int32_t *tokens, int n,
                          float *logits, bool all_logits);

// ---------------------------------------------------------------------------
// Perplexity

enum gq_ppl_protocol { GQ_PPL_GPTQ = 0, GQ_PPL_LLAMACPP = 1 };

struct gq_ppl_params {
    enum gq_ppl_protocol protocol;
    int n_ctx;            // 0: protocol default (gptq: min(2048, model ctx); llama.cpp: 512)
    int max_windows;      // 0: all
    int wikitext;         // 1: join WikiText rows (gptq protocol); the caller resolves
                          // "auto" with gq_ppl_is_wikitext_file()
    bool progress;        // progress + ETA on stderr
    const char *device;   // "cpu" (or NULL) or "cuda" (gq_context_new_device)
};

struct gq_ppl_result {
    double ppl, nll_mean, nll_stderr;
    int64_t n_tokens_text; // tokens in the whole text
    int64_t n_scored;
    int n_windows, n_windows_total, n_ctx;
    double seconds;       // the whole call (tokenizing the text included)
    double seconds_eval;  // the windows' forwards and scoring only (as llama-perplexity's seconds per pass)
    int device_f32;       // CUDA: linears run decoded to f32 (no kernel for their format)
};

enum gq_status gq_perplexity(const struct gq_model *m, const char *text, size_t len,
                             const struct gq_ppl_params *p, struct gq_ppl_result *r);

// Text preprocessing of the gptq protocol for WikiText files: rows (lines
// with their newline, a blank line is an empty row) joined with "\n\n".
// Returns malloc'd text.
char *gq_wikitext_join(const char *raw, size_t len, size_t *out_len);
// True for WikiText file names (wiki.*.raw): the gptq protocol joins their rows.
bool gq_ppl_is_wikitext_file(const char *path);

// ---------------------------------------------------------------------------
// Zero-shot evaluation (src/eval/zeroshot.c), scored as lm-evaluation-harness
// (v0.4) does, on the JSON-lines sets of ../shared/data/zeroshot:
//   piqa           "Question: <goal>\nAnswer:" + " " + sol1 | sol2
//   arc_easy/_challenge  <query> ("Question: ...\nAnswer:") + " " + choice
//   hellaswag      clean(activity_label + ": " + ctx_a + " " + ctx_b.capitalize())
//                  + " " + clean(ending); clean = strip, " [title]" -> ". ",
//                  "[...]" removed, "  " -> " "
//   winogrande     partial scoring: (sentence before "_" + option) + " " +
//                  (sentence after "_").strip()
//   boolq          passage + "\nQuestion: " + question + "?\nAnswer:" + " no" | " yes"
//   lambada        text before its last " " + " " + last word (OpenAI version)
// Tokens: trailing whitespace of the context moves to the continuation;
// ctx = encode(context), cont = encode(context + continuation) minus its first
// |ctx| tokens; BOS in front when the model adds one (the harness's HF models
// do not by default); input = (ctx + cont) without its last token, cut to
// the model's context from the left. ll = Σ log p(cont token); acc: argmax
// ll = gold; acc_norm: argmax ll / len(choice in code points) = gold (piqa,
// arc, hellaswag); lambada: acc = every continuation token greedy, ppl =
// exp(−mean ll). Ties go to the first choice. stderr = sqrt(p(1−p)/(n−1)).

#define GQ_ZS_MAX_CHOICES 8
enum gq_zs_task {
    GQ_ZS_PIQA, GQ_ZS_ARC_EASY, GQ_ZS_ARC_CHALLENGE, GQ_ZS_HELLASWAG, GQ_ZS_WINOGRANDE, GQ_ZS_BOOLQ, GQ_ZS_LAMBADA,
    GQ_ZS_N_TASKS
};
const char *gq_zs_task_name(int task);
int gq_zs_task_find(const char *name); // -1 when unknown

struct gq_zs_params {
    const char *data_dir; // NULL: ../shared/data/zeroshot
    int offset;           // skip the first examples (for runs in pieces)
    int limit;            // N examples of the task (after offset); 0: all
    bool progress;        // progress + ETA on stderr
};

struct gq_zs_example {
    int idx;              // 0-based line of the data file
    int gold, n_req;
    int pred, pred_norm;  // argmax of ll and of ll / chars (lambada: 0 if greedy, else -1)
    double ll[GQ_ZS_MAX_CHOICES];
    bool greedy[GQ_ZS_MAX_CHOICES];
    int ctx_ntok[GQ_ZS_MAX_CHOICES], cont_ntok[GQ_ZS_MAX_CHOICES], chars[GQ_ZS_MAX_CHOICES];
};

struct gq_zs_result {
    int task, n;
    double acc, acc_stderr;
    bool has_acc_norm;
    double acc_norm, acc_norm_stderr;
    double ppl;            // lambada
    int64_t n_tokens_run;  // tokens through the model (shared prefixes once)
    double seconds;
    struct gq_zs_example *ex; // (n)
};

// Malformed data (bad JSON, missing field, label out of range) fails with
// "FILE:LINE: problem".
enum gq_status gq_zs_eval(const struct gq_model *m, int task, const struct gq_zs_params *p, struct gq_zs_result *r);
void gq_zs_result_free(struct gq_zs_result *r);

// ---------------------------------------------------------------------------
// Generation

struct gq_gen_params {
    const char *prompt;
    int n_predict;        // tokens to generate
    float temperature;    // 0: greedy (argmax)
    float top_p;          // nucleus sampling threshold in (0, 1]; 1: off
    uint64_t seed;
    bool chat;            // wrap the prompt in the model's chat format
    bool stop_at_eog;     // stop at end-of-generation tokens (EOS, <|im_end|>, ...)
    int n_ctx;            // 0: min(model context, prompt + n_predict)
    const char *device;   // "cpu" (or NULL) or "cuda" (gq_context_new_device)
};

struct gq_gen_stats {
    int n_prompt, n_generated;
    double prompt_seconds, gen_seconds;
    int device_f32;       // CUDA: linears run decoded to f32 (no kernel for their format)
};

// Called for every generated token with its printable bytes; return false to stop.
typedef bool (*gq_token_cb)(void *user, int32_t id, const char *bytes, size_t n_bytes);

enum gq_status gq_generate(const struct gq_model *m, const struct gq_gen_params *p, gq_token_cb cb,
                           void *user, struct gq_gen_stats *stats);
// The prompt wrapped in the model's chat format (ChatML, Llama 3); malloc'd.
// GQ_ERR_UNSUPPORTED when the model's template is not a known one.
enum gq_status gq_chat_format(const struct gq_model *m, const char *prompt, char **out);

// ---------------------------------------------------------------------------
// Quantization (RTN, GPTQ): weights of every block linear replaced in place by
// their quantized values ("fake-quant"); embeddings, norms and the head keep
// their precision.

enum gq_method { GQ_METHOD_RTN = 0, GQ_METHOD_GPTQ = 1, GQ_METHOD_GPTVQ = 2 };

// GPTVQ (seed paper 003): vector quantization of d consecutive columns with
// GPTQ error feedback, one codebook of k centroids per group of l weights.
enum gq_vq_init { GQ_VQ_INIT_MAHALANOBIS = 0, GQ_VQ_INIT_KMEANSPP = 1 };
enum gq_cb_format { GQ_CB_INT8 = 0, GQ_CB_FP16 = 1, GQ_CB_F32 = 2 };
enum gq_cb_update { GQ_CB_UPDATE_EXACT = 0, GQ_CB_UPDATE_GD = 1, GQ_CB_UPDATE_NONE = 2 };
struct gq_gptvq_params {
    int dim;              // d: 1, 2, 4 or 8; 0 (default): chosen by gq_quantize_resolve
    bool dim_auto;        // set by gq_quantize_resolve where dim was 0 (the head, --head-bpv,
                          // then takes the same rule at its own budget)
    double bpv;           // target bits per value (2.125); k and l follow from it
    int k;                // centroids per codebook (0: from bpv)
    int64_t group;        // l, weights per codebook (0: from bpv)
    int em_iters;         // EM iterations of the codebook initialisation (100)
    enum gq_vq_init em_init;
    enum gq_cb_update cb_update; // after the pass, with assignments fixed (EXACT)
    int gd_iters;         // steps of the GD codebook update (25)
    enum gq_cb_format cb_format; // codebook storage (INT8 with an fp16 scale)
    bool feedback_diag;   // reference code's error feedback: only the diagonal of the d×d block
    bool full_subhessian; // assignment metric = full d×d inverse sub-Hessian instead of its diagonal
    int norm_block;       // blockwise normalisation, weights per sub-row block (0: off; default 64)
    int stages;           // 1, or 2 = residual VQ (VPTQ): a second codebook on the residual
    double outlier_frac;  // fraction of columns kept in fp16 (VPTQ outliers; 0: none)
    int cb_svd_rank;      // d = 1: codebook SVD (paper App. H), rank r of the stacked codebooks (0: off)
    int slab_rows;        // rows per unit of work: runs of whole row tiles, each with its own codebook
                          // update and keep-or-not decision (GPTQ, which reads it too: rows, each run
                          // with its own RTN guard); the ranks of mpirun split a linear by them
                          // (256; 0: the whole matrix is one unit)
    // (No memory budget for the assignment: it is fused, O(k·d) per thread,
    // without an n × k distance matrix; see src/quant/vq.h.)
};

struct gq_quantize_params {
    enum gq_method method;
    int wbits;            // 2..8
    int group_size;       // columns per group; <= 0: one group per row
    bool sym, act_order, static_groups, mse_clip;
    float damp;           // GPTQ damping, fraction of mean(diag H) (0.01)
    int block_size;       // GPTQ lazy batch (128)
    const char *calib_path; // calibration text (GPTQ); WikiText files joined as in ppl
    int calib_mix;          // with calib_path: this many of the nsamples windows are sampled from
                            // the model (as data-free calibration), the others drawn from the text
    int nsamples, seqlen; // calibration windows (128 x min(2048, model ctx); data-free: 512)
    uint64_t seed;
    bool progress;
    // Hessian artefacts: DIR/blk.<layer>.<input>.hessian, one per linear group.
    // Saving writes each H as it is computed. Loading takes every H from DIR
    // instead of calibrating (no calibration text or forward passes needed);
    // the Hessians of later blocks depend on how earlier blocks were quantized,
    // so loading reproduces the saving run exactly when the settings match.
    const char *save_hessians, *load_hessians;
    // Token weights in the Hessians of o and down, the linears whose output is
    // added to the residual stream. NONE (default): GPTQ's H = 2/N Σ x xᵀ. RESIDUAL:
    // token t counts with dim/‖h_t‖², h_t the residual stream after the add
    // (original weights), so H measures each token's error relative to the
    // residual the next RMSNorm rescales. Attention-sink tokens carry
    // activations 10^2..10^5 times the median there and otherwise own H.
    enum gq_token_weights { GQ_TW_NONE = 0, GQ_TW_RESIDUAL = 1 } token_weights;
    // Weight of each calibration window's first token in every Hessian (1 =
    // plain GPTQ; <= 0: seqlen/32, at least 1). LLMs turn the first token into an attention
    // sink that every later token attends to, so errors in its path reach the
    // whole window; see docs/results.md for the measurements behind the default.
    float sink_weight;
    // Asymmetric calibration (GPTQ / GPTVQ, one CPU process): the source
    // model runs beside the quantized one on the calibration windows, and
    // each linear is quantized to match the source model's output on the
    // source model's inputs (min Σ ‖Q x_t − W x̂_t‖²), not W's output on the
    // quantized model's inputs: W is replaced by the ridge solution of that
    // least-squares problem (quant.h: gq_fp_target) before it is quantized
    // with the usual H. Off by default.
    bool fp_target;
    // Incoherence processing (QuIP#'s randomized Hadamard rotation): each
    // linear is quantized as W Rᵀ with the Hessian R H Rᵀ, R a rotation of its
    // input width (util/hadamard.h; seeded from seed), so that Q (R x)
    // approximates W x. < 0 (default): on for GPTVQ, off for RTN / GPTQ
    // (whose GGUF blocks cannot carry it); 0: off; > 0: on (RTN / GPTQ:
    // fake_quant only).
    int rotate;
    // Packed GPTVQ: after each block, this many Adam steps on the codebooks
    // of its seven linears against the source block's output (quant.h:
    // gq_finetune_block); 0: off; < 0 (default): chosen by
    // gq_quantize_resolve. ft_lr: step size relative to each codebook's
    // largest entry.
    int finetune_steps;
    double ft_lr;
    int ft_batch; // windows per step (taken in turn; 0: all; default 4)
    struct gq_gptvq_params vq; // method GPTVQ
    // GPTVQ output: false (default) keeps every matrix's packed form so that
    // gq_model_save_gguf writes the packed format (docs/format.md); true
    // writes dequantized f32 weights ("fake-quant", for research).
    // GPTQ / RTN: a grid that is a GGUF block type (group_size 32 and 4 or 5
    // bits, or 8 bits sym) is quantized on f16 scales (and mins) either way;
    // false writes its Q4_0 / Q4_1 / Q5_0 / Q5_1 / Q8_0 blocks, which llama.cpp
    // reads (gq_quantize_gguf_type; matrices whose width is not whole
    // blocks of 32 stay f32), true their values as f32. Other grids: f32.
    bool fake_quant;
    // The token embedding and the output head (tied or not) as written: -1
    // (default) as in the source, else GQ_EXPORT_F16 / _Q8_0 / _Q4_0, encoded
    // at write time from the source's values with llama.cpp's reference
    // rounding (calibration and quantization of the linears use the source's).
    int embed_type;
    // GPTVQ: > 0 quantizes the output head too (the token embedding with it
    // when they are tied), at this many bits per value, once every block is
    // (with the Hessian of the final norm of the calibration activations);
    // 0 keeps it as in the source.
    double head_bpv;
    // GPTVQ bit allocation across the block linears (beyond the paper;
    // experimental, it lost in the measurements of docs/results.md): a
    // folder of Hessians saved by an earlier run of the same model
    // (save_hessians). Each block linear is quantized with its saved Hessian
    // at vq.bpv + j/d, j = -1..2 (the configurations that exist); its loss
    // sensitivity is the calibration NLL with it alone quantized at vq.bpv;
    // each gets the budget that minimises the summed estimated loss with the
    // block linears' bits at most those of every linear at vq.bpv
    // (src/quant/alloc.c); then the run quantizes as usual, each linear at
    // its budget. NULL (default): every linear at vq.bpv. Needs vq.k =
    // vq.group = 0.
    const char *bit_alloc;
    // Resumable runs: with a checkpoint folder, every finished block (its
    // quantized weights, packed form and reports) is written there as
    // blk.<layer>.ckpt (atomically, after the block), with a fingerprint of
    // the model and of every setting above in run.ckpt. A run that finds
    // blocks 0..L-1 there loads them, replays their calibration forward
    // (same arithmetic as the first run) and continues at block L: its output
    // is byte-identical to an uninterrupted run. A folder written with other
    // settings or another model is refused. The caller removes the folder
    // once the output is written: with a model loaded keep_quantized
    // (streaming), finished blocks' quantized weights are not kept in memory
    // but read back from the folder when the model is saved
    // (gq_model_save_gguf), so host memory holds one block's f32 weights
    // for GPTQ and RTN too. stop_after_blocks > 0: return GQ_STOPPED
    // once that many blocks are in the checkpoint (runs split into pieces).
    const char *checkpoint_dir;
    int stop_after_blocks;
    // The command line that made the file (NULL: none), recorded in its JSON
    // report (not in the GGUF: the same quantization by another command,
    // e.g. resumed or streamed, writes the same bytes).
    const char *command;
};

// Per-linear outcome, in quantization order.
struct gq_quant_layer_report {
    int layer;
    char name[32];        // "attn_q", ...
    int rows, cols;
    double rel_error;     // ‖WX − QX‖² / ‖WX‖² through the layer's H (GPTQ), or
                          // through H = I for RTN (‖W − Q‖² / ‖W‖²)
    double rel_error_rtn; // GPTQ runs: RTN's error through the same H, for comparison
    bool rtn_fallback;    // GPTQ lost to RTN on this layer's objective; RTN's result was kept
    double damp;          // relative damping used (GPTQ; retries raise it)
    int n_dead;
    double seconds;
    // GPTVQ
    double bpv;           // achieved bits per value of this matrix (all stored bits)
    int64_t bits;         // stored bits
    int k;
    int64_t group;        // weights per codebook group (largest)
    double rel_error_pass; // before the codebook update
    bool update_kept;     // the codebook update lowered the objective (of a slab at least)
    int n_slab, n_kept;   // slabs (gq_gptvq_params.slab_rows) and those that kept their update
                          // (GPTQ: those that kept RTN's result)
    double t_em, t_assign, t_feedback, t_update; // seconds (assign includes in-block feedback)
    // FNV-1a (64-bit words) of the exact Hessian sum (its fixed-point limbs) the linear was
    // quantized with: equal digests, equal Hessians, whatever the threads or
    // ranks. 0: none (RTN, loaded Hessians, --device cuda calibration).
    uint64_t hessian_digest;
};
struct gq_quant_report {
    int n;
    struct gq_quant_layer_report *layers; // malloc'd
    int64_t calib_tokens;
    char calib_source[256];
    double seconds_total, seconds_forward, seconds_quant;
    double seconds_sampling; // data-free: generating the calibration sequences
    float sink_weight;       // first-token weight used in the Hessians
    size_t activation_bytes; // memory held for the calibration activations
    int64_t vq_bits, vq_weights; // GPTVQ: stored bits and weights over all quantized linears
    // --finetune: blocks tuned, of them kept, Σ of the blocks' objectives before / after, seconds
    int ft_blocks, ft_kept;
    double ft_loss0, ft_loss1, seconds_finetune;
};
void gq_quant_report_free(struct gq_quant_report *r);
// The report as JSON (atomically written).
enum gq_status gq_quant_report_write_json(const struct gq_quant_report *r, const struct gq_quantize_params *p,
                                          const char *path);

void gq_quantize_params_default(struct gq_quantize_params *p);
// Removes a checkpoint folder's files (run.ckpt, blk.*.ckpt) and the folder
// when nothing else is in it; a missing folder is not an error.
enum gq_status gq_quantize_checkpoint_remove(const char *dir);
// The defaults that depend on the budget and the run, made explicit in p
// (gq_quantize does it on its own copy; call it first to see or record
// them): GPTVQ's vq.dim 0 becomes 4 where the budget leaves 2 index bits per
// value (2 < bpv <= 3: k 256 over 4-D vectors) with the paper's plain
// configuration (no k, group size, residual, outliers, codebook SVD or bit
// allocation given) and every block linear holds at least half a 4-D
// codebook group, else 2;
// finetune_steps < 0 becomes 20 for packed GPTVQ at 2 to 4 index bits per
// value (2 < bpv <= 5) with calibration passes on the CPU, else 0
// (docs/results.md, issue 24).
void gq_quantize_resolve(struct gq_quantize_params *p, const struct gq_model *m);
enum gq_status gq_quantize(struct gq_model *m, const struct gq_quantize_params *p, struct gq_quant_report *rep);
// The GGUF block type (ggml type id) the linears of GPTQ / RTN settings are
// written as (see fake_quant), or -1 (F32).
int gq_quantize_gguf_type(const struct gq_quantize_params *p);

// Writes m as GGUF (the source must be a GGUF: its metadata and the tensors
// that were not quantized are copied; quantized linears are stored as F32,
// or packed), plus gptvq.* metadata, atomically (temp file + rename). Weights
// a streaming gq_quantize left in its checkpoint folder are read back from
// there one block at a time (m is not const for that).
enum gq_status gq_model_save_gguf(struct gq_model *m, const char *path, const struct gq_quantize_params *p,
                                  const struct gq_quant_report *rep);

// A standard GGUF for runtimes that do not know the packed format: every 2-D
// weight (linears, embedding, output head) of m (loaded without
// keep_quantized, so packed matrices are decoded) stored as `type`, 1-D
// tensors as F32, the source's metadata without the packed-format keys.
// llama.cpp's reference rounding for Q8_0 / Q4_0; their block types need
// every row length to be a multiple of 32.
enum gq_export_type { GQ_EXPORT_F16 = 0, GQ_EXPORT_Q8_0 = 1, GQ_EXPORT_Q4_0 = 2 };
enum gq_status gq_model_export_gguf(const struct gq_model *m, const char *path, enum gq_export_type type);

// Threads for OpenMP and OpenBLAS (0: the default, gq_default_threads).
void gq_set_threads(int n);
// OpenBLAS's kernel set in use ("Cooperlake", "SkylakeX", "Haswell";
// "unknown": another BLAS). OpenBLAS picks it from the CPU unless
// OPENBLAS_CORETYPE names one.
const char *gq_blas_kernels(void);
// Physical cores this process may run on (SMT siblings counted once),
// divided among the ranks on this machine when they all may run everywhere.
int gq_default_threads(void);

// Several processes for one quantization: `mpirun -np N gptvq quantize ...`
// (a build with Open MPI; see gq_quantize). gq_dist_init starts MPI when an
// MPI launcher started the process, else leaves one rank; an MPI run of N > 1
// processes of a build without MPI is refused (rank and size then are the
// launcher's, for the error message). gq_dist_abort ends every rank
// (after a rank's error the others would wait for it forever); with one rank
// it does nothing.
enum gq_status gq_dist_init(void);
void gq_dist_finalize(void);
int gq_dist_rank(void);
int gq_dist_size(void);
void gq_dist_abort(int code);
// bytes of buf from rank root to every rank (a collective: every rank calls
// it); with one rank nothing.
enum gq_status gq_dist_bcast(void *buf, size_t bytes, int root);
// The MPI library this build uses ("Open MPI v4.1.4, ..."), or NULL (none).
const char *gq_dist_library(void);
// The CPU kernels in use: "avx512" (F/BW/VL/DQ + VNNI + VBMI), "avx2" (+ FMA,
// F16C) or "scalar"; GPTVQ_ISA=avx2|scalar in the environment caps them.
const char *gq_cpu_kernels(void);

// Speed as llama.cpp's llama-bench measures it, from an empty context each
// repetition after one warm-up: test pp (n_gen 0): n_prompt tokens in one
// batch, logits of the last; test tg (n_prompt 0): n_gen tokens decoded one
// at a time. Tokens: BOS where the model adds one, then pseudo-random ids
// (fixed seed). ts[reps] gets each repetition's tokens per second.
enum gq_status gq_bench(const struct gq_model *m, int n_prompt, int n_gen, int reps, const char *device, double *ts);
// Device of the quantizers' numerical primitives (src/backend/backend.h):
// "cpu" (default, the reference) or "cuda" (GQ_ERR_UNSUPPORTED with the
// reason when this build has no CUDA or no device is usable).
enum gq_status gq_set_device(const char *name);
const char *gq_device_name(void); // "cpu", or the CUDA device ("NVIDIA H200 (139 GiB, sm_90)")

#ifdef __cplusplus
}
#endif
#endif // GPTVQ_H
