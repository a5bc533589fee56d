// cuda_kernels.h - the plain C interface of the CUDA plug-in libgptvq_cuda.so
// (cuda_kernels.cu, built only when nvcc is found; cuda.c loads it). Row-major
// host doubles in and out; each returns 0, or -1 with a message in err.
// Contracts: backend.h.
#ifndef GQ_CUDA_KERNELS_H
#define GQ_CUDA_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

int gqcu_init(char *err, size_t cap, char *name, size_t name_cap);
int gqcu_dgemm(int ta, int tb, int m, int n, int k, double alpha, const double *A, int lda, const double *B, int ldb,
               double beta, double *C, int ldc, char *err, size_t cap);
int gqcu_dsymm_right(int m, int n, const double *S, const double *A, double *C, char *err, size_t cap);
int gqcu_dsyrk_acc(int n, int k, const double *X, double *H, char *err, size_t cap);
int gqcu_chol_inverse_upper(double *A, int n, int *info, char *err, size_t cap);
int gqcu_vq_assign(int d, int n_slots, int per_slot, const double *x, const double *s2, const double *metric, int diag,
                   const double *C, int k, int32_t *idx, double *dist, double *objective, char *err, size_t cap);
int gqcu_vq_mstep(int d, int n_slots, int per_slot, const double *x, const double *s2, const double *metric, int diag,
                  const int32_t *idx, int k, double *C, int *empty, char *err, size_t cap);

#ifdef __cplusplus
}
#endif

#endif
