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
// rnnlab/engine/feedback.py (Elman, Jordan) and feedback_gated.py (GRU, LSTM); note
// docs/design/0003.
//
// The time loops are the plain kernels' own (kernels.cpp, lstm.h), given a Fed (kernels.cpp):
// with it a step reads s(t) from the buffer `ss` the loop fills after each step; without it
// (the plain ops) the loops are unchanged. Here are only the ops' entry points.
//
//   GRU:  h(t) = GRU(gx(t), s(t)) with s(t) in place of h(t-1) everywhere in the step
//         (both reset forms);
//   LSTM: only h is fed back: (y(t), c(t)) = LSTM(gx(t), s(t), c(t-1)), c carries on (every
//         option of the engine's LSTM: peepholes, projection, absent gates, CIFG, FGR).
#pragma once
#include <torch/library.h>

#include "common.h"

namespace rnnlab {
using at::Tensor;


template <typename T>
static Fed<T> fed_of(const Tensor& ref, const Tensor& mask, Tensor& ss) {
  Fed<T> fd;
  fd.R = ref.data_ptr<T>();
  fd.M = mask.data_ptr<bool>();
  fd.s = ss.data_ptr<T>();
  return fd;
}

template <typename T>
static Fed<T> fed_grad(const Tensor& ss, const Tensor& mask, Tensor& dref, bool detach) {
  Fed<T> fd;
  fd.M = mask.data_ptr<bool>();
  fd.s = const_cast<T*>(ss.data_ptr<T>());  // read only in a backward
  fd.dr = dref.data_ptr<T>();
  fd.detach = detach;
  dref.zero_();
  return fd;
}

// ss (S, B, n) with s(0) = the initial state
static Tensor read_states(const Tensor& like, int64_t S, int64_t B, int64_t n, const Tensor& x0) {
  Tensor ss = empty_like_shape(like, {S, B, n});
  if (S > 0) ss[0].copy_(x0);
  return ss;
}

// ---------------------------------------------------------------------- Elman, Jordan ----
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
  Tensor ss = read_states(g, S, B, O, y0);
  ys[0].copy_(y0);
  AT_DISPATCH_FLOATING_TYPES(g.scalar_type(), "fed_forward", [&] {
    const auto fd = fed_of<scalar_t>(R, M, ss);
    if (W.numel())
      jordan_fwd_impl<scalar_t, true>(g, U, W, b, ys, hs, L, act, oact, fd);
    else
      elman_fwd_impl<scalar_t, true>(g, U, empty_like_shape(g, {0}), ys, L, act, fd);
  });
  return {ys, hs, ss};
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
    const auto fd = fed_grad<scalar_t>(Ss, M, dref, detach);
    if (has_wy)
      jordan_bwd_impl<scalar_t, true>(gys, Y, Hs, U, W, dgx, du, dwy, dby, dy0, L, act, oact, fd);
    else
      elman_bwd_impl<scalar_t, true>(gys, Y, U, dgx, du, dy0, L, act, fd);
  });
  return {dgx, du, dwy, dby, dy0, dref};
}

// ---------------------------------------------------------------------------------- GRU ----
// gru_fed_forward(gx, w_hh, b_hh, h0, ref (S,B,H), mask (S,B), lengths, before, act, store)
//   -> hs, gates, aux (as gru_forward), ss (S,B,H)
std::vector<Tensor> gru_fed_forward(const Tensor& gx, const Tensor& w_hh, const Tensor& b_hh,
                                    const Tensor& h0, const Tensor& ref, const Tensor& mask,
                                    const Tensor& lengths, bool before, int64_t act,
                                    bool store) {
  read_switches();
  auto g = gx.contiguous();
  auto w = w_hh.contiguous();
  auto b = b_hh.contiguous();
  auto R = ref.contiguous();
  auto M = mask.to(at::kBool).contiguous();
  const int64_t S = g.size(0), B = g.size(1), H = g.size(2) / 3;
  Lengths L(lengths, B, S);
  Tensor hs = empty_like_shape(g, {S + 1, B, H});
  Tensor gates = empty_like_shape(g, {store ? S : 1, B, 3 * H});
  Tensor aux = empty_like_shape(g, {store ? S : 1, B, H});
  Tensor ss = read_states(g, S, B, H, h0);
  hs[0].copy_(h0);
  AT_DISPATCH_FLOATING_TYPES(g.scalar_type(), "gru_fed_forward", [&] {
    gru_fwd_impl<scalar_t, true>(g, w, b, hs, gates, aux, L, before, act, store,
                           fed_of<scalar_t>(R, M, ss));
  });
  return {hs, gates, aux, ss};
}

// gru_fed_backward(grad_hs, hs, gates, aux, ss, mask, w_hh, lengths, before, act, detach)
//   -> dgx, dw, dbh, dh0 (as gru_backward), dref (S,B,H)
std::vector<Tensor> gru_fed_backward(const Tensor& grad_hs, const Tensor& hs,
                                     const Tensor& gates, const Tensor& aux, const Tensor& ss,
                                     const Tensor& mask, const Tensor& w_hh,
                                     const Tensor& lengths, bool before, int64_t act,
                                     bool detach) {
  read_switches();
  auto ghs = grad_hs.contiguous();
  auto w = w_hh.contiguous();
  auto Ss = ss.contiguous();
  auto M = mask.to(at::kBool).contiguous();
  const int64_t S = gates.size(0), B = gates.size(1), H = gates.size(2) / 3;
  Lengths L(lengths, B, S);
  Tensor dgx = empty_like_shape(hs, {S, B, 3 * H});
  Tensor dw = empty_like_shape(hs, {3 * H, H});
  Tensor dbh = empty_like_shape(hs, {3 * H});
  Tensor dh0 = empty_like_shape(hs, {B, H});
  Tensor dref = empty_like_shape(hs, {S, B, H});
  AT_DISPATCH_FLOATING_TYPES(hs.scalar_type(), "gru_fed_backward", [&] {
    gru_bwd_impl<scalar_t, true>(ghs, hs, gates, aux, w, dgx, dw, dbh, dh0, L, before, act,
                           fed_grad<scalar_t>(Ss, M, dref, detach));
  });
  return {dgx, dw, dbh, dh0, dref};
}

// --------------------------------------------------------------------------------- LSTM ----
// lstm_fed_forward(as lstm_forward, with ref (S,B,P) and mask (S,B) before lengths)
//   -> ys, cs, gs, acts, ms (as lstm_forward), ss (S,B,P)
std::vector<Tensor> lstm_fed_forward(const Tensor& gx, const Tensor& w_hh, const Tensor& w_ci,
                                     const Tensor& w_cf, const Tensor& w_co, const Tensor& w_hr,
                                     const Tensor& w_gg, const Tensor& h0, const Tensor& c0,
                                     const Tensor& g0, const Tensor& ref, const Tensor& mask,
                                     const Tensor& lengths, at::IntArrayRef blocks, bool coupled,
                                     int64_t act, int64_t cact, bool store) {
  read_switches();
  LstmCfg k(blocks, coupled, act, cact);
  auto g = gx.contiguous();
  auto W = w_hh.contiguous();
  auto ci = w_ci.contiguous(), cf = w_cf.contiguous(), co = w_co.contiguous();
  auto hr = w_hr.contiguous(), gg = w_gg.contiguous();
  auto R = ref.contiguous();
  auto M = mask.to(at::kBool).contiguous();
  const int64_t S = g.size(0), B = g.size(1), H = g.size(2) / k.G, P = W.size(1);
  Lengths L(lengths, B, S);
  Tensor ys = empty_like_shape(g, {S + 1, B, P});
  Tensor cs = empty_like_shape(g, {S + 1, B, H});
  const int64_t SB = store ? S : 1;
  Tensor acts = empty_like_shape(g, {SB, B, k.G * H});
  Tensor ms = hr.numel() ? empty_like_shape(g, {SB, B, H}) : empty_like_shape(g, {0});
  Tensor gs = gg.numel() ? empty_like_shape(g, {S + 1, B, k.NS * H}) : empty_like_shape(g, {0});
  Tensor ss = read_states(g, S, B, P, h0);
  ys[0].copy_(h0);
  cs[0].copy_(c0);
  if (gg.numel()) gs[0].copy_(g0);
  AT_DISPATCH_FLOATING_TYPES(g.scalar_type(), "lstm_fed_forward", [&] {
    lstm_fwd_impl<scalar_t, true>(g, W, ci, cf, co, hr, gg, ys, cs, gs, acts, ms, L, k, store,
                            fed_of<scalar_t>(R, M, ss));
  });
  return {ys, cs, gs, acts, ms, ss};
}

// lstm_fed_backward(as lstm_backward, with ss and mask after ms, detach last)
//   -> the ten gradients of lstm_backward, dref (S,B,P)
std::vector<Tensor> lstm_fed_backward(
    const Tensor& grad_ys, const Tensor& grad_cs, const Tensor& grad_gs, const Tensor& ys,
    const Tensor& cs, const Tensor& gs, const Tensor& acts, const Tensor& ms, const Tensor& ss,
    const Tensor& mask, const Tensor& w_hh, const Tensor& w_ci, const Tensor& w_cf,
    const Tensor& w_co, const Tensor& w_hr, const Tensor& w_gg, const Tensor& lengths,
    at::IntArrayRef blocks, bool coupled, int64_t act, int64_t cact, bool detach) {
  read_switches();
  LstmCfg k(blocks, coupled, act, cact);
  auto gys = grad_ys.contiguous(), gcs = grad_cs.contiguous(), ggs = grad_gs.contiguous();
  auto W = w_hh.contiguous();
  auto ci = w_ci.contiguous(), cf = w_cf.contiguous(), co = w_co.contiguous();
  auto hr = w_hr.contiguous(), gg = w_gg.contiguous();
  auto Ss = ss.contiguous();
  auto M = mask.to(at::kBool).contiguous();
  const int64_t S = acts.size(0), B = acts.size(1), GH = acts.size(2), H = GH / k.G;
  const int64_t P = W.size(1);
  Lengths L(lengths, B, S);
  Tensor dgx = empty_like_shape(acts, {S, B, GH});
  Tensor dwhh = empty_like_shape(acts, {GH, P});
  Tensor dci = empty_like_shape(acts, {ci.numel()});
  Tensor dcf = empty_like_shape(acts, {cf.numel()});
  Tensor dco = empty_like_shape(acts, {co.numel()});
  Tensor dwhr = hr.numel() ? empty_like_shape(acts, {P, H}) : empty_like_shape(acts, {0});
  Tensor dwgg = gg.numel() ? empty_like_shape(acts, {gg.size(0), gg.size(1)})
                           : empty_like_shape(acts, {0});
  Tensor dh0 = empty_like_shape(acts, {B, P});
  Tensor dc0 = empty_like_shape(acts, {B, H});
  Tensor dg0 = gg.numel() ? empty_like_shape(acts, {B, k.NS * H}) : empty_like_shape(acts, {0});
  Tensor dref = empty_like_shape(acts, {S, B, P});
  AT_DISPATCH_FLOATING_TYPES(acts.scalar_type(), "lstm_fed_backward", [&] {
    lstm_bwd_impl<scalar_t, true>(gys, gcs, ggs, ys, cs, gs, acts, ms, W, ci, cf, co, hr, gg, dgx,
                            dwhh, dci, dcf, dco, dwhr, dwgg, dh0, dc0, dg0, L, k,
                            fed_grad<scalar_t>(Ss, M, dref, detach));
  });
  return {dgx, dwhh, dci, dcf, dco, dwhr, dwgg, dh0, dc0, dg0, dref};
}

}  // namespace rnnlab

TORCH_LIBRARY_FRAGMENT(rnnlab_engine, m) {
  m.def("fed_forward(Tensor gx, Tensor u, Tensor wy, Tensor by, Tensor y0, Tensor ref, Tensor mask, Tensor lengths, int act, int oact) -> Tensor[]");
  m.def("fed_backward(Tensor grad_ys, Tensor ys, Tensor hs, Tensor ss, Tensor mask, Tensor u, Tensor wy, Tensor lengths, int act, int oact, bool detach) -> Tensor[]");
  m.def("gru_fed_forward(Tensor gx, Tensor w_hh, Tensor b_hh, Tensor h0, Tensor ref, Tensor mask, Tensor lengths, bool before, int act, bool store) -> Tensor[]");
  m.def("gru_fed_backward(Tensor grad_hs, Tensor hs, Tensor gates, Tensor aux, Tensor ss, Tensor mask, Tensor w_hh, Tensor lengths, bool before, int act, bool detach) -> Tensor[]");
  m.def("lstm_fed_forward(Tensor gx, Tensor w_hh, Tensor w_ci, Tensor w_cf, Tensor w_co, Tensor w_hr, Tensor w_gg, Tensor h0, Tensor c0, Tensor g0, Tensor ref, Tensor mask, Tensor lengths, int[] blocks, bool coupled, int act, int cact, bool store) -> Tensor[]");
  m.def("lstm_fed_backward(Tensor grad_ys, Tensor grad_cs, Tensor grad_gs, Tensor ys, Tensor cs, Tensor gs, Tensor acts, Tensor ms, Tensor ss, Tensor mask, Tensor w_hh, Tensor w_ci, Tensor w_cf, Tensor w_co, Tensor w_hr, Tensor w_gg, Tensor lengths, int[] blocks, bool coupled, int act, int cact, bool detach) -> Tensor[]");
}

TORCH_LIBRARY_IMPL(rnnlab_engine, CPU, m) {
  m.impl("fed_forward", &rnnlab::fed_forward);
  m.impl("fed_backward", &rnnlab::fed_backward);
  m.impl("gru_fed_forward", &rnnlab::gru_fed_forward);
  m.impl("gru_fed_backward", &rnnlab::gru_fed_backward);
  m.impl("lstm_fed_forward", &rnnlab::lstm_fed_forward);
  m.impl("lstm_fed_backward", &rnnlab::lstm_fed_backward);
}
