// Regularised recurrences of issue 18: the LSTM (torch's maths: gates i, f, g, o, no options)
// and the GRU (reset after or before) with variational recurrent dropout and zoneout inside
// the time loop. Included by kernels.cpp (registration there, in TORCH_LIBRARY).
//
//   hin(t-1) = m ⊙ h(t-1)                      (m: the per-sequence state mask, or 1)
//   s̃(t) = the cell's step with hin(t-1) in every product U h(t-1), the true h(t-1)/c(t-1)
//          everywhere else (the GRU's interpolation, the LSTM's c)
//   s(t) = d(t) ⊙ s(t-1) + (1 - d(t)) ⊙ s̃(t)  (zoneout: d(t) (T, B, n) the keep weights,
//          0/1 in training, the rate p in eval; absent = 0)
//
// The masks come in as tensors, drawn in Python (rnnlab/engine/regularised.py) from the same
// RNG draws as the reference loop. Shapes: S steps, B batch, H hidden.
#pragma once

#include "regtail.h"

namespace rnnlab {


// ---------------------------------------------------------------------------- LSTM ----
// outputs: hs, cs (S+1, B, H); gates (S, B, 4H) after their activations; tc (S, B, H) the
// cell activation of the candidate c̃(t)
//
// Unit-partitioned (note 0007, partition_team in common.h): each of the team's threads owns
// the hidden units [u, u + w) for the whole sequence. Forward, per step: its rows of W_hh (the
// four gate blocks, copied contiguous once per call) times hin(t-1), one single-threaded
// product; its units' gate maths and zoneout; its columns of hin(t) = m ⊙ h(t) into the other
// half of a double buffer; one barrier (the next product needs every unit of hin(t); the
// double buffer lets a thread write hin(t) while another still reads hin(t-1)). Backward, per
// step: its units' gate gradients; one barrier; its columns of dhin(t-1) = d(t) W_hh, which
// are its own units of dh(t-1). Both paths run the same row functions below.
template <typename T>
static void lstm_reg_fwd_impl(const Tensor& gx, const Tensor& whh, const Tensor& mask,
                              const Tensor& zh, const Tensor& zc, Tensor& hs, Tensor& cs,
                              Tensor& gates, Tensor& tcs, const Lengths& L, int64_t act,
                              int64_t cact) {
  const int64_t S = gx.size(0), B = gx.size(1), H = gx.size(2) / 4, BH = B * H;
  const T* g = gx.data_ptr<T>();
  const T* W = whh.data_ptr<T>();
  const T* m = reg_ptr<T>(mask);
  const T* dh_ = reg_ptr<T>(zh);
  const T* dc_ = reg_ptr<T>(zc);
  T* h = hs.data_ptr<T>();
  T* c = cs.data_ptr<T>();
  T* a = gates.data_ptr<T>();
  T* tc = tcs.data_ptr<T>();
  // the gate maths of row r at step t for the units [u, u + w): the pre-activations are in
  // the step's gates (activated in place); writes c(t), tc(t), h(t) after zoneout and the
  // length freeze
  auto row = [&](int64_t t, int64_t r, int64_t u, int64_t w) {
    T* ar = a + (t * B + r) * 4 * H;
    T *I = ar + u, *F = ar + H + u, *G = ar + 2 * H + u, *O = ar + 3 * H + u;
    act_inplace(SIGMOID, I, w);
    act_inplace(SIGMOID, F, w);
    act_inplace(act, G, w);
    act_inplace(SIGMOID, O, w);
    const int64_t o = t * BH + r * H + u;  // row r, unit u of step t's (B, H) slices
    const T* cpr = c + o;
    const T* hpr = h + o;
    T* ctr = c + o + BH;
    T* htr = h + o + BH;
    T* tcr = tc + o;
    for (int64_t j = 0; j < w; ++j) ctr[j] = F[j] * cpr[j] + I[j] * G[j];  // c̃
    std::memcpy(tcr, ctr, sizeof(T) * w);
    act_inplace(cact, tcr, w);
    for (int64_t j = 0; j < w; ++j) htr[j] = O[j] * tcr[j];  // h̃
    const bool v = L.valid(r, t);
    tail_row(v, step_of(dc_, o, 1), cpr, ctr, w);
    tail_row(v, step_of(dh_, o, 1), hpr, htr, w);
  };
  const int team = partition_team(B, H, 4 * H, H, true);
  if (team > 1) {
    std::vector<T> hb(m ? 2 * BH : 0);  // hin(t-1) of the step, double-buffered
    parallel_team(team, [&](int tid, int nth) {
      const Span sp = unit_span(tid, nth, H);
      const int64_t u = sp.u, w = sp.w;
      std::vector<T> Wk(4 * w * H), sc(B * 4 * w);
      for (int64_t blk = 0; blk < 4; ++blk)
        std::memcpy(Wk.data() + blk * w * H, W + (blk * H + u) * H, sizeof(T) * w * H);
      const StepGemm<T> gk(B, 4 * w, H, Wk.data(), H, true);
      if (m) mask_cols(m, h, hb.data(), B, H, u, w);  // hin(-1) = m ⊙ h(0)
      team_barrier();
      for (int64_t t = 0; t < S; ++t) {
        if (w > 0) {
          const T* src = m ? hb.data() + (t % 2) * BH : h + t * BH;
          gk.run(B, src, H, T(0), sc.data(), 4 * w);
          T* at = a + t * B * 4 * H;
          const T* gt = g + t * B * 4 * H;
          for (int64_t r = 0; r < B; ++r) {
            for (int64_t blk = 0; blk < 4; ++blk) {
              T* dst = at + r * 4 * H + blk * H + u;
              const T* x = gt + r * 4 * H + blk * H + u;
              const T* add = sc.data() + (r * 4 + blk) * w;
              for (int64_t j = 0; j < w; ++j) dst[j] = x[j] + add[j];
            }
            row(t, r, u, w);
          }
          if (m) mask_cols(m, h + (t + 1) * BH, hb.data() + ((t + 1) % 2) * BH, B, H, u, w);
        }
        team_barrier();
      }
    });
    return;
  }
  std::vector<T> hin(m ? BH : 0);
  const StepGemm<T> gw(B, 4 * H, H, W, H, true);
  for (int64_t t = 0; t < S; ++t) {
    T* at = a + t * B * 4 * H;
    std::memcpy(at, g + t * B * 4 * H, sizeof(T) * B * 4 * H);
    const T* src = masked(m, h + t * BH, hin, BH);
    gw.run(B, src, H, T(1), at, 4 * H);
    for_rows(B, 4 * H, [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) row(t, r, 0, H);
    });
  }
}

std::vector<Tensor> lstm_reg_forward(const Tensor& gx, const Tensor& w_hh, const Tensor& h0,
                                     const Tensor& c0, const Tensor& mask_h, const Tensor& keep_h,
                                     const Tensor& keep_c, const Tensor& lengths, int64_t act,
                                     int64_t cact) {
  read_switches();
  auto g = gx.contiguous();
  auto w = w_hh.contiguous();
  auto m = mask_h.contiguous();
  auto zh = keep_h.contiguous();
  auto zc = keep_c.contiguous();
  const int64_t S = g.size(0), B = g.size(1), H = g.size(2) / 4;
  Lengths L(lengths, B, S);
  Tensor hs = empty_like_shape(g, {S + 1, B, H});
  Tensor cs = empty_like_shape(g, {S + 1, B, H});
  Tensor gates = empty_like_shape(g, {S, B, 4 * H});
  Tensor tc = empty_like_shape(g, {S, B, H});
  hs[0].copy_(h0);
  cs[0].copy_(c0);
  AT_DISPATCH_FLOATING_TYPES(g.scalar_type(), "lstm_reg_forward", [&] {
    lstm_reg_fwd_impl<scalar_t>(g, w, m, zh, zc, hs, cs, gates, tc, L, act, cact);
  });
  return {hs, cs, gates, tc};
}

template <typename T>
static void lstm_reg_bwd_impl(const Tensor& ghs, const Tensor& gcs, const Tensor& hs,
                              const Tensor& cs, const Tensor& gates, const Tensor& tcs,
                              const Tensor& whh, const Tensor& mask, const Tensor& zh,
                              const Tensor& zc, Tensor& dgx, Tensor& dw, Tensor& dh0,
                              Tensor& dc0, const Lengths& L, int64_t act, int64_t cact) {
  const int64_t S = gates.size(0), B = gates.size(1), H = gates.size(2) / 4, BH = B * H;
  const T* Gh = ghs.data_ptr<T>();
  const T* Gc = gcs.data_ptr<T>();
  const T* h = hs.data_ptr<T>();
  const T* c = cs.data_ptr<T>();
  const T* a = gates.data_ptr<T>();
  const T* tc = tcs.data_ptr<T>();
  const T* W = whh.data_ptr<T>();
  const T* m = reg_ptr<T>(mask);
  const T* dh_ = reg_ptr<T>(zh);
  const T* dc_ = reg_ptr<T>(zc);
  T* dg = dgx.data_ptr<T>();
  std::vector<T> dh(BH, T(0)), dc(BH, T(0));
  // row r at step t, units [u, u + w): adds the outputs' gradients of s(t) to the carried dh,
  // dc, writes the gate gradients d(t) and leaves in dh, dc the direct parts of dh(t-1),
  // dc(t-1) (the product's part is added after the step's product)
  auto row = [&](int64_t t, int64_t r, int64_t u, int64_t w) {
    const int64_t o = t * BH + r * H + u;  // row r, unit u of step t's (B, H) slices
    T* dhr = &dh[r * H + u];
    T* dcr = &dc[r * H + u];
    add_into(dhr, Gh + o + BH, w);
    add_into(dcr, Gc + o + BH, w);
    T* dr = dg + (t * B + r) * 4 * H;
    T *dI = dr + u, *dF = dr + H + u, *dG = dr + 2 * H + u, *dO = dr + 3 * H + u;
    if (!L.valid(r, t)) {  // frozen: the gradient passes to s(t-1) unchanged
      for (T* p : {dI, dF, dG, dO}) std::fill(p, p + w, T(0));
      return;
    }
    const T* ar = a + (t * B + r) * 4 * H;
    const T *I = ar + u, *F = ar + H + u, *G = ar + 2 * H + u, *O = ar + 3 * H + u;
    const T* cpr = c + o;
    const T* tcr = tc + o;
    const T* zhr = step_of(dh_, o, 1);
    const T* zcr = step_of(dc_, o, 1);
    for (int64_t j = 0; j < w; ++j) {
      T hdir, cdir;
      const T dht = zone_split(zhr, j, dhr[j], hdir);
      T dct = zone_split(zcr, j, dcr[j], cdir);
      dO[j] = dht * tcr[j];
      dct += dht * O[j] * act_grad(cact, tcr[j]);  // into c̃
      dI[j] = dct * G[j];
      dF[j] = dct * cpr[j];
      dG[j] = dct * I[j];
      dcr[j] = cdir + dct * F[j];
      dhr[j] = hdir;
    }
    act_backward_inplace(SIGMOID, dI, I, w);
    act_backward_inplace(SIGMOID, dF, F, w);
    act_backward_inplace(act, dG, G, w);
    act_backward_inplace(SIGMOID, dO, O, w);
  };
  const int team = partition_team(B, H, 4 * H, H, true);
  if (team > 1) {
    parallel_team(team, [&](int tid, int nth) {
      const Span sp = unit_span(tid, nth, H);
      const int64_t u = sp.u, w = sp.w;
      std::vector<T> tk(B * w);
      const StepGemm<T> gk(B, w, 4 * H, W + u, H, false);  // W_hh's columns of its units
      for (int64_t t = S - 1; t >= 0; --t) {
        if (w > 0)
          for (int64_t r = 0; r < B; ++r) row(t, r, u, w);
        team_barrier();  // every unit's gate gradients of step t are in d(t)
        if (w > 0) {
          gk.run(B, dg + t * B * 4 * H, 4 * H, T(0), tk.data(), w);  // d hin, its units
          add_masked_cols(dh.data(), tk.data(), w, m, L, t, B, H, u, w);
        }
      }
    });
  } else {
    std::vector<T> tmp(BH);
    const StepGemm<T> gw(B, H, 4 * H, W, H, false);
    for (int64_t t = S - 1; t >= 0; --t) {
      for_rows(B, 4 * H, [&](int64_t r0, int64_t r1) {
        for (int64_t r = r0; r < r1; ++r) row(t, r, 0, H);
      });
      gw.run(B, dg + t * B * 4 * H, 4 * H, T(0), tmp.data(), H);  // d hin
      add_masked(dh.data(), tmp.data(), m, L, t, B, H);
    }
  }
  // dW = sum_t d(t)ᵀ hin(t-1): one GEMM over all steps
  std::vector<T> hm;
  const T* hin = masked_steps(m, h, hm, S, BH);
  gemm(true, false, 4 * H, H, S * B, T(1), dg, 4 * H, hin, H, T(0), dw.data_ptr<T>(), H);
  T* d0 = dh0.data_ptr<T>();
  T* e0 = dc0.data_ptr<T>();
  for (int64_t k = 0; k < BH; ++k) {
    d0[k] = dh[k] + Gh[k];
    e0[k] = dc[k] + Gc[k];
  }
}

std::vector<Tensor> lstm_reg_backward(const Tensor& grad_hs, const Tensor& grad_cs,
                                      const Tensor& hs, const Tensor& cs, const Tensor& gates,
                                      const Tensor& tc, const Tensor& w_hh, const Tensor& mask_h,
                                      const Tensor& keep_h, const Tensor& keep_c,
                                      const Tensor& lengths, int64_t act, int64_t cact) {
  read_switches();
  auto gh = grad_hs.contiguous();
  auto gc = grad_cs.contiguous();
  auto w = w_hh.contiguous();
  auto m = mask_h.contiguous();
  auto zh = keep_h.contiguous();
  auto zc = keep_c.contiguous();
  auto h = hs.contiguous();
  auto c = cs.contiguous();
  auto a = gates.contiguous();
  auto t_ = tc.contiguous();
  const int64_t S = a.size(0), B = a.size(1), H = a.size(2) / 4;
  Lengths L(lengths, B, S);
  Tensor dgx = empty_like_shape(h, {S, B, 4 * H});
  Tensor dw = empty_like_shape(h, {4 * H, H});
  Tensor dh0 = empty_like_shape(h, {B, H});
  Tensor dc0 = empty_like_shape(h, {B, H});
  AT_DISPATCH_FLOATING_TYPES(h.scalar_type(), "lstm_reg_backward", [&] {
    lstm_reg_bwd_impl<scalar_t>(gh, gc, h, c, a, t_, w, m, zh, zc, dgx, dw, dh0, dc0, L, act,
                                cact);
  });
  return {dgx, dw, dh0, dc0};
}

// ----------------------------------------------------------------------------- GRU ----
// after:  [hr, hz, hn] = U hin + b_hh;  n = act(x_n + r ⊙ hn)        aux = hn
// before: [hr, hz] = U_rz hin;  n = act(x_n + U_n (r ⊙ hin))         aux = r ⊙ hin
// h̃ = z ⊙ h(t-1) + (1 - z) ⊙ n; gates (S, B, 3H) = r, z, n
//
// Both loops (classic: whole rows, products over all units; unit-partitioned, note 0007: each
// thread of the team owns units [u, u + w) for the whole sequence, its rows of W_hh copied
// contiguous once per call) run the same row functions below with a unit range. Every thread's
// product needs all of hin(t-1) = m ⊙ h(t-1): each thread writes its units of hin(t) after its
// update, into a buffer of two steps (step t reads half t & 1, writes the other), so one barrier
// per step (reset after) suffices; reset before needs r ⊙ hin of every unit before U_n, a
// second barrier. Zoneout's mix and the mask are per unit.
template <typename T>
static void gru_reg_fwd_impl(const Tensor& gx, const Tensor& whh, const Tensor& bhh,
                             const Tensor& mask, const Tensor& zh, Tensor& hs, Tensor& gates,
                             Tensor& aux, const Lengths& L, bool before, int64_t act) {
  const int64_t S = gx.size(0), B = gx.size(1), H = gx.size(2) / 3;
  const int64_t NG = before ? 2 : 3;  // gate blocks multiplied by hin
  const T* g = gx.data_ptr<T>();
  const T* W = whh.data_ptr<T>();
  const T* bh = reg_ptr<T>(bhh);
  const T* m = reg_ptr<T>(mask);
  const T* dz_ = reg_ptr<T>(zh);
  T* h = hs.data_ptr<T>();
  T* ga = gates.data_ptr<T>();
  T* ax = aux.data_ptr<T>();
  std::vector<T> hb(m ? 2 * B * H : 0);  // hin(t) = m ⊙ h(t), two steps
  if (m)
    for (int64_t k = 0; k < B * H; ++k) hb[k] = m[k] * h[k];
  auto hin_of = [&](int64_t t) -> const T* {
    return m ? hb.data() + (t & 1) * B * H : h + t * B * H;
  };
  // row r at step t, units [u, u + w); hr: the row's products (+ b_hh) at unit u, gate blocks
  // bs apart. r, z and the candidate's pre-activation (complete for reset after)
  auto gates_row = [&](int64_t t, int64_t r, int64_t u, int64_t w, const T* hr, int64_t bs) {
    const T* xr = g + (t * B + r) * 3 * H + u;
    T* o = ga + (t * B + r) * 3 * H + u;
    T* a = ax + (t * B + r) * H + u;
    for (int64_t j = 0; j < w; ++j) o[j] = sigmoid(xr[j] + hr[j]);
    for (int64_t j = 0; j < w; ++j) o[H + j] = sigmoid(xr[H + j] + hr[bs + j]);
    if (!before) {
      for (int64_t j = 0; j < w; ++j) {
        a[j] = hr[2 * bs + j];
        o[2 * H + j] = xr[2 * H + j] + o[j] * a[j];
      }
    } else {
      const T* src = hin_of(t) + r * H + u;
      for (int64_t j = 0; j < w; ++j) {
        a[j] = o[j] * src[j];
        o[2 * H + j] = xr[2 * H + j];
      }
    }
  };
  // n = act(pre), the interpolation, zoneout and the freeze (regtail.h), then hin(t)'s units
  auto update_row = [&](int64_t t, int64_t r, int64_t u, int64_t w) {
    T* o = ga + (t * B + r) * 3 * H + u;
    T* hc = h + ((t + 1) * B + r) * H + u;
    act_inplace(act, o + 2 * H, w);
    const T* zr = dz_ ? dz_ + (t * B + r) * H + u : nullptr;
    gru_tail_row(L.valid(r, t), o + H, o + 2 * H, zr, hc - B * H, hc, w);
    if (m) {
      T* hn = hb.data() + ((t + 1) & 1) * B * H + r * H + u;
      const T* mr = m + r * H + u;
      for (int64_t j = 0; j < w; ++j) hn[j] = mr[j] * hc[j];
    }
  };
  const int team = partition_team(B, H, 3 * H, H, true);
  if (team > 1) {
    parallel_team(team, [&](int tid, int nth) {
      const Span sp = unit_span(tid, nth, H);
      const int64_t u = sp.u, w = sp.w;
      std::vector<T> Wk(NG * w * H), Wn(before ? w * H : 0), sc(B * NG * w);
      for (int64_t blk = 0; blk < NG; ++blk)
        std::memcpy(Wk.data() + blk * w * H, W + (blk * H + u) * H, sizeof(T) * w * H);
      if (before) std::memcpy(Wn.data(), W + (2 * H + u) * H, sizeof(T) * w * H);
      const StepGemm<T> gk(B, NG * w, H, Wk.data(), H, true);
      const StepGemm<T> gn(B, before ? w : 0, H, Wn.data(), H, true);
      for (int64_t t = 0; t < S; ++t) {
        if (w > 0) {
          for (int64_t r = 0; r < B; ++r)
            for (int64_t blk = 0; blk < NG; ++blk)
              for (int64_t j = 0; j < w; ++j)
                sc[(r * NG + blk) * w + j] = bh ? bh[blk * H + u + j] : T(0);
          gk.run(B, hin_of(t), H, T(1), sc.data(), NG * w);
          for (int64_t r = 0; r < B; ++r) gates_row(t, r, u, w, sc.data() + r * NG * w, w);
        }
        if (before) {
          team_barrier();  // U_n (r ⊙ hin) needs r ⊙ hin of every unit
          if (w > 0) gn.run(B, ax + t * B * H, H, T(1), ga + t * B * 3 * H + 2 * H + u, 3 * H);
        }
        if (w > 0)
          for (int64_t r = 0; r < B; ++r) update_row(t, r, u, w);
        team_barrier();  // the next step's products need hin(t) of every unit
      }
    });
    return;
  }
  std::vector<T> gh(B * 3 * H);
  const StepGemm<T> g3(B, NG * H, H, W, H, true);
  const StepGemm<T> gn(B, before ? H : 0, H, W + 2 * H * H, H, true);
  for (int64_t t = 0; t < S; ++t) {
    for (int64_t r = 0; r < B; ++r)
      for (int64_t j = 0; j < NG * H; ++j) gh[r * 3 * H + j] = bh ? bh[j] : T(0);
    g3.run(B, hin_of(t), H, T(1), gh.data(), 3 * H);
    for_rows(B, 3 * H, [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) {
        gates_row(t, r, 0, H, gh.data() + r * 3 * H, H);
        if (!before) update_row(t, r, 0, H);
      }
    });
    if (!before) continue;
    gn.run(B, ax + t * B * H, H, T(1), ga + t * B * 3 * H + 2 * H, 3 * H);
    for_rows(B, 3 * H, [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) update_row(t, r, 0, H);
    });
  }
}

std::vector<Tensor> gru_reg_forward(const Tensor& gx, const Tensor& w_hh, const Tensor& b_hh,
                                    const Tensor& h0, const Tensor& mask_h, const Tensor& keep_h,
                                    const Tensor& lengths, bool before, int64_t act) {
  read_switches();
  auto g = gx.contiguous();
  auto w = w_hh.contiguous();
  auto b = b_hh.contiguous();
  auto m = mask_h.contiguous();
  auto zh = keep_h.contiguous();
  const int64_t S = g.size(0), B = g.size(1), H = g.size(2) / 3;
  Lengths L(lengths, B, S);
  Tensor hs = empty_like_shape(g, {S + 1, B, H});
  Tensor gates = empty_like_shape(g, {S, B, 3 * H});
  Tensor aux = empty_like_shape(g, {S, B, H});
  hs[0].copy_(h0);
  AT_DISPATCH_FLOATING_TYPES(g.scalar_type(), "gru_reg_forward", [&] {
    gru_reg_fwd_impl<scalar_t>(g, w, b, m, zh, hs, gates, aux, L, before, act);
  });
  return {hs, gates, aux};
}

// Backward, the forward's two loops: per step each thread's units' gate gradients, one barrier,
// its columns of the products' gradient d hin(t-1) = dgh(t) U (the units it owns at t-1, so no
// second barrier); reset before: dq = dn U_n for its units, a barrier (dr of every unit), then
// [dr, dz] U_rz for its units.
template <typename T>
static void gru_reg_bwd_impl(const Tensor& ghs, const Tensor& hs, const Tensor& gates,
                             const Tensor& aux, const Tensor& whh, const Tensor& mask,
                             const Tensor& zh, Tensor& dgx, Tensor& dw, Tensor& dbh, Tensor& dh0,
                             const Lengths& L, bool before, int64_t act) {
  const int64_t S = gates.size(0), B = gates.size(1), H = gates.size(2) / 3;
  const T* G = ghs.data_ptr<T>();
  const T* h = hs.data_ptr<T>();
  const T* ga = gates.data_ptr<T>();
  const T* ax = aux.data_ptr<T>();
  const T* W = whh.data_ptr<T>();
  const T* m = reg_ptr<T>(mask);
  const T* dz_ = reg_ptr<T>(zh);
  T* dg = dgx.data_ptr<T>();
  // dgh: the gradient of the products' pre-activations [hr, hz, hn] (after) / [hr, hz] (before)
  std::vector<T> dh(B * H, T(0)), dgh(before ? 0 : S * B * 3 * H);
  std::vector<T> hm;
  const T* hin_all = masked_steps(m, h, hm, S, B * H);
  // dh(t) += the output's gradient, units [u, u + w)
  auto add_grad = [&](int64_t t, int64_t u, int64_t w) {
    for (int64_t r = 0; r < B; ++r)
      add_into(dh.data() + r * H + u, G + ((t + 1) * B + r) * H + u, w);
  };
  // row r at step t, units [u, u + w): dh(t) -> the gate gradients in dgx (and dgh); dh becomes
  // the direct part of dh(t-1) (zoneout's d ⊙ dh and the interpolation's z ⊙ dh̃)
  auto grad_row = [&](int64_t t, int64_t r, int64_t u, int64_t w) {
    T* dr = dg + (t * B + r) * 3 * H + u;
    T* dgr = before ? nullptr : dgh.data() + (t * B + r) * 3 * H + u;
    if (!L.valid(r, t)) {  // frozen: the gradient passes to h(t-1) unchanged
      for (int64_t blk = 0; blk < 3; ++blk) {
        std::fill(dr + blk * H, dr + blk * H + w, T(0));
        if (dgr) std::fill(dgr + blk * H, dgr + blk * H + w, T(0));
      }
      return;
    }
    T* dhr = dh.data() + r * H + u;
    const T *R = ga + (t * B + r) * 3 * H + u, *Z = R + H, *N = R + 2 * H;
    const T* hpr = h + (t * B + r) * H + u;
    const T* zr = dz_ ? dz_ + (t * B + r) * H + u : nullptr;
    for (int64_t j = 0; j < w; ++j) {
      T dir;
      const T dht = zone_split(zr, j, dhr[j], dir);
      dr[H + j] = dht * (hpr[j] - N[j]);       // dz
      dr[2 * H + j] = dht * (T(1) - Z[j]);     // dn
      dhr[j] = dir + dht * Z[j];
    }
    act_backward_inplace(act, dr + 2 * H, N, w);
    act_backward_inplace(SIGMOID, dr + H, Z, w);
    if (before) return;
    const T* hn = ax + (t * B + r) * H + u;
    for (int64_t j = 0; j < w; ++j) {
      dr[j] = dr[2 * H + j] * hn[j];          // dr
      dgr[2 * H + j] = dr[2 * H + j] * R[j];  // d hn
    }
    act_backward_inplace(SIGMOID, dr, R, w);
    std::memcpy(dgr, dr, sizeof(T) * w);
    std::memcpy(dgr + H, dr + H, sizeof(T) * w);
  };
  // reset before, q = d(r ⊙ hin) of the row's units (dn U_n): dr = q ⊙ hin
  auto reset_row = [&](int64_t t, int64_t r, int64_t u, int64_t w, const T* q) {
    if (!L.valid(r, t)) return;
    T* dr = dg + (t * B + r) * 3 * H + u;
    const T* hin = hin_all + (t * B + r) * H + u;
    for (int64_t j = 0; j < w; ++j) dr[j] = q[j] * hin[j];
    act_backward_inplace(SIGMOID, dr, ga + (t * B + r) * 3 * H + u, w);
  };
  // dh(t-1) += m ⊙ d hin(t-1) for a running row: tmp (the products' part) and, reset before,
  // q ⊙ r (the r ⊙ hin path)
  auto carry_row = [&](int64_t t, int64_t r, int64_t u, int64_t w, const T* tmp, const T* q) {
    if (!L.valid(r, t)) return;
    T* d = dh.data() + r * H + u;
    const T* R = ga + (t * B + r) * 3 * H + u;
    const T* mr = m ? m + r * H + u : nullptr;
    for (int64_t j = 0; j < w; ++j) {
      const T v = q ? tmp[j] + q[j] * R[j] : tmp[j];
      d[j] += mr ? mr[j] * v : v;
    }
  };
  const int team = partition_team(B, H, 3 * H, H, true);
  if (team > 1) {
    parallel_team(team, [&](int tid, int nth) {
      const Span sp = unit_span(tid, nth, H);
      const int64_t u = sp.u, w = sp.w;
      std::vector<T> tmp(B * w), q(before ? B * w : 0);
      // dn U_n[:, units] (before); [dr, dz] U_rz[:, units] (before) or dgh U[:, units] (after)
      const StepGemm<T> gu(B, before ? w : 0, H, W + 2 * H * H + u, H, false);
      const StepGemm<T> gw(B, w, before ? 2 * H : 3 * H, W + u, H, false);
      for (int64_t t = S - 1; t >= 0; --t) {
        if (w > 0) {
          add_grad(t, u, w);
          for (int64_t r = 0; r < B; ++r) grad_row(t, r, u, w);
        }
        team_barrier();  // the products' gradients need every unit's gate gradients
        T* d = dg + t * B * 3 * H;
        if (before) {
          if (w > 0) {
            gu.run(B, d + 2 * H, 3 * H, T(0), q.data(), w);
            for (int64_t r = 0; r < B; ++r) reset_row(t, r, u, w, q.data() + r * w);
          }
          team_barrier();  // dr of every unit
          if (w > 0) gw.run(B, d, 3 * H, T(0), tmp.data(), w);
        } else if (w > 0) {
          gw.run(B, dgh.data() + t * B * 3 * H, 3 * H, T(0), tmp.data(), w);
        }
        if (w > 0)
          for (int64_t r = 0; r < B; ++r)
            carry_row(t, r, u, w, tmp.data() + r * w, before ? q.data() + r * w : nullptr);
      }
    });
  } else {
    std::vector<T> tmp(B * H), q(before ? B * H : 0);
    const StepGemm<T> gu(B, before ? H : 0, H, W + 2 * H * H, H, false);
    const StepGemm<T> gw(B, H, before ? 2 * H : 3 * H, W, H, false);
    for (int64_t t = S - 1; t >= 0; --t) {
      add_grad(t, 0, H);
      for_rows(B, 3 * H, [&](int64_t r0, int64_t r1) {
        for (int64_t r = r0; r < r1; ++r) grad_row(t, r, 0, H);
      });
      T* d = dg + t * B * 3 * H;
      if (before) {
        gu.run(B, d + 2 * H, 3 * H, T(0), q.data(), H);
        for (int64_t r = 0; r < B; ++r) reset_row(t, r, 0, H, q.data() + r * H);
        gw.run(B, d, 3 * H, T(0), tmp.data(), H);
      } else {
        gw.run(B, dgh.data() + t * B * 3 * H, 3 * H, T(0), tmp.data(), H);
      }
      for (int64_t r = 0; r < B; ++r)
        carry_row(t, r, 0, H, tmp.data() + r * H, before ? q.data() + r * H : nullptr);
    }
  }
  T* dW = dw.data_ptr<T>();
  T* db = dbh.data_ptr<T>();
  std::fill(db, db + 3 * H, T(0));
  if (!before) {
    gemm(true, false, 3 * H, H, S * B, T(1), dgh.data(), 3 * H, hin_all, H, T(0), dW, H);
    for (int64_t k = 0; k < S * B; ++k)
      for (int64_t j = 0; j < 3 * H; ++j) db[j] += dgh[k * 3 * H + j];
  } else {
    gemm(true, false, 2 * H, H, S * B, T(1), dg, 3 * H, hin_all, H, T(0), dW, H);
    gemm(true, false, H, H, S * B, T(1), dg + 2 * H, 3 * H, ax, H, T(0), dW + 2 * H * H, H);
  }
  T* d0 = dh0.data_ptr<T>();
  for (int64_t k = 0; k < B * H; ++k) d0[k] = dh[k] + G[k];
}

std::vector<Tensor> gru_reg_backward(const Tensor& grad_hs, const Tensor& hs, const Tensor& gates,
                                     const Tensor& aux, const Tensor& w_hh, const Tensor& mask_h,
                                     const Tensor& keep_h, const Tensor& lengths, bool before,
                                     int64_t act) {
  read_switches();
  auto gh = grad_hs.contiguous();
  auto h = hs.contiguous();
  auto ga = gates.contiguous();
  auto ax = aux.contiguous();
  auto w = w_hh.contiguous();
  auto m = mask_h.contiguous();
  auto zh = keep_h.contiguous();
  const int64_t S = ga.size(0), B = ga.size(1), H = ga.size(2) / 3;
  Lengths L(lengths, B, S);
  Tensor dgx = empty_like_shape(h, {S, B, 3 * H});
  Tensor dw = empty_like_shape(h, {3 * H, H});
  Tensor dbh = empty_like_shape(h, {3 * H});
  Tensor dh0 = empty_like_shape(h, {B, H});
  AT_DISPATCH_FLOATING_TYPES(h.scalar_type(), "gru_reg_backward", [&] {
    gru_reg_bwd_impl<scalar_t>(gh, h, ga, ax, w, m, zh, dgx, dw, dbh, dh0, L, before, act);
  });
  return {dgx, dw, dbh, dh0};
}

// --------------------------------------------------------------------------- Elman ----
// h̃ = act(gx(t) + U hin(t-1)), h(t) = d ⊙ h(t-1) + (1 - d) ⊙ h̃; hc (S, B, H) keeps h̃.
// The GRU's two loops (above): classic, or each thread of the team owning units [u, u + w)
// (its rows of U are contiguous already), hin(t) in two halves, one barrier per step each way.
// Threading: Elman's step is one B×H×H product, too little work to hide a unit split's
// per-step exchange of hin(t) between cores (measured 2026-12-04, 2 threads, quiet, training
// vs plain: the split ran 0.95-1.03x in some processes and 1.29-1.54x in others at S2, as the
// cost of moving cache lines between the two vCPUs changed). So the team splits the batch rows
// instead, as the regularised Jordan and layer-norm kernels do (over_rows, common.h): each
// thread runs the whole loop on its rows with the shared packed U, no barrier either way (row
// r of h(t) reads only row r of hin(t-1)); dU stays one GEMM over all steps after the loop.
inline int elman_team(int64_t B, int64_t H) {
  return int(std::min<int64_t>(partition_team(B, H, H, H, B >= 2), B));
}
template <typename T>
static void elman_reg_fwd_impl(const Tensor& gx, const Tensor& whh, const Tensor& mask,
                               const Tensor& zh, Tensor& hs, Tensor& hcs, const Lengths& L,
                               int64_t act) {
  const int64_t S = gx.size(0), B = gx.size(1), H = gx.size(2);
  const T* g = gx.data_ptr<T>();
  const T* W = whh.data_ptr<T>();
  const T* m = reg_ptr<T>(mask);
  const T* dz_ = reg_ptr<T>(zh);
  T* h = hs.data_ptr<T>();
  T* hc = hcs.data_ptr<T>();
  std::vector<T> hb(m ? 2 * B * H : 0);  // hin(t) = m ⊙ h(t), two steps
  if (m)
    for (int64_t k = 0; k < B * H; ++k) hb[k] = m[k] * h[k];
  auto hin_of = [&](int64_t t) -> const T* {
    return m ? hb.data() + (t & 1) * B * H : h + t * B * H;
  };
  // row r at step t, units [u, u + w), its pre-activation gx + U hin in hc: h̃, zoneout, the
  // freeze (regtail.h), then hin(t)'s units
  auto update_row = [&](int64_t t, int64_t r, int64_t u, int64_t w) {
    T* c = hc + (t * B + r) * H + u;
    T* ht = h + ((t + 1) * B + r) * H + u;
    act_inplace(act, c, w);
    std::memcpy(ht, c, sizeof(T) * w);
    tail_row(L.valid(r, t), dz_ ? dz_ + (t * B + r) * H + u : nullptr, ht - B * H, ht, w);
    if (m) {
      T* hn = hb.data() + ((t + 1) & 1) * B * H + r * H + u;
      const T* mr = m + r * H + u;
      for (int64_t j = 0; j < w; ++j) hn[j] = mr[j] * ht[j];
    }
  };
  const int team = elman_team(B, H);
  if (team > 1) {
    const StepGemm<T> gw(B, H, H, W, H, true);
    over_rows(team, B, [&](int64_t r0, int64_t r1, int) {
      for (int64_t t = 0; t < S; ++t) {
        T* c = hc + (t * B + r0) * H;
        std::memcpy(c, g + (t * B + r0) * H, sizeof(T) * (r1 - r0) * H);
        gw.run(r1 - r0, hin_of(t) + r0 * H, H, T(1), c, H);
        for (int64_t r = r0; r < r1; ++r) update_row(t, r, 0, H);
      }
    });
    return;
  }
  const StepGemm<T> gw(B, H, H, W, H, true);
  for (int64_t t = 0; t < S; ++t) {
    std::memcpy(hc + t * B * H, g + t * B * H, sizeof(T) * B * H);
    gw.run(B, hin_of(t), H, T(1), hc + t * B * H, H);
    for_rows(B, H, [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) update_row(t, r, 0, H);
    });
  }
}

std::vector<Tensor> elman_reg_forward(const Tensor& gx, const Tensor& w_hh, const Tensor& h0,
                                      const Tensor& mask_h, const Tensor& keep_h,
                                      const Tensor& lengths, int64_t act) {
  read_switches();
  auto g = gx.contiguous();
  auto w = w_hh.contiguous();
  auto m = mask_h.contiguous();
  auto zh = keep_h.contiguous();
  const int64_t S = g.size(0), B = g.size(1), H = g.size(2);
  Lengths L(lengths, B, S);
  Tensor hs = empty_like_shape(g, {S + 1, B, H});
  Tensor hc = empty_like_shape(g, {S, B, H});
  hs[0].copy_(h0);
  AT_DISPATCH_FLOATING_TYPES(g.scalar_type(), "elman_reg_forward", [&] {
    elman_reg_fwd_impl<scalar_t>(g, w, m, zh, hs, hc, L, act);
  });
  return {hs, hc};
}

template <typename T>
static void elman_reg_bwd_impl(const Tensor& ghs, const Tensor& hs, const Tensor& hcs,
                               const Tensor& whh, const Tensor& mask, const Tensor& zh,
                               Tensor& dgx, Tensor& dw, Tensor& dh0, const Lengths& L,
                               int64_t act) {
  const int64_t S = hcs.size(0), B = hcs.size(1), H = hcs.size(2);
  const T* G = ghs.data_ptr<T>();
  const T* h = hs.data_ptr<T>();
  const T* hc = hcs.data_ptr<T>();
  const T* W = whh.data_ptr<T>();
  const T* m = reg_ptr<T>(mask);
  const T* dz_ = reg_ptr<T>(zh);
  T* dg = dgx.data_ptr<T>();
  std::vector<T> dh(B * H, T(0));
  // row r at step t, units [u, u + w): dh(t) (plus the output's gradient) -> the
  // pre-activation's gradient in dgx; dh keeps zoneout's direct part d ⊙ dh
  auto grad_row = [&](int64_t t, int64_t r, int64_t u, int64_t w) {
    T* d = dg + (t * B + r) * H + u;
    T* dhr = dh.data() + r * H + u;
    add_into(dhr, G + ((t + 1) * B + r) * H + u, w);
    if (!L.valid(r, t)) {  // frozen: the gradient passes to h(t-1) unchanged
      std::fill(d, d + w, T(0));
      return;
    }
    const T* zr = dz_ ? dz_ + (t * B + r) * H + u : nullptr;
    for (int64_t j = 0; j < w; ++j) {
      T dir;
      d[j] = zone_split(zr, j, dhr[j], dir);
      dhr[j] = dir;
    }
    act_backward_inplace(act, d, hc + (t * B + r) * H + u, w);
  };
  // dh(t-1) += m ⊙ d hin(t-1) (tmp: the row's units of d(t) U) for a running row
  auto carry_row = [&](int64_t t, int64_t r, int64_t u, int64_t w, const T* tmp) {
    if (!L.valid(r, t)) return;
    T* d = dh.data() + r * H + u;
    const T* mr = m ? m + r * H + u : nullptr;
    for (int64_t j = 0; j < w; ++j) d[j] += mr ? mr[j] * tmp[j] : tmp[j];
  };
  const int team = elman_team(B, H);
  const StepGemm<T> gw(B, H, H, W, H, false);
  over_rows(team, B, [&](int64_t r0, int64_t r1, int) {
    std::vector<T> tmp((r1 - r0) * H);
    for (int64_t t = S - 1; t >= 0; --t) {
      for (int64_t r = r0; r < r1; ++r) grad_row(t, r, 0, H);
      gw.run(r1 - r0, dg + (t * B + r0) * H, H, T(0), tmp.data(), H);
      for (int64_t r = r0; r < r1; ++r) carry_row(t, r, 0, H, tmp.data() + (r - r0) * H);
    }
  });
  std::vector<T> hm;
  const T* hin = masked_steps(m, h, hm, S, B * H);
  gemm(true, false, H, H, S * B, T(1), dg, H, hin, H, T(0), dw.data_ptr<T>(), H);
  T* d0 = dh0.data_ptr<T>();
  for (int64_t k = 0; k < B * H; ++k) d0[k] = dh[k] + G[k];
}

std::vector<Tensor> elman_reg_backward(const Tensor& grad_hs, const Tensor& hs, const Tensor& hc,
                                       const Tensor& w_hh, const Tensor& mask_h,
                                       const Tensor& keep_h, const Tensor& lengths, int64_t act) {
  read_switches();
  auto g = grad_hs.contiguous();
  auto h = hs.contiguous();
  auto c = hc.contiguous();
  auto w = w_hh.contiguous();
  auto m = mask_h.contiguous();
  auto zh = keep_h.contiguous();
  const int64_t S = c.size(0), B = c.size(1), H = c.size(2);
  Lengths L(lengths, B, S);
  Tensor dgx = empty_like_shape(h, {S, B, H});
  Tensor dw = empty_like_shape(h, {H, H});
  Tensor dh0 = empty_like_shape(h, {B, H});
  AT_DISPATCH_FLOATING_TYPES(h.scalar_type(), "elman_reg_backward", [&] {
    elman_reg_bwd_impl<scalar_t>(g, h, c, w, m, zh, dgx, dw, dh0, L, act);
  });
  return {dgx, dw, dh0};
}

}  // namespace rnnlab
