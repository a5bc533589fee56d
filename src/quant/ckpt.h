// ckpt.h - checkpoints of a quantization run (gq_quantize_params.checkpoint_dir):
// one file per finished decoder block, so that a killed run restarted with
// the same command continues after the last finished block.
//
// DIR/run.ckpt (text): "gptvq checkpoint 2\nfingerprint <16 hex>\n" - the run
// the folder belongs to (gq_ckpt_fingerprint).
// DIR/blk.<layer>.ckpt, little-endian, written to a temporary name and renamed:
//   char magic[8] = "GQCKBLK1"; u32 layer; u32 n_reports; u32 report_size
//   (sizeof struct gq_quant_layer_report, so that another build's file is
//   refused, not misread); u32 n_linear; i64 calib_tokens; u64 fingerprint;
//   n_reports × report_size bytes: the block's gq_quant_layer_report entries;
//   per linear of the block, in architecture order: i32 rows, cols, has_pack,
//   has_w; if has_w: f32 W[rows][cols] (the quantized weight the later blocks
//   were calibrated with); if has_pack == 1 (GPTVQ): i32 header[13], i32 0,
//   u64 bytes[GQ_VQP_COUNT], then the parts' bytes in order; if has_pack == 2
//   (GPTQ / RTN GGUF blocks, m->blocks): i32 type, i32 0, u64 bytes, the
//   blocks. A packed matrix whose decoded parts equal W bit for bit (checked
//   when saving: the usual case) is stored without W, so a checkpoint is the
//   size of the packed output, not of an f32 model;
//   char end[8] = "GQCKEND1".
#ifndef GQ_CKPT_H
#define GQ_CKPT_H

#include "gptvq.h"

struct gq_model;

// FNV-1a over every setting that changes the output (paths reduced to their
// names; progress, checkpoint and stop settings left out), the model's
// architecture and hyper-parameters and the original weights of the first
// and last block's first linear. Call before quantizing.
uint64_t gq_ckpt_fingerprint(const struct gq_model *m, const struct gq_quantize_params *p);
// DIR holds blk.0.ckpt.
bool gq_ckpt_has_blocks(const char *dir);
// Creates DIR and run.ckpt, or checks that an existing run.ckpt has fp.
enum gq_status gq_ckpt_open(const char *dir, uint64_t fp);
// Block l's quantized linears (from the model's slots and packs) and its
// reports r[0..n_r).
enum gq_status gq_ckpt_save_block(const char *dir, uint64_t fp, struct gq_model *m, int l,
                                  const struct gq_quant_layer_report *r, int n_r, int64_t calib_tokens);
// What gq_ckpt_load_block takes from a block file (the whole file is
// checked either way, and the block's source slots are cleared: the forward
// must not run the original weights of a finished block).
enum {
    GQ_CKPT_REPORTS = 1, // the reports into r, *n_r, *calib_tokens
    GQ_CKPT_WEIGHTS = 2, // the quantized f32 weights into the slots (owned by the model)
    GQ_CKPT_PACKS = 4,   // the packed matrices / GGUF blocks into m->packs / m->blocks (owned by the model)
};
// Loads the parts `load` names of blk.<l>.ckpt into the model and r (room for the block's
// linears); *found false: no such file.
enum gq_status gq_ckpt_load_block(const char *dir, uint64_t fp, struct gq_model *m, int l, unsigned load,
                                  struct gq_quant_layer_report *r, int *n_r, int64_t *calib_tokens, bool *found);

#endif
