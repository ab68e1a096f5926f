#define _GNU_SOURCE
#include "CWscan.h"
#include <stdlib.h>
#include <string.h>
#include <stdio.h>
#define XXH_STATIC_LINKING_ONLY
#include <xxhash.h>
#include <zlib.h>
#include <openssl/evp.h>
#include <cblas.h>
#include <lapacke.h>
#include <gvc.h>
#include <immintrin.h>
#include <dlfcn.h>
#include <pthread.h>
#include <spawn.h>
#include <signal.h>
#include <fcntl.h>
#include <errno.h>
#include <unistd.h>
#include <sys/mman.h>
#include <math.h>
#include <malloc.h>

/* ---- OpenBLAS / LAPACKE, loaded on first use ----
   OpenBLAS reads OPENBLAS_CORETYPE when it loads and starts worker threads that spin for a while; loading it
   lazily lets cataloguing run without those threads competing for the cores, and lets us choose the core type
   from the CPU flags before the library initialises (never overriding a value the user set). */
static pthread_once_t blas_once = PTHREAD_ONCE_INIT;
static int blas_ok = 0;
static char blas_err[512];
static struct {
    __typeof__(cblas_sgemm) *sgemm; __typeof__(cblas_dgemm) *dgemm; __typeof__(cblas_dsyrk) *dsyrk;
    __typeof__(LAPACKE_sgesdd_work) *sgesdd; __typeof__(LAPACKE_dgesdd_work) *dgesdd;
    __typeof__(LAPACKE_dsyevd_work) *dsyevd; __typeof__(LAPACKE_ssyevd_work) *ssyevd;
    __typeof__(LAPACKE_dsyevd_2stage_work) *dsyevd2; __typeof__(LAPACKE_ssyevd_2stage_work) *ssyevd2;
    __typeof__(cblas_ssyrk) *ssyrk;
    void (*set_threads)(int); int (*get_threads)(void); char *(*corename)(void);
} B;

static void blas_load(void) {
    if (!getenv("OPENBLAS_CORETYPE")) { const char *c = wscan_openblas_coretype(); if (c) setenv("OPENBLAS_CORETYPE", c, 0); }
    void *ob = dlopen("libopenblas.so.0", RTLD_NOW | RTLD_GLOBAL);
    if (!ob) { snprintf(blas_err, sizeof blas_err, "cannot load OpenBLAS: %s", dlerror()); return; }
    void *lp = dlopen("liblapacke.so.3", RTLD_NOW | RTLD_GLOBAL);
    if (!lp) { snprintf(blas_err, sizeof blas_err, "cannot load LAPACKE: %s", dlerror()); return; }
    *(void **)&B.sgemm = dlsym(ob, "cblas_sgemm"); *(void **)&B.dgemm = dlsym(ob, "cblas_dgemm"); *(void **)&B.dsyrk = dlsym(ob, "cblas_dsyrk");
    *(void **)&B.ssyrk = dlsym(ob, "cblas_ssyrk");
    *(void **)&B.set_threads = dlsym(ob, "openblas_set_num_threads"); *(void **)&B.get_threads = dlsym(ob, "openblas_get_num_threads");
    *(void **)&B.corename = dlsym(ob, "openblas_get_corename");
    *(void **)&B.sgesdd = dlsym(lp, "LAPACKE_sgesdd_work"); *(void **)&B.dgesdd = dlsym(lp, "LAPACKE_dgesdd_work");
    *(void **)&B.dsyevd = dlsym(lp, "LAPACKE_dsyevd_work"); *(void **)&B.ssyevd = dlsym(lp, "LAPACKE_ssyevd_work");
    *(void **)&B.dsyevd2 = dlsym(lp, "LAPACKE_dsyevd_2stage_work"); *(void **)&B.ssyevd2 = dlsym(lp, "LAPACKE_ssyevd_2stage_work");
    if (!B.sgemm || !B.dgemm || !B.dsyrk || !B.set_threads || !B.get_threads || !B.corename || !B.sgesdd || !B.dgesdd ||
        !B.dsyevd || !B.ssyevd || !B.dsyevd2 || !B.ssyevd2 || !B.ssyrk) { snprintf(blas_err, sizeof blas_err, "OpenBLAS/LAPACKE lack a required symbol"); return; }
    blas_ok = 1;
}

static void blas_require(void) {
    pthread_once(&blas_once, blas_load);
    if (!blas_ok) { fprintf(stderr, "wscan: %s (run scripts/install-deps)\n", blas_err); exit(4); }
}
#define cblas_sgemm (blas_require(), B.sgemm)
#define cblas_dgemm (blas_require(), B.dgemm)
#define cblas_dsyrk (blas_require(), B.dsyrk)
#define LAPACKE_sgesdd_work (blas_require(), B.sgesdd)
#define LAPACKE_dgesdd_work (blas_require(), B.dgesdd)
#define LAPACKE_dsyevd_work (blas_require(), B.dsyevd)
#define LAPACKE_ssyevd_work (blas_require(), B.ssyevd)
#define LAPACKE_dsyevd_2stage_work (blas_require(), B.dsyevd2)
#define LAPACKE_ssyevd_2stage_work (blas_require(), B.ssyevd2)
#define cblas_ssyrk (blas_require(), B.ssyrk)
#define openblas_set_num_threads (blas_require(), B.set_threads)
#define openblas_get_num_threads (blas_require(), B.get_threads)
#define openblas_get_corename (blas_require(), B.corename)

int wscan_cpu_has_avx512(void) {
#if defined(__x86_64__)
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw");
#else
    return 0;
#endif
}

__attribute__((target("avx512f,avx512bw")))
void wscan_bf16_block_stats_avx512(const void *src, size_t n, float shift, wscan_block_stats *out) {
    const uint16_t *s = (const uint16_t *)src;
    __m512 k = _mm512_set1_ps(shift);
    __m512 s1 = _mm512_setzero_ps(), s2 = _mm512_setzero_ps();
    __m512 mn = _mm512_set1_ps(__builtin_inff()), mx = _mm512_set1_ps(-__builtin_inff());
    __m512 zero = _mm512_setzero_ps();
    int64_t zeros = 0;
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m256i h = _mm256_loadu_si256((const __m256i *)(s + i));
        __m512 x = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
        __m512 d = _mm512_sub_ps(x, k);
        s1 = _mm512_add_ps(s1, d);
        s2 = _mm512_fmadd_ps(d, d, s2);
        mn = _mm512_min_ps(mn, x);
        mx = _mm512_max_ps(mx, x);
        zeros += __builtin_popcount((unsigned)_mm512_cmp_ps_mask(x, zero, _CMP_EQ_OQ));
    }
    double f1 = _mm512_reduce_add_ps(s1), f2 = _mm512_reduce_add_ps(s2);
    float fmn = _mm512_reduce_min_ps(mn), fmx = _mm512_reduce_max_ps(mx);
    int nonfinite = !__builtin_isfinite(f1) || !__builtin_isfinite(f2);
    for (; i < n; i++) {
        uint32_t b = (uint32_t)s[i] << 16; float x; memcpy(&x, &b, 4);
        if (!__builtin_isfinite(x)) { nonfinite = 1; break; }
        double d = (double)(x - shift); f1 += d; f2 += d * d;
        if (x < fmn) fmn = x;
        if (x > fmx) fmx = x;
        if (x == 0) zeros++;
    }
    out->s1 = f1; out->s2 = f2; out->mn = fmn; out->mx = fmx; out->zeros = zeros; out->nonfinite = nonfinite;
}

__attribute__((target("avx2,f16c")))
void wscan_f16_to_f32(const void *src, float *dst, size_t n) {
    const uint8_t *s = (const uint8_t *)src;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m128i h = _mm_loadu_si128((const __m128i *)(s + 2 * i));
        _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(h));
    }
    for (; i < n; i++) {
        uint16_t v; memcpy(&v, s + 2 * i, 2);
        __m128i h = _mm_cvtsi32_si128(v);
        dst[i] = _mm_cvtss_f32(_mm_cvtph_ps(h));
    }
}

int wscan_cpu_has_x86_64_v3(void) {
#if defined(__x86_64__)
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
           __builtin_cpu_supports("f16c") && __builtin_cpu_supports("bmi2");
#else
    return 0;
#endif
}

const char *wscan_openblas_coretype(void) {
#if defined(__x86_64__)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq")) return "SkylakeX";
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return "Haswell";
#endif
    return NULL;
}

struct wscan_xxh3_state { XXH3_state_t *st; };
wscan_xxh3_state *wscan_xxh3_new(void) {
    wscan_xxh3_state *s = malloc(sizeof *s);
    if (!s) return NULL;
    s->st = XXH3_createState();
    XXH3_128bits_reset(s->st);
    return s;
}
void wscan_xxh3_free(wscan_xxh3_state *s) { if (s) { XXH3_freeState(s->st); free(s); } }
void wscan_xxh3_update(wscan_xxh3_state *s, const void *d, size_t n) { XXH3_128bits_update(s->st, d, n); }
void wscan_xxh3_digest(wscan_xxh3_state *s, uint64_t *hi, uint64_t *lo) {
    XXH128_hash_t h = XXH3_128bits_digest(s->st); *hi = h.high64; *lo = h.low64;
}
void wscan_xxh3_128(const void *d, size_t n, uint64_t *hi, uint64_t *lo) {
    XXH128_hash_t h = XXH3_128bits(d, n); *hi = h.high64; *lo = h.low64;
}

struct wscan_sha256_state { EVP_MD_CTX *ctx; };
wscan_sha256_state *wscan_sha256_new(void) {
    wscan_sha256_state *s = malloc(sizeof *s);
    s->ctx = EVP_MD_CTX_new();
    EVP_DigestInit_ex(s->ctx, EVP_sha256(), NULL);
    return s;
}
void wscan_sha256_update(wscan_sha256_state *s, const void *d, size_t n) { EVP_DigestUpdate(s->ctx, d, n); }
void wscan_sha256_final(wscan_sha256_state *s, uint8_t out[32]) {
    unsigned int len = 32; EVP_DigestFinal_ex(s->ctx, out, &len); EVP_MD_CTX_free(s->ctx); free(s);
}

static int inflate_wbits(int wbits, const uint8_t *src, size_t srcLen, uint8_t *dst, size_t dstCap, size_t *outLen);
static int inflate_wbits_consumed(int wbits, const uint8_t *src, size_t srcLen, uint8_t *dst, size_t dstCap, size_t *outLen, size_t *consumed);
int wscan_inflate_raw(const uint8_t *src, size_t srcLen, uint8_t *dst, size_t dstCap, size_t *outLen) {
    return inflate_wbits(-MAX_WBITS, src, srcLen, dst, dstCap, outLen);
}
/* zlib or gzip (header detected), e.g. joblib compress= or .pkl.gz: the first stream. */
int wscan_inflate_auto(const uint8_t *src, size_t srcLen, uint8_t *dst, size_t dstCap, size_t *outLen) {
    /* Several members or streams one after another (gzip's multi-member files, a second zlib stream): Python's gzip
       and joblib read on through them, so they are inflated one after the other into dst. */
    size_t done = 0, used = 0, members = 0;
    for (;;) {
        /* zero padding between members is skipped, as Python's gzip does */
        if (members > 0) while (used < srcLen && src[used] == 0) used++;
        if (members > 0 && used >= srcLen) { *outLen = done; return 0; }
        size_t n = 0, consumed = 0;
        int rc = inflate_wbits_consumed(MAX_WBITS + 32, src + used, srcLen - used, dst + done, dstCap - done, &n, &consumed);
        /* Bytes after a complete member that start no stream at all: the end (a loader stops there too). */
        if (rc == -1 && n == 0 && members > 0) { *outLen = done; return 0; }
        done += n;
        if (rc != 0) { *outLen = done; return rc; }
        members++;
        used += consumed;
        if (used >= srcLen || consumed == 0) { *outLen = done; return 0; }
    }
}
static int inflate_wbits(int wbits, const uint8_t *src, size_t srcLen, uint8_t *dst, size_t dstCap, size_t *outLen) {
    size_t consumed = 0;
    return inflate_wbits_consumed(wbits, src, srcLen, dst, dstCap, outLen, &consumed);
}
/* One stream; *consumed is the input it used (for the next member of a multi-member file). */
static int inflate_wbits_consumed(int wbits, const uint8_t *src, size_t srcLen, uint8_t *dst, size_t dstCap, size_t *outLen, size_t *consumed) {
    z_stream zs; memset(&zs, 0, sizeof zs);
    if (inflateInit2(&zs, wbits) != Z_OK) return -1;
    size_t produced = 0; int rc = Z_OK;
    const size_t chunk = (size_t)1 << 30;
    zs.next_in = (Bytef *)src;
    size_t inLeft = srcLen;
    while (rc != Z_STREAM_END) {
        if (zs.avail_in == 0 && inLeft > 0) { size_t c = inLeft < chunk ? inLeft : chunk; zs.avail_in = (uInt)c; inLeft -= c; }
        if (produced >= dstCap) {
            /* Probe: is there more output? */
            uint8_t probe[1]; zs.next_out = probe; zs.avail_out = 1;
            rc = inflate(&zs, Z_NO_FLUSH);
            inflateEnd(&zs);
            if (rc == Z_STREAM_END && zs.avail_out == 1) { *outLen = produced; *consumed = srcLen - inLeft - zs.avail_in; return 0; }
            *outLen = produced;
            return -2;
        }
        size_t room = dstCap - produced; if (room > chunk) room = chunk;
        zs.next_out = dst + produced; zs.avail_out = (uInt)room;
        rc = inflate(&zs, Z_NO_FLUSH);
        produced += room - zs.avail_out;
        if (rc == Z_STREAM_END) break;
        /* On a data error or a truncated stream *outLen still says how much was inflated before it (a loader that
           unpickles while it inflates has already run that part). */
        if (rc != Z_OK) { inflateEnd(&zs); *outLen = produced; return -1; }
        if (zs.avail_in == 0 && inLeft == 0 && zs.avail_out != 0) { inflateEnd(&zs); *outLen = produced; return -1; } /* truncated */
    }
    *consumed = srcLen - inLeft - zs.avail_in;
    inflateEnd(&zs);
    *outLen = produced;
    return 0;
}
uint32_t wscan_crc32(uint32_t crc, const uint8_t *d, size_t n) {
    while (n > 0) { uInt c = n > (1u << 30) ? (1u << 30) : (uInt)n; crc = (uint32_t)crc32(crc, d, c); d += c; n -= c; }
    return crc;
}

int wscan_deflate_zlib(const uint8_t *src, size_t srcLen, uint8_t **out, size_t *outLen, int level) {
    *out = NULL; *outLen = 0;
    if (level < -1 || level > 9) return -1;
    uLong bound = compressBound((uLong)srcLen);
    uint8_t *buf = malloc(bound ? bound : 1);
    if (!buf) return -2;
    uLongf dlen = bound;
    int rc = compress2(buf, &dlen, src ? src : (const uint8_t *)"", (uLong)srcLen, level);
    if (rc != Z_OK) { free(buf); return rc == Z_MEM_ERROR ? -2 : -1; }
    *out = buf; *outLen = (size_t)dlen;
    return 0;
}

void wscan_sgemm(int tA, int tB, int m, int n, int k, float alpha, const float *a, int lda,
                 const float *b, int ldb, float beta, float *c, int ldc) {
    cblas_sgemm(CblasRowMajor, tA ? CblasTrans : CblasNoTrans, tB ? CblasTrans : CblasNoTrans,
                m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}
void wscan_dgemm(int tA, int tB, int m, int n, int k, double alpha, const double *a, int lda,
                 const double *b, int ldb, double beta, double *c, int ldc) {
    cblas_dgemm(CblasRowMajor, tA ? CblasTrans : CblasNoTrans, tB ? CblasTrans : CblasNoTrans,
                m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

/* Row-major m x n == column-major n x m (the transpose): same singular values. */
int wscan_sgesdd_values(int m, int n, float *a, float *s) {
    lapack_int M = n, N = m, lda = n, mn = M < N ? M : N, mx = M > N ? M : N;
    lapack_int liwork = 8 * mn;
    long long lw = 3LL * mn + (mx > 7LL * mn ? mx : 7LL * mn) + 64;
    float *work = malloc(sizeof(float) * (size_t)lw);
    lapack_int *iwork = malloc(sizeof(lapack_int) * (size_t)liwork);
    if (!work || !iwork) { free(work); free(iwork); return -1000; }
    lapack_int info = LAPACKE_sgesdd_work(LAPACK_COL_MAJOR, 'N', M, N, a, lda, s, NULL, 1, NULL, 1, work, (lapack_int)lw, iwork);
    free(work); free(iwork); return info;
}
int wscan_dgesdd_values(int m, int n, double *a, double *s) {
    lapack_int M = n, N = m, lda = n, mn = M < N ? M : N, mx = M > N ? M : N;
    lapack_int liwork = 8 * mn;
    long long lw = 3LL * mn + (mx > 7LL * mn ? mx : 7LL * mn) + 64;
    double *work = malloc(sizeof(double) * (size_t)lw);
    lapack_int *iwork = malloc(sizeof(lapack_int) * (size_t)liwork);
    if (!work || !iwork) { free(work); free(iwork); return -1000; }
    lapack_int info = LAPACKE_dgesdd_work(LAPACK_COL_MAJOR, 'N', M, N, a, lda, s, NULL, 1, NULL, 1, work, (lapack_int)lw, iwork);
    free(work); free(iwork); return info;
}
/* Eigenvalue-only workspace: 2n + 1 is LAPACK's minimum, but with it dsytrd cannot block and falls back to the
   level-2 dsytd2 (rank-2 updates through daxpy): give it room for panels of 64 columns. */
static lapack_int syevd_values_lwork(int n) { return 2 * (lapack_int)n + 1 + (lapack_int)n * 66 + 64; }
static int dsyevd_values(int n, double *a, double *w, char uplo) {
    lapack_int lwork = syevd_values_lwork(n), liwork = 1;
    double *work = malloc(sizeof(double) * (size_t)lwork);
    lapack_int *iwork = malloc(sizeof(lapack_int) * (size_t)liwork);
    if (!work || !iwork) { free(work); free(iwork); return -1000; }
    lapack_int info = LAPACKE_dsyevd_work(LAPACK_COL_MAJOR, 'N', uplo, n, a, n, w, work, lwork, iwork, liwork);
    free(work); free(iwork); return info;
}
int wscan_dsyevd_values(int n, double *a, double *w) { return dsyevd_values(n, a, w, 'U'); }
int wscan_dsyevd_vectors(int n, double *a, double *w) {
    /* Column-major symmetric input equals row-major; output eigenvector j is column j = a[j*n ...] in column-major. */
    long long lwork = 1LL + 6LL * n + 2LL * n * n + 64;
    long long liwork = 3LL + 5LL * n + 16;
    double *work = malloc(sizeof(double) * (size_t)lwork);
    lapack_int *iwork = malloc(sizeof(lapack_int) * (size_t)liwork);
    if (!work || !iwork) { free(work); free(iwork); return -1000; }
    lapack_int info = LAPACKE_dsyevd_work(LAPACK_COL_MAJOR, 'V', 'U', n, a, n, w, work, (lapack_int)lwork, iwork, (lapack_int)liwork);
    free(work); free(iwork); return info;
}
static int ssyevd_values(int n, float *a, float *w, char uplo) {
    lapack_int lwork = syevd_values_lwork(n), liwork = 1;
    float *work = malloc(sizeof(float) * (size_t)lwork);
    lapack_int *iwork = malloc(sizeof(lapack_int) * (size_t)liwork);
    if (!work || !iwork) { free(work); free(iwork); return -1000; }
    lapack_int info = LAPACKE_ssyevd_work(LAPACK_COL_MAJOR, 'N', uplo, n, a, n, w, work, lwork, iwork, liwork);
    free(work); free(iwork); return info;
}
int wscan_ssyevd_values(int n, float *a, float *w) { return ssyevd_values(n, a, w, 'U'); }
/* Eigenvalues of the k x k Gram matrix g (upper triangle, column-major); consumes g. */
static int gram_solve(int k, double *g, double *w) {
    /* NaN/Inf in the matrix reach the Gram matrix (each element's square is on its diagonal): refuse before LAPACK
       (which would print xerbla messages). Only the lower triangle (dsyrk's) is meaningful: dsytrd on the lower
       triangle of a column-major matrix runs ~10% faster than on the upper one (measured for k = 384). */
    for (int j = 0; j < k; j++)
        for (int i = j; i < k; i++)
            if (!isfinite(g[(size_t)j * k + i])) { free(g); return WSCAN_NONFINITE; }
    if (k <= WSCAN_GRAM_ONE_STAGE_MAX) {
        /* Small matrices: the one-stage reduction is faster than the two-stage one's band-reduction overhead. */
        int info1 = dsyevd_values(k, g, w, 'L');
        free(g);
        return info1;
    }
    /* Workspace query; LAPACK 3.11 reports it as a float, so add a margin instead of trusting it exactly. */
    double wq = 0; lapack_int iq = 0;
    lapack_int info = LAPACKE_dsyevd_2stage_work(LAPACK_COL_MAJOR, 'N', 'L', k, g, k, w, &wq, -1, &iq, -1);
    if (info != 0) { free(g); return info; }
    long long lwork = (long long)(wq * 1.01) + 1024;
    lapack_int liwork = iq > 0 ? iq + 16 : 16;
    double *work = malloc(sizeof(double) * (size_t)lwork);
    lapack_int *iwork = malloc(sizeof(lapack_int) * (size_t)liwork);
    if (!work || !iwork) { free(g); free(work); free(iwork); return -1000; }
    info = LAPACKE_dsyevd_2stage_work(LAPACK_COL_MAJOR, 'N', 'L', k, g, k, w, work, (lapack_int)lwork, iwork, liwork);
    free(g); free(work); free(iwork);
    return info;
}

static int gram_eigvals_d(int m, int n, const double *a, double *w) {
    int k = m < n ? m : n;
    double *g = calloc((size_t)k * (size_t)k, sizeof(double));
    if (!g) return -1000;
    if (n <= m) /* row-major A (m x n): A^T A = col-major view: A_cm is n x m; G = A_cm A_cm^T */
        cblas_dsyrk(CblasColMajor, CblasLower, CblasNoTrans, n, m, 1.0, a, n, 0.0, g, n);
    else        /* A A^T: A_cm (n x m), G = A_cm^T A_cm (m x m) */
        cblas_dsyrk(CblasColMajor, CblasLower, CblasTrans, m, n, 1.0, a, n, 0.0, g, m);
    return gram_solve(k, g, w);
}
int wscan_gram_eigvals_d(int m, int n, const double *a, double *w) { return gram_eigvals_d(m, n, a, w); }
int wscan_gram_eigvals(int m, int n, const float *a, double *w) {
    /* The Gram matrix in float64, accumulated over panels converted from float32 into one reused buffer
       (never a float64 copy of the whole matrix). Tall (n <= m): A^T A over row panels; wide: A A^T over
       column panels. */
    int k = m < n ? m : n;
    if (k <= 0) return 0;                              /* an empty matrix has no eigenvalues */
    double *g = calloc((size_t)k * (size_t)k, sizeof(double));
    if (!g) return -1000;
    size_t other = (size_t)(n <= m ? m : n);          /* the summed dimension */
    /* ~1 MiB for narrow matrices; at least 256 rows for wide ones, where thinner panels starve dsyrk (a rank-32
       update of a 4096² Gram matrix runs at 2/3 of the speed of a rank-256 one: measured 4.2 s against 2.9 s for
       8192×4096), at 8 MiB for k = 4096. */
    size_t panel = (size_t)131072 / (size_t)k;
    if (panel < 256) panel = 256;
    if (panel > other) panel = other;
    double *buf = malloc(sizeof(double) * panel * (size_t)k);
    if (!buf) { free(g); return -1000; }
    for (size_t p0 = 0; p0 < other; p0 += panel) {
        size_t p = other - p0 < panel ? other - p0 : panel;
        if (n <= m) {   /* rows p0..p0+p of A (each n floats): col-major n x p panel */
            const float *src = a + p0 * (size_t)n;
            for (size_t i = 0; i < p * (size_t)n; i++) buf[i] = src[i];
            cblas_dsyrk(CblasColMajor, CblasLower, CblasNoTrans, n, (int)p, 1.0, buf, n, p0 ? 1.0 : 0.0, g, n);
        } else {        /* columns p0..p0+p of A, kept as a col-major p x m panel B (row i of A -> column i) */
            for (size_t i = 0; i < (size_t)m; i++) {
                const float *src = a + i * (size_t)n + p0;
                double *dst = buf + i * p;
                for (size_t j = 0; j < p; j++) dst[j] = src[j];
            }
            cblas_dsyrk(CblasColMajor, CblasLower, CblasTrans, m, (int)p, 1.0, buf, (int)p, p0 ? 1.0 : 0.0, g, m);
        }
    }
    free(buf);
    return gram_solve(k, g, w);
}
/* Eigenvalues (ascending, as float64) of the Gram matrix of a float32 matrix computed entirely in float32: ssyrk,
   then ssyevd (ssyevd_2stage above 1024). Half the work of the float64 route; for quantities that need the
   spectrum's shape rather than each value to 1e-4 (rand_distance's shuffled copy, with its caller's guards). */
int wscan_gram_eigvals_single(int m, int n, const float *a, double *w) {
    int k = m < n ? m : n;
    if (k <= 0) return 0;
    float *g = calloc((size_t)k * (size_t)k, sizeof(float)), *ws = malloc(sizeof(float) * (size_t)k);
    if (!g || !ws) { free(g); free(ws); return -1000; }
    if (n <= m) cblas_ssyrk(CblasColMajor, CblasLower, CblasNoTrans, n, m, 1.0f, a, n, 0.0f, g, n);
    else        cblas_ssyrk(CblasColMajor, CblasLower, CblasTrans, m, n, 1.0f, a, n, 0.0f, g, m);
    for (int j = 0; j < k; j++)
        for (int i = j; i < k; i++)
            if (!isfinite(g[(size_t)j * k + i])) { free(g); free(ws); return WSCAN_NONFINITE; }
    lapack_int info;
    if (k <= WSCAN_GRAM_ONE_STAGE_MAX) {
        info = ssyevd_values(k, g, ws, 'L');
    } else {
        float wq = 0; lapack_int iq = 0;
        info = LAPACKE_ssyevd_2stage_work(LAPACK_COL_MAJOR, 'N', 'L', k, g, k, ws, &wq, -1, &iq, -1);
        if (info == 0) {
            long long lwork = (long long)(wq * 1.01f) + 1024;
            lapack_int liwork = iq > 0 ? iq + 16 : 16;
            float *work = malloc(sizeof(float) * (size_t)lwork);
            lapack_int *iwork = malloc(sizeof(lapack_int) * (size_t)liwork);
            info = work && iwork ? LAPACKE_ssyevd_2stage_work(LAPACK_COL_MAJOR, 'N', 'L', k, g, k, ws, work, (lapack_int)lwork, iwork, liwork) : -1000;
            free(work); free(iwork);
        }
    }
    if (info == 0) for (int i = 0; i < k; i++) w[i] = ws[i];
    free(g); free(ws);
    return info;
}
void wscan_openblas_set_threads(int n) { openblas_set_num_threads(n); }
int wscan_openblas_get_threads(void) { return openblas_get_num_threads(); }
const char *wscan_openblas_corename(void) { return openblas_get_corename(); }

/* Graphviz reports errors through agerr(); collect them instead of letting them reach stderr. */
static char gv_errbuf[1024];
static size_t gv_errlen;
static int gv_collect(char *msg) {
    size_t n = strlen(msg);
    if (gv_errlen + n >= sizeof gv_errbuf) n = sizeof gv_errbuf - 1 - gv_errlen;
    memcpy(gv_errbuf + gv_errlen, msg, n); gv_errlen += n; gv_errbuf[gv_errlen] = 0;
    return 0;
}
static void gv_fail(char *err, size_t errLen, const char *what) {
    /* The first "Error" line of Graphviz's messages, else the first line. */
    const char *s = strstr(gv_errbuf, "Error");
    if (!s) s = gv_errbuf;
    size_t n = 0; while (s[n] && s[n] != '\n') n++;
    if (n > 0) snprintf(err, errLen, "%s: %.*s", what, (int)n, s);
    else snprintf(err, errLen, "%s", what);
}

char *wscan_dot_to_svg(const char *dot, size_t *outLen, char *err, size_t errLen) {
    if (errLen) err[0] = 0;
    gv_errlen = 0; gv_errbuf[0] = 0;
    agusererrf prevf = agseterrf(gv_collect);
    agerrlevel_t prevl = agseterr(AGWARN);
    agreseterrors();
    char *out = NULL;
    GVC_t *gvc = gvContext();
    if (!gvc) { snprintf(err, errLen, "gvContext failed"); goto done; }
    Agraph_t *g = agmemread(dot);
    if (!g || agerrors() > 0) {
        gv_fail(err, errLen, "DOT syntax error");
        if (g) agclose(g);
        gvFreeContext(gvc); goto done;
    }
    if (gvLayout(gvc, g, "dot") != 0) {
        gv_fail(err, errLen, "layout failed (is the Graphviz plugin registry config6a present? run libgvc6-config-update -c)");
        agclose(g); gvFreeContext(gvc); goto done;
    }
    char *buf = NULL;
#if defined(WSCAN_GV_SIZE_T)
    size_t len = 0;
#else
    unsigned int len = 0;
#endif
    int rc = gvRenderData(gvc, g, "svg", &buf, &len);
    if (rc == 0 && buf) {
        out = malloc((size_t)len + 1);
        if (out) { memcpy(out, buf, len); out[len] = 0; *outLen = len; }
        else snprintf(err, errLen, "out of memory");
        gvFreeRenderData(buf);
    } else gv_fail(err, errLen, "render failed");
    gvFreeLayout(gvc, g); agclose(g); gvFreeContext(gvc);
done:
    agseterrf(prevf);
    agseterr(prevl);
    return out;
}
void wscan_free(void *p) { free(p); }

/* ---- Mapped files and SIGBUS ----
   A mapped file that another process truncates while wscan reads it raises SIGBUS on the next page touched past the
   new end. The handler finds which registered mapping holds the faulting address, replaces the rest of that mapping
   with zero pages (mmap MAP_FIXED: a plain system call, safe in a handler on Linux), marks the mapping as shrunk and
   returns: the interrupted read goes on over zeros. Callers check the mark before trusting what they read
   (`wscan_map_shrank`): the indexer fails just that file and goes on with the next; other commands refuse to store or
   print results computed from it. Faults outside registered mappings keep the default action (a real crash). */
#define WSCAN_MAPS 4096
static struct { volatile uintptr_t base; volatile size_t len; volatile sig_atomic_t shrank; char path[448]; } wscan_maps[WSCAN_MAPS];
static pthread_mutex_t maps_lock = PTHREAD_MUTEX_INITIALIZER;
/* Shrinks not yet taken by a caller (`wscan_map_shrunk`), and the path of the first. */
static volatile sig_atomic_t shrunk_pending = 0;
static char shrunk_path[448];
static void bus_handler(int sig, siginfo_t *si, void *ctx) {
    (void)ctx;
    uintptr_t a = (uintptr_t)si->si_addr;
    int found = -1;
    for (int i = 0; i < WSCAN_MAPS; i++) {
        uintptr_t b = wscan_maps[i].base;
        if (b && a >= b && a < b + wscan_maps[i].len) { found = i; break; }
    }
    if (found < 0) { signal(sig, SIG_DFL); raise(sig); return; }
    uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE), start = a & ~(page - 1), end = wscan_maps[found].base + wscan_maps[found].len;
    void *z = mmap((void *)start, end - start, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
    if (z == MAP_FAILED) {
        static const char pre[] = "wscan: ", post[] = ": the file shrank while it was being read (changed by another process); stopping\n";
        (void)!write(2, pre, sizeof pre - 1);
        (void)!write(2, wscan_maps[found].path, strnlen(wscan_maps[found].path, sizeof wscan_maps[0].path));
        (void)!write(2, post, sizeof post - 1);
        _exit(1);
    }
    if (!wscan_maps[found].shrank) {
        wscan_maps[found].shrank = 1;
        if (!shrunk_pending) memcpy(shrunk_path, wscan_maps[found].path, sizeof shrunk_path);
        shrunk_pending = shrunk_pending + 1;
    }
}
static pthread_once_t bus_once = PTHREAD_ONCE_INIT;
static void bus_install(void) {
    struct sigaction sa; memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = bus_handler; sa.sa_flags = SA_SIGINFO; sigemptyset(&sa.sa_mask);
    sigaction(SIGBUS, &sa, NULL);
}
void wscan_map_register(const void *base, size_t len, const char *path) {
    pthread_once(&bus_once, bus_install);
    pthread_mutex_lock(&maps_lock);
    for (int i = 0; i < WSCAN_MAPS; i++) if (!wscan_maps[i].base) {
        snprintf(wscan_maps[i].path, sizeof wscan_maps[i].path, "%s", path);
        /* The handler writes the path as it is: control characters in a crafted name must not reach the terminal. */
        for (char *c = wscan_maps[i].path; *c; c++) if ((unsigned char)*c < 0x20 || *c == 0x7f) *c = '?';
        wscan_maps[i].len = len;
        wscan_maps[i].shrank = 0;
        __atomic_store_n(&wscan_maps[i].base, (uintptr_t)base, __ATOMIC_RELEASE);
        break;
    }
    pthread_mutex_unlock(&maps_lock);
}
void wscan_map_unregister(const void *base) {
    pthread_mutex_lock(&maps_lock);
    for (int i = 0; i < WSCAN_MAPS; i++) if (wscan_maps[i].base == (uintptr_t)base) { __atomic_store_n(&wscan_maps[i].base, 0, __ATOMIC_RELEASE); break; }
    pthread_mutex_unlock(&maps_lock);
}
int wscan_map_shrank(const void *base) {
    int r = 0;
    pthread_mutex_lock(&maps_lock);
    for (int i = 0; i < WSCAN_MAPS; i++) if (wscan_maps[i].base == (uintptr_t)base) { r = wscan_maps[i].shrank != 0; break; }
    pthread_mutex_unlock(&maps_lock);
    return r;
}
int wscan_map_shrunk(char *path, size_t cap, int take) {
    pthread_mutex_lock(&maps_lock);
    int n = shrunk_pending;
    if (n && path && cap) snprintf(path, cap, "%s", shrunk_path);
    if (take) shrunk_pending = 0;
    pthread_mutex_unlock(&maps_lock);
    return n;
}

/* ---- Child processes ---- */
extern char **environ;
static volatile sig_atomic_t guarded_group = 0;
static char guarded_file[4096], guarded_dir[4096];   /* the candidate file and its private folder */
static char guarded_tmp[4200];                       /* the writer's temporary file beside the candidate */
static volatile sig_atomic_t guarded_paths = 0;
static char writer_tmp[4200];                        /* an output's temporary file (SafetensorsWriter), while written */
static volatile sig_atomic_t writer_tmp_set = 0;
static void guard_handler(int sig) {
    if (guarded_group > 0) kill(-guarded_group, SIGKILL);
    if (guarded_paths) { unlink(guarded_tmp); unlink(guarded_file); rmdir(guarded_dir); }   /* async-signal-safe */
    if (writer_tmp_set) unlink(writer_tmp);
    /* End a progress bar's line, then say what happened: work finished so far is in the catalog (one
       transaction per checkpoint), the rest is not. */
    static const char clear[] = "\r\033[K", msg[] = "wscan: interrupted; finished work is kept, the rest was not written\n";
    if (isatty(2)) (void)!write(2, clear, sizeof clear - 1);
    (void)!write(2, msg, sizeof msg - 1);
    signal(sig, SIG_DFL);
    raise(sig);
}
static pthread_once_t guard_once = PTHREAD_ONCE_INIT;
static const int guard_sigs[] = {SIGINT, SIGTERM, SIGHUP, SIGQUIT};
static void guard_install(void) {
    for (int i = 0; i < 4; i++) {
        struct sigaction old;
        if (sigaction(guard_sigs[i], NULL, &old) == 0 && old.sa_handler == SIG_IGN) continue;   /* e.g. under nohup */
        struct sigaction sa; memset(&sa, 0, sizeof sa);
        sa.sa_handler = guard_handler; sigemptyset(&sa.sa_mask);
        sigaction(guard_sigs[i], &sa, NULL);
    }
    /* With SIGCHLD ignored (inherited from some launchers) children are reaped by the kernel and waitpid cannot
       report their exit status: restore the default. */
    struct sigaction old;
    if (sigaction(SIGCHLD, NULL, &old) == 0 && old.sa_handler == SIG_IGN) signal(SIGCHLD, SIG_DFL);
}

void wscan_install_interrupt_handler(void) { pthread_once(&guard_once, guard_install); }

/* The temporary file an output is being written to, removed if a signal ends the process (NULL: none now). */
void wscan_guard_writer_tmp(const char *path) {
    writer_tmp_set = 0;
    if (!path || strlen(path) >= sizeof writer_tmp) return;
    memcpy(writer_tmp, path, strlen(path) + 1);
    writer_tmp_set = 1;
}

void wscan_guard_paths(const char *file, const char *dir) {
    if (!file || !dir) { guarded_paths = 0; return; }
    pthread_once(&guard_once, guard_install);
    guarded_paths = 0;
    snprintf(guarded_file, sizeof guarded_file, "%s", file);
    snprintf(guarded_tmp, sizeof guarded_tmp, "%s.tmp-%d", file, (int)getpid());   /* SafetensorsWriter's name */
    snprintf(guarded_dir, sizeof guarded_dir, "%s", dir);
    guarded_paths = 1;
}

int wscan_spawn_group(const char *cmd, int *pid, int *out_fd, int *err_fd) {
    pthread_once(&guard_once, guard_install);
    int o[2], e[2];
    if (pipe2(o, O_CLOEXEC) != 0) return errno;
    if (pipe2(e, O_CLOEXEC) != 0) { int r = errno; close(o[0]); close(o[1]); return r; }
    posix_spawn_file_actions_t fa; posix_spawnattr_t at;
    posix_spawn_file_actions_init(&fa); posix_spawnattr_init(&at);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_adddup2(&fa, o[1], 1);
    posix_spawn_file_actions_adddup2(&fa, e[1], 2);
    /* Nothing else of wscan's (catalog, mapped checkpoints, descriptors it inherited from its own parent) reaches
       the command: an inherited pipe end held by a detached descendant would keep wscan's caller waiting. */
    posix_spawn_file_actions_addclosefrom_np(&fa, 3);
    posix_spawnattr_setflags(&at, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
    posix_spawnattr_setpgroup(&at, 0);
    sigset_t none, def, block, saved; sigemptyset(&none); sigemptyset(&def); sigemptyset(&block);
    for (int i = 0; i < 4; i++) { sigaddset(&def, guard_sigs[i]); sigaddset(&block, guard_sigs[i]); }
    sigaddset(&def, SIGPIPE); sigaddset(&def, SIGCHLD);
    posix_spawnattr_setsigmask(&at, &none);
    posix_spawnattr_setsigdefault(&at, &def);
    char *argv[] = {"sh", "-c", (char *)cmd, NULL};
    pid_t p;
    /* No signal between the spawn and recording the group: the handler must know whom to kill. */
    pthread_sigmask(SIG_BLOCK, &block, &saved);
    int r = posix_spawn(&p, "/bin/sh", &fa, &at, argv, environ);
    if (r == 0) guarded_group = p;
    pthread_sigmask(SIG_SETMASK, &saved, NULL);
    posix_spawn_file_actions_destroy(&fa); posix_spawnattr_destroy(&at);
    close(o[1]); close(e[1]);
    if (r != 0) { close(o[0]); close(e[0]); return r; }
    *pid = p; *out_fd = o[0]; *err_fd = e[0];
    return 0;
}

void wscan_kill_group(int pid) {
    if (pid > 0) kill(-pid, SIGKILL);
    if (guarded_group == pid) guarded_group = 0;
}

/* ---- Magnitude histograms for pruning thresholds (see Sparsity.swift) ---- */

/* Key of |x|: the IEEE pattern without the sign, top 15 bits (8 exponent + 7 mantissa): monotone in |x|. */
#define WSCAN_MAG_KEY(u) (((u) & 0x7fffffffu) >> 16)

/* One 64-bit word per bin: the count in bits 45..63 and the sum of round(m^2 / 2^21) below, where m is the
   24-bit significand: every element of a bin shares its exponent, so that integer sum is exact up to one
   rounding of 2^-26 relative per element, and one add per element updates both. Sub-chunks of 2^18 - 1
   elements keep both fields from overflowing; each is flushed to the caller's doubles. */
#define WSCAN_MAG_SUB ((1u << 18) - 1)
/* round(m^2 / 2^21) of one element's pattern: m the 24-bit significand, with the implicit bit for normal numbers
   only (zeros and subnormals have none); the vector loops compute the same. */
static inline uint64_t mag_sq(uint32_t u) {
    uint64_t mm = (u & 0x7fffffu) | ((u & 0x7f800000u) ? 0x800000u : 0);
    return (mm * mm + (1u << 20)) >> 21;
}
static void mag_flush(uint64_t *w, double *tab, uint32_t base, uint32_t lo, uint32_t hi) {
    for (uint32_t k = lo; k <= hi; k++) {
        uint64_t v = w[k];
        if (!v) continue;
        w[k] = 0;
        uint32_t e = k >> 7;                      /* biased exponent */
        double *t = tab + 2 * (k - base);
        t[0] += (double)(v >> 45);
        /* Inf and NaN count 0: the caller reports them apart */
        if (e == 255) continue;
        /* a subnormal is m * 2^-149 with no implicit bit: the normal formula with exponent 1 */
        t[1] += ldexp((double)(v & ((1ull << 45) - 1)), 2 * (int)(e ? e : 1) - 279);
    }
}

/* Populated key range (vectorised, so the scatter loop carries no min/max). */
__attribute__((target("avx2")))
void wscan_mag_range(const float *x, size_t n, uint32_t *kmin, uint32_t *kmax) {
    const uint32_t *u = (const uint32_t *)x;
    __m256i mask = _mm256_set1_epi32(0x7fffffff);
    __m256i mn = _mm256_set1_epi32(0x7fffffff), mx = _mm256_setzero_si256();
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256i v = _mm256_and_si256(_mm256_loadu_si256((const __m256i *)(u + i)), mask);
        mn = _mm256_min_epu32(mn, v); mx = _mm256_max_epu32(mx, v);
    }
    uint32_t a[8], b[8], l = 0x7fffffff, h = 0;
    _mm256_storeu_si256((__m256i *)a, mn); _mm256_storeu_si256((__m256i *)b, mx);
    for (int j = 0; j < 8; j++) { l = a[j] < l ? a[j] : l; h = b[j] > h ? b[j] : h; }
    for (; i < n; i++) { uint32_t v = u[i] & 0x7fffffffu; l = v < l ? v : l; h = v > h ? v : h; }
    *kmin = l >> 16; *kmax = h >> 16;
}

/* Per-thread packed tables (four, so consecutive elements update different words and a repeated key does not
   serialise on one store-to-load chain), allocated once and always left zeroed: flushing clears what it touched. */
static __thread uint64_t *mag_scratch;
static pthread_key_t mag_key;
static pthread_once_t mag_key_once = PTHREAD_ONCE_INIT;
static void mag_key_make(void) { pthread_key_create(&mag_key, free); }   /* frees a worker's tables when it exits */
#define WSCAN_MAG_BLOCK 1024

/* Keys and packed words of a block, computed eight at a time: the 24-bit significand squared with vpmuludq.
   Pairs come out in the order 0,2,4,6,1,3,5,7 of each group of eight, keys matching words. */
__attribute__((target("avx2")))
static void mag_terms(const uint32_t *u, size_t n, uint64_t *key, uint64_t *term) {
    const __m256i lo23 = _mm256_set1_epi32(0x7fffff), one23 = _mm256_set1_epi32(0x800000), expo = _mm256_set1_epi32(0x7f800000);
    const __m256i k15 = _mm256_set1_epi64x(0x7fff), half = _mm256_set1_epi64x(1 << 20), cnt = _mm256_set1_epi64x(1ll << 45);
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256i v = _mm256_loadu_si256((const __m256i *)(u + i));
        /* the implicit bit for normal numbers only: zeros and subnormals (exponent 0) have none */
        __m256i normal = _mm256_cmpgt_epi32(_mm256_and_si256(v, expo), _mm256_setzero_si256());
        __m256i m = _mm256_or_si256(_mm256_and_si256(v, lo23), _mm256_and_si256(normal, one23));
        __m256i pe = _mm256_mul_epu32(m, m);                                   /* elements 0,2,4,6 */
        __m256i mo = _mm256_srli_epi64(m, 32);
        __m256i po = _mm256_mul_epu32(mo, mo);                                 /* elements 1,3,5,7 */
        pe = _mm256_add_epi64(_mm256_srli_epi64(_mm256_add_epi64(pe, half), 21), cnt);
        po = _mm256_add_epi64(_mm256_srli_epi64(_mm256_add_epi64(po, half), 21), cnt);
        __m256i ke = _mm256_and_si256(_mm256_srli_epi64(v, 16), k15);        /* low dword's bits 16..30 */
        __m256i ko = _mm256_and_si256(_mm256_srli_epi64(v, 48), k15);        /* high dword's bits 16..30 */
        _mm256_storeu_si256((__m256i *)(key + i), ke); _mm256_storeu_si256((__m256i *)(key + i + 4), ko);
        _mm256_storeu_si256((__m256i *)(term + i), pe); _mm256_storeu_si256((__m256i *)(term + i + 4), po);
    }
    for (; i < n; i++) {
        key[i] = WSCAN_MAG_KEY(u[i]);
        term[i] = mag_sq(u[i]) + (1ull << 45);
    }
}

int wscan_mag_hist(const float *x, size_t n, double *tab, uint32_t lo, uint32_t hi) {
    const uint32_t *u = (const uint32_t *)x;
    if (!mag_scratch) {
        if (!(mag_scratch = calloc(4 * (size_t)WSCAN_MAG_BINS, sizeof(uint64_t)))) return -1;
        pthread_once(&mag_key_once, mag_key_make);
        pthread_setspecific(mag_key, mag_scratch);
    }
    uint64_t *w0 = mag_scratch, *w1 = w0 + WSCAN_MAG_BINS, *w2 = w1 + WSCAN_MAG_BINS, *w3 = w2 + WSCAN_MAG_BINS;
    uint64_t key[WSCAN_MAG_BLOCK], term[WSCAN_MAG_BLOCK];
    for (size_t s = 0; s < n; s += WSCAN_MAG_SUB) {
        size_t e = s + WSCAN_MAG_SUB < n ? s + WSCAN_MAG_SUB : n;
        for (size_t b = s; b < e; b += WSCAN_MAG_BLOCK) {
            size_t m = e - b < WSCAN_MAG_BLOCK ? e - b : WSCAN_MAG_BLOCK, i = 0;
            mag_terms(u + b, m, key, term);
            for (; i + 4 <= m; i += 4) {
                w0[key[i]] += term[i]; w1[key[i + 1]] += term[i + 1];
                w2[key[i + 2]] += term[i + 2]; w3[key[i + 3]] += term[i + 3];
            }
            for (; i < m; i++) w0[key[i]] += term[i];
        }
        /* Each table's words stay within their 45/19-bit fields (a sub-chunk has < 2^18 elements), and so
           does their sum. */
        for (uint32_t k = lo; k <= hi; k++) { w0[k] += w1[k] + w2[k] + w3[k]; w1[k] = w2[k] = w3[k] = 0; }
        mag_flush(w0, tab, lo, lo, hi);
    }
    return 0;
}

static void mag_collect_scalar(const uint32_t *u, size_t n, const int16_t *slot, uint32_t *const *vals, uint32_t *const *idx, size_t *pos,
                               const size_t *cap) {
    for (size_t i = 0; i < n; i++) {
        uint32_t a = u[i] & 0x7fffffffu;
        int s = slot[a >> 16];
        if (__builtin_expect(s >= 0, 0)) { size_t p = pos[s]++; if (p < cap[s]) { vals[s][p] = a; idx[s][p] = (uint32_t)i; } }
    }
}

#define MAG_H2(k) (((uint32_t)(k) * 0x9E3779B1u) >> 23)

/* Sixteen keys at a time through two 512-bit Bloom filters of the chosen keys (bit k mod 512, and bit of a
   multiplicative hash). The lanes that pass (the members and a few false positives) are compressed, without a
   branch, into a small staging buffer in scan order; the buffer is drained through the exact slot table. A branch
   per vector would mispredict on the ~40% of vectors that hold a member. */
#define MAG_STAGE 512
__attribute__((target("avx512f,avx512bw")))
static void mag_collect_avx512(const uint32_t *u, size_t n, const int16_t *slot, const uint32_t *keys, size_t nkeys,
                               uint32_t *const *vals, uint32_t *const *idx, size_t *pos, const size_t *cap) {
    uint32_t f1[16] = {0}, f2[16] = {0};
    for (size_t j = 0; j < nkeys; j++) {
        uint32_t k = keys[j], h = MAG_H2(k);
        f1[(k >> 5) & 15] |= 1u << (k & 31);
        f2[(h >> 5) & 15] |= 1u << (h & 31);
    }
    const __m512i F1 = _mm512_loadu_si512(f1), F2 = _mm512_loadu_si512(f2);
    const __m512i abs = _mm512_set1_epi32(0x7fffffff), c15 = _mm512_set1_epi32(15), c31 = _mm512_set1_epi32(31);
    const __m512i one = _mm512_set1_epi32(1), mul = _mm512_set1_epi32((int)0x9E3779B1u);
    const __m512i lane = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15), sixteen = _mm512_set1_epi32(16);
    uint32_t sv[MAG_STAGE + 16], si[MAG_STAGE + 16];
    size_t ns = 0, i = 0;
    __m512i ix = lane;                                  /* element indices of the current vector (n < 2^32) */
    for (; i + 16 <= n; i += 16, ix = _mm512_add_epi32(ix, sixteen)) {
        __m512i a = _mm512_and_si512(_mm512_loadu_si512(u + i), abs);
        __m512i k = _mm512_srli_epi32(a, 16);
        __m512i w1 = _mm512_permutexvar_epi32(_mm512_and_si512(_mm512_srli_epi32(k, 5), c15), F1);
        __mmask16 m = _mm512_test_epi32_mask(w1, _mm512_sllv_epi32(one, _mm512_and_si512(k, c31)));
        __m512i h = _mm512_srli_epi32(_mm512_mullo_epi32(k, mul), 23);
        __m512i w2 = _mm512_permutexvar_epi32(_mm512_and_si512(_mm512_srli_epi32(h, 5), c15), F2);
        m = _mm512_mask_test_epi32_mask(m, w2, _mm512_sllv_epi32(one, _mm512_and_si512(h, c31)));
        _mm512_storeu_si512(sv + ns, _mm512_maskz_compress_epi32(m, a));
        _mm512_storeu_si512(si + ns, _mm512_maskz_compress_epi32(m, ix));
        ns += (size_t)__builtin_popcount((unsigned)m);
        if (ns >= MAG_STAGE) {
            for (size_t j = 0; j < ns; j++) {
                int s = slot[sv[j] >> 16];
                if (s >= 0) { size_t p = pos[s]++; if (p < cap[s]) { vals[s][p] = sv[j]; idx[s][p] = si[j]; } }
            }
            ns = 0;
        }
    }
    for (size_t j = 0; j < ns; j++) {
        int s = slot[sv[j] >> 16];
        if (s >= 0) { size_t p = pos[s]++; if (p < cap[s]) { vals[s][p] = sv[j]; idx[s][p] = si[j]; } }
    }
    for (; i < n; i++) {
        uint32_t av = u[i] & 0x7fffffffu;
        int s = slot[av >> 16];
        if (s >= 0) { size_t p = pos[s]++; if (p < cap[s]) { vals[s][p] = av; idx[s][p] = (uint32_t)i; } }
    }
}

static int mag_avx512 = -1;
/* The AVX-512 loop where the CPU has it, unless WSCAN_NO_AVX512 is set (as for the statistics kernel). */
static int mag_avx512_default(void) { return wscan_cpu_has_avx512() && !getenv("WSCAN_NO_AVX512"); }
void wscan_mag_use_avx512(int on) { mag_avx512 = on ? mag_avx512_default() : 0; }

/* ---- One-pass histogram (AVX-512): the key range found in the same pass ---- */

static __thread uint64_t *mag_packed;      /* one packed table: a single table beats four interleaved ones here */
static __thread double *mag_dtab;           /* 2 doubles per key, flushed into and taken out by wscan_mag_take */
static pthread_key_t mag_key2;
static pthread_once_t mag_key2_once = PTHREAD_ONCE_INIT;
static void mag_key2_make(void) { pthread_key_create(&mag_key2, free); }

static int mag_fused_tables(void) {
    if (mag_packed) return 0;
    /* one block: the packed words, then the doubles (freed together when the thread exits) */
    char *b = calloc(1, (size_t)WSCAN_MAG_BINS * sizeof(uint64_t) + 2 * (size_t)WSCAN_MAG_BINS * sizeof(double));
    if (!b) return -1;
    pthread_once(&mag_key2_once, mag_key2_make);
    pthread_setspecific(mag_key2, b);
    mag_packed = (uint64_t *)b;
    mag_dtab = (double *)(b + (size_t)WSCAN_MAG_BINS * sizeof(uint64_t));
    return 0;
}

void wscan_mag_take(double *tab, uint32_t lo, uint32_t hi) {
    if (!mag_dtab || hi < lo) return;
    memcpy(tab, mag_dtab + 2 * (size_t)lo, 2 * sizeof(double) * (hi - lo + 1));
    memset(mag_dtab + 2 * (size_t)lo, 0, 2 * sizeof(double) * (hi - lo + 1));
}

/* Sixteen elements at a time: the packed word key << 48 | round(m^2 / 2^21) (m the significand, with the implicit
   bit for normal numbers only) goes to a small buffer, and the key's running min/max to two registers; then the
   buffer is added into the table, count at bit 45 and the key dropped. Same words and sub-chunks as
   wscan_mag_hist, so the two give identical tables. */
#define MAG_G 64
__attribute__((target("avx512f,avx512bw,avx512dq")))
static void mag_hist_avx512(const uint32_t *u, size_t n, uint32_t *lo, uint32_t *hi) {
    uint64_t *w = mag_packed;
    const uint64_t M48 = (1ull << 48) - 1, C45 = 1ull << 45;
    const __m512i absm = _mm512_set1_epi32(0x7fffffff), lo23 = _mm512_set1_epi32(0x7fffff), one23 = _mm512_set1_epi32(0x800000);
    const __m512i expo = _mm512_set1_epi32(0x7f800000), half = _mm512_set1_epi64(1 << 20);
    const __m512i klo = _mm512_set1_epi64(0xffff0000ll), khi = _mm512_set1_epi64((long long)0xffff000000000000ull);
    uint64_t p[MAG_G] __attribute__((aligned(64)));
    uint32_t glo = 0xffffffffu, ghi = 0;
    for (size_t s = 0; s < n; s += WSCAN_MAG_SUB) {
        size_t e = s + WSCAN_MAG_SUB < n ? s + WSCAN_MAG_SUB : n;
        __m512i vmin = _mm512_set1_epi32(-1), vmax = _mm512_setzero_si512();
        uint32_t smin = 0xffffffffu, smax = 0;
        size_t b = s;
        for (; b + MAG_G <= e; b += MAG_G) {
            for (int j = 0; j < MAG_G; j += 16) {
                __m512i v = _mm512_and_si512(_mm512_loadu_si512(u + b + j), absm);
                __m512i k = _mm512_srli_epi32(v, 16);
                vmin = _mm512_min_epu32(vmin, k); vmax = _mm512_max_epu32(vmax, k);
                __m512i f = _mm512_and_si512(v, lo23);
                __m512i m = _mm512_mask_or_epi32(f, _mm512_test_epi32_mask(v, expo), f, one23);
                __m512i mo = _mm512_srli_epi64(m, 32);
                __m512i pe = _mm512_srli_epi64(_mm512_add_epi64(_mm512_mul_epu32(m, m), half), 21);
                __m512i po = _mm512_srli_epi64(_mm512_add_epi64(_mm512_mul_epu32(mo, mo), half), 21);
                _mm512_store_si512(p + j, _mm512_or_si512(pe, _mm512_slli_epi64(_mm512_and_si512(v, klo), 32)));
                _mm512_store_si512(p + j + 8, _mm512_or_si512(po, _mm512_and_si512(v, khi)));
            }
            /* unrolled: the loads of p[] and the table updates overlap (a third faster than the plain loop) */
            _Pragma("clang loop unroll_count(16)")
            for (int i = 0; i < MAG_G; i++) { uint64_t a = p[i]; w[a >> 48] += (a & M48) + C45; }
        }
        for (; b < e; b++) {
            uint32_t k = WSCAN_MAG_KEY(u[b]);
            smin = k < smin ? k : smin; smax = k > smax ? k : smax;
            w[k] += mag_sq(u[b]) + C45;
        }
        uint32_t mn[16], mx[16];
        _mm512_storeu_si512(mn, vmin); _mm512_storeu_si512(mx, vmax);
        for (int j = 0; j < 16; j++) { smin = mn[j] < smin ? mn[j] : smin; smax = mx[j] > smax ? mx[j] : smax; }
        if (smin <= smax) {
            mag_flush(w, mag_dtab, 0, smin, smax);
            glo = smin < glo ? smin : glo; ghi = smax > ghi ? smax : ghi;
        }
    }
    if (glo > ghi) { *lo = 1; *hi = 0; } else { *lo = glo; *hi = ghi; }
}

int wscan_mag_hist_fused(const float *x, size_t n, uint32_t *lo, uint32_t *hi) {
    if (mag_avx512 < 0) mag_avx512 = mag_avx512_default();
    if (!mag_avx512) return -2;
    if (mag_fused_tables() != 0) return -1;
    mag_hist_avx512((const uint32_t *)x, n, lo, hi);
    return 0;
}

void wscan_mag_collect(const float *x, size_t n, const int16_t *slot, const uint32_t *keys, size_t nkeys,
                       uint32_t *const *vals, uint32_t *const *idx, size_t *pos, const size_t *cap) {
    const uint32_t *u = (const uint32_t *)x;
    if (mag_avx512 < 0) mag_avx512 = mag_avx512_default();
    if (mag_avx512) mag_collect_avx512(u, n, slot, keys, nkeys, vals, idx, pos, cap);
    else mag_collect_scalar(u, n, slot, vals, idx, pos, cap);
}

uint32_t wscan_select_low16(const uint32_t *v, size_t n, size_t r, uint32_t *scratch) {
    size_t cnt[256];
    memset(cnt, 0, sizeof cnt);
    for (size_t i = 0; i < n; i++) cnt[(v[i] >> 8) & 0xff]++;
    unsigned hb = 0;
    while (r >= cnt[hb]) { r -= cnt[hb]; hb++; }
    size_t m = 0;
    for (size_t i = 0; i < n; i++) if (((v[i] >> 8) & 0xff) == hb) scratch[m++] = v[i];
    memset(cnt, 0, sizeof cnt);
    for (size_t i = 0; i < m; i++) cnt[scratch[i] & 0xff]++;
    unsigned lb = 0;
    while (r >= cnt[lb]) { r -= cnt[lb]; lb++; }
    return (v[0] & 0xffff0000u) | (hb << 8) | lb;
}

/* ---- Magnitude cut statistics (saliency tables and masks) ---- */

static int keep_avx2_on = 1;
void wscan_keep_use_avx2(int on) { keep_avx2_on = on; }

static void keep_stats_scalar(const float *x, size_t from, size_t n, float value, int64_t ties, double *mass,
                              double *kept_mass, int64_t *nonfinite, int64_t *kept, float *min_kept, uint8_t *mask) {
    for (size_t i = from; i < n; i++) {
        float v = x[i], a = fabsf(v);
        int finite = isfinite(v) ? 1 : 0;
        int pruned = (a < value) | ((a == value) & ((int64_t)i <= ties));
        if (finite) *mass += v; else (*nonfinite)++;
        if (!pruned) {
            (*kept)++;
            if (finite) { *kept_mass += v; if (v < *min_kept) *min_kept = v; }
        }
        if (mask) mask[i] = (uint8_t)!pruned;
    }
}

__attribute__((target("avx2,bmi2")))
static size_t keep_stats_avx2(const float *x, size_t n, float value, int64_t ties, double *mass, double *kept_mass,
                              int64_t *nonfinite, int64_t *kept, float *min_kept, uint8_t *mask) {
    const __m256 absmask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
    const __m256 inf = _mm256_set1_ps(INFINITY), vv = _mm256_set1_ps(value);
    const __m256i lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    __m256d m0 = _mm256_setzero_pd(), m1 = _mm256_setzero_pd(), k0 = _mm256_setzero_pd(), k1 = _mm256_setzero_pd();
    __m256 mn = inf;
    int64_t nf = 0, kc = 0;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 v = _mm256_loadu_ps(x + i);
        __m256 a = _mm256_and_ps(v, absmask);
        __m256 fin = _mm256_cmp_ps(a, inf, _CMP_LT_OQ);               /* false for NaN and Inf */
        __m256 pruned = _mm256_cmp_ps(a, vv, _CMP_LT_OQ);
        if (ties >= (int64_t)i) {                                      /* some lanes may be ties pruned by index */
            __m256 eq = _mm256_cmp_ps(a, vv, _CMP_EQ_OQ);
            int64_t last = ties - (int64_t)i;                          /* lanes 0...last are early enough */
            __m256i lim = _mm256_set1_epi32(last > 7 ? 7 : (int)last);
            __m256 early = _mm256_castsi256_ps(_mm256_cmpgt_epi32(_mm256_add_epi32(lim, _mm256_set1_epi32(1)), lanes));
            pruned = _mm256_or_ps(pruned, _mm256_and_ps(eq, early));
        }
        __m256 keepfin = _mm256_andnot_ps(pruned, fin);
        __m256 vf = _mm256_and_ps(v, fin), vk = _mm256_and_ps(v, keepfin);
        m0 = _mm256_add_pd(m0, _mm256_cvtps_pd(_mm256_castps256_ps128(vf)));
        m1 = _mm256_add_pd(m1, _mm256_cvtps_pd(_mm256_extractf128_ps(vf, 1)));
        k0 = _mm256_add_pd(k0, _mm256_cvtps_pd(_mm256_castps256_ps128(vk)));
        k1 = _mm256_add_pd(k1, _mm256_cvtps_pd(_mm256_extractf128_ps(vk, 1)));
        mn = _mm256_min_ps(mn, _mm256_blendv_ps(inf, v, keepfin));
        int pm = _mm256_movemask_ps(pruned), fm = _mm256_movemask_ps(fin);
        nf += 8 - __builtin_popcount((unsigned)fm);
        kc += 8 - __builtin_popcount((unsigned)pm);
        if (mask) {
            uint64_t bytes = _pdep_u64((uint64_t)(~pm & 0xff), 0x0101010101010101ULL);
            memcpy(mask + i, &bytes, 8);
        }
    }
    double ms[4], ks[4];
    _mm256_storeu_pd(ms, _mm256_add_pd(m0, m1));
    _mm256_storeu_pd(ks, _mm256_add_pd(k0, k1));
    *mass += (ms[0] + ms[1]) + (ms[2] + ms[3]);
    *kept_mass += (ks[0] + ks[1]) + (ks[2] + ks[3]);
    float mins[8];
    _mm256_storeu_ps(mins, mn);
    for (int j = 0; j < 8; j++) if (mins[j] < *min_kept) *min_kept = mins[j];
    *nonfinite += nf;
    *kept += kc;
    return i;
}

void wscan_keep_stats(const float *x, size_t n, float value, int64_t ties, double *mass, double *kept_mass,
                      int64_t *nonfinite, int64_t *kept, float *min_kept, uint8_t *mask) {
    *mass = 0; *kept_mass = 0; *nonfinite = 0; *kept = 0; *min_kept = INFINITY;
    size_t done = 0;
    if (keep_avx2_on && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("bmi2"))
        done = keep_stats_avx2(x, n, value, ties, mass, kept_mass, nonfinite, kept, min_kept, mask);
    keep_stats_scalar(x, done, n, value, ties, mass, kept_mass, nonfinite, kept, min_kept, mask);
}

/* glibc serves allocations of 128 KiB and more (its threshold rises to at most 32 MiB as such blocks are freed) with
   fresh mmap'ed pages, and returns freed heap tops over 128 KiB to the kernel: a command that decodes tensor after
   tensor into new multi-MiB buffers then spends a third of its time zeroing pages in page faults (measured: magnitude
   saliency of a 1 GiB BF16 file, 1.0 s of system time in 1.4 s). Blocks under 64 MiB come from the heap instead, and
   up to 512 MiB of freed heap is kept for reuse; peak memory is unchanged. */
void wscan_tune_malloc(void) {
    mallopt(M_MMAP_THRESHOLD, 64 << 20);
    mallopt(M_TRIM_THRESHOLD, 512 << 20);
}
