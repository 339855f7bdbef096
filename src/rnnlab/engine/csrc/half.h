// Half precision (bfloat16) for rnnlab's CPU kernels: bf16 matrix products, float32 everything
// else. Included by common.h; docs/design/0015 ("Half precision") has the measurements.
//
// The float32 kernels run unchanged, state, gates and accumulators in float32. While a bf16
// call is in progress on this thread (half_scope, set by rnnlab/engine/half.py around the
// kernel call), gemm(float) hands the products worth it to oneDNN's bf16 matmul
// (at::native::mkldnn_matmul, fp32 accumulation inside; its result is rounded to bf16 and
// added to the float32 destination here):
// - a per-step product whose B operand lies in a registered weight: the weight's bf16 copy
//   (the caller's own bf16 tensor, no conversion) at the same offset, the state converted;
// - a product over all steps with A transposed (the weight gradients dW = dgatesᵀ s): both
//   operands converted (a pass over T·B·(G·H + H) values against G·H·H·T·B multiply-adds).
// Anything else (a weight copied into a thread's slice, other threads, small products) stays
// a float32 product: correct, only not faster. Where bf16 products run, the kernels take their
// whole-width loops (partition_team, StepGemm: no unit partition, no packed float32 weight). MKL's cblas_gemm_bf16bf16f32 (fp32 output) was
// measured 0.6-1.6x sgemm on this CPU and oneDNN's bf16 matmul 1.4-3.4x at S1/S3 per-step
// sizes, hence oneDNN. float16 has no fast product here (no avx512_fp16: MKL's f16 routine and
// oneDNN's fp16 matmul measured 0.1-0.65x sgemm) and is cast at the op boundary.
#pragma once

namespace rnnlab {

// A float32 weight the kernel reads and the bf16 tensor with the same values.
struct HalfWeight {
  const float* base;
  int64_t n;
  at::Tensor bf16;
};
struct HalfState {
  bool on = false;
  std::vector<HalfWeight> weights;
};
inline HalfState& half_state() {
  static thread_local HalfState s;
  return s;
}
// RNNLAB_ENGINE_BF16GEMM: "0" never, "1" always (tests at tiny sizes), unset: by size.
inline std::atomic<int>& half_switch() { static std::atomic<int> v{-1}; return v; }
// bf16 products run: tests check that the native path was taken.
inline std::atomic<int64_t>& half_count() { static std::atomic<int64_t> v{0}; return v; }
// Per-product size (multiply-adds) from which oneDNN's bf16 matmul beats float32 (sgemm or
// smallgemm.h's packed product), with the state conversion and the float32 epilogue: every
// per-step product at S1 (Elman 2M: forced bf16 1.4x the training step of float32 products,
// noisy) and S3 is above, every one at S2 (<= 0.5M: forced bf16 0.45-0.8x) below; the weight
// gradients over all steps are above at every shape.
constexpr int64_t kHalfMacs = int64_t(1) << 20;

// Whether this CPU's oneDNN runs a bf16 matmul at all: probed once with a 1x1 product (an
// AVX2-only CPU gets false, from the float32 probe of dnnl_matmul() or from this one). Without
// it every product of a bf16 call stays float32: correct, only not faster.
inline bool half_native() {
  static const bool ok = [] {
    if (!dnnl_matmul()) return false;
    try {
      auto a = at::ones({1, 1}, at::TensorOptions().dtype(at::kBFloat16));
      auto c = at::zeros({1, 1}, at::TensorOptions().dtype(at::kBFloat16));
      dnnl_matmul()(a, a, c, 0.0f, 1.0f);
      return float(c.data_ptr<at::BFloat16>()[0]) == 1.0f;
    } catch (...) {
      return false;
    }
  }();
  return ok;
}

inline bool half_wants(int64_t macs) {
  const HalfState& s = half_state();
  if (!s.on || !half_native()) return false;
  const int sw = half_switch().load(std::memory_order_relaxed);
  return sw >= 0 ? sw == 1 : macs >= kHalfMacs;
}

inline const at::BFloat16* half_shadow(const float* p) {
  for (const HalfWeight& w : half_state().weights)
    if (p >= w.base && p < w.base + w.n) return w.bf16.data_ptr<at::BFloat16>() + (p - w.base);
  return nullptr;
}

inline bool dense2d(const at::Tensor& t) { return t.is_contiguous() || t.t().is_contiguous(); }

// Row-major C[M,N] = alpha op(A) op(B) + beta C in bf16 products; false: not taken (the
// caller runs sgemm).
inline bool half_gemm(bool ta, bool tb, int M, int N, int K, float alpha, const float* A,
                      int lda, const float* B, int ldb, float beta, float* C, int ldc) {
  if (!half_state().on || M == 0 || N == 0 || K == 0) return false;
  if (at::in_parallel_region() || !half_wants(int64_t(M) * N * K)) return false;
  const auto f32 = at::TensorOptions().dtype(at::kFloat);
  const auto bf = at::TensorOptions().dtype(at::kBFloat16);
  at::Tensor b;
  if (const at::BFloat16* s = half_shadow(B)) {
    auto* sp = const_cast<at::BFloat16*>(s);
    b = tb ? at::from_blob(sp, {N, K}, {ldb, 1}, bf).t() : at::from_blob(sp, {K, N}, {ldb, 1}, bf);
  } else if (ta) {
    // converted in memory order, then viewed transposed (a strided conversion is ~20x slower)
    auto* bp = const_cast<float*>(B);
    b = tb ? at::from_blob(bp, {N, K}, {ldb, 1}, f32).to(at::kBFloat16).t()
           : at::from_blob(bp, {K, N}, {ldb, 1}, f32).to(at::kBFloat16);
  } else {
    return false;  // an operand this call did not register: float32
  }
  auto* ap = const_cast<float*>(A);
  at::Tensor a = ta ? at::from_blob(ap, {K, M}, {lda, 1}, f32).to(at::kBFloat16).t()
                    : at::from_blob(ap, {M, K}, {lda, 1}, f32).to(at::kBFloat16);
  if (!dense2d(a)) a = a.contiguous();
  if (!dense2d(b)) b = b.contiguous();
  at::Tensor c = at::zeros({M, N}, bf);
  dnnl_matmul()(a, b, c, 0.0f, 1.0f);
  const at::BFloat16* cp = c.data_ptr<at::BFloat16>();
  for (int64_t i = 0; i < M; ++i) {
    float* ci = C + i * ldc;
    const at::BFloat16* pi = cp + i * N;
    if (beta == 0.0f)
      for (int64_t j = 0; j < N; ++j) ci[j] = alpha * float(pi[j]);
    else
      for (int64_t j = 0; j < N; ++j) ci[j] = beta * ci[j] + alpha * float(pi[j]);
  }
  half_count().fetch_add(1, std::memory_order_relaxed);
  return true;
}

// Op: register the float32 weights of the coming kernel call with their bf16 copies (equal
// lists), or switch the bf16 products off again (empty lists).
inline void half_scope(const std::vector<at::Tensor>& f32, const std::vector<at::Tensor>& bf16) {
  TORCH_CHECK(f32.size() == bf16.size(), "half_scope: ", f32.size(), " float32 weights but ",
              bf16.size(), " bf16 copies");
  HalfState& s = half_state();
  s.weights.clear();
  for (size_t i = 0; i < f32.size(); ++i) {
    const at::Tensor& w = f32[i];
    const at::Tensor& h = bf16[i];
    TORCH_CHECK(w.scalar_type() == at::kFloat && h.scalar_type() == at::kBFloat16 &&
                    w.is_contiguous() && h.is_contiguous() && w.numel() == h.numel(),
                "half_scope: weight ", i, " must be a contiguous float32 tensor and a "
                "contiguous bfloat16 tensor of the same size");
    if (w.numel()) s.weights.push_back({w.data_ptr<float>(), w.numel(), h});
  }
  s.on = !f32.empty();
  (void)half_native();  // the probe, outside any parallel region
  half_switch().store(env_switch("RNNLAB_ENGINE_BF16GEMM"), std::memory_order_relaxed);
}

inline int64_t half_gemms() { return half_count().load(std::memory_order_relaxed); }

}  // namespace rnnlab
