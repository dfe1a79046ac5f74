/* Per-edge small matrix products for umadrive's eager CPU path; loaded and
 * documented by edge_products.py next to this file.
 *
 * All arrays are contiguous and row-major; E edges, each with its own matrices:
 *   apply: out[e] = m[e] @ x[e]      m (E, A, B), x (E, B, C), out (E, A, C)
 *   outer: out[e] = g[e] @ x[e]^T    g (E, A, C), x (E, B, C), out (E, A, B)
 * The loops over the channels C are vectorised (OpenMP simd). apply skips
 * zero entries of m (UMA's edge rotations are block diagonal by degree):
 * adding 0 * x changes no finite sum.
 *
 * The edges are split into `threads` contiguous ranges, one per OpenMP thread
 * (libgomp.so.1: in a process that has imported torch, torch's own runtime and
 * thread pool, see edge_products.py); each edge is computed by one thread in a
 * fixed order, so the results do not depend on the number of threads.
 */
typedef void (*edge_range_fn)(const void *, const void *, void *, long, long, long, long,
                              long);

#define EDGE_PRODUCTS(T, SUFFIX)                                                          \
    static void apply_##SUFFIX(const void *mv, const void *xv, void *outv, long first,      \
                               long last, long A, long B, long C) {                         \
        const T *m = mv, *x = xv;                                                           \
        T *out = outv;                                                                      \
        for (long e = first; e < last; ++e) {                                               \
            const T *me = m + e * A * B, *xe = x + e * B * C;                               \
            T *oe = out + e * A * C;                                                        \
            for (long i = 0; i < A; ++i) {                                                  \
                T *o = oe + i * C;                                                          \
                _Pragma("omp simd") for (long c = 0; c < C; ++c) o[c] = 0;                  \
                for (long j = 0; j < B; ++j) {                                              \
                    const T w = me[i * B + j];                                              \
                    if (w == 0) continue;                                                   \
                    const T *xj = xe + j * C;                                               \
                    _Pragma("omp simd") for (long c = 0; c < C; ++c) o[c] += w * xj[c];     \
                }                                                                           \
            }                                                                               \
        }                                                                                   \
    }                                                                                       \
                                                                                            \
    static void outer_##SUFFIX(const void *gv, const void *xv, void *outv, long first,      \
                               long last, long A, long B, long C) {                         \
        const T *g = gv, *x = xv;                                                           \
        T *out = outv;                                                                      \
        for (long e = first; e < last; ++e) {                                               \
            const T *ge = g + e * A * C, *xe = x + e * B * C;                               \
            T *oe = out + e * A * B;                                                        \
            for (long i = 0; i < A; ++i) {                                                  \
                for (long j = 0; j < B; ++j) {                                              \
                    const T *gi = ge + i * C, *xj = xe + j * C;                             \
                    T sum = 0;                                                              \
                    _Pragma("omp simd reduction(+ : sum)") for (long c = 0; c < C; ++c)     \
                        sum += gi[c] * xj[c];                                               \
                    oe[i * B + j] = sum;                                                    \
                }                                                                           \
            }                                                                               \
        }                                                                                   \
    }

EDGE_PRODUCTS(float, f32)
EDGE_PRODUCTS(double, f64)

static void run(edge_range_fn fn, const void *a, const void *b, void *out, long E, long A,
                long B, long C, int threads) {
    if (threads < 1) threads = 1;
#pragma omp parallel for schedule(static) num_threads(threads)
    for (int k = 0; k < threads; ++k)
        fn(a, b, out, E * k / threads, E * (k + 1) / threads, A, B, C);
}

void umadrive_apply_f32(const float *m, const float *x, float *out, long E, long A, long B,
                        long C, int threads) {
    run(apply_f32, m, x, out, E, A, B, C, threads);
}

void umadrive_apply_f64(const double *m, const double *x, double *out, long E, long A, long B,
                        long C, int threads) {
    run(apply_f64, m, x, out, E, A, B, C, threads);
}

void umadrive_outer_f32(const float *g, const float *x, float *out, long E, long A, long B,
                        long C, int threads) {
    run(outer_f32, g, x, out, E, A, B, C, threads);
}

void umadrive_outer_f64(const double *g, const double *x, double *out, long E, long A, long B,
                        long C, int threads) {
    run(outer_f64, g, x, out, E, A, B, C, threads);
}
