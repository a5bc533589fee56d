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

AVX2_FN static double vexp_shift_avx2(float *x, int n, float m) {
    const __m256 mv = _mm256_set1_ps(m);
    __m256d s0 = _mm256_setzero_pd(), s1 = _mm256_setzero_pd();
    int i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m256 e = exp8(_mm256_sub_ps(_mm256_loadu_ps(x + i), mv));
        _mm256_storeu_ps(x + i, e);
        s0 = _mm256_add_pd(s0, _mm256_cvtps_pd(_mm256_castps256_ps128(e)));
        s1 = _mm256_add_pd(s1, _mm256_cvtps_pd(_mm256_extractf128_ps(e, 1)));
    }
    double t[4];
    _mm256_storeu_pd(t, _mm256_add_pd(s0, s1));
    double sum = t[0] + t[1] + t[2] + t[3];
    if (i < n) {
        float buf[8] = {0};
        for (int j = i; j < n; j++) buf[j - i] = x[j] - m;
        _mm256_storeu_ps(buf, exp8(_mm256_loadu_ps(buf)));
        for (int j = i; j < n; j++) x[j] = buf[j - i], sum += buf[j - i];
    }
    return sum;
}

double gq_vexp_shift(float *x, int n, float m) {
    if (gq_qmatmul_isa() >= GQ_ISA_AVX2) return vexp_shift_avx2(x, n, m);
    double sum = 0;
    for (int i = 0; i < n; i++) x[i] = expf(x[i] - m), sum += x[i];
    return sum;
}

float gq_vmax(const float *x, int n) {
    float mx = -INFINITY;
    for (int i = 0; i < n; i++) mx = x[i] > mx ? x[i] : mx;
    return mx;
}

void gq_vscale(float *x, int n, float s) {
    for (int i = 0; i < n; i++) x[i] *= s;
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
        z[i] = vexp_shift_avx2(s, T, m[i]);
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

void gq_attn_partial(const float *q, int nq, const float *k, const float *v, int t0, int t1, int hd, int ld, float scale,
                     float *S, float *m, double *z, float *o) {
    if (t1 <= t0) {
        for (int i = 0; i < nq; i++) m[i] = -INFINITY, z[i] = 0;
        memset(o, 0, sizeof(float) * (size_t)nq * hd);
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
    float mx = row[0];
    for (int v = 1; v < n; v++) mx = row[v] > mx ? row[v] : mx;
    double z = 0;
    for (int v = 0; v < n; v++) z += expf(row[v] - mx); // terms in (0, 1]: float exp, double sum
    return log(z) + mx - row[target];
}
