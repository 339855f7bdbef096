// LSTM with every option of rnnlab.cells.LSTMCell: peepholes, projection, absent gates (NIG,
// NFG, NOG), coupled input-forget gate (CIFG), full gate recurrence (FGR), any named σ_h, σ_y.
// Included by kernels.cpp.
#pragma once

namespace rnnlab {

struct LstmCfg {
  int64_t oi, of, og, oo;  // block index of i, f, g, o in the gate layout, or -1
  int64_t G, NS;           // gate blocks; sigmoid gates in the FGR state
  int64_t si, sf, so;      // index of i, f, o in the FGR state, or -1
  bool coupled;
  int64_t act, cact;
  LstmCfg(at::IntArrayRef blocks, bool coupled_, int64_t act_, int64_t cact_)
      : oi(blocks[0]), of(blocks[1]), og(blocks[2]), oo(blocks[3]), coupled(coupled_),
        act(act_), cact(cact_) {
    G = (oi >= 0) + (of >= 0) + 1 + (oo >= 0);
    int64_t k = 0;
    si = oi >= 0 ? k++ : -1;
    sf = of >= 0 ? k++ : -1;
    so = oo >= 0 ? k++ : -1;
    NS = k;
  }
};

template <typename T>
static const T* opt_ptr(const Tensor& t) { return t.numel() ? t.data_ptr<T>() : nullptr; }

template <typename T, bool kFed = false>
static void lstm_fwd_impl(const Tensor& gx, const Tensor& whh, const Tensor& wci,
                          const Tensor& wcf, const Tensor& wco, const Tensor& whr,
                          const Tensor& wgg, Tensor& ys, Tensor& cs, Tensor& gs, Tensor& acts,
                          Tensor& ms, const Lengths& L, const LstmCfg& k, bool store,
                          const Fed<T>& fd = Fed<T>()) {
  const int64_t S = gx.size(0), B = gx.size(1), GH = gx.size(2), H = GH / k.G;
  const int64_t P = whh.size(1), NSH = k.NS * H;
  const bool proj = whr.numel() > 0, fgr = wgg.numel() > 0;
  const T* g = gx.data_ptr<T>();
  const T* W = whh.data_ptr<T>();
  const T *pci = opt_ptr<T>(wci), *pcf = opt_ptr<T>(wcf), *pco = opt_ptr<T>(wco);
  T* y = ys.data_ptr<T>();
  const T* yin = kFed ? fd.s : y;  // the states the steps read (state feedback: feedback.h)
  T* c = cs.data_ptr<T>();
  T* a = acts.data_ptr<T>();
  T* m = proj ? ms.data_ptr<T>() : nullptr;
  T* gsp = fgr ? gs.data_ptr<T>() : nullptr;
  std::vector<T> R(fgr ? B * NSH : 0);
  // without a backward to feed (store == false) the gates of one step are scratch
  auto step_acts = [&](int64_t t) { return a + (store ? t : 0) * B * GH; };
  // The gate maths of row r at step t for the hidden units [u, u + w): the pre-activations
  // are in the step's acts; writes the gates back, c(t) and the cell output.
  auto row = [&](int64_t t, int64_t r, int64_t u, int64_t w) {
    T* rowp = step_acts(t) + r * GH;
    const T* cpr = c + (t * B + r) * H + u;
    T* ctr = c + ((t + 1) * B + r) * H + u;
    T* I = k.oi >= 0 ? rowp + k.oi * H + u : nullptr;
    T* F = k.of >= 0 ? rowp + k.of * H + u : nullptr;
    T* Gg = rowp + k.og * H + u;
    T* O = k.oo >= 0 ? rowp + k.oo * H + u : nullptr;
    const T* Rr = fgr ? R.data() + r * NSH + u : nullptr;
    if (I) {
      if (pci) for (int64_t j = 0; j < w; ++j) I[j] += pci[u + j] * cpr[j];
      if (Rr) for (int64_t j = 0; j < w; ++j) I[j] += Rr[k.si * H + j];
      act_inplace(SIGMOID, I, w);
    }
    if (F) {
      if (pcf) for (int64_t j = 0; j < w; ++j) F[j] += pcf[u + j] * cpr[j];
      if (Rr) for (int64_t j = 0; j < w; ++j) F[j] += Rr[k.sf * H + j];
      act_inplace(SIGMOID, F, w);
    }
    act_inplace(k.act, Gg, w);
    if (F && I) for (int64_t j = 0; j < w; ++j) ctr[j] = F[j] * cpr[j] + I[j] * Gg[j];
    else if (F) for (int64_t j = 0; j < w; ++j) ctr[j] = F[j] * cpr[j] + Gg[j];
    else if (I && k.coupled) for (int64_t j = 0; j < w; ++j)
      ctr[j] = (T(1) - I[j]) * cpr[j] + I[j] * Gg[j];
    else if (I) for (int64_t j = 0; j < w; ++j) ctr[j] = cpr[j] + I[j] * Gg[j];
    else for (int64_t j = 0; j < w; ++j) ctr[j] = cpr[j] + Gg[j];
    if (O) {
      if (pco) for (int64_t j = 0; j < w; ++j) O[j] += pco[u + j] * ctr[j];
      if (Rr) for (int64_t j = 0; j < w; ++j) O[j] += Rr[k.so * H + j];
      act_inplace(SIGMOID, O, w);
    }
    T* mr = proj ? m + ((store ? t : 0) * B + r) * H + u : y + ((t + 1) * B + r) * P + u;
    std::memcpy(mr, ctr, sizeof(T) * w);
    act_inplace(k.cact, mr, w);
    if (O) for (int64_t j = 0; j < w; ++j) mr[j] *= O[j];
    if (fgr) {
      T* gr = gsp + ((t + 1) * B + r) * NSH + u;
      if (I) std::memcpy(gr + k.si * H, I, sizeof(T) * w);
      if (F) std::memcpy(gr + k.sf * H, F, sizeof(T) * w);
      if (O) std::memcpy(gr + k.so * H, O, sizeof(T) * w);
    }
  };
  // rows past their length keep the previous state: y columns [yu, yu + yw), c (and the FGR
  // gates) columns [u, u + w)
  auto freeze = [&](int64_t t, int64_t yu, int64_t yw, int64_t u, int64_t w) {
    for (int64_t r = 0; r < B; ++r)
      if (!L.valid(r, t)) {
        std::memcpy(y + ((t + 1) * B + r) * P + yu, y + (t * B + r) * P + yu, sizeof(T) * yw);
        std::memcpy(c + ((t + 1) * B + r) * H + u, c + (t * B + r) * H + u, sizeof(T) * w);
        if (fgr)
          std::memcpy(gsp + ((t + 1) * B + r) * NSH, gsp + (t * B + r) * NSH, sizeof(T) * NSH);
      }
  };
  const int team = partition_team(B, H, GH, P, !proj && !fgr);
  if (team > 1) {
    // Each thread owns a slice of the hidden units for the whole sequence: per step it
    // multiplies y(t-1) by its rows of W (one single-threaded GEMM), does its units' gate
    // maths and meets the others at one barrier, instead of a threaded GEMM and a threaded
    // elementwise pass with their synchronisations.
    parallel_team(team, [&](int tid, int nth) {
      const Span sp = unit_span(tid, nth, H);
      const int64_t u = sp.u, w = sp.w;
      std::vector<T> Wk(k.G * w * P), sc(B * k.G * w);
      for (int64_t blk = 0; blk < k.G; ++blk)
        std::memcpy(Wk.data() + blk * w * P, W + (blk * H + u) * P, sizeof(T) * w * P);
      for (int64_t t = 0; t < S; ++t) {
        if (w > 0) {
          gemm(false, true, B, k.G * w, P, T(1), yin + t * B * P, P, Wk.data(), P, T(0),
               sc.data(), k.G * w);
          T* at = step_acts(t);
          const T* gt = g + t * B * GH;
          for (int64_t r = 0; r < B; ++r) {
            for (int64_t blk = 0; blk < k.G; ++blk) {
              T* dst = at + r * GH + blk * H + u;
              const T* src = gt + r * GH + blk * H + u;
              const T* add = sc.data() + (r * k.G + blk) * w;
              for (int64_t j = 0; j < w; ++j) dst[j] = src[j] + add[j];
            }
            row(t, r, u, w);
          }
          if (!L.full) freeze(t, u, w, u, w);  // no projection: y's columns are the units
          if constexpr (kFed)
            for (int64_t r = 0; r < B; ++r) fd.feed(t, S, B, P, r, u, w, y + ((t + 1) * B + r) * P + u);
        }
        team_barrier();
      }
    });
    return;
  }
  for (int64_t t = 0; t < S; ++t) {
    T* yp = y + t * B * P;
    T* yt = yp + B * P;
    T* at = step_acts(t);
    std::memcpy(at, g + t * B * GH, sizeof(T) * B * GH);
    gemm(false, true, B, GH, P, T(1), yin + t * B * P, P, W, P, T(1), at, GH);
    if (fgr)
      gemm(false, true, B, NSH, NSH, T(1), gsp + t * B * NSH, NSH, wgg.data_ptr<T>(), NSH, T(0),
           R.data(), NSH);
    for_rows(B, GH, [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) row(t, r, 0, H);
    });
    if (proj)
      gemm(false, true, B, P, H, T(1), m + (store ? t : 0) * B * H, H, whr.data_ptr<T>(), H,
           T(0), yt, P);
    if (!L.full) freeze(t, 0, P, 0, H);
    if constexpr (kFed)
      for (int64_t r = 0; r < B; ++r) fd.feed(t, S, B, P, r, 0, P, yt + r * P);
  }
}

std::vector<Tensor> lstm_forward(const Tensor& gx, const Tensor& w_hh, const Tensor& w_ci,
                                 const Tensor& w_cf, const Tensor& w_co, const Tensor& w_hr,
                                 const Tensor& w_gg, const Tensor& h0, const Tensor& c0,
                                 const Tensor& g0, const Tensor& lengths, at::IntArrayRef blocks,
                                 bool coupled, int64_t act, int64_t cact, bool store) {
  read_switches();
  LstmCfg k(blocks, coupled, act, cact);
  auto g = gx.contiguous();
  auto W = w_hh.contiguous();
  auto ci = w_ci.contiguous(), cf = w_cf.contiguous(), co = w_co.contiguous();
  auto hr = w_hr.contiguous(), gg = w_gg.contiguous();
  const int64_t S = g.size(0), B = g.size(1), H = g.size(2) / k.G, P = W.size(1);
  Lengths L(lengths, B, S);
  Tensor ys = empty_like_shape(g, {S + 1, B, P});
  Tensor cs = empty_like_shape(g, {S + 1, B, H});
  const int64_t SB = store ? S : 1;  // steps kept for the backward
  Tensor acts = empty_like_shape(g, {SB, B, k.G * H});
  Tensor ms = hr.numel() ? empty_like_shape(g, {SB, B, H}) : empty_like_shape(g, {0});
  Tensor gs = gg.numel() ? empty_like_shape(g, {S + 1, B, k.NS * H}) : empty_like_shape(g, {0});
  ys[0].copy_(h0);
  cs[0].copy_(c0);
  if (gg.numel()) gs[0].copy_(g0);
  AT_DISPATCH_FLOATING_TYPES(g.scalar_type(), "lstm_forward", [&] {
    lstm_fwd_impl<scalar_t>(g, W, ci, cf, co, hr, gg, ys, cs, gs, acts, ms, L, k, store);
  });
  return {ys, cs, gs, acts, ms};
}

template <typename T, bool kFed = false>
static void lstm_bwd_impl(const Tensor& gys, const Tensor& gcs, const Tensor& ggs,
                          const Tensor& ys, const Tensor& cs, const Tensor& gs,
                          const Tensor& acts, const Tensor& ms, const Tensor& whh,
                          const Tensor& wci, const Tensor& wcf, const Tensor& wco,
                          const Tensor& whr, const Tensor& wgg, Tensor& dgx, Tensor& dwhh,
                          Tensor& dci, Tensor& dcf, Tensor& dco, Tensor& dwhr, Tensor& dwgg,
                          Tensor& dh0, Tensor& dc0, Tensor& dg0, const Lengths& L,
                          const LstmCfg& k, const Fed<T>& fd = Fed<T>()) {
  const int64_t S = acts.size(0), B = acts.size(1), GH = acts.size(2), H = GH / k.G;
  const int64_t P = whh.size(1), NSH = k.NS * H;
  const bool proj = whr.numel() > 0, fgr = wgg.numel() > 0;
  const T *Gy = gys.data_ptr<T>(), *Gc = gcs.data_ptr<T>(), *Gg = fgr ? ggs.data_ptr<T>() : nullptr;
  const T *y = ys.data_ptr<T>(), *c = cs.data_ptr<T>(), *a = acts.data_ptr<T>();
  const T* W = whh.data_ptr<T>();
  const T *pci = opt_ptr<T>(wci), *pcf = opt_ptr<T>(wcf), *pco = opt_ptr<T>(wco);
  T* da = dgx.data_ptr<T>();
  std::vector<T> dy(B * P, T(0)), dc(B * H, T(0)), dgs(fgr ? B * NSH : 0, T(0));
  std::vector<T> dm(proj ? B * H : 0), tmpP(B * P), tmpS(fgr ? B * NSH : 0);
  std::vector<T> dS(fgr ? S * B * NSH : 0), dyp(proj ? S * B * P : 0);
  // d(cell output) of the step: dy itself without a projection
  const T* dmp = proj ? dm.data() : dy.data();
  // The gradient of row r at step t for the hidden units [u, u + w): from d(cell output) and
  // dc(t) to the gates' pre-activations (written to dgx) and dc(t-1) (in place in dc).
  // tc, dct: scratch of at least w values.
  auto row = [&](int64_t t, int64_t r, int64_t u, int64_t w, T* tc, T* dct) {
    T* drow = da + (t * B + r) * GH;
    if (!(L.full || L.valid(r, t))) {
      for (int64_t blk = 0; blk < k.G; ++blk) std::fill(drow + blk * H + u, drow + blk * H + u + w, T(0));
      if (fgr) {
        T* ds = &dS[(t * B + r) * NSH];
        for (int64_t q = 0; q < k.NS; ++q) std::fill(ds + q * H + u, ds + q * H + u + w, T(0));
      }
      return;
    }
    const T* rowp = a + (t * B + r) * GH;
    const T* I = k.oi >= 0 ? rowp + k.oi * H + u : nullptr;
    const T* F = k.of >= 0 ? rowp + k.of * H + u : nullptr;
    const T* Gv = rowp + k.og * H + u;
    const T* O = k.oo >= 0 ? rowp + k.oo * H + u : nullptr;
    const T* ctr = c + ((t + 1) * B + r) * H + u;
    const T* cpr = c + (t * B + r) * H + u;
    const T* dmr = dmp + r * H + u;
    T* dcr = dc.data() + r * H + u;
    const T* dgr = fgr ? dgs.data() + r * NSH + u : nullptr;
    T* dI = k.oi >= 0 ? drow + k.oi * H + u : nullptr;
    T* dF = k.of >= 0 ? drow + k.of * H + u : nullptr;
    T* dG = drow + k.og * H + u;
    T* dO = k.oo >= 0 ? drow + k.oo * H + u : nullptr;
    std::memcpy(tc, ctr, sizeof(T) * w);
    act_inplace(k.cact, tc, w);  // σ_y(c(t)), recomputed
    if (O) for (int64_t j = 0; j < w; ++j) dct[j] = dmr[j] * O[j];
    else std::memcpy(dct, dmr, sizeof(T) * w);
    act_backward_inplace(k.cact, dct, tc, w);
    for (int64_t j = 0; j < w; ++j) dct[j] += dcr[j];
    if (O) {
      for (int64_t j = 0; j < w; ++j) dO[j] = dmr[j] * tc[j];
      if (dgr) for (int64_t j = 0; j < w; ++j) dO[j] += dgr[k.so * H + j];
      act_backward_inplace(SIGMOID, dO, O, w);
      if (pco) for (int64_t j = 0; j < w; ++j) dct[j] += dO[j] * pco[u + j];
    }
    // c(t) = f c(t-1) + i g
    for (int64_t j = 0; j < w; ++j) dG[j] = I ? dct[j] * I[j] : dct[j];
    act_backward_inplace(k.act, dG, Gv, w);
    if (I) {
      for (int64_t j = 0; j < w; ++j) dI[j] = dct[j] * Gv[j];
      if (k.coupled) for (int64_t j = 0; j < w; ++j) dI[j] -= dct[j] * cpr[j];
      if (dgr) for (int64_t j = 0; j < w; ++j) dI[j] += dgr[k.si * H + j];
      act_backward_inplace(SIGMOID, dI, I, w);
    }
    if (F) {
      for (int64_t j = 0; j < w; ++j) dF[j] = dct[j] * cpr[j];
      if (dgr) for (int64_t j = 0; j < w; ++j) dF[j] += dgr[k.sf * H + j];
      act_backward_inplace(SIGMOID, dF, F, w);
    }
    // dc(t-1)
    if (F) for (int64_t j = 0; j < w; ++j) dcr[j] = dct[j] * F[j];
    else if (k.coupled) for (int64_t j = 0; j < w; ++j) dcr[j] = dct[j] * (T(1) - I[j]);
    else std::memcpy(dcr, dct, sizeof(T) * w);
    if (pci && I) for (int64_t j = 0; j < w; ++j) dcr[j] += dI[j] * pci[u + j];
    if (pcf && F) for (int64_t j = 0; j < w; ++j) dcr[j] += dF[j] * pcf[u + j];
    if (fgr) {
      T* ds = &dS[(t * B + r) * NSH] + u;
      if (I) std::memcpy(ds + k.si * H, dI, sizeof(T) * w);
      if (F) std::memcpy(ds + k.sf * H, dF, sizeof(T) * w);
      if (O) std::memcpy(ds + k.so * H, dO, sizeof(T) * w);
    }
  };
  const int team = partition_team(B, H, GH, P, !proj && !fgr);
  if (team > 1) {
    // Each thread owns a slice of the hidden units (= columns of dy, dc): its gate gradients,
    // one barrier, then its columns of dy(t-1) = dgates(t) W from all gate gradients.
    parallel_team(team, [&](int tid, int nth) {
      const Span sp = unit_span(tid, nth, H);
      const int64_t u = sp.u, w = sp.w;
      std::vector<T> tc(w), dct(w), tmp(B * w);
      for (int64_t t = S - 1; t >= 0; --t) {
        if (w > 0) {
          for (int64_t r = 0; r < B; ++r) {
            T* dyr = dy.data() + r * P + u;
            const T* gy = Gy + ((t + 1) * B + r) * P + u;
            T* dcr = dc.data() + r * H + u;
            const T* gc = Gc + ((t + 1) * B + r) * H + u;
            for (int64_t j = 0; j < w; ++j) dyr[j] += gy[j];
            for (int64_t j = 0; j < w; ++j) dcr[j] += gc[j];
            row(t, r, u, w, tc.data(), dct.data());
          }
        }
        team_barrier();
        if (w > 0) {
          // dy(t-1)[:, units] = dgates(t) W[:, units]
          gemm(false, false, B, w, GH, T(1), da + t * B * GH, GH, W + u, P, T(0), tmp.data(), w);
          for (int64_t r = 0; r < B; ++r)  // frozen rows: gradients pass unchanged
            if (L.full || L.valid(r, t)) {
              std::memcpy(dy.data() + r * P + u, tmp.data() + r * w, sizeof(T) * w);
              if constexpr (kFed) fd.split(t, B, P, r, u, w, dy.data() + r * P + u);
            }
        }
      }
    });
  } else {
    for (int64_t t = S - 1; t >= 0; --t) {
      for (int64_t q = 0; q < B * P; ++q) dy[q] += Gy[(t + 1) * B * P + q];
      for (int64_t q = 0; q < B * H; ++q) dc[q] += Gc[(t + 1) * B * H + q];
      if (fgr) for (int64_t q = 0; q < B * NSH; ++q) dgs[q] += Gg[(t + 1) * B * NSH + q];
      if (proj) {
        std::memcpy(&dyp[t * B * P], dy.data(), sizeof(T) * B * P);
        if (!L.full)  // a held row's y(t) is y(t-1), not W_hr m(t): no gradient to W_hr
          for (int64_t r = 0; r < B; ++r)
            if (!L.valid(r, t)) std::fill(&dyp[(t * B + r) * P], &dyp[(t * B + r + 1) * P], T(0));
        gemm(false, false, B, H, P, T(1), dy.data(), P, whr.data_ptr<T>(), H, T(0), dm.data(),
             H);
      }
      T* dat = da + t * B * GH;
      for_rows(B, GH, [&](int64_t r0, int64_t r1) {
        std::vector<T> tc(H), dct(H);
        for (int64_t r = r0; r < r1; ++r) row(t, r, 0, H, tc.data(), dct.data());
      });
      gemm(false, false, B, P, GH, T(1), dat, GH, W, P, T(0), tmpP.data(), P);
      if (fgr)
        gemm(false, false, B, NSH, NSH, T(1), &dS[t * B * NSH], NSH, wgg.data_ptr<T>(), NSH,
             T(0), tmpS.data(), NSH);
      for (int64_t r = 0; r < B; ++r) {
        if (!(L.full || L.valid(r, t))) continue;  // frozen state: gradients pass unchanged
        std::memcpy(&dy[r * P], &tmpP[r * P], sizeof(T) * P);
        if constexpr (kFed) fd.split(t, B, P, r, 0, P, &dy[r * P]);
        if (fgr) std::memcpy(&dgs[r * NSH], &tmpS[r * NSH], sizeof(T) * NSH);
      }
    }
  }
  gemm(true, false, GH, P, S * B, T(1), da, GH, kFed ? fd.s : y, P, T(0),
       dwhh.data_ptr<T>(), P);
  if (proj)
    gemm(true, false, P, H, S * B, T(1), dyp.data(), P, ms.data_ptr<T>(), H, T(0),
         dwhr.data_ptr<T>(), H);
  if (fgr)
    gemm(true, false, NSH, NSH, S * B, T(1), dS.data(), NSH, gs.data_ptr<T>(), NSH, T(0),
         dwgg.data_ptr<T>(), NSH);
  // Peephole gradients: sum over steps and rows of dpre(gate) ⊙ c (frozen rows have dpre = 0).
  auto peep_grad = [&](T* out, int64_t block, int64_t c_shift) {
    std::fill(out, out + H, T(0));
    for (int64_t q = 0; q < S * B; ++q) {
      const T* dq = da + q * GH + block * H;
      const T* cq = c + (q + c_shift * B) * H;
      for (int64_t j = 0; j < H; ++j) out[j] += dq[j] * cq[j];
    }
  };
  if (pci) peep_grad(dci.data_ptr<T>(), k.oi, 0);
  if (pcf) peep_grad(dcf.data_ptr<T>(), k.of, 0);
  if (pco) peep_grad(dco.data_ptr<T>(), k.oo, 1);
  T* h0p = dh0.data_ptr<T>();
  for (int64_t q = 0; q < B * P; ++q) h0p[q] = dy[q] + Gy[q];
  T* c0p = dc0.data_ptr<T>();
  for (int64_t q = 0; q < B * H; ++q) c0p[q] = dc[q] + Gc[q];
  if (fgr) {
    T* g0p = dg0.data_ptr<T>();
    for (int64_t q = 0; q < B * NSH; ++q) g0p[q] = dgs[q] + Gg[q];
  }
}

std::vector<Tensor> lstm_backward(const Tensor& grad_ys, const Tensor& grad_cs,
                                  const Tensor& grad_gs, const Tensor& ys, const Tensor& cs,
                                  const Tensor& gs, const Tensor& acts, const Tensor& ms,
                                  const Tensor& w_hh, const Tensor& w_ci, const Tensor& w_cf,
                                  const Tensor& w_co, const Tensor& w_hr, const Tensor& w_gg,
                                  const Tensor& lengths, at::IntArrayRef blocks, bool coupled,
                                  int64_t act, int64_t cact) {
  read_switches();
  LstmCfg k(blocks, coupled, act, cact);
  auto gys = grad_ys.contiguous(), gcs = grad_cs.contiguous(), ggs = grad_gs.contiguous();
  auto W = w_hh.contiguous();
  auto ci = w_ci.contiguous(), cf = w_cf.contiguous(), co = w_co.contiguous();
  auto hr = w_hr.contiguous(), gg = w_gg.contiguous();
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
  AT_DISPATCH_FLOATING_TYPES(acts.scalar_type(), "lstm_backward", [&] {
    lstm_bwd_impl<scalar_t>(gys, gcs, ggs, ys, cs, gs, acts, ms, W, ci, cf, co, hr, gg, dgx,
                            dwhh, dci, dcf, dco, dwhr, dwgg, dh0, dc0, dg0, L, k);
  });
  return {dgx, dwhh, dci, dcf, dco, dwhr, dwgg, dh0, dc0, dg0};
}

}  // namespace rnnlab
