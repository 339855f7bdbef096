// Output feedback inside the kernel's time loop: the feedback mask selects, at each step t > 0
// and for each sequence, the reference r(t-1) or the model's own output y(t-1) as the state the
// step reads (teacher forcing, free running and every mixture: one op call per sequence chunk).
//
//   s(0) = y(0);  s(t) = mask[b, t] ? r(t-1) : y(t-1)            (t > 0)
//   h(t) = act(gx(t) + U s(t)),  y(t) = oact(W_y h(t) + b_y)     (Jordan: state y)
//   y(t) = h(t) = act(gx(t) + U s(t))                            (no W_y: Elman, state h)
//
// Past a sequence's length the state holds y(t-1) (the own output, not the substituted one), as
// the reference loop rnnlab.layers.unroll does. The backward sends the gradient of s(t) to r(t-1)
// where the mask feeds it and to y(t-1) elsewhere, unless `detach` (the fed-back own output
// carries no gradient; step 0's initial state always does). Python side:
// rnnlab/engine/feedback.py; note docs/design/0003.
#pragma once
#include <torch/library.h>

#include "common.h"

namespace rnnlab {
using at::Tensor;

template <typename T>
static void fed_fwd_impl(const Tensor& gx, const Tensor& u, const Tensor& wy, const Tensor& by,
                         const Tensor& ref, const Tensor& mask, Tensor& ys, Tensor& hs,
                         Tensor& ss, const Lengths& L, int64_t act, int64_t oact) {
  const int64_t S = gx.size(0), B = gx.size(1), H = gx.size(2), O = u.size(1);
  const bool has_wy = wy.numel() > 0;
  const T* g = gx.data_ptr<T>();
  const T* U = u.data_ptr<T>();
  const T* Wy = has_wy ? wy.data_ptr<T>() : nullptr;
  const T* b = by.numel() ? by.data_ptr<T>() : nullptr;
  const T* R = ref.data_ptr<T>();
  const bool* M = mask.data_ptr<bool>();  // (S, B)
  T* y = ys.data_ptr<T>();
  T* h = has_wy ? hs.data_ptr<T>() : nullptr;
  T* s = ss.data_ptr<T>();
  for (int64_t t = 0; t < S; ++t) {
    T* st = s + t * B * O;
    T* yp = y + t * B * O;
    T* yt = yp + B * O;
    std::memcpy(st, yp, sizeof(T) * B * O);
    if (t > 0)
      for (int64_t r = 0; r < B; ++r)
        if (M[t * B + r]) std::memcpy(st + r * O, R + ((t - 1) * B + r) * O, sizeof(T) * O);
    T* ht = has_wy ? h + t * B * H : yt;  // without W_y the hidden state is the output
    std::memcpy(ht, g + t * B * H, sizeof(T) * B * H);
    gemm(false, true, B, H, O, T(1), st, O, U, O, T(1), ht, H);
    par_act_inplace(act, ht, B * H);
    if (has_wy) {
      for (int64_t r = 0; r < B; ++r)
        for (int64_t o = 0; o < O; ++o) yt[r * O + o] = b ? b[o] : T(0);
      gemm(false, true, B, O, H, T(1), ht, H, Wy, H, T(1), yt, O);
      par_act_inplace(oact, yt, B * O);
    }
    if (!L.full)
      for (int64_t r = 0; r < B; ++r)
        if (!L.valid(r, t)) std::memcpy(yt + r * O, yp + r * O, sizeof(T) * O);
  }
}

// fed_forward(gx (S,B,H), u (H,O), wy (O,H) or empty, by (O) or empty, y0 (B,O), ref (S,B,O),
//             mask (S,B) bool, lengths) -> ys (S+1,B,O), hs (S,B,H) or empty, ss (S,B,O)
std::vector<Tensor> fed_forward(const Tensor& gx, const Tensor& u, const Tensor& wy,
                                const Tensor& by, const Tensor& y0, const Tensor& ref,
                                const Tensor& mask, const Tensor& lengths, int64_t act,
                                int64_t oact) {
  read_switches();
  auto g = gx.contiguous();
  auto U = u.contiguous();
  auto W = wy.contiguous();
  auto b = by.contiguous();
  auto R = ref.contiguous();
  auto M = mask.to(at::kBool).contiguous();
  const int64_t S = g.size(0), B = g.size(1), H = g.size(2), O = U.size(1);
  TORCH_CHECK(W.numel() > 0 || O == H, "fed_forward: without wy the output is h (O == H)");
  Lengths L(lengths, B, S);
  Tensor ys = empty_like_shape(g, {S + 1, B, O});
  Tensor hs = W.numel() ? empty_like_shape(g, {S, B, H}) : empty_like_shape(g, {0});
  Tensor ss = empty_like_shape(g, {S, B, O});
  ys[0].copy_(y0);
  AT_DISPATCH_FLOATING_TYPES(g.scalar_type(), "fed_forward", [&] {
    fed_fwd_impl<scalar_t>(g, U, W, b, R, M, ys, hs, ss, L, act, oact);
  });
  return {ys, hs, ss};
}

template <typename T>
static void fed_bwd_impl(const Tensor& gys, const Tensor& ys, const Tensor& hs, const Tensor& ss,
                         const Tensor& mask, const Tensor& u, const Tensor& wy, Tensor& dgx,
                         Tensor& du, Tensor& dwy, Tensor& dby, Tensor& dy0, Tensor& dref,
                         const Lengths& L, int64_t act, int64_t oact, bool detach) {
  const int64_t S = ss.size(0), B = ss.size(1), H = dgx.size(2), O = u.size(1);
  const bool has_wy = wy.numel() > 0;
  const T* G = gys.data_ptr<T>();
  const T* y = ys.data_ptr<T>();
  const T* h = has_wy ? hs.data_ptr<T>() : nullptr;
  const T* s = ss.data_ptr<T>();
  const bool* M = mask.data_ptr<bool>();
  const T* U = u.data_ptr<T>();
  const T* Wy = has_wy ? wy.data_ptr<T>() : nullptr;
  T* dg = dgx.data_ptr<T>();
  T* dr = dref.data_ptr<T>();
  std::fill(dr, dr + S * B * O, T(0));
  std::vector<T> dy(B * O, T(0)), ds(B * O);
  std::vector<T> dz(has_wy ? S * B * O : 0);
  for (int64_t t = S - 1; t >= 0; --t) {
    const T* gt = G + (t + 1) * B * O;
    for (int64_t k = 0; k < B * O; ++k) dy[k] += gt[k];
    T* d = dg + t * B * H;
    if (has_wy) {
      T* dzt = dz.data() + t * B * O;
      std::memcpy(dzt, dy.data(), sizeof(T) * B * O);
      par_act_backward_inplace(oact, dzt, y + (t + 1) * B * O, B * O);
      if (!L.full)
        for (int64_t r = 0; r < B; ++r)
          if (!L.valid(r, t)) std::fill(dzt + r * O, dzt + (r + 1) * O, T(0));
      gemm(false, false, B, H, O, T(1), dzt, O, Wy, H, T(0), d, H);  // dh = dz W_y
      par_act_backward_inplace(act, d, h + t * B * H, B * H);
    } else {
      std::memcpy(d, dy.data(), sizeof(T) * B * H);
      par_act_backward_inplace(act, d, y + (t + 1) * B * O, B * H);
      if (!L.full)
        for (int64_t r = 0; r < B; ++r)
          if (!L.valid(r, t)) std::fill(d + r * H, d + (r + 1) * H, T(0));
    }
    gemm(false, false, B, O, H, T(1), d, H, U, O, T(0), ds.data(), O);  // ds = dh U
    for (int64_t r = 0; r < B; ++r) {
      T* dyr = &dy[r * O];
      if (!L.valid(r, t)) continue;  // the state was held: its gradient passes unchanged
      if (t > 0 && M[t * B + r]) {
        std::memcpy(dr + ((t - 1) * B + r) * O, &ds[r * O], sizeof(T) * O);
        std::fill(dyr, dyr + O, T(0));
      } else if (t > 0 && detach) {
        std::fill(dyr, dyr + O, T(0));
      } else {
        std::memcpy(dyr, &ds[r * O], sizeof(T) * O);
      }
    }
  }
  gemm(true, false, H, O, S * B, T(1), dg, H, s, O, T(0), du.data_ptr<T>(), O);
  if (has_wy) {
    gemm(true, false, O, H, S * B, T(1), dz.data(), O, h, H, T(0), dwy.data_ptr<T>(), H);
    T* db = dby.data_ptr<T>();
    std::fill(db, db + O, T(0));
    for (int64_t k = 0; k < S * B; ++k)
      for (int64_t o = 0; o < O; ++o) db[o] += dz[k * O + o];
  }
  T* d0 = dy0.data_ptr<T>();
  for (int64_t k = 0; k < B * O; ++k) d0[k] = dy[k] + G[k];
}

// fed_backward(grad_ys (S+1,B,O), ys, hs, ss, mask, u, wy, lengths) ->
//   dgx (S,B,H), du (H,O), dwy (O,H) or empty, dby (O) or empty, dy0 (B,O), dref (S,B,O)
std::vector<Tensor> fed_backward(const Tensor& grad_ys, const Tensor& ys, const Tensor& hs,
                                 const Tensor& ss, const Tensor& mask, const Tensor& u,
                                 const Tensor& wy, const Tensor& lengths, int64_t act,
                                 int64_t oact, bool detach) {
  read_switches();
  auto gys = grad_ys.contiguous();
  auto Y = ys.contiguous();
  auto Hs = hs.contiguous();
  auto Ss = ss.contiguous();
  auto M = mask.to(at::kBool).contiguous();
  auto U = u.contiguous();
  auto W = wy.contiguous();
  const int64_t S = Ss.size(0), B = Ss.size(1), H = U.size(0), O = U.size(1);
  const bool has_wy = W.numel() > 0;
  Lengths L(lengths, B, S);
  Tensor dgx = empty_like_shape(Ss, {S, B, H});
  Tensor du = empty_like_shape(Ss, {H, O});
  Tensor dwy = has_wy ? empty_like_shape(Ss, {O, H}) : empty_like_shape(Ss, {0});
  Tensor dby = has_wy ? empty_like_shape(Ss, {O}) : empty_like_shape(Ss, {0});
  Tensor dy0 = empty_like_shape(Ss, {B, O});
  Tensor dref = empty_like_shape(Ss, {S, B, O});
  AT_DISPATCH_FLOATING_TYPES(Ss.scalar_type(), "fed_backward", [&] {
    fed_bwd_impl<scalar_t>(gys, Y, Hs, Ss, M, U, W, dgx, du, dwy, dby, dy0, dref, L, act, oact,
                           detach);
  });
  return {dgx, du, dwy, dby, dy0, dref};
}

}  // namespace rnnlab

TORCH_LIBRARY_FRAGMENT(rnnlab_engine, m) {
  m.def("fed_forward(Tensor gx, Tensor u, Tensor wy, Tensor by, Tensor y0, Tensor ref, Tensor mask, Tensor lengths, int act, int oact) -> Tensor[]");
  m.def("fed_backward(Tensor grad_ys, Tensor ys, Tensor hs, Tensor ss, Tensor mask, Tensor u, Tensor wy, Tensor lengths, int act, int oact, bool detach) -> Tensor[]");
}

TORCH_LIBRARY_IMPL(rnnlab_engine, CPU, m) {
  m.impl("fed_forward", &rnnlab::fed_forward);
  m.impl("fed_backward", &rnnlab::fed_backward);
}
