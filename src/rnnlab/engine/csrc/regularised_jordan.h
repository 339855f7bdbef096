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

// Threading: each sequence's recurrence is its own (row r of h(t) and y(t) reads only row r of
// y(t-1)), so a team of threads splits the batch rows, each thread running the whole loop on
// its block [r0, r1) with the shared packed weights: no barrier in either loop (a split of the
// hidden and output units, note 0007, would need two a step each way: h(t) needs all of y(t-1)
// and y(t) all of h(t)). The layer-norm kernels split rows the same way (layernorm.h). Used
// where partition_team says (RNNLAB_ENGINE_PARTITION, the step-size threshold), with at most B
// threads; the weight gradients stay one GEMM over all steps after the loop.
inline int jordan_reg_team(int64_t B, int64_t H, int64_t O) {
  return int(std::min<int64_t>(partition_team(B, H, H, O, B >= 2), B));
}
// run(r0, r1, team) over the team's row blocks (over_rows, common.h), or run(0, B, 1)
template <typename F> inline void jordan_reg_rows(int team, int64_t B, const F& run) {
  over_rows(team, B, [&](int64_t r0, int64_t r1, int) { run(r0, r1, std::max(team, 1)); });
}
// an activation over n values: on the calling thread in a team, else torch's threads by size
template <typename T> static inline void jordan_act(int team, int64_t a, T* v, int64_t n) {
  if (team > 1) act_inplace(a, v, n);
  else par_act_inplace(a, v, n);
}
template <typename T>
static inline void jordan_act_bwd(int team, int64_t a, T* g, const T* y, int64_t n) {
  if (team > 1) act_backward_inplace(a, g, y, n);
  else par_act_backward_inplace(a, g, y, n);
}

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
  const StepGemm<T> gu(B, H, O, u.data_ptr<T>(), O, true), gy(B, O, H, wy.data_ptr<T>(), H, true);
  jordan_reg_rows(jordan_reg_team(B, H, O), B, [&](int64_t r0, int64_t r1, int team) {
    const int64_t n = r1 - r0;
    std::vector<T> yin(m ? n * O : 0);  // the block's m ⊙ y(t-1)
    const T* mr = m ? m + r0 * O : nullptr;
    for (int64_t t = 0; t < S; ++t) {
      const T* yp = y + (t * B + r0) * O;
      T* yt = y + ((t + 1) * B + r0) * O;
      T* ht = h + (t * B + r0) * H;
      T* yct = yc + (t * B + r0) * O;
      std::memcpy(ht, g + (t * B + r0) * H, sizeof(T) * n * H);
      const T* in = yp;
      if (mr) {
        for (int64_t k = 0; k < n * O; ++k) yin[k] = mr[k] * yp[k];
        in = yin.data();
      }
      gu.run(n, in, O, T(1), ht, H);
      jordan_act(team, act, ht, n * H);
      for (int64_t r = 0; r < n; ++r)
        for (int64_t o = 0; o < O; ++o) yct[r * O + o] = b ? b[o] : T(0);
      gy.run(n, ht, H, T(1), yct, O);
      jordan_act(team, oact, yct, n * O);
      std::memcpy(yt, yct, sizeof(T) * n * O);
      const T* zt = dz_ ? dz_ + (t * B + r0) * O : nullptr;
      for (int64_t r = 0; r < n; ++r)
        tail_row(L.valid(r0 + r, t), zt ? zt + r * O : nullptr, yp + r * O, yt + r * O, O);
    }
  });
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
  std::vector<T> dy(B * O, T(0)), dz(S * B * O);
  const StepGemm<T> gy(B, H, O, wy.data_ptr<T>(), H, false), gu(B, O, H, u.data_ptr<T>(), O, false);
  jordan_reg_rows(jordan_reg_team(B, H, O), B, [&](int64_t r0, int64_t r1, int team) {
    const int64_t n = r1 - r0;
    std::vector<T> tmp(n * O);
    T* dyb = dy.data() + r0 * O;  // the block's dL/dy(t)
    for (int64_t t = S - 1; t >= 0; --t) {
      add_into(dyb, G + ((t + 1) * B + r0) * O, n * O);
      T* dzt = dz.data() + (t * B + r0) * O;
      const T* zt = dz_ ? dz_ + (t * B + r0) * O : nullptr;
      // zoneout's split, one branch a row: the select inside the loop compiles to masked loads
      // from the absent keep weights, which cost this CPU a fault assist each (2x the backward)
      for (int64_t r = 0; r < n; ++r) {
        T* dzr = dzt + r * O;
        T* dyr = dyb + r * O;
        if (!L.valid(r0 + r, t)) {
          std::fill(dzr, dzr + O, T(0));  // a frozen row passes dy on to y(t-1) unchanged
        } else if (zt) {
          const T* zr = zt + r * O;
          for (int64_t o = 0; o < O; ++o) {
            dzr[o] = (T(1) - zr[o]) * dyr[o];
            dyr[o] = zr[o] * dyr[o];
          }
        } else {
          std::memcpy(dzr, dyr, sizeof(T) * O);
          std::fill(dyr, dyr + O, T(0));
        }
      }
      jordan_act_bwd(team, oact, dzt, yc + (t * B + r0) * O, n * O);
      T* d = dg + (t * B + r0) * H;
      gy.run(n, dzt, O, T(0), d, H);  // dh = dz W_y (zero for frozen rows)
      jordan_act_bwd(team, act, d, h + (t * B + r0) * H, n * H);
      gu.run(n, d, H, T(0), tmp.data(), O);  // d yin = da U
      for (int64_t r = 0; r < n; ++r) {
        if (!L.valid(r0 + r, t)) continue;
        T* dyr = dyb + r * O;
        const T* gr = tmp.data() + r * O;
        if (m) {
          const T* mr = m + (r0 + r) * O;
          for (int64_t o = 0; o < O; ++o) dyr[o] += mr[o] * gr[o];
        } else {
          for (int64_t o = 0; o < O; ++o) dyr[o] += gr[o];
        }
      }
    }
  });
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
