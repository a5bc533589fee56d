// hostdev.h - GQ_HOST_DEVICE: a small function shared by the C code and the
// CUDA kernels (backend/cu_*.cu) is defined once, in a header, with this.
#ifndef GQ_HOSTDEV_H
#define GQ_HOSTDEV_H

#ifdef __CUDACC__
#define GQ_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define GQ_HOST_DEVICE inline
#endif

#endif
