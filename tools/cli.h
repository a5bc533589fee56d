// cli.h - what the gptvq commands share: error lines, option parsing,
// model loading (tools/gptvq.c), and the commands kept in other files.
#ifndef GQ_CLI_H
#define GQ_CLI_H

#include "gptvq.h"

#include <stdbool.h>
#include <stddef.h>
#include <string.h>

extern const char *g_prog;
// "gptvq: error: ..." (with the rank under mpirun); returns 1.
int die(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
int die_status(enum gq_status s);
bool parse_int(const char *s, long lo, long hi, long *out);
bool parse_float(const char *s, double *out);
// The value of option argv[*i] (advancing *i), or NULL after an error line.
const char *opt_value(int argc, char **argv, int *i);
void print_model_line(const struct gq_model *m);
// keep: run packed / F16 / Q8_0 / Q4_x weights with the compressed kernels
// (ppl, generate); false: everything f32 (export). repack: the kernels'
// layout copies. Returns 0, or die()'s code.
int load_model_as(const char *path, const char *tok_path, bool keep, bool repack, struct gq_model **m);
int load_model(const char *path, const char *tok_path, bool keep, struct gq_model **m);
// --protocol's value; false (the error printed) when it is none of them.
bool parse_protocol(const char *v, enum gq_ppl_protocol *out);
// --device of ppl / generate: checked (and the CUDA plug-in loaded) before
// the model is; prints the device. Returns nonzero after an error message.
int use_device(const char *cmd, const char *device);
const char *base_name_of(const char *p);

// tools/eval_cmds.c
int cmd_eval(int argc, char **argv);
int cmd_report(int argc, char **argv);

// Option parsing inside a command's loop over argv (a = argv[i]).
#define INT_OPT(name, var, lo, hi)                                                         \
    if (strcmp(a, name) == 0) {                                                            \
        const char *v_ = opt_value(argc, argv, &i);                                        \
        long x_;                                                                           \
        if (!v_) return 2;                                                                 \
        if (!parse_int(v_, lo, hi, &x_)) {                                                 \
            die("%s: expected an integer in [%ld, %ld], got '%s'", name, (long)(lo), (long)(hi), v_); \
            return 2;                                                                      \
        }                                                                                  \
        var = x_;                                                                          \
        continue;                                                                          \
    }
#define FLOAT_OPT(name, var)                                                               \
    if (strcmp(a, name) == 0) {                                                            \
        const char *v_ = opt_value(argc, argv, &i);                                        \
        double x_;                                                                         \
        if (!v_) return 2;                                                                 \
        if (!parse_float(v_, &x_)) {                                                       \
            die("%s: expected a number, got '%s'", name, v_);                             \
            return 2;                                                                      \
        }                                                                                  \
        var = x_;                                                                          \
        continue;                                                                          \
    }

#endif
