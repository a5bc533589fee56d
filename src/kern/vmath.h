// vmath.h - small vector kernels of the forward on the CPU: exp for the
// softmaxes, SwiGLU, and the decode attention. The ISA follows
// gq_qmatmul_isa (scalar: libm's expf and plain loops, the reference).
#ifndef GQ_VMATH_H
#define GQ_VMATH_H

#include <stdint.h>
#include <stdbool.h>
#include <stddef.h>

// x[i] = exp(x[i] − m) for i < n; returns Σ of the new x (summed in double).
// SIMD: a degree-6 polynomial after range reduction, within 4e-7 relative
// of exp (test_qmatmul; 0 below −87.3).
double gq_vexp_shift(float *x, int n, float m);
// max of x[0..n).
float gq_vmax(const float *x, int n);
// −log softmax(row)[target] over n logits: log Σ exp(row − max) + max − row[target]
// (the terms in float, summed in double; scalar: libm's expf in index
// order, SIMD: gq_vexp_shift's exp, 4e-7 relative per term).
double gq_row_nll(const float *row, int n, int32_t target);
// x[i] *= s.
void gq_vscale(float *x, int n, float s);
// SwiGLU: g[i] = g[i] / (1 + exp(−g[i])) · u[i].
void gq_vswiglu(float *g, const float *u, int n);
// RMSNorm of one row: out[j] = x[j] · s · w[j], s = 1 / sqrt(Σ x² / dim +
// eps) with Σ x² in double (exact products; SIMD: 8 partial sums, so the
// last bits of Σ may differ from the scalar order's, s almost never).
void gq_vrmsnorm(float *out, const float *x, const float *w, int dim, float eps);

// The decode attention split over threads by positions (flash-decoding):
// nq query heads (q: nq rows of hd) sharing one KV head, positions
// [t0, t1): for head i the largest score m[i], z[i] = Σ exp(s − m[i]) and
// the unnormalised o[i · hd ..] = Σ exp(s − m[i]) v. scores: nq · (t1 − t0)
// scratch. An empty range gives m = −inf, z = 0, o = 0.
void gq_attn_partial(const float *q, int nq, const float *k, const float *v, int t0, int t1, int hd, int ld, float scale,
                     float *scores, float *m, double *z, float *o);
// One head's output from np partials (m[p], z[p], o + p · ostride):
// Σ_p exp(m_p − M) o_p / Σ_p exp(m_p − M) z_p, M = max m_p.
void gq_attn_combine(int np, const float *m, const double *z, const float *o, size_t ostride, int hd, float *out);

#endif
