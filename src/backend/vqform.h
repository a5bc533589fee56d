// vqform.h - the Hessian-weighted distance of VQ, (x − c)ᵀ M (x − c) with a
// d × d metric M (diag: its diagonal only), and a centroid's projection M c,
// for the CPU code (cpu.c, quant/vq.c) and the CUDA VQ kernels alike.
#ifndef GQ_VQFORM_H
#define GQ_VQFORM_H

#include "../util/hostdev.h"

#define GQ_VQ_MAX_DIM 8

static GQ_HOST_DEVICE double gq_vq_qform(const double *M, int diag, int d, const double *x, const double *c) {
    double e[GQ_VQ_MAX_DIM], s = 0;
    for (int a = 0; a < d; a++) e[a] = x[a] - c[a];
    if (diag) {
        for (int a = 0; a < d; a++) s += M[a * d + a] * e[a] * e[a];
        return s;
    }
    for (int a = 0; a < d; a++) {
        double r = 0;
        for (int b = 0; b < d; b++) r += M[a * d + b] * e[b];
        s += e[a] * r;
    }
    return s;
}

// p (d) = M c and the returned cᵀ M c (cᵀ p): one centroid's projection for
// the assignment's scores nrm − 2 xᵀp.
static GQ_HOST_DEVICE double gq_vq_project(const double *M, int diag, int d, const double *c, double *p) {
    double s = 0;
    for (int a = 0; a < d; a++) {
        double v = 0;
        if (diag)
            v = M[a * d + a] * c[a];
        else
            for (int b = 0; b < d; b++) v += M[a * d + b] * c[b];
        p[a] = v;
        s += c[a] * v;
    }
    return s;
}

#endif
