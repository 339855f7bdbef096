// rnnlab's CPU recurrence kernels: the time loop of each built-in cell with a hand-written BPTT.
//
// Division of labour with Python (rnnlab/engine/kernels.py): the input projection of all steps,
// gx = x W_ihᵀ + b (one large GEMM), and any output layer that can be hoisted out of the loop
// run in PyTorch with autograd; these kernels run only the recurrence. Each forward returns the
// whole state sequence s[0..T] (s[0] the initial state, frozen past a sequence's length) and the
// buffers its backward needs; each backward takes the gradient of that state sequence and
// returns the gradients of gx, of the recurrent weights and of the initial state. Weight
// gradients are one GEMM over all steps after the backward loop.
//
// Shapes: T time, B batch, H hidden, O output (Jordan), P projection (LSTM), G gate blocks.
#include <torch/library.h>

#include <memory>

#include "common.h"
#include "smallgemm.h"

namespace rnnlab {
using at::Tensor;

static Tensor empty_like_shape(const Tensor& ref, at::IntArrayRef shape) {
  return at::empty(shape, ref.options());
}

// A per-step product C = A op(W) + beta C with op(W) (K, N) the same for the whole loop: W is
// (N, K) with rows ldw apart (tw, forward: A Wᵀ) or (K, N) (backward: A W). For few rows (a
// recurrence's batch) op(W) is packed once and multiplied by smallgemm.h, which costs far less
// per call than BLAS at these sizes; more rows go to gemm(). RNNLAB_ENGINE_SMALLGEMM=0 (read
// once per process): always gemm(), for A/B runs.
inline bool smallgemm_on() {
  static const bool on = env_switch("RNNLAB_ENGINE_SMALLGEMM") != 0;
  return on;
}
template <typename T> struct StepGemm {
  std::vector<T> P;
  const T* W;
  int N, K, ldw;
  bool tw, small;
  StepGemm(int64_t M, int64_t N_, int64_t K_, const T* W_, int64_t ldw_, bool tw_)
      : W(W_), N(int(N_)), K(int(K_)), ldw(int(ldw_)), tw(tw_),
        small(M <= rnnlab_sg::kMaxM && smallgemm_on() && !half_wants(M * N_ * K_)) {  // bf16: gemm()
    if (!small) return;
    P.resize(rnnlab_sg::packed_size<T>(N, K));
    rnnlab_sg::pack_b(tw, N, K, W, ldw, P.data());
  }
  void run(int64_t M, const T* A, int64_t lda, T beta, T* C, int64_t ldc) const {
    if (small)
      rnnlab_sg::gemm_packed(false, int(M), N, K, T(1), A, int(lda), P.data(), beta, C, int(ldc));
    else
      gemm(false, tw, int(M), N, K, T(1), A, int(lda), W, ldw, beta, C, int(ldc));
  }
};

// State feedback (feedback.h): at step t > 0 a masked run reads s(t) = mask[t, b] ? r(t-1) :
// y(t-1) in place of the own state y(t-1); y(t) itself (and what a row past its length holds)
// stays the own output. Every loop below takes a Fed and a compile-time kFed: the plain ops
// instantiate kFed = false, where every Fed branch is `if constexpr` and compiles away (the
// plain loop's code is the one it was; a run-time test there measured several times slower,
// 2026-12-03), the masked ops (feedback.h) kFed = true.
template <typename T> struct Fed {
  const T* R = nullptr;     // the reference r, (S, B, n)
  const bool* M = nullptr;  // the mask, (S, B): step t reads r(t-1) where M[t, b]
  T* s = nullptr;           // the states read, (S, B, n); s(0) = the initial state
  T* dr = nullptr;          // backward: the reference's gradient, (S, B, n), zero-filled
  bool detach = false;      // backward: the fed-back own output carries no gradient
  bool on() const { return M != nullptr; }
  // forward, after step t: row b's columns [u, u + w) of s(t+1), from the own state yt (that
  // row's y(t) at column u) or the reference
  void feed(int64_t t, int64_t S, int64_t B, int64_t n, int64_t b, int64_t u, int64_t w,
            const T* yt) const {
    if (t + 1 >= S) return;
    const T* src = M[(t + 1) * B + b] ? R + (t * B + b) * n + u : yt;
    std::memcpy(s + ((t + 1) * B + b) * n + u, src, sizeof(T) * w);
  }
  // backward, step t: d (row b, columns [u, u + w)) holds the gradient of s(t); it goes to
  // r(t-1) where the mask fed it, else stays the own y(t-1)'s (dropped under detach)
  void split(int64_t t, int64_t B, int64_t n, int64_t b, int64_t u, int64_t w, T* d) const {
    if (t == 0) return;
    if (M[t * B + b]) {
      std::memcpy(dr + ((t - 1) * B + b) * n + u, d, sizeof(T) * w);
      std::fill(d, d + w, T(0));
    } else if (detach) {
      std::fill(d, d + w, T(0));
    }
  }
};

// ---------------------------------------------------------------------------------- Elman ----
// h(t) = act(gx(t) + U h(t-1)); `first` (B, H), when given, is added to step 0's pre-activation
// (Jordan's fed-back y(0) enters there, see kernels.py)
template <typename T, bool kFed = false>
static void elman_fwd_impl(const Tensor& gx, const Tensor& w, const Tensor& first, Tensor& hs,
                           const Lengths& L, int64_t act, const Fed<T>& fd = Fed<T>()) {
  const int64_t S = gx.size(0), B = gx.size(1), H = gx.size(2);
  const T* g = gx.data_ptr<T>();
  const T* W = w.data_ptr<T>();
  const T* f0 = first.numel() ? first.data_ptr<T>() : nullptr;
  T* h = hs.data_ptr<T>();
  const T* hin = kFed ? fd.s : h;  // the states the steps read
  const StepGemm<T> gw(B, H, H, W, H, true);
  for (int64_t t = 0; t < S; ++t) {
    T* prev = h + t * B * H;
    T* cur = prev + B * H;
    std::memcpy(cur, g + t * B * H, sizeof(T) * B * H);
    if (t == 0 && f0)
      for (int64_t k = 0; k < B * H; ++k) cur[k] += f0[k];
    gw.run(B, hin + t * B * H, H, T(1), cur, H);
    par_act_inplace(act, cur, B * H);
    if (!L.full)
      for (int64_t b = 0; b < B; ++b)
        if (!L.valid(b, t)) std::memcpy(cur + b * H, prev + b * H, sizeof(T) * H);
    if constexpr (kFed)
      for (int64_t b = 0; b < B; ++b) fd.feed(t, S, B, H, b, 0, H, cur + b * H);
  }
}

std::vector<Tensor> elman_forward(const Tensor& gx, const Tensor& w_hh, const Tensor& h0,
                                  const Tensor& first, const Tensor& lengths, int64_t act) {
  read_switches();
  auto g = gx.contiguous();
  auto w = w_hh.contiguous();
  auto f0 = first.contiguous();
  const int64_t S = g.size(0), B = g.size(1), H = g.size(2);
  Lengths L(lengths, B, S);
  Tensor hs = empty_like_shape(g, {S + 1, B, H});
  hs[0].copy_(h0);
  AT_DISPATCH_FLOATING_TYPES(g.scalar_type(), "elman_forward",
                             [&] { elman_fwd_impl<scalar_t>(g, w, f0, hs, L, act); });
  return {hs};
}

template <typename T, bool kFed = false>
static void elman_bwd_impl(const Tensor& ghs, const Tensor& hs, const Tensor& w, Tensor& dgx,
                           Tensor& dw, Tensor& dh0, const Lengths& L, int64_t act,
                           const Fed<T>& fd = Fed<T>()) {
  const int64_t S = dgx.size(0), B = dgx.size(1), H = dgx.size(2);
  const T* G = ghs.data_ptr<T>();
  const T* h = hs.data_ptr<T>();
  const T* W = w.data_ptr<T>();
  T* dg = dgx.data_ptr<T>();
  std::vector<T> dh(B * H, T(0)), tmp(B * H);
  const StepGemm<T> gw(B, H, H, W, H, false);
  for (int64_t t = S - 1; t >= 0; --t) {
    const T* gt = G + (t + 1) * B * H;
    for (int64_t k = 0; k < B * H; ++k) dh[k] += gt[k];
    T* d = dg + t * B * H;
    std::memcpy(d, dh.data(), sizeof(T) * B * H);
    par_act_backward_inplace(act, d, h + (t + 1) * B * H, B * H);
    if (L.full) {
      gw.run(B, d, H, T(0), dh.data(), H);
    } else {
      for (int64_t b = 0; b < B; ++b)
        if (!L.valid(b, t)) std::fill(d + b * H, d + (b + 1) * H, T(0));
      gw.run(B, d, H, T(0), tmp.data(), H);
      for (int64_t b = 0; b < B; ++b)
        if (L.valid(b, t)) std::memcpy(&dh[b * H], &tmp[b * H], sizeof(T) * H);
    }
    if constexpr (kFed)
      for (int64_t b = 0; b < B; ++b)
        if (L.valid(b, t)) fd.split(t, B, H, b, 0, H, &dh[b * H]);
  }
  // dU = sum_t dpre(t)ᵀ h(t-1) (the states read): one GEMM over all steps.
  gemm(true, false, H, H, S * B, T(1), dg, H, kFed ? fd.s : h, H, T(0), dw.data_ptr<T>(), H);
  T* d0 = dh0.data_ptr<T>();
  for (int64_t k = 0; k < B * H; ++k) d0[k] = dh[k] + G[k];
}

std::vector<Tensor> elman_backward(const Tensor& grad_hs, const Tensor& hs, const Tensor& w_hh,
                                   const Tensor& lengths, int64_t act) {
  read_switches();
  auto ghs = grad_hs.contiguous();
  auto w = w_hh.contiguous();
  const int64_t S = hs.size(0) - 1, B = hs.size(1), H = hs.size(2);
  Lengths L(lengths, B, S);
  Tensor dgx = empty_like_shape(hs, {S, B, H});
  Tensor dw = empty_like_shape(hs, {H, H});
  Tensor dh0 = empty_like_shape(hs, {B, H});
  AT_DISPATCH_FLOATING_TYPES(hs.scalar_type(), "elman_backward",
                             [&] { elman_bwd_impl<scalar_t>(ghs, hs, w, dgx, dw, dh0, L, act); });
  return {dgx, dw, dh0};
}

// --------------------------------------------------------------------------------- Jordan ----
// h(t) = act(gx(t) + U y(t-1)),  y(t) = oact(W_y h(t) + b_y)
template <typename T, bool kFed = false>
static void jordan_fwd_impl(const Tensor& gx, const Tensor& u, const Tensor& wy, const Tensor& by,
                            Tensor& ys, Tensor& hs, const Lengths& L, int64_t act, int64_t oact,
                            const Fed<T>& fd = Fed<T>()) {
  const int64_t S = gx.size(0), B = gx.size(1), H = gx.size(2), O = u.size(1);
  const T* g = gx.data_ptr<T>();
  const T* U = u.data_ptr<T>();
  const T* Wy = wy.data_ptr<T>();
  const T* b = by.numel() ? by.data_ptr<T>() : nullptr;
  T* y = ys.data_ptr<T>();
  T* h = hs.data_ptr<T>();
  const T* yin = kFed ? fd.s : y;  // the states the steps read
  const StepGemm<T> gu(B, H, O, U, O, true), gy(B, O, H, Wy, H, true);
  for (int64_t t = 0; t < S; ++t) {
    T* ht = h + t * B * H;
    T* yp = y + t * B * O;
    T* yt = yp + B * O;
    std::memcpy(ht, g + t * B * H, sizeof(T) * B * H);
    gu.run(B, yin + t * B * O, O, T(1), ht, H);
    par_act_inplace(act, ht, B * H);
    for (int64_t r = 0; r < B; ++r)
      for (int64_t o = 0; o < O; ++o) yt[r * O + o] = b ? b[o] : T(0);
    gy.run(B, ht, H, T(1), yt, O);
    par_act_inplace(oact, yt, B * O);
    if (!L.full)
      for (int64_t r = 0; r < B; ++r)
        if (!L.valid(r, t)) std::memcpy(yt + r * O, yp + r * O, sizeof(T) * O);
    if constexpr (kFed)
      for (int64_t r = 0; r < B; ++r) fd.feed(t, S, B, O, r, 0, O, yt + r * O);
  }
}

std::vector<Tensor> jordan_forward(const Tensor& gx, const Tensor& u, const Tensor& wy,
                                   const Tensor& by, const Tensor& y0, const Tensor& lengths,
                                   int64_t act, int64_t oact) {
  read_switches();
  auto g = gx.contiguous();
  auto U = u.contiguous();
  auto Wy = wy.contiguous();
  auto b = by.contiguous();
  const int64_t S = g.size(0), B = g.size(1), H = g.size(2), O = U.size(1);
  Lengths L(lengths, B, S);
  Tensor ys = empty_like_shape(g, {S + 1, B, O});
  Tensor hs = empty_like_shape(g, {S, B, H});
  ys[0].copy_(y0);
  AT_DISPATCH_FLOATING_TYPES(g.scalar_type(), "jordan_forward", [&] {
    jordan_fwd_impl<scalar_t>(g, U, Wy, b, ys, hs, L, act, oact);
  });
  return {ys, hs};
}

template <typename T, bool kFed = false>
static void jordan_bwd_impl(const Tensor& gys, const Tensor& ys, const Tensor& hs,
                            const Tensor& u, const Tensor& wy, Tensor& dgx, Tensor& du,
                            Tensor& dwy, Tensor& dby, Tensor& dy0, const Lengths& L, int64_t act,
                            int64_t oact, const Fed<T>& fd = Fed<T>()) {
  const int64_t S = hs.size(0), B = hs.size(1), H = hs.size(2), O = u.size(1);
  const T* G = gys.data_ptr<T>();
  const T* y = ys.data_ptr<T>();
  const T* h = hs.data_ptr<T>();
  const T* U = u.data_ptr<T>();
  const T* Wy = wy.data_ptr<T>();
  T* dg = dgx.data_ptr<T>();
  std::vector<T> dy(B * O, T(0)), dz(S * B * O), tmp(B * O);
  const StepGemm<T> gy(B, H, O, Wy, H, false), gu(B, O, H, U, O, false);
  for (int64_t t = S - 1; t >= 0; --t) {
    const T* gt = G + (t + 1) * B * O;
    for (int64_t k = 0; k < B * O; ++k) dy[k] += gt[k];
    T* dzt = dz.data() + t * B * O;
    std::memcpy(dzt, dy.data(), sizeof(T) * B * O);
    par_act_backward_inplace(oact, dzt, y + (t + 1) * B * O, B * O);
    if (!L.full)
      for (int64_t r = 0; r < B; ++r)
        if (!L.valid(r, t)) std::fill(dzt + r * O, dzt + (r + 1) * O, T(0));
    T* d = dg + t * B * H;
    gy.run(B, dzt, O, T(0), d, H);  // dh = dz W_y
    par_act_backward_inplace(act, d, h + t * B * H, B * H);
    if (L.full) {
      gu.run(B, d, H, T(0), dy.data(), O);
    } else {
      gu.run(B, d, H, T(0), tmp.data(), O);
      for (int64_t r = 0; r < B; ++r)
        if (L.valid(r, t)) std::memcpy(&dy[r * O], &tmp[r * O], sizeof(T) * O);
    }
    if constexpr (kFed)
      for (int64_t r = 0; r < B; ++r)
        if (L.valid(r, t)) fd.split(t, B, O, r, 0, O, &dy[r * O]);
  }
  gemm(true, false, H, O, S * B, T(1), dg, H, kFed ? fd.s : y, O, T(0), du.data_ptr<T>(), O);
  gemm(true, false, O, H, S * B, T(1), dz.data(), O, h, H, T(0), dwy.data_ptr<T>(), H);
  T* db = dby.data_ptr<T>();
  std::fill(db, db + O, T(0));
  for (int64_t k = 0; k < S * B; ++k)
    for (int64_t o = 0; o < O; ++o) db[o] += dz[k * O + o];
  T* d0 = dy0.data_ptr<T>();
  for (int64_t k = 0; k < B * O; ++k) d0[k] = dy[k] + G[k];
}

std::vector<Tensor> jordan_backward(const Tensor& grad_ys, const Tensor& ys, const Tensor& hs,
                                    const Tensor& u, const Tensor& wy, const Tensor& lengths,
                                    int64_t act, int64_t oact) {
  read_switches();
  auto gys = grad_ys.contiguous();
  auto U = u.contiguous();
  auto Wy = wy.contiguous();
  const int64_t S = hs.size(0), B = hs.size(1), H = hs.size(2), O = U.size(1);
  Lengths L(lengths, B, S);
  Tensor dgx = empty_like_shape(hs, {S, B, H});
  Tensor du = empty_like_shape(hs, {H, O});
  Tensor dwy = empty_like_shape(hs, {O, H});
  Tensor dby = empty_like_shape(hs, {O});
  Tensor dy0 = empty_like_shape(hs, {B, O});
  AT_DISPATCH_FLOATING_TYPES(hs.scalar_type(), "jordan_backward", [&] {
    jordan_bwd_impl<scalar_t>(gys, ys, hs, U, Wy, dgx, du, dwy, dby, dy0, L, act, oact);
  });
  return {dgx, du, dwy, dby, dy0};
}


// ------------------------------------------------------------------------------------ GRU ----
// reset after:  r, z = σ(gx_rz + U_rz h + b_rz); n = act(gx_n + r ⊙ (U_n h + b_hn))
// reset before: r, z = σ(gx_rz + U_rz h);        n = act(gx_n + U_n (r ⊙ h))
// h(t) = z ⊙ h(t-1) + (1 - z) ⊙ n.   gates (T, B, 3H) hold r, z, n; aux (T, B, H) holds
// U_n h + b_hn (after) or r ⊙ h (before).
template <typename T, bool kFed = false>
static void gru_fwd_impl(const Tensor& gx, const Tensor& w, const Tensor& bhh, Tensor& hs,
                         Tensor& gates, Tensor& aux, const Lengths& L, bool before, int64_t act,
                         bool store, const Fed<T>& fd = Fed<T>()) {
  const int64_t S = gx.size(0), B = gx.size(1), H = gx.size(2) / 3;
  const T* g = gx.data_ptr<T>();
  const T* W = w.data_ptr<T>();
  const T* bh = bhh.numel() ? bhh.data_ptr<T>() : nullptr;
  T* h = hs.data_ptr<T>();
  const T* hin = kFed ? fd.s : h;  // the states the steps read
  // without a backward to feed (store == false) the gates of one step are scratch
  auto gts = [&](int64_t t) { return gates.data_ptr<T>() + (store ? t : 0) * B * 3 * H; };
  auto ats = [&](int64_t t) { return aux.data_ptr<T>() + (store ? t : 0) * B * H; };
  // Row r at step t, hidden units [u, u + w). hr: that row's U h(t-1) (+ b_hh), gate blocks
  // bs apart, already offset to unit u.
  // r, z and the candidate's pre-activation; reset after: n's pre-activation is complete.
  auto gates_row = [&](int64_t t, int64_t r, int64_t u, int64_t w, const T* hr, int64_t bs) {
    const T* xr = g + (t * B + r) * 3 * H + u;
    const T* hp = hin + (t * B + r) * H + u;
    T* o = gts(t) + r * 3 * H + u;
    T* a = ats(t) + r * H + u;
    for (int64_t j = 0; j < w; ++j) o[j] = sigmoid(xr[j] + hr[j]);
    for (int64_t j = 0; j < w; ++j) o[H + j] = sigmoid(xr[H + j] + hr[bs + j]);
    if (!before) {
      for (int64_t j = 0; j < w; ++j) {
        a[j] = hr[2 * bs + j];
        o[2 * H + j] = xr[2 * H + j] + o[j] * a[j];
      }
    } else {
      for (int64_t j = 0; j < w; ++j) {
        a[j] = o[j] * hp[j];
        o[2 * H + j] = xr[2 * H + j];
      }
    }
  };
  // n = act(pre), h(t) = z ⊙ h(t-1) + (1 - z) ⊙ n; frozen rows keep the own h(t-1)
  auto update_row = [&](int64_t t, int64_t r, int64_t u, int64_t w) {
    T* o = gts(t) + r * 3 * H + u;
    const T* hp = hin + (t * B + r) * H + u;
    T* hc = h + ((t + 1) * B + r) * H + u;
    act_inplace(act, o + 2 * H, w);
    for (int64_t j = 0; j < w; ++j) {
      T z = o[H + j];
      hc[j] = z * hp[j] + (T(1) - z) * o[2 * H + j];
    }
    if (!L.full && !L.valid(r, t)) std::memcpy(hc, h + (t * B + r) * H + u, sizeof(T) * w);
    if constexpr (kFed) fd.feed(t, S, B, H, r, u, w, hc);
  };
  const int team = partition_team(B, H, 3 * H, H, true);
  if (team > 1) {
    // as the LSTM (note 0007): each thread owns units [u, u + w) for the whole sequence
    parallel_team(team, [&](int tid, int nth) {
      const Span sp = unit_span(tid, nth, H);
      const int64_t u = sp.u, w = sp.w;
      const int64_t nb = before ? 2 : 3;  // blocks multiplied by h(t-1)
      std::vector<T> Wk(nb * w * H), Wn(before ? w * H : 0), sc(B * nb * w);
      for (int64_t blk = 0; blk < nb; ++blk)
        std::memcpy(Wk.data() + blk * w * H, W + (blk * H + u) * H, sizeof(T) * w * H);
      if (before) std::memcpy(Wn.data(), W + (2 * H + u) * H, sizeof(T) * w * H);
      const StepGemm<T> gk(B, nb * w, H, Wk.data(), H, true);
      const StepGemm<T> gn(B, before ? w : 0, H, Wn.data(), H, true);
      for (int64_t t = 0; t < S; ++t) {
        if (w > 0) {
          for (int64_t r = 0; r < B; ++r)
            for (int64_t blk = 0; blk < nb; ++blk)
              for (int64_t j = 0; j < w; ++j)
                sc[(r * nb + blk) * w + j] = bh ? bh[blk * H + u + j] : T(0);
          gk.run(B, hin + t * B * H, H, T(1), sc.data(), nb * w);
          for (int64_t r = 0; r < B; ++r) gates_row(t, r, u, w, sc.data() + r * nb * w, w);
        }
        if (before) {
          team_barrier();  // U_n (r ⊙ h) needs r ⊙ h of every unit
          if (w > 0) gn.run(B, ats(t), H, T(1), gts(t) + 2 * H + u, 3 * H);
        }
        if (w > 0)
          for (int64_t r = 0; r < B; ++r) update_row(t, r, u, w);
        team_barrier();
      }
    });
    return;
  }
  std::vector<T> gh(B * 3 * H);
  const StepGemm<T> g3(B, before ? 2 * H : 3 * H, H, W, H, true);
  const StepGemm<T> gn(B, before ? H : 0, H, W + 2 * H * H, H, true);
  for (int64_t t = 0; t < S; ++t) {
    const T* prev = hin + t * B * H;
    if (!before) {
      for (int64_t r = 0; r < B; ++r)
        for (int64_t k = 0; k < 3 * H; ++k) gh[r * 3 * H + k] = bh ? bh[k] : T(0);
      g3.run(B, prev, H, T(1), gh.data(), 3 * H);
      // one pass per row: gates, candidate and the state update
      for_rows(B, 3 * H, [&](int64_t r0, int64_t r1) {
        for (int64_t r = r0; r < r1; ++r) {
          gates_row(t, r, 0, H, gh.data() + r * 3 * H, H);
          update_row(t, r, 0, H);
        }
      });
      continue;
    }
    g3.run(B, prev, H, T(0), gh.data(), 2 * H);
    for_rows(B, 3 * H, [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) gates_row(t, r, 0, H, gh.data() + r * 2 * H, H);
    });
    // U_n (r ⊙ h) for all rows at once: gates[:, 2H:] += aux W_nᵀ (ldc = 3H)
    gn.run(B, ats(t), H, T(1), gts(t) + 2 * H, 3 * H);
    for_rows(B, 3 * H, [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) update_row(t, r, 0, H);
    });
  }
}

std::vector<Tensor> gru_forward(const Tensor& gx, const Tensor& w_hh, const Tensor& b_hh,
                                const Tensor& h0, const Tensor& lengths, bool before,
                                int64_t act, bool store) {
  read_switches();
  auto g = gx.contiguous();
  auto w = w_hh.contiguous();
  auto b = b_hh.contiguous();
  const int64_t S = g.size(0), B = g.size(1), H = g.size(2) / 3;
  Lengths L(lengths, B, S);
  Tensor hs = empty_like_shape(g, {S + 1, B, H});
  Tensor gates = empty_like_shape(g, {store ? S : 1, B, 3 * H});
  Tensor aux = empty_like_shape(g, {store ? S : 1, B, H});
  hs[0].copy_(h0);
  AT_DISPATCH_FLOATING_TYPES(g.scalar_type(), "gru_forward", [&] {
    gru_fwd_impl<scalar_t>(g, w, b, hs, gates, aux, L, before, act, store);
  });
  return {hs, gates, aux};
}

template <typename T, bool kFed = false>
static void gru_bwd_impl(const Tensor& ghs, const Tensor& hs, const Tensor& gates,
                         const Tensor& aux, const Tensor& w, Tensor& dgx, Tensor& dw, Tensor& dbh,
                         Tensor& dh0, const Lengths& L, bool before, int64_t act,
                         const Fed<T>& fd = Fed<T>()) {
  const int64_t S = gates.size(0), B = gates.size(1), H = gates.size(2) / 3;
  const T* G = ghs.data_ptr<T>();
  const T* h = kFed ? fd.s : hs.data_ptr<T>();  // the states the steps read
  const T* gs = gates.data_ptr<T>();
  const T* ax = aux.data_ptr<T>();
  const T* W = w.data_ptr<T>();
  T* dg = dgx.data_ptr<T>();
  // after: dgh (S, B, 3H) = gradient of U h + b_hh;  before: dgx's n block serves for U_n.
  // not zero-filled (a 10 MB pass at S1): grad_row writes every element of it
  std::unique_ptr<T[]> dgh(new T[before ? 0 : S * B * 3 * H]);
  std::vector<T> drh(before ? S * B * H : 0);
  std::vector<T> dh(B * H, T(0));
  auto valid = [&](int64_t r, int64_t t) { return L.full || L.valid(r, t); };
  // Row r at step t, units [u, u + w): dh(t) arrives in dh; the gradients of z and n's
  // pre-activation (and, reset after, of r and of U h + b_hh) go to dgx (and dgh).
  auto grad_row = [&](int64_t t, int64_t r, int64_t u, int64_t w) {
    T* dr_ = dg + (t * B + r) * 3 * H + u;
    if (!valid(r, t)) {
      for (int64_t blk = 0; blk < 3; ++blk) std::fill(dr_ + blk * H, dr_ + blk * H + w, T(0));
      if (!before)
        for (int64_t blk = 0; blk < 3; ++blk) {
          T* q = &dgh[(t * B + r) * 3 * H + blk * H + u];
          std::fill(q, q + w, T(0));
        }
      else std::fill(&drh[(t * B + r) * H + u], &drh[(t * B + r) * H + u + w], T(0));
      return;
    }
    const T* o = gs + (t * B + r) * 3 * H + u;
    const T* dhr = dh.data() + r * H + u;
    const T* hpr = h + (t * B + r) * H + u;
    const T* ar = ax + (t * B + r) * H + u;
    for (int64_t j = 0; j < w; ++j) {
      T z = o[H + j], n = o[2 * H + j];
      dr_[H + j] = dhr[j] * (hpr[j] - n) * z * (T(1) - z);
      dr_[2 * H + j] = dhr[j] * (T(1) - z) * act_grad(act, n);
    }
    if (!before) {
      T* dgr = &dgh[(t * B + r) * 3 * H + u];
      for (int64_t j = 0; j < w; ++j) {
        T rr = o[j], dn = dr_[2 * H + j];
        T drr = dn * ar[j] * rr * (T(1) - rr);
        dr_[j] = drr;
        dgr[j] = drr;
        dgr[H + j] = dr_[H + j];
        dgr[2 * H + j] = dn * rr;
      }
    }
  };
  // reset before: q = d(r ⊙ h) for the row's units -> dr, and q becomes r ⊙ q (the r ⊙ path's
  // part of dh(t-1))
  auto reset_row = [&](int64_t t, int64_t r, int64_t u, int64_t w) {
    if (!valid(r, t)) return;
    const T* o = gs + (t * B + r) * 3 * H + u;
    const T* hpr = h + (t * B + r) * H + u;
    T* dr_ = dg + (t * B + r) * 3 * H + u;
    T* q = &drh[(t * B + r) * H + u];
    for (int64_t j = 0; j < w; ++j) {
      T rr = o[j];
      dr_[j] = q[j] * hpr[j] * rr * (T(1) - rr);
      q[j] = q[j] * rr;
    }
  };
  // dh(t-1) = dh ⊙ z + tmp for the row's units; frozen rows pass dh unchanged
  auto carry_row = [&](int64_t t, int64_t r, int64_t u, int64_t w, const T* tmp) {
    if (!valid(r, t)) return;
    const T* o = gs + (t * B + r) * 3 * H + u;
    T* d = dh.data() + r * H + u;
    const T* q = before ? &drh[(t * B + r) * H + u] : nullptr;
    for (int64_t j = 0; j < w; ++j) d[j] = d[j] * o[H + j] + tmp[j] + (q ? q[j] : T(0));
    if constexpr (kFed) fd.split(t, B, H, r, u, w, d);
  };
  auto add_grad = [&](int64_t t, int64_t u, int64_t w) {
    for (int64_t r = 0; r < B; ++r) {
      T* d = dh.data() + r * H + u;
      const T* gt = G + ((t + 1) * B + r) * H + u;
      for (int64_t j = 0; j < w; ++j) d[j] += gt[j];
    }
  };
  const int team = partition_team(B, H, 3 * H, H, true);
  if (team > 1) {
    parallel_team(team, [&](int tid, int nth) {
      const Span sp = unit_span(tid, nth, H);
      const int64_t u = sp.u, w = sp.w;
      std::vector<T> tmp(B * w);
      // dn U_n[:, units] (before), d_rz U_rz[:, units] (before) or dgh U[:, units] (after)
      const StepGemm<T> gu(B, before ? w : 0, H, W + 2 * H * H + u, H, false);
      const StepGemm<T> gw(B, w, before ? 2 * H : 3 * H, W + u, H, false);
      for (int64_t t = S - 1; t >= 0; --t) {
        if (w > 0) {
          add_grad(t, u, w);
          for (int64_t r = 0; r < B; ++r) grad_row(t, r, u, w);
        }
        team_barrier();
        T* d = dg + t * B * 3 * H;
        if (before) {
          // d(r ⊙ h)[:, units] = dn U_n[:, units], from every unit's dn
          if (w > 0) {
            gu.run(B, d + 2 * H, 3 * H, T(0), &drh[t * B * H + u], H);
            for (int64_t r = 0; r < B; ++r) reset_row(t, r, u, w);
          }
          team_barrier();  // dr of every unit
          if (w > 0)
            gw.run(B, d, 3 * H, T(0), tmp.data(), w);
        } else if (w > 0) {
          gw.run(B, &dgh[t * B * 3 * H], 3 * H, T(0), tmp.data(), w);
        }
        if (w > 0)
          for (int64_t r = 0; r < B; ++r) carry_row(t, r, u, w, tmp.data() + r * w);
      }
    });
  } else {
    std::vector<T> tmp(B * H);
    const StepGemm<T> gu(B, before ? H : 0, H, W + 2 * H * H, H, false);
    const StepGemm<T> gw(B, H, before ? 2 * H : 3 * H, W, H, false);
    for (int64_t t = S - 1; t >= 0; --t) {
      add_grad(t, 0, H);
      for_rows(B, 3 * H, [&](int64_t r0, int64_t r1) {
        for (int64_t r = r0; r < r1; ++r) grad_row(t, r, 0, H);
      });
      T* d = dg + t * B * 3 * H;
      if (!before) {
        // dh(t-1) = dh ⊙ z + dgh(t) U
        gw.run(B, &dgh[t * B * 3 * H], 3 * H, T(0), tmp.data(), H);
      } else {
        // d(r ⊙ h) = dn U_n;  then dr and the direct path into h
        gu.run(B, d + 2 * H, 3 * H, T(0), &drh[t * B * H], H);
        for (int64_t r = 0; r < B; ++r) reset_row(t, r, 0, H);
        gw.run(B, d, 3 * H, T(0), tmp.data(), H);
      }
      for (int64_t r = 0; r < B; ++r) carry_row(t, r, 0, H, tmp.data() + r * H);
    }
  }
  T* dW = dw.data_ptr<T>();
  T* db = dbh.data_ptr<T>();
  if (!before) {
    gemm(true, false, 3 * H, H, S * B, T(1), dgh.get(), 3 * H, h, H, T(0), dW, H);
    std::fill(db, db + 3 * H, T(0));
    for (int64_t k = 0; k < S * B; ++k)
      for (int64_t j = 0; j < 3 * H; ++j) db[j] += dgh[k * 3 * H + j];
  } else {
    gemm(true, false, 2 * H, H, S * B, T(1), dg, 3 * H, h, H, T(0), dW, H);
    gemm(true, false, H, H, S * B, T(1), dg + 2 * H, 3 * H, ax, H, T(0), dW + 2 * H * H, H);
    std::fill(db, db + 3 * H, T(0));
  }
  T* d0 = dh0.data_ptr<T>();
  for (int64_t k = 0; k < B * H; ++k) d0[k] = dh[k] + G[k];
}

std::vector<Tensor> gru_backward(const Tensor& grad_hs, const Tensor& hs, const Tensor& gates,
                                 const Tensor& aux, const Tensor& w_hh, const Tensor& lengths,
                                 bool before, int64_t act) {
  read_switches();
  auto ghs = grad_hs.contiguous();
  auto w = w_hh.contiguous();
  const int64_t S = gates.size(0), B = gates.size(1), H = gates.size(2) / 3;
  Lengths L(lengths, B, S);
  Tensor dgx = empty_like_shape(hs, {S, B, 3 * H});
  Tensor dw = empty_like_shape(hs, {3 * H, H});
  Tensor dbh = empty_like_shape(hs, {3 * H});
  Tensor dh0 = empty_like_shape(hs, {B, H});
  AT_DISPATCH_FLOATING_TYPES(hs.scalar_type(), "gru_backward", [&] {
    gru_bwd_impl<scalar_t>(ghs, hs, gates, aux, w, dgx, dw, dbh, dh0, L, before, act);
  });
  return {dgx, dw, dbh, dh0};
}

}  // namespace rnnlab

#include "lstm.h"
#include "regularised.h"
#include "regularised_jordan.h"
#include "layernorm.h"
#include "feedback.h"
#include "fed_input.h"

TORCH_LIBRARY(rnnlab_engine, m) {
  m.def("elman_forward(Tensor gx, Tensor w_hh, Tensor h0, Tensor first, Tensor lengths, int act) -> Tensor[]");
  m.def("elman_backward(Tensor grad_hs, Tensor hs, Tensor w_hh, Tensor lengths, int act) -> Tensor[]");
  m.def("jordan_forward(Tensor gx, Tensor u, Tensor wy, Tensor by, Tensor y0, Tensor lengths, int act, int oact) -> Tensor[]");
  m.def("jordan_backward(Tensor grad_ys, Tensor ys, Tensor hs, Tensor u, Tensor wy, Tensor lengths, int act, int oact) -> Tensor[]");
  m.def("gru_forward(Tensor gx, Tensor w_hh, Tensor b_hh, Tensor h0, Tensor lengths, bool before, int act, bool store) -> Tensor[]");
  m.def("gru_backward(Tensor grad_hs, Tensor hs, Tensor gates, Tensor aux, Tensor w_hh, Tensor lengths, bool before, int act) -> Tensor[]");
  m.def("lstm_forward(Tensor gx, Tensor w_hh, Tensor w_ci, Tensor w_cf, Tensor w_co, Tensor w_hr, Tensor w_gg, Tensor h0, Tensor c0, Tensor g0, Tensor lengths, int[] blocks, bool coupled, int act, int cact, bool store) -> Tensor[]");
  m.def("lstm_backward(Tensor grad_ys, Tensor grad_cs, Tensor grad_gs, Tensor ys, Tensor cs, Tensor gs, Tensor acts, Tensor ms, Tensor w_hh, Tensor w_ci, Tensor w_cf, Tensor w_co, Tensor w_hr, Tensor w_gg, Tensor lengths, int[] blocks, bool coupled, int act, int cact) -> Tensor[]");
  m.def("lstm_reg_forward(Tensor gx, Tensor w_hh, Tensor h0, Tensor c0, Tensor mask_h, Tensor keep_h, Tensor keep_c, Tensor lengths, int act, int cact) -> Tensor[]");
  m.def("lstm_reg_backward(Tensor grad_hs, Tensor grad_cs, Tensor hs, Tensor cs, Tensor gates, Tensor tc, Tensor w_hh, Tensor mask_h, Tensor keep_h, Tensor keep_c, Tensor lengths, int act, int cact) -> Tensor[]");
  m.def("gru_reg_forward(Tensor gx, Tensor w_hh, Tensor b_hh, Tensor h0, Tensor mask_h, Tensor keep_h, Tensor lengths, bool before, int act) -> Tensor[]");
  m.def("ln_lstm_forward(Tensor gx, Tensor w_hh, Tensor g_hh, Tensor b_hh, Tensor g_c, Tensor b_c, Tensor h0, Tensor c0, Tensor mask_h, Tensor keep_h, Tensor keep_c, Tensor lengths, float eps) -> Tensor[]");
  m.def("ln_lstm_backward(Tensor grad_hs, Tensor grad_cs, Tensor hs, Tensor cs, Tensor gates, Tensor uhat, Tensor ru, Tensor chat, Tensor rc, Tensor tc, Tensor w_hh, Tensor g_hh, Tensor g_c, Tensor mask_h, Tensor keep_h, Tensor keep_c, Tensor lengths) -> Tensor[]");
  m.def("ln_gru_forward(Tensor gx, Tensor w_hh, Tensor g_hh, Tensor b_hh, Tensor h0, Tensor mask_h, Tensor keep_h, Tensor lengths, bool before, float eps, Tensor g_x, Tensor b_x) -> Tensor[]");
  m.def("ln_gru_backward(Tensor grad_hs, Tensor hs, Tensor gates, Tensor uhat, Tensor ru, Tensor q, Tensor w_hh, Tensor g_hh, Tensor b_hh, Tensor mask_h, Tensor keep_h, Tensor lengths, bool before, Tensor xhat, Tensor rx, Tensor g_x) -> Tensor[]");
  m.def("elman_reg_forward(Tensor gx, Tensor w_hh, Tensor h0, Tensor mask_h, Tensor keep_h, Tensor lengths, int act) -> Tensor[]");
  m.def("elman_reg_backward(Tensor grad_hs, Tensor hs, Tensor hc, Tensor w_hh, Tensor mask_h, Tensor keep_h, Tensor lengths, int act) -> Tensor[]");
  m.def("gru_reg_backward(Tensor grad_hs, Tensor hs, Tensor gates, Tensor aux, Tensor w_hh, Tensor mask_h, Tensor keep_h, Tensor lengths, bool before, int act) -> Tensor[]");
  m.def("jordan_reg_forward(Tensor gx, Tensor u, Tensor wy, Tensor by, Tensor y0, Tensor mask_y, Tensor keep_y, Tensor lengths, int act, int oact) -> Tensor[]");
  m.def("jordan_reg_backward(Tensor grad_ys, Tensor ys, Tensor hs, Tensor yc, Tensor u, Tensor wy, Tensor mask_y, Tensor keep_y, Tensor lengths, int act, int oact) -> Tensor[]");
  // half precision (half.h): device-free, so no dispatch key is needed
  m.def("half_scope(Tensor[] f32, Tensor[] bf16) -> ()", &rnnlab::half_scope);
  m.def("half_gemms() -> int", &rnnlab::half_gemms);
  m.def("half_native() -> bool", &rnnlab::half_native);
}

TORCH_LIBRARY_IMPL(rnnlab_engine, CPU, m) {
  m.impl("elman_forward", &rnnlab::elman_forward);
  m.impl("elman_backward", &rnnlab::elman_backward);
  m.impl("jordan_forward", &rnnlab::jordan_forward);
  m.impl("jordan_backward", &rnnlab::jordan_backward);
  m.impl("gru_forward", &rnnlab::gru_forward);
  m.impl("gru_backward", &rnnlab::gru_backward);
  m.impl("lstm_forward", &rnnlab::lstm_forward);
  m.impl("lstm_backward", &rnnlab::lstm_backward);
  m.impl("lstm_reg_forward", &rnnlab::lstm_reg_forward);
  m.impl("lstm_reg_backward", &rnnlab::lstm_reg_backward);
  m.impl("gru_reg_forward", &rnnlab::gru_reg_forward);
  m.impl("gru_reg_backward", &rnnlab::gru_reg_backward);
  m.impl("elman_reg_forward", &rnnlab::elman_reg_forward);
  m.impl("elman_reg_backward", &rnnlab::elman_reg_backward);
  m.impl("jordan_reg_forward", &rnnlab::jordan_reg_forward);
  m.impl("jordan_reg_backward", &rnnlab::jordan_reg_backward);
  m.impl("ln_lstm_forward", &rnnlab::ln_lstm_forward);
  m.impl("ln_lstm_backward", &rnnlab::ln_lstm_backward);
  m.impl("ln_gru_forward", &rnnlab::ln_gru_forward);
  m.impl("ln_gru_backward", &rnnlab::ln_gru_backward);
}
