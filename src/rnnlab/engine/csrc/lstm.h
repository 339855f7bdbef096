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

template <typename T>
static void lstm_fwd_impl(const Tensor& gx, const Tensor& whh, const Tensor& wci,
                          const Tensor& wcf, const Tensor& wco, const Tensor& whr,
                          const Tensor& wgg, Tensor& ys, Tensor& cs, Tensor& gs, Tensor& acts,
                          Tensor& ms, const Lengths& L, const LstmCfg& k, bool store) {
  const int64_t S = gx.size(0), B = gx.size(1), GH = gx.size(2), H = GH / k.G;
  const int64_t P = whh.size(1), NSH = k.NS * H;
  const bool proj = whr.numel() > 0, fgr = wgg.numel() > 0;
  const T* g = gx.data_ptr<T>();
  const T* W = whh.data_ptr<T>();
  const T *pci = opt_ptr<T>(wci), *pcf = opt_ptr<T>(wcf), *pco = opt_ptr<T>(wco);
  T* y = ys.data_ptr<T>();
  T* c = cs.data_ptr<T>();
  T* a = acts.data_ptr<T>();
  T* m = proj ? ms.data_ptr<T>() : nullptr;
  T* gsp = fgr ? gs.data_ptr<T>() : nullptr;
  std::vector<T> R(fgr ? B * NSH : 0), mrow(H);
  for (int64_t t = 0; t < S; ++t) {
    T* yp = y + t * B * P;
    T* yt = yp + B * P;
    T* cp = c + t * B * H;
    T* ct = cp + B * H;
    // without a backward to feed (store == false) the gates of one step are scratch
    const int64_t ts = store ? t : 0;
    T* at = a + ts * B * GH;
    std::memcpy(at, g + t * B * GH, sizeof(T) * B * GH);
    gemm(false, true, B, GH, P, T(1), yp, P, W, P, T(1), at, GH);
    if (fgr)
      gemm(false, true, B, NSH, NSH, T(1), gsp + t * B * NSH, NSH, wgg.data_ptr<T>(), NSH, T(0),
           R.data(), NSH);
    for_rows(B, GH, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      T* row = at + r * GH;
      const T* cpr = cp + r * H;
      T* ctr = ct + r * H;
      T* I = k.oi >= 0 ? row + k.oi * H : nullptr;
      T* F = k.of >= 0 ? row + k.of * H : nullptr;
      T* Gg = row + k.og * H;
      T* O = k.oo >= 0 ? row + k.oo * H : nullptr;
      const T* Rr = fgr ? R.data() + r * NSH : nullptr;
      if (I) {
        if (pci) for (int64_t j = 0; j < H; ++j) I[j] += pci[j] * cpr[j];
        if (Rr) for (int64_t j = 0; j < H; ++j) I[j] += Rr[k.si * H + j];
        act_inplace(SIGMOID, I, H);
      }
      if (F) {
        if (pcf) for (int64_t j = 0; j < H; ++j) F[j] += pcf[j] * cpr[j];
        if (Rr) for (int64_t j = 0; j < H; ++j) F[j] += Rr[k.sf * H + j];
        act_inplace(SIGMOID, F, H);
      }
      act_inplace(k.act, Gg, H);
      if (F && I) for (int64_t j = 0; j < H; ++j) ctr[j] = F[j] * cpr[j] + I[j] * Gg[j];
      else if (F) for (int64_t j = 0; j < H; ++j) ctr[j] = F[j] * cpr[j] + Gg[j];
      else if (I && k.coupled) for (int64_t j = 0; j < H; ++j)
        ctr[j] = (T(1) - I[j]) * cpr[j] + I[j] * Gg[j];
      else if (I) for (int64_t j = 0; j < H; ++j) ctr[j] = cpr[j] + I[j] * Gg[j];
      else for (int64_t j = 0; j < H; ++j) ctr[j] = cpr[j] + Gg[j];
      if (O) {
        if (pco) for (int64_t j = 0; j < H; ++j) O[j] += pco[j] * ctr[j];
        if (Rr) for (int64_t j = 0; j < H; ++j) O[j] += Rr[k.so * H + j];
        act_inplace(SIGMOID, O, H);
      }
      T* mr = proj ? m + (ts * B + r) * H : yt + r * P;
      std::memcpy(mr, ctr, sizeof(T) * H);
      act_inplace(k.cact, mr, H);
      if (O) for (int64_t j = 0; j < H; ++j) mr[j] *= O[j];
      if (fgr) {
        T* gr = gsp + ((t + 1) * B + r) * NSH;
        if (I) std::memcpy(gr + k.si * H, I, sizeof(T) * H);
        if (F) std::memcpy(gr + k.sf * H, F, sizeof(T) * H);
        if (O) std::memcpy(gr + k.so * H, O, sizeof(T) * H);
      }
    }
    });
    if (proj) gemm(false, true, B, P, H, T(1), m + ts * B * H, H, whr.data_ptr<T>(), H, T(0), yt, P);
    if (!L.full)
      for (int64_t r = 0; r < B; ++r)
        if (!L.valid(r, t)) {
          std::memcpy(yt + r * P, yp + r * P, sizeof(T) * P);
          std::memcpy(ct + r * H, cp + r * H, sizeof(T) * H);
          if (fgr)
            std::memcpy(gsp + ((t + 1) * B + r) * NSH, gsp + (t * B + r) * NSH, sizeof(T) * NSH);
        }
  }
}

std::vector<Tensor> lstm_forward(const Tensor& gx, const Tensor& w_hh, const Tensor& w_ci,
                                 const Tensor& w_cf, const Tensor& w_co, const Tensor& w_hr,
                                 const Tensor& w_gg, const Tensor& h0, const Tensor& c0,
                                 const Tensor& g0, const Tensor& lengths, at::IntArrayRef blocks,
                                 bool coupled, int64_t act, int64_t cact, bool store) {
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

template <typename T>
static void lstm_bwd_impl(const Tensor& gys, const Tensor& gcs, const Tensor& ggs,
                          const Tensor& ys, const Tensor& cs, const Tensor& gs,
                          const Tensor& acts, const Tensor& ms, const Tensor& whh,
                          const Tensor& wci, const Tensor& wcf, const Tensor& wco,
                          const Tensor& whr, const Tensor& wgg, Tensor& dgx, Tensor& dwhh,
                          Tensor& dci, Tensor& dcf, Tensor& dco, Tensor& dwhr, Tensor& dwgg,
                          Tensor& dh0, Tensor& dc0, Tensor& dg0, const Lengths& L,
                          const LstmCfg& k) {
  const int64_t S = acts.size(0), B = acts.size(1), GH = acts.size(2), H = GH / k.G;
  const int64_t P = whh.size(1), NSH = k.NS * H;
  const bool proj = whr.numel() > 0, fgr = wgg.numel() > 0;
  const T *Gy = gys.data_ptr<T>(), *Gc = gcs.data_ptr<T>(), *Gg = fgr ? ggs.data_ptr<T>() : nullptr;
  const T *y = ys.data_ptr<T>(), *c = cs.data_ptr<T>(), *a = acts.data_ptr<T>();
  const T* W = whh.data_ptr<T>();
  const T *pci = opt_ptr<T>(wci), *pcf = opt_ptr<T>(wcf), *pco = opt_ptr<T>(wco);
  T* da = dgx.data_ptr<T>();
  std::vector<T> dy(B * P, T(0)), dc(B * H, T(0)), dgs(fgr ? B * NSH : 0, T(0));
  std::vector<T> dm(B * H), tmpP(B * P), tmpS(fgr ? B * NSH : 0), dS(fgr ? S * B * NSH : 0);
  std::vector<T> dyp(proj ? S * B * P : 0);
  for (int64_t t = S - 1; t >= 0; --t) {
    for (int64_t q = 0; q < B * P; ++q) dy[q] += Gy[(t + 1) * B * P + q];
    for (int64_t q = 0; q < B * H; ++q) dc[q] += Gc[(t + 1) * B * H + q];
    if (fgr) for (int64_t q = 0; q < B * NSH; ++q) dgs[q] += Gg[(t + 1) * B * NSH + q];
    if (proj) {
      std::memcpy(&dyp[t * B * P], dy.data(), sizeof(T) * B * P);
      gemm(false, false, B, H, P, T(1), dy.data(), P, whr.data_ptr<T>(), H, T(0), dm.data(), H);
    } else {
      std::memcpy(dm.data(), dy.data(), sizeof(T) * B * H);
    }
    const T* at = a + t * B * GH;
    T* dat = da + t * B * GH;
    for_rows(B, GH, [&](int64_t r0, int64_t r1) {
    std::vector<T> tc(H), dct(H);
    for (int64_t r = r0; r < r1; ++r) {
      T* drow = dat + r * GH;
      if (!(L.full || L.valid(r, t))) {
        std::fill(drow, drow + GH, T(0));
        if (fgr) std::fill(&dS[(t * B + r) * NSH], &dS[(t * B + r + 1) * NSH], T(0));
        continue;
      }
      const T* row = at + r * GH;
      const T* I = k.oi >= 0 ? row + k.oi * H : nullptr;
      const T* F = k.of >= 0 ? row + k.of * H : nullptr;
      const T* Gv = row + k.og * H;
      const T* O = k.oo >= 0 ? row + k.oo * H : nullptr;
      const T* ctr = c + ((t + 1) * B + r) * H;
      const T* cpr = c + (t * B + r) * H;
      const T* dmr = dm.data() + r * H;
      T* dcr = dc.data() + r * H;
      const T* dgr = fgr ? dgs.data() + r * NSH : nullptr;
      T* dI = k.oi >= 0 ? drow + k.oi * H : nullptr;
      T* dF = k.of >= 0 ? drow + k.of * H : nullptr;
      T* dG = drow + k.og * H;
      T* dO = k.oo >= 0 ? drow + k.oo * H : nullptr;
      std::memcpy(tc.data(), ctr, sizeof(T) * H);
      act_inplace(k.cact, tc.data(), H);  // σ_y(c(t)), recomputed
      if (O) for (int64_t j = 0; j < H; ++j) dct[j] = dmr[j] * O[j];
      else std::memcpy(dct.data(), dmr, sizeof(T) * H);
      act_backward_inplace(k.cact, dct.data(), tc.data(), H);
      for (int64_t j = 0; j < H; ++j) dct[j] += dcr[j];
      if (O) {
        for (int64_t j = 0; j < H; ++j) dO[j] = dmr[j] * tc[j];
        if (dgr) for (int64_t j = 0; j < H; ++j) dO[j] += dgr[k.so * H + j];
        act_backward_inplace(SIGMOID, dO, O, H);
        if (pco) for (int64_t j = 0; j < H; ++j) dct[j] += dO[j] * pco[j];
      }
      // c(t) = f c(t-1) + i g
      for (int64_t j = 0; j < H; ++j) dG[j] = I ? dct[j] * I[j] : dct[j];
      act_backward_inplace(k.act, dG, Gv, H);
      if (I) {
        for (int64_t j = 0; j < H; ++j) dI[j] = dct[j] * Gv[j];
        if (k.coupled) for (int64_t j = 0; j < H; ++j) dI[j] -= dct[j] * cpr[j];
        if (dgr) for (int64_t j = 0; j < H; ++j) dI[j] += dgr[k.si * H + j];
        act_backward_inplace(SIGMOID, dI, I, H);
      }
      if (F) {
        for (int64_t j = 0; j < H; ++j) dF[j] = dct[j] * cpr[j];
        if (dgr) for (int64_t j = 0; j < H; ++j) dF[j] += dgr[k.sf * H + j];
        act_backward_inplace(SIGMOID, dF, F, H);
      }
      // dc(t-1)
      if (F) for (int64_t j = 0; j < H; ++j) dcr[j] = dct[j] * F[j];
      else if (k.coupled) for (int64_t j = 0; j < H; ++j) dcr[j] = dct[j] * (T(1) - I[j]);
      else std::memcpy(dcr, dct.data(), sizeof(T) * H);
      if (pci && I) for (int64_t j = 0; j < H; ++j) dcr[j] += dI[j] * pci[j];
      if (pcf && F) for (int64_t j = 0; j < H; ++j) dcr[j] += dF[j] * pcf[j];
      if (fgr) {
        T* ds = &dS[(t * B + r) * NSH];
        if (I) std::memcpy(ds + k.si * H, dI, sizeof(T) * H);
        if (F) std::memcpy(ds + k.sf * H, dF, sizeof(T) * H);
        if (O) std::memcpy(ds + k.so * H, dO, sizeof(T) * H);
      }
    }
    });
    gemm(false, false, B, P, GH, T(1), dat, GH, W, P, T(0), tmpP.data(), P);
    if (fgr)
      gemm(false, false, B, NSH, NSH, T(1), &dS[t * B * NSH], NSH, wgg.data_ptr<T>(), NSH, T(0),
           tmpS.data(), NSH);
    for (int64_t r = 0; r < B; ++r) {
      if (!(L.full || L.valid(r, t))) continue;  // frozen state: gradients pass unchanged
      std::memcpy(&dy[r * P], &tmpP[r * P], sizeof(T) * P);
      if (fgr) std::memcpy(&dgs[r * NSH], &tmpS[r * NSH], sizeof(T) * NSH);
    }
  }
  gemm(true, false, GH, P, S * B, T(1), da, GH, y, P, T(0), dwhh.data_ptr<T>(), P);
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
