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
template <typename T>
static void lstm_reg_fwd_impl(const Tensor& gx, const Tensor& whh, const Tensor& mask,
                              const Tensor& zh, const Tensor& zc, Tensor& hs, Tensor& cs,
                              Tensor& gates, Tensor& tcs, const Lengths& L, int64_t act,
                              int64_t cact) {
  const int64_t S = gx.size(0), B = gx.size(1), H = gx.size(2) / 4;
  const T* g = gx.data_ptr<T>();
  const T* W = whh.data_ptr<T>();
  const T* m = reg_ptr<T>(mask);
  const T* dh_ = reg_ptr<T>(zh);
  const T* dc_ = reg_ptr<T>(zc);
  T* h = hs.data_ptr<T>();
  T* c = cs.data_ptr<T>();
  T* a = gates.data_ptr<T>();
  T* tc = tcs.data_ptr<T>();
  std::vector<T> hin(m ? B * H : 0);
  const StepGemm<T> gw(B, 4 * H, H, W, H, true);
  for (int64_t t = 0; t < S; ++t) {
    const T* hp = h + t * B * H;
    const T* cp = c + t * B * H;
    T* ht = h + (t + 1) * B * H;
    T* ct = c + (t + 1) * B * H;
    T* at = a + t * B * 4 * H;
    T* tct = tc + t * B * H;
    std::memcpy(at, g + t * B * 4 * H, sizeof(T) * B * 4 * H);
    const T* src = masked(m, hp, hin, B * H);
    gw.run(B, src, H, T(1), at, 4 * H);
    const T* zht = step_of(dh_, t, B * H);
    const T* zct = step_of(dc_, t, B * H);
    for_rows(B, 4 * H, [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) {
        T* ar = at + r * 4 * H;
        T *I = ar, *F = ar + H, *G = ar + 2 * H, *O = ar + 3 * H;
        act_inplace(SIGMOID, I, 2 * H);  // i and f
        act_inplace(act, G, H);
        act_inplace(SIGMOID, O, H);
        const T* cpr = cp + r * H;
        const T* hpr = hp + r * H;
        T* ctr = ct + r * H;
        T* htr = ht + r * H;
        T* tcr = tct + r * H;
        for (int64_t j = 0; j < H; ++j) ctr[j] = F[j] * cpr[j] + I[j] * G[j];  // c̃
        std::memcpy(tcr, ctr, sizeof(T) * H);
        act_inplace(cact, tcr, H);
        for (int64_t j = 0; j < H; ++j) htr[j] = O[j] * tcr[j];  // h̃
        const bool v = L.valid(r, t);
        tail_row(v, step_of(zct, r, H), cpr, ctr, H);
        tail_row(v, step_of(zht, r, H), hpr, htr, H);
      }
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
  const int64_t S = gates.size(0), B = gates.size(1), H = gates.size(2) / 4;
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
  std::vector<T> dh(B * H, T(0)), dc(B * H, T(0)), tmp(B * H);
  const StepGemm<T> gw(B, H, 4 * H, W, H, false);
  for (int64_t t = S - 1; t >= 0; --t) {
    const T* ght = Gh + (t + 1) * B * H;
    const T* gct = Gc + (t + 1) * B * H;
    add_into(dh.data(), ght, B * H);
    add_into(dc.data(), gct, B * H);
    T* d = dg + t * B * 4 * H;
    const T* at = a + t * B * 4 * H;
    const T* cp = c + t * B * H;
    const T* tct = tc + t * B * H;
    const T* zht = step_of(dh_, t, B * H);
    const T* zct = step_of(dc_, t, B * H);
    // per row: the gate gradients d (B, 4H); dh, dc become the direct parts of dh(t-1),
    // dc(t-1) (the product's part is added after the GEMM)
    for_rows(B, 4 * H, [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) {
        T* dr = d + r * 4 * H;
        T* dhr = &dh[r * H];
        T* dcr = &dc[r * H];
        if (!L.valid(r, t)) {  // frozen: the gradient passes to s(t-1) unchanged
          std::fill(dr, dr + 4 * H, T(0));
          continue;
        }
        const T* ar = at + r * 4 * H;
        const T *I = ar, *F = ar + H, *G = ar + 2 * H, *O = ar + 3 * H;
        const T* cpr = cp + r * H;
        const T* tcr = tct + r * H;
        const T* zhr = step_of(zht, r, H);
        const T* zcr = step_of(zct, r, H);
        for (int64_t j = 0; j < H; ++j) {
          T hdir, cdir;
          const T dht = zone_split(zhr, j, dhr[j], hdir);
          T dct = zone_split(zcr, j, dcr[j], cdir);
          dr[3 * H + j] = dht * tcr[j];                       // do
          dct += dht * O[j] * act_grad(cact, tcr[j]);          // into c̃
          dr[j] = dct * G[j];                                  // di
          dr[H + j] = dct * cpr[j];                            // df
          dr[2 * H + j] = dct * I[j];                          // dg
          dcr[j] = cdir + dct * F[j];
          dhr[j] = hdir;
        }
        act_backward_inplace(SIGMOID, dr, ar, 2 * H);
        act_backward_inplace(act, dr + 2 * H, ar + 2 * H, H);
        act_backward_inplace(SIGMOID, dr + 3 * H, ar + 3 * H, H);
      }
    });
    gw.run(B, d, 4 * H, T(0), tmp.data(), H);  // d hin
    add_masked(dh.data(), tmp.data(), m, L, t, B, H);
  }
  // dW = sum_t d(t)ᵀ hin(t-1): one GEMM over all steps
  std::vector<T> hm;
  const T* hin = masked_steps(m, h, hm, S, B * H);
  gemm(true, false, 4 * H, H, S * B, T(1), dg, 4 * H, hin, H, T(0), dw.data_ptr<T>(), H);
  T* d0 = dh0.data_ptr<T>();
  T* e0 = dc0.data_ptr<T>();
  for (int64_t k = 0; k < B * H; ++k) {
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
template <typename T>
static void gru_reg_fwd_impl(const Tensor& gx, const Tensor& whh, const Tensor& bhh,
                             const Tensor& mask, const Tensor& zh, Tensor& hs, Tensor& gates,
                             Tensor& aux, const Lengths& L, bool before, int64_t act) {
  const int64_t S = gx.size(0), B = gx.size(1), H = gx.size(2) / 3;
  const T* g = gx.data_ptr<T>();
  const T* W = whh.data_ptr<T>();
  const T* bh = reg_ptr<T>(bhh);
  const T* m = reg_ptr<T>(mask);
  const T* dz_ = reg_ptr<T>(zh);
  T* h = hs.data_ptr<T>();
  T* gt_ = gates.data_ptr<T>();
  T* ax = aux.data_ptr<T>();
  std::vector<T> hin(m ? B * H : 0), gh(B * 3 * H);
  const StepGemm<T> g3(B, before ? 2 * H : 3 * H, H, W, H, true);
  const StepGemm<T> gn(B, before ? H : 0, H, W + 2 * H * H, H, true);
  for (int64_t t = 0; t < S; ++t) {
    const T* hp = h + t * B * H;
    T* ht = h + (t + 1) * B * H;
    T* gat = gt_ + t * B * 3 * H;
    T* axt = ax + t * B * H;
    const T* xt = g + t * B * 3 * H;
    const T* src = masked(m, hp, hin, B * H);
    const int64_t NG = before ? 2 : 3;
    for (int64_t r = 0; r < B; ++r)
      for (int64_t j = 0; j < NG * H; ++j) gh[r * 3 * H + j] = bh ? bh[j] : T(0);
    g3.run(B, src, H, T(1), gh.data(), 3 * H);
    for (int64_t r = 0; r < B; ++r) {
      T* gr = gat + r * 3 * H;
      for (int64_t j = 0; j < 2 * H; ++j) gr[j] = xt[r * 3 * H + j] + gh[r * 3 * H + j];
      act_inplace(SIGMOID, gr, 2 * H);
    }
    if (before) {
      for (int64_t r = 0; r < B; ++r)
        for (int64_t j = 0; j < H; ++j) axt[r * H + j] = gat[r * 3 * H + j] * src[r * H + j];
      for (int64_t r = 0; r < B; ++r)
        std::memcpy(gat + r * 3 * H + 2 * H, xt + r * 3 * H + 2 * H, sizeof(T) * H);
      gn.run(B, axt, H, T(1), gat + 2 * H, 3 * H);
    } else {
      for (int64_t r = 0; r < B; ++r)
        for (int64_t j = 0; j < H; ++j) {
          T hn = gh[r * 3 * H + 2 * H + j];
          axt[r * H + j] = hn;
          gat[r * 3 * H + 2 * H + j] = xt[r * 3 * H + 2 * H + j] + gat[r * 3 * H + j] * hn;
        }
    }
    const T* zt = step_of(dz_, t, B * H);
    for (int64_t r = 0; r < B; ++r) {
      T* gr = gat + r * 3 * H;
      act_inplace(act, gr + 2 * H, H);
      gru_tail_row(L.valid(r, t), gr + H, gr + 2 * H, step_of(zt, r, H), hp + r * H, ht + r * H, H);
    }
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
  std::vector<T> dh(B * H, T(0)), dgh(before ? 0 : S * B * 3 * H), tmp(B * H), dq(B * H);
  std::vector<T> hm;
  const T* hin_all = masked_steps(m, h, hm, S, B * H);
  const StepGemm<T> gu(B, before ? H : 0, H, W + 2 * H * H, H, false);
  const StepGemm<T> gw(B, H, before ? 2 * H : 3 * H, W, H, false);
  for (int64_t t = S - 1; t >= 0; --t) {
    const T* gt = G + (t + 1) * B * H;
    add_into(dh.data(), gt, B * H);
    T* d = dg + t * B * 3 * H;
    T* dgt = before ? nullptr : dgh.data() + t * B * 3 * H;
    const T* gat = ga + t * B * 3 * H;
    const T* axt = ax + t * B * H;
    const T* hp = h + t * B * H;
    const T* zt = step_of(dz_, t, B * H);
    for (int64_t r = 0; r < B; ++r) {
      T* dr = d + r * 3 * H;
      T* dhr = &dh[r * H];
      if (!L.valid(r, t)) {
        std::fill(dr, dr + 3 * H, T(0));
        if (dgt) std::fill(dgt + r * 3 * H, dgt + (r + 1) * 3 * H, T(0));
        continue;
      }
      const T *R = gat + r * 3 * H, *Z = R + H, *N = R + 2 * H;
      const T* hpr = hp + r * H;
      for (int64_t j = 0; j < H; ++j) {
        T dir;
        const T dht = zone_split(step_of(zt, r, H), j, dhr[j], dir);
        dr[H + j] = dht * (hpr[j] - N[j]);       // dz
        dr[2 * H + j] = dht * (T(1) - Z[j]);     // dn
        dhr[j] = dir + dht * Z[j];               // direct part of dh(t-1)
      }
      act_backward_inplace(act, dr + 2 * H, N, H);
      act_backward_inplace(SIGMOID, dr + H, Z, H);
      if (!before) {
        T* dgr = dgt + r * 3 * H;
        const T* hn = axt + r * H;
        for (int64_t j = 0; j < H; ++j) {
          dr[j] = dr[2 * H + j] * hn[j];       // dr
          dgr[2 * H + j] = dr[2 * H + j] * R[j];  // d hn
        }
        act_backward_inplace(SIGMOID, dr, R, H);
        std::memcpy(dgr, dr, sizeof(T) * 2 * H);
      }
    }
    const T* hint = hin_all + t * B * H;
    if (before) {
      // dq = dn U_n (q = r ⊙ hin);  dr = dq ⊙ hin;  d hin = dq ⊙ r + [dr, dz] U_rz
      gu.run(B, d + 2 * H, 3 * H, T(0), dq.data(), H);
      for (int64_t r = 0; r < B; ++r) {
        if (!L.valid(r, t)) continue;
        T* dr = d + r * 3 * H;
        const T* R = gat + r * 3 * H;
        for (int64_t j = 0; j < H; ++j) dr[j] = dq[r * H + j] * hint[r * H + j];
        act_backward_inplace(SIGMOID, dr, R, H);
      }
      gw.run(B, d, 3 * H, T(0), tmp.data(), H);
      for (int64_t r = 0; r < B; ++r) {
        if (!L.valid(r, t)) continue;
        const T* R = gat + r * 3 * H;
        for (int64_t j = 0; j < H; ++j) tmp[r * H + j] += dq[r * H + j] * R[j];
      }
    } else {
      gw.run(B, dgt, 3 * H, T(0), tmp.data(), H);
    }
    add_masked(dh.data(), tmp.data(), m, L, t, B, H);
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
// h̃ = act(gx(t) + U hin(t-1)), h(t) = d ⊙ h(t-1) + (1 - d) ⊙ h̃; hc (S, B, H) keeps h̃
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
  std::vector<T> hin(m ? B * H : 0);
  const StepGemm<T> gw(B, H, H, W, H, true);
  for (int64_t t = 0; t < S; ++t) {
    const T* hp = h + t * B * H;
    T* ht = h + (t + 1) * B * H;
    T* hct = hc + t * B * H;
    std::memcpy(hct, g + t * B * H, sizeof(T) * B * H);
    const T* src = masked(m, hp, hin, B * H);
    gw.run(B, src, H, T(1), hct, H);
    par_act_inplace(act, hct, B * H);
    const T* zt = step_of(dz_, t, B * H);
    std::memcpy(ht, hct, sizeof(T) * B * H);
    for (int64_t r = 0; r < B; ++r) tail_row(L.valid(r, t), step_of(zt, r, H), hp + r * H, ht + r * H, H);
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
  std::vector<T> dh(B * H, T(0)), tmp(B * H);
  const StepGemm<T> gw(B, H, H, W, H, false);
  for (int64_t t = S - 1; t >= 0; --t) {
    add_into(dh.data(), G + (t + 1) * B * H, B * H);
    T* d = dg + t * B * H;
    const T* zt = step_of(dz_, t, B * H);
    for (int64_t r = 0; r < B; ++r)
      for (int64_t j = 0; j < H; ++j) {
        const int64_t k = r * H + j;
        if (!L.valid(r, t)) {
          d[k] = T(0);
          continue;
        }
        T dir;
        d[k] = zone_split(zt, k, dh[k], dir);
        dh[k] = dir;
      }
    act_backward_inplace(act, d, hc + t * B * H, B * H);
    gw.run(B, d, H, T(0), tmp.data(), H);
    for (int64_t r = 0; r < B; ++r) {
      if (!L.valid(r, t)) continue;
      for (int64_t j = 0; j < H; ++j) dh[r * H + j] += m ? m[r * H + j] * tmp[r * H + j] : tmp[r * H + j];
    }
  }
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
