// Shared helpers of rnnlab's CPU recurrence kernels: BLAS calls without ATen dispatch,
// activations written so that GCC vectorises them (no library calls in the inner loops).
#pragma once
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <cstdlib>
#include <dlfcn.h>
#include <vector>
#ifdef _OPENMP
#include <omp.h>
#endif

extern "C" {
// Fortran BLAS, exported by libtorch_cpu (MKL, LP64).
void sgemm_(const char*, const char*, const int*, const int*, const int*, const float*,
            const float*, const int*, const float*, const int*, const float*, float*, const int*);
void dgemm_(const char*, const char*, const int*, const int*, const int*, const double*,
            const double*, const int*, const double*, const int*, const double*, double*,
            const int*);
}

namespace rnnlab {

// oneDNN's matmul as libtorch_cpu builds it (at::native::mkldnn_matmul(mat1, mat2, result,
// beta, alpha): result = beta result + alpha mat1 mat2), looked up at run time so that a torch
// without it only loses the fast path. On this CPU it runs the per-step products of large
// steps (S3: 128 x 512 x 1536) about 10% faster than MKL's sgemm, and small ones 2x slower
// (its per-call set-up), hence the size threshold. RNNLAB_ENGINE_DNNL=0 / =1: never / always.
// The switches of the size-dependent paths (RNNLAB_ENGINE_PARTITION, RNNLAB_ENGINE_DNNL: "0"
// never, "1" always, unset: by size), read once per op call by read_switches() rather than on
// every GEMM (getenv scans the whole environment). -1 = by size.
inline std::atomic<int>& partition_switch() { static std::atomic<int> v{-1}; return v; }
inline std::atomic<int>& dnnl_switch() { static std::atomic<int> v{-1}; return v; }
inline int env_switch(const char* name) {
  const char* v = std::getenv(name);
  return !v ? -1 : v[0] == '0' ? 0 : v[0] == '1' ? 1 : -1;
}
using DnnlMatmul = void (*)(const at::Tensor&, const at::Tensor&, const at::Tensor&, float,
                            float);
// Probed once with a 1x1 float product: a libtorch whose mkldnn_matmul refuses this CPU (some
// builds check for bf16 support, avx512bw/vl/dq or avx_ne_convert, on every dtype, and throw on
// an AVX2-only CPU) gets nullptr, i.e. MKL everywhere, instead of an error in every weight
// gradient above kDnnlMacs.
inline DnnlMatmul dnnl_matmul() {
  static DnnlMatmul fn = [] {
    auto f = reinterpret_cast<DnnlMatmul>(
        dlsym(RTLD_DEFAULT, "_ZN2at6native13mkldnn_matmulERKNS_6TensorES3_S3_ff"));
    if (!f) return f;
    try {
      auto a = at::ones({1, 1}, at::TensorOptions().dtype(at::kFloat));
      auto c = at::zeros({1, 1}, at::TensorOptions().dtype(at::kFloat));
      f(a, a, c, 1.0f, 1.0f);
      if (c.data_ptr<float>()[0] != 1.0f) return DnnlMatmul(nullptr);
    } catch (...) {
      return DnnlMatmul(nullptr);
    }
    return f;
  }();
  return fn;
}
inline void read_switches() {
  partition_switch().store(env_switch("RNNLAB_ENGINE_PARTITION"), std::memory_order_relaxed);
  dnnl_switch().store(env_switch("RNNLAB_ENGINE_DNNL"), std::memory_order_relaxed);
  (void)dnnl_matmul();  // the probe, outside any parallel region
}
constexpr int64_t kDnnlMacs = int64_t(32) << 20;  // S3's per-step products are above, S1's below

inline bool use_dnnl(bool ta, int M, int N, int K, int lda, bool tb, int ldb, int ldc) {
  if (ta || lda != K || ldc != N || ldb != (tb ? K : N)) return false;  // dense operands only
  if (!dnnl_matmul() || at::in_parallel_region()) return false;
  const int sw = dnnl_switch().load(std::memory_order_relaxed);
  return sw >= 0 ? sw == 1 : int64_t(M) * N * K >= kDnnlMacs;
}

// A weight gradient's Aᵀ B (A transposed, B not, both dense) of at least kDnnlMacs, or as the
// switch says: through oneDNN (gemm() below)
inline bool use_dnnl_tn(bool ta, bool tb, int M, int N, int K, int lda, int ldb) {
  if (!ta || tb || lda != M || ldb != N || K == 0) return false;
  if (!dnnl_matmul() || at::in_parallel_region()) return false;
  const int sw = dnnl_switch().load(std::memory_order_relaxed);
  return sw >= 0 ? sw == 1 : int64_t(M) * N * K >= kDnnlMacs;
}

}  // namespace rnnlab
#include "half.h"  // bf16 products of a half-precision call
namespace rnnlab {

// Row-major C[M,N] = alpha * op(A)[M,K] op(B)[K,N] + beta * C, as column-major C^T = op(B)^T op(A)^T.
inline void gemm(bool ta, bool tb, int M, int N, int K, float alpha, const float* A, int lda,
                 const float* B, int ldb, float beta, float* C, int ldc) {
  if (M == 0 || N == 0) return;
  if (half_gemm(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc)) return;
  if (use_dnnl(ta, M, N, K, lda, tb, ldb, ldc)) {
    auto opt = at::TensorOptions().dtype(at::kFloat);
    auto a = at::from_blob(const_cast<float*>(A), {M, K}, opt);
    auto b = tb ? at::from_blob(const_cast<float*>(B), {N, K}, opt).t()
                : at::from_blob(const_cast<float*>(B), {K, N}, opt);
    auto c = at::from_blob(C, {M, N}, opt);
    if (beta == 0.0f) c.zero_();  // 0 * (uninitialised memory) may be NaN
    dnnl_matmul()(a, b, c, beta == 0.0f ? 1.0f : beta, alpha);
    return;
  }
  if (use_dnnl_tn(ta, tb, M, N, K, lda, ldb)) {
    // a weight gradient Aᵀ B over all T·B rows (A: K x M, B: K x N, dense): oneDNN with the
    // smaller of M, N as its rows (Bᵀ A into a scratch Cᵀ when N < M, copied back transposed),
    // the order measured faster on this CPU; both beat MKL's AVX2 sgemm here
    auto opt = at::TensorOptions().dtype(at::kFloat);
    auto a = at::from_blob(const_cast<float*>(A), {K, M}, opt);
    auto b = at::from_blob(const_cast<float*>(B), {K, N}, opt);
    const bool flip = N < M;
    auto r = at::zeros(flip ? at::IntArrayRef{N, M} : at::IntArrayRef{M, N}, opt);
    if (flip) dnnl_matmul()(b.t(), a, r, 1.0f, alpha);
    else dnnl_matmul()(a.t(), b, r, 1.0f, alpha);
    const float* s = r.data_ptr<float>();
    for (int m = 0; m < M; ++m)
      for (int n = 0; n < N; ++n) {
        const float v = flip ? s[std::size_t(n) * M + m] : s[std::size_t(m) * N + n];
        float& c = C[std::size_t(m) * ldc + n];
        c = beta == 0.0f ? v : beta * c + v;
      }
    return;
  }
  const char* a = ta ? "T" : "N";
  const char* b = tb ? "T" : "N";
  sgemm_(b, a, &N, &M, &K, &alpha, B, &ldb, A, &lda, &beta, C, &ldc);
}
inline void gemm(bool ta, bool tb, int M, int N, int K, double alpha, const double* A, int lda,
                 const double* B, int ldb, double beta, double* C, int ldc) {
  if (M == 0 || N == 0) return;
  const char* a = ta ? "T" : "N";
  const char* b = tb ? "T" : "N";
  dgemm_(b, a, &N, &M, &K, &alpha, B, &ldb, A, &lda, &beta, C, &ldc);
}

// exp for float by Cody-Waite range reduction and a degree-6 polynomial (Cephes expf), pure
// arithmetic so that loops using it vectorise. Relative error ~2 ulp on [-87, 88].
inline float fexp(float x) {
  x = std::min(std::max(x, -87.0f), 88.0f);
  float n = std::floor(x * 1.44269504088896341f + 0.5f);
  float r = x - n * 0.693359375f + n * 2.12194440e-4f;
  float y = 1.9875691500e-4f;
  y = y * r + 1.3981999507e-3f;
  y = y * r + 8.3334519073e-3f;
  y = y * r + 4.1665795894e-2f;
  y = y * r + 1.6666665459e-1f;
  y = y * r + 5.0000001201e-1f;
  y = y * r * r + r + 1.0f;
  int32_t e = (static_cast<int32_t>(n) + 127) << 23;
  float s;
  std::memcpy(&s, &e, sizeof(s));
  return y * s;
}
inline double fexp(double x) { return std::exp(x); }

template <typename T> inline T sigmoid(T x) { return T(1) / (T(1) + fexp(-x)); }
// tanh from exp of -2|x|: no cancellation for large |x|; for tiny |x| a short series.
template <typename T> inline T tanh_(T x) {
  T ax = std::fabs(x);
  T e = fexp(T(-2) * ax);
  T t = (T(1) - e) / (T(1) + e);
  T x2 = x * x;
  T small = ax * (T(1) - x2 * (T(1) / T(3) - x2 * T(2) / T(15)));
  T r = ax < T(0.0625) ? small : t;
  return std::copysign(r, x);
}
inline double tanh_(double x) { return std::tanh(x); }

// Activation codes, as rnnlab.engine.kernels.ACT_CODES.
enum Act : int64_t { IDENTITY = 0, TANH = 1, SIGMOID = 2, RELU = 3, SOFTSIGN = 4, HARDTANH = 5,
                     ELU = 6, SOFTPLUS = 7 };

template <typename T> inline T act_fwd(int64_t a, T x) {
  switch (a) {
    case TANH: return tanh_(x);
    case SIGMOID: return sigmoid(x);
    case RELU: return x > T(0) ? x : T(0);
    case SOFTSIGN: return x / (T(1) + std::fabs(x));
    case HARDTANH: return std::min(std::max(x, T(-1)), T(1));
    case ELU: return x > T(0) ? x : fexp(x) - T(1);
    case SOFTPLUS: return x > T(20) ? x : std::log1p(fexp(x));
    default: return x;
  }
}
// Derivative written in terms of the activation's *output* y.
template <typename T> inline T act_grad(int64_t a, T y) {
  switch (a) {
    case TANH: return T(1) - y * y;
    case SIGMOID: return y * (T(1) - y);
    case RELU: return y > T(0) ? T(1) : T(0);
    case SOFTSIGN: { T u = T(1) - std::fabs(y); return u * u; }
    case HARDTANH: return (y > T(-1) && y < T(1)) ? T(1) : T(0);
    case ELU: return y > T(0) ? T(1) : y + T(1);
    case SOFTPLUS: return y > T(20) ? T(1) : T(1) - fexp(-y);
    default: return T(1);
  }
}

// Apply an activation in place over n contiguous values; the switch is outside the loop so
// each loop is a straight vectorisable kernel.
template <typename T> inline void act_inplace(int64_t a, T* v, int64_t n) {
  switch (a) {
    case TANH: for (int64_t k = 0; k < n; ++k) v[k] = tanh_(v[k]); break;
    case SIGMOID: for (int64_t k = 0; k < n; ++k) v[k] = sigmoid(v[k]); break;
    case RELU: for (int64_t k = 0; k < n; ++k) v[k] = v[k] > T(0) ? v[k] : T(0); break;
    case IDENTITY: break;
    default: for (int64_t k = 0; k < n; ++k) v[k] = act_fwd(a, v[k]); break;
  }
}
// g[k] *= act'(y[k])
template <typename T> inline void act_backward_inplace(int64_t a, T* g, const T* y, int64_t n) {
  switch (a) {
    case TANH: for (int64_t k = 0; k < n; ++k) g[k] *= T(1) - y[k] * y[k]; break;
    case SIGMOID: for (int64_t k = 0; k < n; ++k) g[k] *= y[k] * (T(1) - y[k]); break;
    case RELU: for (int64_t k = 0; k < n; ++k) g[k] = y[k] > T(0) ? g[k] : T(0); break;
    case IDENTITY: break;
    default: for (int64_t k = 0; k < n; ++k) g[k] *= act_grad(a, y[k]); break;
  }
}

// Elementwise work is split across torch's intra-op threads (the same OpenMP pool the BLAS
// calls use) once a step has enough of it; small steps stay on one thread.
constexpr int64_t kParallelElems = 16384;
// Per-step GEMM size (multiply-adds) up to which the unit-partitioned loop is used.
// S2 (B=8, H=128) and S1 (B=32, H=256) are below, S3 (B=128, H=512) above; see note 0007.
constexpr int64_t kPartitionMacs = int64_t(16) << 20;

template <typename F> inline void for_rows(int64_t rows, int64_t per_row, const F& f) {
  if (rows * per_row < kParallelElems || rows < 2) {
    f(0, rows);
    return;
  }
  int64_t grain = std::max<int64_t>(1, kParallelElems / std::max<int64_t>(per_row, 1));
  at::parallel_for(0, rows, grain, f);
}

template <typename T> inline void par_act_inplace(int64_t a, T* v, int64_t n) {
  if (a == IDENTITY) return;
  for_rows(n, 1, [&](int64_t b, int64_t e) { act_inplace(a, v + b, e - b); });
}
template <typename T>
inline void par_act_backward_inplace(int64_t a, T* g, const T* y, int64_t n) {
  if (a == IDENTITY) return;
  for_rows(n, 1, [&](int64_t b, int64_t e) { act_backward_inplace(a, g + b, y + b, e - b); });
}

// Hidden-unit partitioning. For the recurrences whose gate maths is per unit (LSTM without
// projection or full gate recurrence), each of `team` threads owns a contiguous slice of the
// hidden units for the whole sequence: per step one single-threaded GEMM for its slice, its
// units' gate maths, and one barrier — instead of a threaded GEMM plus a threaded elementwise
// pass, each with its own fork and join. Pays off when steps are small (measured in
// benchmarks/; docs/design/0007). RNNLAB_ENGINE_PARTITION=0 / =1 turns it off / always on.
struct Span {
  int64_t u, w;  // first unit, number of units (0 for a thread with none)
};
inline Span unit_span(int tid, int nth, int64_t H) {
  int64_t wb = (H + nth - 1) / nth;
  wb = (wb + 7) / 8 * 8;  // whole vectors
  int64_t u = std::min<int64_t>(H, tid * wb);
  return {u, std::min<int64_t>(wb, H - u)};
}

inline int partition_team(int64_t B, int64_t H, int64_t GH, int64_t P, bool eligible) {
#ifdef _OPENMP
  if (!eligible || at::in_parallel_region()) return 1;
  if (half_wants(B * GH * P)) return 1;  // whole-width bf16 products beat the partition
  const int nt = at::get_num_threads();
  if (nt < 2 || H < 16) return 1;
  const int sw = partition_switch().load(std::memory_order_relaxed);
  if (sw >= 0) return sw == 1 ? nt : 1;
  // a step's matrix product, in multiply-adds: below this, MKL's own threading and a
  // threaded elementwise pass cost more in synchronisation than they gain
  return B * GH * P <= kPartitionMacs ? nt : 1;
#else
  (void)B; (void)H; (void)GH; (void)P; (void)eligible;
  return 1;
#endif
}

template <typename F> inline void parallel_team(int team, const F& f) {
#ifdef _OPENMP
#pragma omp parallel num_threads(team)
  f(omp_get_thread_num(), omp_get_num_threads());
#else
  (void)team;
  f(0, 1);
#endif
}

// Batch-row teams (the layer-norm, regularised Elman and Jordan kernels): thread tid of nth
// owns rows [B * tid / nth, B * (tid + 1) / nth) for the whole sequence.
inline void row_span(int tid, int nth, int64_t B, int64_t& r0, int64_t& r1) {
  r0 = B * tid / nth;
  r1 = B * (tid + 1) / nth;
}
// run(r0, r1, tid) over the team's row blocks, or run(0, B, 0) without a team
template <typename F> inline void over_rows(int team, int64_t B, const F& run) {
  if (team <= 1) {
    run(int64_t(0), B, 0);
    return;
  }
  parallel_team(team, [&](int tid, int nth) {
    int64_t r0, r1;
    row_span(tid, nth, B, r0, r1);
    if (r1 > r0) run(r0, r1, tid);
  });
}
inline void team_barrier() {
#ifdef _OPENMP
#pragma omp barrier
#endif
}

// Lengths helper: valid(b, t) is t < len[b]; `full` when every sequence has all T steps.
struct Lengths {
  std::vector<int64_t> len;
  bool full = true;
  Lengths(const at::Tensor& lengths, int64_t B, int64_t T) {
    len.assign(B, T);
    if (lengths.defined() && lengths.numel() == B) {
      auto l = lengths.to(at::kCPU).to(at::kLong).contiguous();
      const int64_t* p = l.data_ptr<int64_t>();
      for (int64_t b = 0; b < B; ++b) {
        len[b] = p[b];
        if (p[b] != T) full = false;
      }
    }
  }
  bool valid(int64_t b, int64_t t) const { return t < len[b]; }
};

}  // namespace rnnlab
