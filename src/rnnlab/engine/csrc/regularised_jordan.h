// Jordan with variational recurrent dropout and zoneout inside the time loop (issue 18).
// Included by kernels.cpp after regularised.h (registration there, in TORCH_LIBRARY); the
// mask, zoneout and length-freeze pieces are regtail.h's, shared with the other cells.
//
//   yin(t-1) = m ⊙ y(t-1)                     (m: the per-sequence state mask, or 1)
//   h(t) = act(gx(t) + U yin(t-1))            (gx = W_h x + b_h, hoisted)
//   ỹ(t) = oact(W_y h(t) + b_y)
//   y(t) = d(t) ⊙ y(t-1) + (1 - d(t)) ⊙ ỹ(t)  (zoneout keep weights d (S, B, O), or 0)
//
// past a sequence's length y is frozen. Outputs: ys (S+1, B, O), hs (S, B, H), yc (S, B, O)
// the candidate ỹ (its activation's derivative reads it). The masks come in as tensors
// (rnnlab/engine/regularised_jordan.py). Shapes: S steps, B batch, H hidden, O output.
#pragma once

namespace rnnlab {

template <typename T>
static void jordan_reg_fwd_impl(const Tensor& gx, const Tensor& u, const Tensor& wy,
                                const Tensor& by, const Tensor& mask, const Tensor& zy,
                                Tensor& ys, Tensor& hs, Tensor& ycs, const Lengths& L,
                                int64_t act, int64_t oact) {
  const int64_t S = gx.size(0), B = gx.size(1), H = gx.size(2), O = u.size(1);
  const T* g = gx.data_ptr<T>();
  const T* b = reg_ptr<T>(by);
  const T* m = reg_ptr<T>(mask);
  const T* dz_ = reg_ptr<T>(zy);
  T* y = ys.data_ptr<T>();
  T* h = hs.data_ptr<T>();
  T* yc = ycs.data_ptr<T>();
  std::vector<T> yin(m ? B * O : 0);
  const StepGemm<T> gu(B, H, O, u.data_ptr<T>(), O, true), gy(B, O, H, wy.data_ptr<T>(), H, true);
  for (int64_t t = 0; t < S; ++t) {
    const T* yp = y + t * B * O;
    T* yt = y + (t + 1) * B * O;
    T* ht = h + t * B * H;
    T* yct = yc + t * B * O;
    std::memcpy(ht, g + t * B * H, sizeof(T) * B * H);
    gu.run(B, masked(m, yp, yin, B * O), O, T(1), ht, H);
    par_act_inplace(act, ht, B * H);
    for (int64_t r = 0; r < B; ++r)
      for (int64_t o = 0; o < O; ++o) yct[r * O + o] = b ? b[o] : T(0);
    gy.run(B, ht, H, T(1), yct, O);
    par_act_inplace(oact, yct, B * O);
    std::memcpy(yt, yct, sizeof(T) * B * O);
    const T* zt = step_of(dz_, t, B * O);
    for (int64_t r = 0; r < B; ++r)
      tail_row(L.valid(r, t), zt ? zt + r * O : nullptr, yp + r * O, yt + r * O, O);
  }
}

std::vector<Tensor> jordan_reg_forward(const Tensor& gx, const Tensor& u, const Tensor& wy,
                                       const Tensor& by, const Tensor& y0, const Tensor& mask_y,
                                       const Tensor& keep_y, const Tensor& lengths, int64_t act,
                                       int64_t oact) {
  read_switches();
  auto g = gx.contiguous();
  auto U = u.contiguous();
  auto Wy = wy.contiguous();
  auto b = by.contiguous();
  auto m = mask_y.contiguous();
  auto zy = keep_y.contiguous();
  const int64_t S = g.size(0), B = g.size(1), H = g.size(2), O = U.size(1);
  Lengths L(lengths, B, S);
  Tensor ys = empty_like_shape(g, {S + 1, B, O});
  Tensor hs = empty_like_shape(g, {S, B, H});
  Tensor yc = empty_like_shape(g, {S, B, O});
  ys[0].copy_(y0);
  AT_DISPATCH_FLOATING_TYPES(g.scalar_type(), "jordan_reg_forward", [&] {
    jordan_reg_fwd_impl<scalar_t>(g, U, Wy, b, m, zy, ys, hs, yc, L, act, oact);
  });
  return {ys, hs, yc};
}

// BPTT: dy accumulates dL/dy(t+1); a running row passes d ⊙ dy to y(t) directly and
// (1 - d) ⊙ dy through ỹ, h and the masked product (m ⊙ (dz_h U)); a frozen row passes dy on.
template <typename T>
static void jordan_reg_bwd_impl(const Tensor& gys, const Tensor& ys, const Tensor& hs,
                                const Tensor& ycs, const Tensor& u, const Tensor& wy,
                                const Tensor& mask, const Tensor& zy, Tensor& dgx, Tensor& du,
                                Tensor& dwy, Tensor& dby, Tensor& dy0, const Lengths& L,
                                int64_t act, int64_t oact) {
  const int64_t S = hs.size(0), B = hs.size(1), H = hs.size(2), O = u.size(1);
  const T* G = gys.data_ptr<T>();
  const T* y = ys.data_ptr<T>();
  const T* h = hs.data_ptr<T>();
  const T* yc = ycs.data_ptr<T>();
  const T* m = reg_ptr<T>(mask);
  const T* dz_ = reg_ptr<T>(zy);
  T* dg = dgx.data_ptr<T>();
  std::vector<T> dy(B * O, T(0)), dz(S * B * O), tmp(B * O);
  const StepGemm<T> gy(B, H, O, wy.data_ptr<T>(), H, false), gu(B, O, H, u.data_ptr<T>(), O, false);
  for (int64_t t = S - 1; t >= 0; --t) {
    add_into(dy.data(), G + (t + 1) * B * O, B * O);
    T* dzt = dz.data() + t * B * O;
    const T* zt = step_of(dz_, t, B * O);
    for (int64_t r = 0; r < B; ++r)
      for (int64_t o = 0; o < O; ++o) {
        const int64_t k = r * O + o;
        if (!L.valid(r, t)) {
          dzt[k] = T(0);  // a frozen row passes dy on to y(t-1) unchanged
          continue;
        }
        dzt[k] = zone_split(zt, k, dy[k], dy[k]);
      }
    par_act_backward_inplace(oact, dzt, yc + t * B * O, B * O);
    T* d = dg + t * B * H;
    gy.run(B, dzt, O, T(0), d, H);  // dh = dz W_y (zero for frozen rows)
    par_act_backward_inplace(act, d, h + t * B * H, B * H);
    gu.run(B, d, H, T(0), tmp.data(), O);  // d yin = da U
    add_masked(dy.data(), tmp.data(), m, L, t, B, O);
  }
  std::vector<T> ym;  // the products' inputs yin(t) = m ⊙ y(t), t = 0..S-1
  const T* yin = masked_steps(m, y, ym, S, B * O);
  gemm(true, false, H, O, S * B, T(1), dg, H, yin, O, T(0), du.data_ptr<T>(), O);
  gemm(true, false, O, H, S * B, T(1), dz.data(), O, h, H, T(0), dwy.data_ptr<T>(), H);
  T* db = dby.data_ptr<T>();
  std::fill(db, db + O, T(0));
  for (int64_t k = 0; k < S * B; ++k)
    for (int64_t o = 0; o < O; ++o) db[o] += dz[k * O + o];
  T* d0 = dy0.data_ptr<T>();
  for (int64_t k = 0; k < B * O; ++k) d0[k] = dy[k] + G[k];
}

std::vector<Tensor> jordan_reg_backward(const Tensor& grad_ys, const Tensor& ys, const Tensor& hs,
                                        const Tensor& yc, const Tensor& u, const Tensor& wy,
                                        const Tensor& mask_y, const Tensor& keep_y,
                                        const Tensor& lengths, int64_t act, int64_t oact) {
  read_switches();
  auto g = grad_ys.contiguous();
  auto y = ys.contiguous();
  auto h = hs.contiguous();
  auto c = yc.contiguous();
  auto U = u.contiguous();
  auto Wy = wy.contiguous();
  auto m = mask_y.contiguous();
  auto zy = keep_y.contiguous();
  const int64_t S = h.size(0), B = h.size(1), H = h.size(2), O = U.size(1);
  Lengths L(lengths, B, S);
  Tensor dgx = empty_like_shape(h, {S, B, H});
  Tensor du = empty_like_shape(h, {H, O});
  Tensor dwy = empty_like_shape(h, {O, H});
  Tensor dby = empty_like_shape(h, {O});
  Tensor dy0 = empty_like_shape(h, {B, O});
  AT_DISPATCH_FLOATING_TYPES(h.scalar_type(), "jordan_reg_backward", [&] {
    jordan_reg_bwd_impl<scalar_t>(g, y, h, c, U, Wy, m, zy, dgx, du, dwy, dby, dy0, L, act, oact);
  });
  return {dgx, du, dwy, dby, dy0};
}

}  // namespace rnnlab
