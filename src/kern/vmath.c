// vmath.c - vector exp, softmax pieces and decode attention (contract: vmath.h).
#include "kern/vmath.h"
#include "kern/kern.h"

#include <math.h>

// exp(x) = 2^n · e^r, n = round(x / ln 2), r = x − n · ln 2 in two steps
// (Cody-Waite), e^r by its Taylor polynomial to degree 6 (|r| <= ln2 / 2:
// truncation below 2e-8 relative), 2^n by the exponent bits.
AVX2_FN static GQ_INLINE __m256 exp8(__m256 x) {
    const __m256 lo = _mm256_set1_ps(-87.33654f);
    x = _mm256_max_ps(x, _mm256_set1_ps(-103.0f)); // keeps n in range; below lo the result is 0
    const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                     _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
    __m256 p = _mm256_set1_ps(1.0f / 720);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 120));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 24));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 6));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.5f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    // 2^n for n in [-149, 127]: two factors so that subnormal results are reached
    const __m256i ni = _mm256_cvtps_epi32(n);
    const __m256i h = _mm256_srai_epi32(ni, 1);
    const __m256 s1 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(h, _mm256_set1_epi32(127)), 23));
    const __m256 s2 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(_mm256_sub_epi32(ni, h), _mm256_set1_epi32(127)), 23));
    const __m256 y = _mm256_mul_ps(_mm256_mul_ps(p, s1), s2);
    return _mm256_and_ps(y, _mm256_cmp_ps(x, lo, _CMP_GE_OQ));
}

// Σ exp(x[i] − m) in double; out (may be x, or NULL: the terms not kept)
// gets the terms.
AVX2_FN static double vexp_avx2(const float *x, float *out, int n, float m) {
    const __m256 mv = _mm256_set1_ps(m);
    __m256d s0 = _mm256_setzero_pd(), s1 = _mm256_setzero_pd();
    int i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m256 e = exp8(_mm256_sub_ps(_mm256_loadu_ps(x + i), mv));
        if (out) _mm256_storeu_ps(out + i, e);
        s0 = _mm256_add_pd(s0, _mm256_cvtps_pd(_mm256_castps256_ps128(e)));
        s1 = _mm256_add_pd(s1, _mm256_cvtps_pd(_mm256_extractf128_ps(e, 1)));
    }
    double t[4];
    _mm256_storeu_pd(t, _mm256_add_pd(s0, s1));
    double sum = t[0] + t[1] + t[2] + t[3];
    if (i < n) {
        float buf[8];
        for (int j = 0; j < 8; j++) buf[j] = i + j < n ? x[i + j] - m : -INFINITY;
        _mm256_storeu_ps(buf, exp8(_mm256_loadu_ps(buf)));
        for (int j = i; j < n; j++) {
            if (out) out[j] = buf[j - i];
            sum += buf[j - i];
        }
    }
    return sum;
}

double gq_vexp_shift(float *x, int n, float m) {
    if (gq_qmatmul_isa() >= GQ_ISA_AVX2) return vexp_avx2(x, x, n, m);
    double sum = 0;
    for (int i = 0; i < n; i++) x[i] = expf(x[i] - m), sum += x[i];
    return sum;
}

AVX2_FN static float vmax_avx2(const float *x, int n) {
    __m256 m0 = _mm256_set1_ps(-INFINITY), m1 = m0;
    int i = 0;
    for (; i + 16 <= n; i += 16) m0 = _mm256_max_ps(m0, _mm256_loadu_ps(x + i)), m1 = _mm256_max_ps(m1, _mm256_loadu_ps(x + i + 8));
    float t[8], mx = -INFINITY;
    _mm256_storeu_ps(t, _mm256_max_ps(m0, m1));
    for (int j = 0; j < 8; j++) mx = t[j] > mx ? t[j] : mx;
    for (; i < n; i++) mx = x[i] > mx ? x[i] : mx;
    return mx;
}

float gq_vmax(const float *x, int n) {
    if (gq_qmatmul_isa() >= GQ_ISA_AVX2) return vmax_avx2(x, n);
    float mx = -INFINITY;
    for (int i = 0; i < n; i++) mx = x[i] > mx ? x[i] : mx;
    return mx;
}

void gq_vscale(float *x, int n, float s) {
    for (int i = 0; i < n; i++) x[i] *= s;
}

AVX2_FN static double sumsq_avx2(const float *x, int n) {
    __m256d a0 = _mm256_setzero_pd(), a1 = _mm256_setzero_pd();
    int j = 0;
    for (; j + 8 <= n; j += 8) {
        const __m256d lo = _mm256_cvtps_pd(_mm_loadu_ps(x + j)), hi = _mm256_cvtps_pd(_mm_loadu_ps(x + j + 4));
        a0 = _mm256_fmadd_pd(lo, lo, a0), a1 = _mm256_fmadd_pd(hi, hi, a1);
    }
    double t[4];
    _mm256_storeu_pd(t, _mm256_add_pd(a0, a1));
    double ss = (t[0] + t[1]) + (t[2] + t[3]);
    for (; j < n; j++) ss += (double)x[j] * x[j];
    return ss;
}

void gq_vrmsnorm(float *out, const float *x, const float *w, int dim, float eps) {
    double ss = 0;
    if (gq_qmatmul_isa() >= GQ_ISA_AVX2) ss = sumsq_avx2(x, dim);
    else
        for (int j = 0; j < dim; j++) ss += (double)x[j] * x[j];
    const float scale = (float)(1.0 / sqrt(ss / dim + eps));
    for (int j = 0; j < dim; j++) out[j] = x[j] * scale * w[j];
}

AVX2_FN static void vswiglu_avx2(float *g, const float *u, int n) {
    const __m256 one = _mm256_set1_ps(1.0f), sgn = _mm256_set1_ps(-0.0f);
    int i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m256 gv = _mm256_loadu_ps(g + i);
        const __m256 e = exp8(_mm256_xor_ps(gv, sgn));
        _mm256_storeu_ps(g + i, _mm256_mul_ps(_mm256_div_ps(gv, _mm256_add_ps(one, e)), _mm256_loadu_ps(u + i)));
    }
    for (; i < n; i++) g[i] = g[i] / (1.0f + expf(-g[i])) * u[i];
}

void gq_vswiglu(float *g, const float *u, int n) {
    if (gq_qmatmul_isa() >= GQ_ISA_AVX2) {
        vswiglu_avx2(g, u, n);
        return;
    }
    for (int i = 0; i < n; i++) g[i] = g[i] / (1.0f + expf(-g[i])) * u[i];
}

AVX2_FN static void attn_partial_avx2(const float *q, int nq, const float *k, const float *v, int t0, int t1, int hd,
                                      int ld, float scale, float *S, float *m, double *z, float *o) {
    const int T = t1 - t0;
    for (int t = 0; t < T; t++) { // each key row once for the nq heads
        const float *kt = k + (size_t)(t0 + t) * ld;
        for (int i = 0; i < nq; i++) {
            const float *qi = q + (size_t)i * hd;
            __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
            int j = 0;
            for (; j + 16 <= hd; j += 16) {
                a0 = _mm256_fmadd_ps(_mm256_loadu_ps(qi + j), _mm256_loadu_ps(kt + j), a0);
                a1 = _mm256_fmadd_ps(_mm256_loadu_ps(qi + j + 8), _mm256_loadu_ps(kt + j + 8), a1);
            }
            if (j + 8 <= hd) a0 = _mm256_fmadd_ps(_mm256_loadu_ps(qi + j), _mm256_loadu_ps(kt + j), a0), j += 8;
            float a = gq_hsum256(_mm256_add_ps(a0, a1));
            for (; j < hd; j++) a += qi[j] * kt[j];
            S[(size_t)i * T + t] = a * scale;
        }
    }
    for (int i = 0; i < nq; i++) {
        float *s = S + (size_t)i * T, *oi = o + (size_t)i * hd;
        m[i] = gq_vmax(s, T);
        z[i] = vexp_avx2(s, s, T, m[i]);
        int j = 0;
        for (; j + 8 <= hd; j += 8) {
            __m256 acc = _mm256_setzero_ps();
            for (int t = 0; t < T; t++) acc = _mm256_fmadd_ps(_mm256_set1_ps(s[t]), _mm256_loadu_ps(v + (size_t)(t0 + t) * ld + j), acc);
            _mm256_storeu_ps(oi + j, acc);
        }
        for (; j < hd; j++) {
            float acc = 0;
            for (int t = 0; t < T; t++) acc += s[t] * v[(size_t)(t0 + t) * ld + j];
            oi[j] = acc;
        }
    }
}

// o[i] (i < NI) = Σ_t S[i][t] · v_t[j0 .. j0 + 64)
AVX512_FN static GQ_INLINE void attn_pv_avx512(const float *S, int T, const float *v, int t0, int ld, int j0, int hd,
                                               float *o, const int NI) {
    __m512 acc[4][4];
    for (int i = 0; i < NI; i++)
        for (int c = 0; c < 4; c++) acc[i][c] = _mm512_setzero_ps();
    for (int t = 0; t < T; t++) {
        const float *vt = v + (size_t)(t0 + t) * ld + j0;
        const __m512 v0 = _mm512_loadu_ps(vt), v1 = _mm512_loadu_ps(vt + 16), v2 = _mm512_loadu_ps(vt + 32), v3 = _mm512_loadu_ps(vt + 48);
        for (int i = 0; i < NI; i++) {
            const __m512 si = _mm512_set1_ps(S[(size_t)i * T + t]);
            acc[i][0] = _mm512_fmadd_ps(si, v0, acc[i][0]), acc[i][1] = _mm512_fmadd_ps(si, v1, acc[i][1]);
            acc[i][2] = _mm512_fmadd_ps(si, v2, acc[i][2]), acc[i][3] = _mm512_fmadd_ps(si, v3, acc[i][3]);
        }
    }
    for (int i = 0; i < NI; i++)
        for (int c = 0; c < 4; c++) _mm512_storeu_ps(o + (size_t)i * hd + j0 + 16 * c, acc[i][c]);
}

// The same for head sizes that are multiples of 64: scores four positions
// at a time (one transposing reduction for four dot products), and o with
// each value row's 64-float slices loaded once for up to four heads.
AVX512_FN static void attn_partial_avx512(const float *q, int nq, const float *k, const float *v, int t0, int t1, int hd,
                                          int ld, float scale, float *S, float *m, double *z, float *o) {
    const int T = t1 - t0;
    for (int i = 0; i < nq; i++) {
        const float *qi = q + (size_t)i * hd;
        float *si = S + (size_t)i * T;
        int t = 0;
        for (; t + 4 <= T; t += 4) {
            const float *k0 = k + (size_t)(t0 + t) * ld;
            __m512 f0 = _mm512_setzero_ps(), f1 = f0, f2 = f0, f3 = f0;
            for (int j = 0; j < hd; j += 16) {
                const __m512 qv = _mm512_loadu_ps(qi + j);
                f0 = _mm512_fmadd_ps(qv, _mm512_loadu_ps(k0 + j), f0);
                f1 = _mm512_fmadd_ps(qv, _mm512_loadu_ps(k0 + ld + j), f1);
                f2 = _mm512_fmadd_ps(qv, _mm512_loadu_ps(k0 + 2 * (size_t)ld + j), f2);
                f3 = _mm512_fmadd_ps(qv, _mm512_loadu_ps(k0 + 3 * (size_t)ld + j), f3);
            }
            _mm_storeu_ps(si + t, _mm_mul_ps(gq_hsum4_512(f0, f1, f2, f3), _mm_set1_ps(scale)));
        }
        for (; t < T; t++) {
            const float *kt = k + (size_t)(t0 + t) * ld;
            __m512 f = _mm512_setzero_ps();
            for (int j = 0; j < hd; j += 16) f = _mm512_fmadd_ps(_mm512_loadu_ps(qi + j), _mm512_loadu_ps(kt + j), f);
            si[t] = _mm512_reduce_add_ps(f) * scale;
        }
        m[i] = gq_vmax(si, T);
        z[i] = vexp_avx2(si, si, T, m[i]);
    }
    for (int i0 = 0; i0 < nq; i0 += 4) {
        const int ni = nq - i0 < 4 ? nq - i0 : 4;
        const float *Si = S + (size_t)i0 * T;
        float *oi = o + (size_t)i0 * hd;
        for (int j0 = 0; j0 < hd; j0 += 64) switch (ni) {
            case 1: attn_pv_avx512(Si, T, v, t0, ld, j0, hd, oi, 1); break;
            case 2: attn_pv_avx512(Si, T, v, t0, ld, j0, hd, oi, 2); break;
            case 3: attn_pv_avx512(Si, T, v, t0, ld, j0, hd, oi, 3); break;
            default: attn_pv_avx512(Si, T, v, t0, ld, j0, hd, oi, 4); break;
            }
    }
}

void gq_attn_partial(const float *q, int nq, const float *k, const float *v, int t0, int t1, int hd, int ld, float scale,
                     float *S, float *m, double *z, float *o) {
    if (t1 <= t0) {
        for (int i = 0; i < nq; i++) m[i] = -INFINITY, z[i] = 0;
        memset(o, 0, sizeof(float) * (size_t)nq * hd);
        return;
    }
    if (gq_qmatmul_isa() == GQ_ISA_AVX512 && hd % 64 == 0) {
        attn_partial_avx512(q, nq, k, v, t0, t1, hd, ld, scale, S, m, z, o);
        return;
    }
    if (gq_qmatmul_isa() >= GQ_ISA_AVX2) {
        attn_partial_avx2(q, nq, k, v, t0, t1, hd, ld, scale, S, m, z, o);
        return;
    }
    const int T = t1 - t0;
    for (int i = 0; i < nq; i++) {
        float *s = S + (size_t)i * T, *oi = o + (size_t)i * hd;
        for (int t = 0; t < T; t++) {
            float a = 0;
            for (int j = 0; j < hd; j++) a += q[(size_t)i * hd + j] * k[(size_t)(t0 + t) * ld + j];
            s[t] = a * scale;
        }
        m[i] = gq_vmax(s, T);
        double sum = 0;
        for (int t = 0; t < T; t++) s[t] = expf(s[t] - m[i]), sum += s[t];
        z[i] = sum;
        for (int j = 0; j < hd; j++) oi[j] = 0;
        for (int t = 0; t < T; t++)
            for (int j = 0; j < hd; j++) oi[j] += s[t] * v[(size_t)(t0 + t) * ld + j];
    }
}

void gq_attn_combine(int np, const float *m, const double *z, const float *o, size_t ostride, int hd, float *out) {
    float M = -INFINITY;
    for (int p = 0; p < np; p++)
        if (z[p] > 0 && m[p] > M) M = m[p];
    double Z = 0;
    float w[64];
    for (int p = 0; p < np && p < 64; p++) w[p] = z[p] > 0 ? expf(m[p] - M) : 0, Z += w[p] * z[p];
    const float inv = (float)(1.0 / Z);
    for (int j = 0; j < hd; j++) {
        float acc = 0;
        for (int p = 0; p < np && p < 64; p++) acc += w[p] * o[(size_t)p * ostride + j];
        out[j] = acc * inv;
    }
}

double gq_row_nll(const float *row, int n, int32_t target) {
    const float mx = gq_vmax(row, n);
    double z = 0;
    if (gq_qmatmul_isa() >= GQ_ISA_AVX2) z = vexp_avx2(row, NULL, n, mx);
    else
        for (int v = 0; v < n; v++) z += expf(row[v] - mx); // terms in (0, 1]: float exp, double sum
    return log(z) + mx - row[target];
}
