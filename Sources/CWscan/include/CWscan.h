#ifndef CWSCAN_H
#define CWSCAN_H
#include <stddef.h>
#include <stdint.h>

/* ---- CPU features ---- */
int wscan_cpu_has_x86_64_v3(void);       /* AVX2 + FMA + F16C + BMI2 */
const char *wscan_openblas_coretype(void); /* "SkylakeX", "Haswell", or NULL */

/* ---- F16 -> F32 with F16C (the CLI refuses CPUs without it) ---- */
void wscan_f16_to_f32(const void *src, float *dst, size_t n);

/* ---- BF16 block statistics with AVX-512 (run-time dispatch; the Swift AVX2 kernel is the fallback) ---- */
typedef struct { double s1, s2; float mn, mx; int64_t zeros; int nonfinite; } wscan_block_stats;
int wscan_cpu_has_avx512(void);
/* Sums of (x - shift) and (x - shift)^2, min, max, zero count over n BF16 values; nonfinite = 1 if any NaN/Inf. */
void wscan_bf16_block_stats_avx512(const void *src, size_t n, float shift, wscan_block_stats *out);

/* ---- xxHash (XXH3-128, streaming) ---- */
typedef struct wscan_xxh3_state wscan_xxh3_state;
wscan_xxh3_state *wscan_xxh3_new(void);
void wscan_xxh3_free(wscan_xxh3_state *s);
void wscan_xxh3_update(wscan_xxh3_state *s, const void *data, size_t len);
void wscan_xxh3_digest(wscan_xxh3_state *s, uint64_t *hi, uint64_t *lo);
void wscan_xxh3_128(const void *data, size_t len, uint64_t *hi, uint64_t *lo);

/* ---- SHA-256 (libcrypto EVP) ---- */
typedef struct wscan_sha256_state wscan_sha256_state;
wscan_sha256_state *wscan_sha256_new(void);
void wscan_sha256_update(wscan_sha256_state *s, const void *data, size_t len);
void wscan_sha256_final(wscan_sha256_state *s, uint8_t out[32]); /* frees s */

/* ---- zlib raw inflate (zip members) ---- */
/* returns 0 on success with *outLen = produced bytes; -1 data error; -2 output would exceed outCap (on -1 and -2,
   *outLen is what was inflated before) */
int wscan_inflate_raw(const uint8_t *src, size_t srcLen, uint8_t *dst, size_t dstCap, size_t *outLen);
/* The same for a zlib or gzip stream (header detected). */
int wscan_inflate_auto(const uint8_t *src, size_t srcLen, uint8_t *dst, size_t dstCap, size_t *outLen);
uint32_t wscan_crc32(uint32_t crc, const uint8_t *data, size_t len);
/* zlib-format deflate (header + adler32), e.g. for PNG IDAT. level 0-9 (-1 = default).
   On success returns 0 and *out is malloc'd (free with wscan_free); -1 on error or bad level, -2 out of memory. */
int wscan_deflate_zlib(const uint8_t *src, size_t srcLen, uint8_t **out, size_t *outLen, int level);

/* ---- BLAS / LAPACK ---- */
void wscan_sgemm(int transA, int transB, int m, int n, int k, float alpha, const float *a, int lda,
                 const float *b, int ldb, float beta, float *c, int ldc);
void wscan_dgemm(int transA, int transB, int m, int n, int k, double alpha, const double *a, int lda,
                 const double *b, int ldb, double beta, double *c, int ldc);
/* Singular values only (row-major m x n, destroyed). Workspace computed in integers (LAPACK 3.11 float-size bug). */
int wscan_sgesdd_values(int m, int n, float *a, float *s);
int wscan_dgesdd_values(int m, int n, double *a, double *s);
/* Symmetric eigenvalues only (ascending), n x n row-major, destroyed. */
int wscan_dsyevd_values(int n, double *a, double *w);
int wscan_ssyevd_values(int n, float *a, float *w);
/* Eigenvalues (ascending) and eigenvectors of a symmetric n x n matrix (double, row-major in/out: on return
   row i of `a` holds... column-major eigenvectors: vector j is a[j*n .. j*n+n-1]). */
int wscan_dsyevd_vectors(int n, double *a, double *w);
/* Eigenvalues (ascending) of the Gram matrix of a row-major m x n float matrix, in double precision:
   G = A^T A (n x n) when n <= m, else A A^T (m x m); k = min(m, n) values written to w.
   dsyrk + dsyevd_2stage (eigenvalues only). Returns LAPACK info, or -1000 when memory is short. */
int wscan_gram_eigvals(int m, int n, const float *a, double *w);
/* The same from a row-major double matrix. */
int wscan_gram_eigvals_d(int m, int n, const double *a, double *w);
/* The same computed in float32 throughout (ssyrk + ssyevd): half the work, each value good to about 1e-6 of the
   largest; for rand_distance's shuffled copy. */
int wscan_gram_eigvals_single(int m, int n, const float *a, double *w);
/* What the Gram eigensolvers return when the matrix holds NaN or ±Inf (LAPACK is not called). */
#define WSCAN_NONFINITE (-2000)
/* Gram eigensolves of order up to this use the one-stage dsyevd/ssyevd (faster there); larger ones the two-stage. */
#define WSCAN_GRAM_ONE_STAGE_MAX 1024
void wscan_openblas_set_threads(int n);
int wscan_openblas_get_threads(void);
const char *wscan_openblas_corename(void);

/* ---- Mapped files ---- */
/* Registers a read-only file mapping so that a SIGBUS inside it (the file truncated by another process while being
   read) ends wscan with a one-line error naming the file; unregister before munmap. */
void wscan_map_register(const void *base, size_t len, const char *path);
void wscan_map_unregister(const void *base);
/* 1 when the mapping at base took a SIGBUS (its file shrank) and now reads zeros past the fault. */
int wscan_map_shrank(const void *base);
/* How many mappings shrank since the count was last taken (0 if none); copies the first one's path. `take` resets
   the count. */
int wscan_map_shrunk(char *path, size_t cap, int take);

/* ---- Child processes (external evaluators) ---- */
/* Runs `/bin/sh -c cmd` in a new process group, stdin from /dev/null, stdout and stderr into pipes whose read ends
   (close-on-exec) come back in *out_fd and *err_fd. While it runs, SIGINT/SIGTERM/SIGHUP/SIGQUIT to wscan kill the whole
   group first (it is not in the terminal's foreground group, so Ctrl-C would not reach it). Returns 0 or an errno. */
int wscan_spawn_group(const char *cmd, int *pid, int *out_fd, int *err_fd);
/* Installs the SIGINT/SIGTERM/SIGHUP/SIGQUIT handler now (it kills a running evaluator's group, removes its
   candidate file, ends the progress line and says the run was interrupted, then dies by the signal). */
void wscan_install_interrupt_handler(void);
void wscan_tune_malloc(void);
/* Kills the group (SIGKILL) and stops guarding it. */
void wscan_kill_group(int pid);
/* A file and its folder that the signal handler removes (unlink, rmdir) if wscan is interrupted; NULLs clear. */
void wscan_guard_paths(const char *file, const char *dir);
void wscan_guard_writer_tmp(const char *path);

/* ---- Graphviz ---- */
/* Render DOT source to SVG. Returns malloc'd buffer (caller frees with wscan_free) or NULL; err gets a message
   (Graphviz's own error text when it reported one). Graphviz diagnostics are captured, not printed to stderr.
   Not thread-safe (Graphviz keeps global state): callers serialise. */
char *wscan_dot_to_svg(const char *dot, size_t *outLen, char *err, size_t errLen);
void wscan_free(void *p);

/* ---- Magnitude histograms for pruning thresholds ---- */
#define WSCAN_MAG_BINS 32768
/* The range [*kmin, *kmax] of |x| keys (top 15 bits of the IEEE pattern after the sign; monotone in |x|). */
void wscan_mag_range(const float *x, size_t n, uint32_t *kmin, uint32_t *kmax);
/* Adds (1, x^2) for every x to the (count, sum of squares) pair of its key: tab[2*(key-lo)], tab[2*(key-lo)+1]
   for keys in [lo, hi], which must be the range wscan_mag_range gave for the same x (a narrower one corrupts
   the per-thread tables). Counts are exact; each x^2 is rounded to 2^-26 relative (a subnormal's to 2^-278
   absolute; Inf and NaN count 0). Returns -1 if out of memory. */
int wscan_mag_hist(const float *x, size_t n, double *tab, uint32_t lo, uint32_t hi);
/* For each element whose key k has slot[k] >= 0, appends its |x| bit pattern and index to that slot:
   vals[s][pos[s]], idx[s][pos[s]], then pos[s]++. keys lists the nkeys keys with a slot (they prefilter 16
   elements at a time on AVX-512). The caller sizes the slots from the histogram counts and gives each slot's
   room in cap: a member beyond it (the data changed since it was counted) is counted in pos but not written. */
void wscan_mag_collect(const float *x, size_t n, const int16_t *slot, const uint32_t *keys, size_t nkeys,
                       uint32_t *const *vals, uint32_t *const *idx, size_t *pos, const size_t *cap);
/* wscan_mag_range and wscan_mag_hist in one pass, on AVX-512 CPUs (returns -2 elsewhere, -1 if out of memory):
   the key range in *lo, *hi (hi < lo when n = 0), and the table for it left in a per-thread table that
   wscan_mag_take copies out. The same counts and sums as wscan_mag_hist, to the bit. */
int wscan_mag_hist_fused(const float *x, size_t n, uint32_t *lo, uint32_t *hi);
/* Copies the calling thread's table for keys [lo, hi] (as wscan_mag_hist lays it out) into tab and clears it. */
void wscan_mag_take(double *tab, uint32_t lo, uint32_t hi);
/* Tests: 0 forces the scalar collection loop, 1 restores the AVX-512 one where the CPU has it. */
void wscan_mag_use_avx512(int on);
/* One tensor under a magnitude cut: x[i] is pruned iff |x[i]| < value, or |x[i]| == value and i <= ties (NaN
   never). Sums, in double, all finite x (*mass) and the finite kept ones (*kept_mass); counts the non-finite
   (*nonfinite) and the kept (*kept); *min_kept is the smallest finite kept x (+Inf if none). mask, when not NULL,
   gets 1 for kept and 0 for pruned. AVX2 where the CPU has it, else a scalar loop; both give the same counts and
   mask, and sums that differ only by summation order. */
void wscan_keep_stats(const float *x, size_t n, float value, int64_t ties, double *mass, double *kept_mass,
                      int64_t *nonfinite, int64_t *kept, float *min_kept, uint8_t *mask);
/* Tests: 0 forces wscan_keep_stats' scalar loop, 1 restores the AVX2 one where the CPU has it. */
void wscan_keep_use_avx2(int on);
/* The r-th smallest (0-based, r < n) of n >= 1 values sharing their top 16 bits, by two 8-bit counting rounds.
   scratch: room for n values. */
uint32_t wscan_select_low16(const uint32_t *v, size_t n, size_t r, uint32_t *scratch);

#endif
