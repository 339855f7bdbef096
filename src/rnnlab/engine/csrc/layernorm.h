// Layer-normalised LSTM (rnnlab.cells.LayerNormLSTMCell without peepholes or projection) with
// the regularisers of regularised.h (state mask m, zoneout keep weights d). Included by
// kernels.cpp (registration there).
//
//   a(t) = gx(t) + g_h ⊙ LN0(U hin(t-1)) + b_h     gx = LN(W x) + ..., computed outside the loop
//   c̃ = σ(a_f) ⊙ c(t-1) + σ(a_i) ⊙ tanh(a_g),  h̃ = σ(a_o) ⊙ tanh(g_c ⊙ LN0(c̃) + b_c)
//   s(t) = d ⊙ s(t-1) + (1 - d) ⊙ s̃(t)
// with LN0(v) = (v - mean v) / sqrt(var v + eps) over the row (biased variance), hin = m ⊙ h.
#pragma once

#include "regtail.h"

namespace rnnlab {

// LN0 of n values: writes v̂ to out, returns 1/σ. Sums in double (float inputs too), as
// `omp simd` reductions so that the loops vectorise (the order of the additions is the
// vector lanes', not the scalar loop's: float64 results move by an ulp or so).
template <typename T> static T ln0(const T* v, T* out, int64_t n, double eps) {
  double s = 0, q = 0;
#pragma omp simd reduction(+ : s)
  for (int64_t j = 0; j < n; ++j) s += double(v[j]);
  const double mu = s / n;
#pragma omp simd reduction(+ : q)
  for (int64_t j = 0; j < n; ++j) {
    const double d = double(v[j]) - mu;
    q += d * d;
  }
  const double r = 1.0 / std::sqrt(q / n + eps);
  const T mu_t = T(mu), r_t = T(r);
  if (sizeof(T) == sizeof(double)) {
#pragma omp simd
    for (int64_t j = 0; j < n; ++j) out[j] = T((double(v[j]) - mu) * r);
  } else {
#pragma omp simd
    for (int64_t j = 0; j < n; ++j) out[j] = (v[j] - mu_t) * r_t;
  }
  return T(r);
}
// dv = r (dv̂ - mean dv̂ - v̂ mean(dv̂ ⊙ v̂)), in place of dvh
template <typename T> static void ln0_backward(T* dvh, const T* vh, T r, int64_t n) {
  double a = 0, b = 0;
#pragma omp simd reduction(+ : a, b)
  for (int64_t j = 0; j < n; ++j) {
    a += double(dvh[j]);
    b += double(dvh[j]) * double(vh[j]);
  }
  a /= n;
  b /= n;
  if (sizeof(T) == sizeof(double)) {
#pragma omp simd
    for (int64_t j = 0; j < n; ++j) dvh[j] = T(r * (dvh[j] - a - vh[j] * b));
  } else {
    const T at = T(a), bt = T(b);
#pragma omp simd
    for (int64_t j = 0; j < n; ++j) dvh[j] = r * (dvh[j] - at - vh[j] * bt);
  }
}

// Batch-row partitioning (the LN kernels' threading). Each of `team` threads owns a contiguous
// block of batch rows [r0, r1) for the whole sequence: its rows of the step product
// hin(t-1) U^T, its rows' normalisations (a reduction over the row's own gate vector, so
// thread-local), gates and state update. No row reads another's state, so the forward needs no
// barrier at all, and neither does the backward (dh(t-1) of a row is that row's du(t) U); the
// gain/bias gradients are per-thread partial sums added in thread order after the team, and
// dU is one GEMM over all steps after the loop, as before. Unit partitioning (note 0007) would
// need a cross-thread reduction for every LN of every step (3 barriers a step each way).
// Used where partition_team says (RNNLAB_ENGINE_PARTITION, the step-size threshold), with at
// most B threads.
inline int ln_team(int64_t B, int64_t H, int64_t G) {
  return int(std::min<int64_t>(partition_team(B, H, G, H, B >= 2), B));
}
// dh(t-1) rows [r0, r1) += m ⊙ dhin for the rows still running at step t (dhin: those rows'
// product gradient, (r1 - r0, H))
template <typename T>
static inline void add_masked_rows(T* dh, const T* dhin, const T* m, const Lengths& L,
                                   int64_t t, int64_t r0, int64_t r1, int64_t H) {
  for (int64_t r = r0; r < r1; ++r) {
    if (!L.valid(r, t)) continue;
    const T* g = dhin + (r - r0) * H;
    T* d = dh + r * H;
    if (m)
      for (int64_t j = 0; j < H; ++j) d[j] += m[r * H + j] * g[j];
    else
      for (int64_t j = 0; j < H; ++j) d[j] += g[j];
  }
}
// the per-thread partial sums (team blocks of n) added in thread order into out (n)
template <typename T>
static inline void sum_parts(const std::vector<T>& parts, int team, int64_t stride,
                             int64_t off, T* out, int64_t len) {
  for (int64_t j = 0; j < len; ++j) {
    T s = T(0);
    for (int k = 0; k < team; ++k) s += parts[k * stride + off + j];
    out[j] = s;
  }
}

template <typename T>
static void ln_lstm_fwd_impl(const Tensor& gx, const Tensor& whh, const Tensor& ghh,
                             const Tensor& bhh, const Tensor& gc, const Tensor& bc,
                             const Tensor& mask, const Tensor& zh, const Tensor& zc, Tensor& hs,
                             Tensor& cs, Tensor& gates, Tensor& uhat, Tensor& ru, Tensor& chat,
                             Tensor& rc, Tensor& tcs, const Lengths& L, double eps) {
  const int64_t S = gx.size(0), B = gx.size(1), H = gx.size(2) / 4, G = 4 * H;
  const T* g = gx.data_ptr<T>();
  const T* W = whh.data_ptr<T>();
  const T* gh = ghh.data_ptr<T>();
  const T* bh = reg_ptr<T>(bhh);
  const T* gcp = gc.data_ptr<T>();
  const T* bcp = reg_ptr<T>(bc);
  const T* m = reg_ptr<T>(mask);
  const T* dh_ = reg_ptr<T>(zh);
  const T* dc_ = reg_ptr<T>(zc);
  T* h = hs.data_ptr<T>();
  T* c = cs.data_ptr<T>();
  T* a = gates.data_ptr<T>();
  T* uh = uhat.data_ptr<T>();
  T* rup = ru.data_ptr<T>();
  T* ch = chat.data_ptr<T>();
  T* rcp = rc.data_ptr<T>();
  T* tc = tcs.data_ptr<T>();
  const StepGemm<T> gw(B, G, H, W, H, true);
  const int team = ln_team(B, H, G);
  over_rows(team, B, [&](int64_t b0, int64_t b1, int) {
  const int64_t nr = b1 - b0;
  std::vector<T> hin(m ? nr * H : 0), u(nr * G);
  for (int64_t t = 0; t < S; ++t) {
    const T* hp = h + t * B * H;
    const T* cp = c + t * B * H;
    T* ht = h + (t + 1) * B * H;
    T* ct = c + (t + 1) * B * H;
    const T* src = masked(m ? m + b0 * H : nullptr, hp + b0 * H, hin, nr * H);
    gw.run(nr, src, H, T(0), u.data(), G);
    const T* zht = step_of(dh_, t, B * H);
    const T* zct = step_of(dc_, t, B * H);
    // without a team, a large step's rows go to torch's threads (a team's rows stay its own)
    auto step_rows = [&](int64_t q0, int64_t q1) {
      for (int64_t r = b0 + q0; r < b0 + q1; ++r) {
        const int64_t row = t * B + r;
        T* uhr = uh + row * G;
        rup[row] = ln0(u.data() + (r - b0) * G, uhr, G, eps);
        T* ar = a + row * G;
        const T* gr = g + row * G;
        for (int64_t j = 0; j < G; ++j) ar[j] = gr[j] + gh[j] * uhr[j] + (bh ? bh[j] : T(0));
        T *I = ar, *F = ar + H, *Gg = ar + 2 * H, *O = ar + 3 * H;
        act_inplace(SIGMOID, I, 2 * H);
        act_inplace(TANH, Gg, H);
        act_inplace(SIGMOID, O, H);
        const T* cpr = cp + r * H;
        const T* hpr = hp + r * H;
        T* ctr = ct + r * H;
        T* htr = ht + r * H;
        T* chr = ch + row * H;
        T* tcr = tc + row * H;
        for (int64_t j = 0; j < H; ++j) ctr[j] = F[j] * cpr[j] + I[j] * Gg[j];  // c̃
        rcp[row] = ln0(ctr, chr, H, eps);
        for (int64_t j = 0; j < H; ++j) tcr[j] = gcp[j] * chr[j] + (bcp ? bcp[j] : T(0));
        act_inplace(TANH, tcr, H);
        for (int64_t j = 0; j < H; ++j) htr[j] = O[j] * tcr[j];
        const bool v = L.valid(r, t);
        tail_row(v, step_of(zct, r, H), cpr, ctr, H);
        tail_row(v, step_of(zht, r, H), hpr, htr, H);
      }
    };
    if (team > 1) step_rows(0, nr);
    else for_rows(nr, G, step_rows);
  }
  });
}

std::vector<Tensor> ln_lstm_forward(const Tensor& gx, const Tensor& w_hh, const Tensor& g_hh,
                                    const Tensor& b_hh, const Tensor& g_c, const Tensor& b_c,
                                    const Tensor& h0, const Tensor& c0, const Tensor& mask_h,
                                    const Tensor& keep_h, const Tensor& keep_c,
                                    const Tensor& lengths, double eps) {
  read_switches();
  auto g = gx.contiguous();
  auto w = w_hh.contiguous();
  auto gh = g_hh.contiguous();
  auto bh = b_hh.contiguous();
  auto gc = g_c.contiguous();
  auto bc = b_c.contiguous();
  auto m = mask_h.contiguous();
  auto zh = keep_h.contiguous();
  auto zc = keep_c.contiguous();
  const int64_t S = g.size(0), B = g.size(1), H = g.size(2) / 4;
  Lengths L(lengths, B, S);
  Tensor hs = empty_like_shape(g, {S + 1, B, H});
  Tensor cs = empty_like_shape(g, {S + 1, B, H});
  Tensor gates = empty_like_shape(g, {S, B, 4 * H});
  Tensor uhat = empty_like_shape(g, {S, B, 4 * H});
  Tensor ru = empty_like_shape(g, {S, B});
  Tensor chat = empty_like_shape(g, {S, B, H});
  Tensor rc = empty_like_shape(g, {S, B});
  Tensor tc = empty_like_shape(g, {S, B, H});
  hs[0].copy_(h0);
  cs[0].copy_(c0);
  AT_DISPATCH_FLOATING_TYPES(g.scalar_type(), "ln_lstm_forward", [&] {
    ln_lstm_fwd_impl<scalar_t>(g, w, gh, bh, gc, bc, m, zh, zc, hs, cs, gates, uhat, ru, chat,
                               rc, tc, L, eps);
  });
  return {hs, cs, gates, uhat, ru, chat, rc, tc};
}

template <typename T>
static void ln_lstm_bwd_impl(const Tensor& ghs, const Tensor& gcs, const Tensor& hs,
                             const Tensor& cs, const Tensor& gates, const Tensor& uhat,
                             const Tensor& ru, const Tensor& chat, const Tensor& rc,
                             const Tensor& tcs, const Tensor& whh, const Tensor& ghh,
                             const Tensor& gc, const Tensor& mask, const Tensor& zh,
                             const Tensor& zc, Tensor& dgx, Tensor& dw, Tensor& dgh, Tensor& dbh,
                             Tensor& dgc, Tensor& dbc, Tensor& dh0, Tensor& dc0,
                             const Lengths& L) {
  const int64_t S = gates.size(0), B = gates.size(1), H = gates.size(2) / 4, G = 4 * H;
  const T* Gh = ghs.data_ptr<T>();
  const T* Gc = gcs.data_ptr<T>();
  const T* h = hs.data_ptr<T>();
  const T* c = cs.data_ptr<T>();
  const T* a = gates.data_ptr<T>();
  const T* uh = uhat.data_ptr<T>();
  const T* rup = ru.data_ptr<T>();
  const T* ch = chat.data_ptr<T>();
  const T* rcp = rc.data_ptr<T>();
  const T* tc = tcs.data_ptr<T>();
  const T* W = whh.data_ptr<T>();
  const T* gh = ghh.data_ptr<T>();
  const T* gcp = gc.data_ptr<T>();
  const T* m = reg_ptr<T>(mask);
  const T* dh_ = reg_ptr<T>(zh);
  const T* dc_ = reg_ptr<T>(zc);
  T* dg = dgx.data_ptr<T>();
  // du (S, B, G): the gradient of U hin before the gain, every element written below
  std::unique_ptr<T[]> du(new T[S * B * G]);
  std::vector<T> dh(B * H, T(0)), dc(B * H, T(0));
  const StepGemm<T> gw(B, H, G, W, H, false);
  const int team = ln_team(B, H, G);
  const int64_t np = 2 * G + 2 * H;  // a thread's partial dg_h, db_h, dg_c, db_c
  std::vector<T> parts(std::max(team, 1) * np, T(0));
  over_rows(team, B, [&](int64_t b0, int64_t b1, int tid) {
  const int64_t nr = b1 - b0;
  T* dGh = parts.data() + tid * np;
  T* dBh = dGh + G;
  T* dGc = dBh + G;
  T* dBc = dGc + H;
  std::vector<T> tmp(nr * H), dcn(H);
  for (int64_t t = S - 1; t >= 0; --t) {
    add_into(dh.data() + b0 * H, Gh + ((t + 1) * B + b0) * H, nr * H);
    add_into(dc.data() + b0 * H, Gc + ((t + 1) * B + b0) * H, nr * H);
    const T* zht = step_of(dh_, t, B * H);
    const T* zct = step_of(dc_, t, B * H);
    T* dut = du.get() + t * B * G;
    for (int64_t r = b0; r < b1; ++r) {
      const int64_t row = t * B + r;
      T* dr = dg + row * G;
      T* dur = dut + r * G;
      T* dhr = &dh[r * H];
      T* dcr = &dc[r * H];
      if (!L.valid(r, t)) {
        std::fill(dr, dr + G, T(0));
        std::fill(dur, dur + G, T(0));
        continue;
      }
      const T* ar = a + row * G;
      const T *I = ar, *F = ar + H, *Gg = ar + 2 * H, *O = ar + 3 * H;
      const T* cpr = c + (t * B + r) * H;
      const T* tcr = tc + row * H;
      const T* chr = ch + row * H;
      // h̃ -> do and the gradient of LN(c̃)'s output
      const T* zhr = step_of(zht, r, H);
      const T* zcr = step_of(zct, r, H);
      for (int64_t j = 0; j < H; ++j) {
        T hdir;  // zoneout's direct part: the carried dh becomes dh(t-1)'s direct part
        const T dht = zone_split(zhr, j, dhr[j], hdir);
        dhr[j] = hdir;
        dr[3 * H + j] = dht * tcr[j];
        T d = dht * O[j] * (T(1) - tcr[j] * tcr[j]);  // d(g_c ⊙ ĉ + b_c)
        dGc[j] += d * chr[j];
        dBc[j] += d;
        dcn[j] = d * gcp[j];  // dĉ
      }
      ln0_backward(dcn.data(), chr, rcp[row], H);  // d c̃ from the LN path
      for (int64_t j = 0; j < H; ++j) {
        T cdir;
        T dct = zone_split(zcr, j, dcr[j], cdir) + dcn[j];
        dr[j] = dct * Gg[j];
        dr[H + j] = dct * cpr[j];
        dr[2 * H + j] = dct * I[j];
        dcr[j] = cdir + dct * F[j];
      }
      act_backward_inplace(SIGMOID, dr, ar, 2 * H);
      act_backward_inplace(TANH, dr + 2 * H, ar + 2 * H, H);
      act_backward_inplace(SIGMOID, dr + 3 * H, ar + 3 * H, H);
      const T* uhr = uh + row * G;
      for (int64_t j = 0; j < G; ++j) {
        dGh[j] += dr[j] * uhr[j];
        dBh[j] += dr[j];
        dur[j] = dr[j] * gh[j];
      }
      ln0_backward(dur, uhr, rup[row], G);
    }
    gw.run(nr, dut + b0 * G, G, T(0), tmp.data(), H);
    add_masked_rows(dh.data(), tmp.data(), m, L, t, b0, b1, H);
  }
  });
  const int nt = std::max(team, 1);
  sum_parts(parts, nt, np, 0, dgh.data_ptr<T>(), G);
  sum_parts(parts, nt, np, G, dbh.data_ptr<T>(), G);
  sum_parts(parts, nt, np, 2 * G, dgc.data_ptr<T>(), H);
  sum_parts(parts, nt, np, 2 * G + H, dbc.data_ptr<T>(), H);
  std::vector<T> hm;
  const T* hin = masked_steps(m, h, hm, S, B * H);
  gemm(true, false, G, H, S * B, T(1), du.get(), G, hin, H, T(0), dw.data_ptr<T>(), H);
  T* d0 = dh0.data_ptr<T>();
  T* e0 = dc0.data_ptr<T>();
  for (int64_t k = 0; k < B * H; ++k) {
    d0[k] = dh[k] + Gh[k];
    e0[k] = dc[k] + Gc[k];
  }
}

std::vector<Tensor> ln_lstm_backward(const Tensor& grad_hs, const Tensor& grad_cs,
                                     const Tensor& hs, const Tensor& cs, const Tensor& gates,
                                     const Tensor& uhat, const Tensor& ru, const Tensor& chat,
                                     const Tensor& rc, const Tensor& tc, const Tensor& w_hh,
                                     const Tensor& g_hh, const Tensor& g_c, const Tensor& mask_h,
                                     const Tensor& keep_h, const Tensor& keep_c,
                                     const Tensor& lengths) {
  read_switches();
  auto gh_ = grad_hs.contiguous();
  auto gc_ = grad_cs.contiguous();
  auto h = hs.contiguous();
  auto c = cs.contiguous();
  auto a = gates.contiguous();
  auto uh = uhat.contiguous();
  auto ru_ = ru.contiguous();
  auto ch = chat.contiguous();
  auto rc_ = rc.contiguous();
  auto t_ = tc.contiguous();
  auto w = w_hh.contiguous();
  auto ghh = g_hh.contiguous();
  auto gc = g_c.contiguous();
  auto m = mask_h.contiguous();
  auto zh = keep_h.contiguous();
  auto zc = keep_c.contiguous();
  const int64_t S = a.size(0), B = a.size(1), H = a.size(2) / 4;
  Lengths L(lengths, B, S);
  Tensor dgx = empty_like_shape(h, {S, B, 4 * H});
  Tensor dw = empty_like_shape(h, {4 * H, H});
  Tensor dgh = empty_like_shape(h, {4 * H});
  Tensor dbh = empty_like_shape(h, {4 * H});
  Tensor dgc = empty_like_shape(h, {H});
  Tensor dbc = empty_like_shape(h, {H});
  Tensor dh0 = empty_like_shape(h, {B, H});
  Tensor dc0 = empty_like_shape(h, {B, H});
  AT_DISPATCH_FLOATING_TYPES(h.scalar_type(), "ln_lstm_backward", [&] {
    ln_lstm_bwd_impl<scalar_t>(gh_, gc_, h, c, a, uh, ru_, ch, rc_, t_, w, ghh, gc, m, zh, zc,
                               dgx, dw, dgh, dbh, dgc, dbc, dh0, dc0, L);
  });
  return {dgx, dw, dgh, dbh, dgc, dbc, dh0, dc0};
}

// ------------------------------------------------------------------------ LN-GRU ----
// after:  gh = g_h ⊙ LN0(U hin) + b_h (3H);  n = tanh(x_n + r ⊙ gh_n)
// before: gh_rz = g ⊙ LN0(U_rz hin) + b (2H);  n = tanh(x_n + g ⊙ LN0(U_n (r ⊙ hin)) + b)
// x = gx(t) as given, or with g_x: x = g_x ⊙ LN0(gx(t)) + b_x, the input norm of the raw
// projection W x (3H) done here, row by row, while the row is in cache (not recurrent: every
// row of every step independent; the thread that owns the row normalises it)
// saved: gates r, z, n (S, B, 3H); uhat (S, B, 3H) the LN0 outputs; ru (S, B, 2) their 1/σ
// (one for "after"); q (S, B, H) r ⊙ hin ("before"); with g_x: xhat (S, B, 3H) LN0(gx), rx
// (S, B) its 1/σ
template <typename T>
static void ln_gru_fwd_impl(const Tensor& gx, const Tensor& whh, const Tensor& ghh,
                            const Tensor& bhh, const Tensor& mask, const Tensor& zh,
                            const Tensor& gxg, const Tensor& gxb, Tensor& hs, Tensor& gates,
                            Tensor& uhat, Tensor& ru, Tensor& qs, Tensor& xhat, Tensor& rx,
                            const Lengths& L, bool before, double eps) {
  const int64_t S = gx.size(0), B = gx.size(1), H = gx.size(2) / 3, G = 3 * H;
  const T* g = gx.data_ptr<T>();
  const T* W = whh.data_ptr<T>();
  const T* gh = ghh.data_ptr<T>();
  const T* bh = reg_ptr<T>(bhh);
  const T* m = reg_ptr<T>(mask);
  const T* dz_ = reg_ptr<T>(zh);
  T* h = hs.data_ptr<T>();
  T* a = gates.data_ptr<T>();
  T* uh = uhat.data_ptr<T>();
  T* rup = ru.data_ptr<T>();
  T* q = qs.data_ptr<T>();
  const T* gX = reg_ptr<T>(gxg);
  const T* bX = reg_ptr<T>(gxb);
  T* xh = gX ? xhat.data_ptr<T>() : nullptr;
  T* rxp = gX ? rx.data_ptr<T>() : nullptr;
  auto b = [&](int64_t j) { return bh ? bh[j] : T(0); };
  const StepGemm<T> g3(B, before ? 2 * H : G, H, W, H, true);
  const StepGemm<T> gn(B, before ? H : 0, H, W + 2 * H * H, H, true);
  over_rows(ln_team(B, H, G), B, [&](int64_t b0, int64_t b1, int) {
  const int64_t nr = b1 - b0;
  std::vector<T> hin(m ? nr * H : 0), u(nr * G), v(nr * H), xs(gX ? nr * G : 0);
  // row r's input pre-activation: gx itself, or its normalisation (in xs, written below)
  auto x_of = [&](int64_t r, int64_t row) -> const T* {
    return gX ? xs.data() + (r - b0) * G : g + row * G;
  };
  for (int64_t t = 0; t < S; ++t) {
    const T* hp = h + t * B * H;
    T* ht = h + (t + 1) * B * H;
    const T* src = masked(m ? m + b0 * H : nullptr, hp + b0 * H, hin, nr * H);
    const int64_t NG = before ? 2 * H : G;
    g3.run(nr, src, H, T(0), u.data(), G);
    for (int64_t r = b0; r < b1; ++r) {
      const int64_t row = t * B + r;
      T* uhr = uh + row * G;
      rup[row * 2] = ln0(u.data() + (r - b0) * G, uhr, NG, eps);
      T* ar = a + row * G;
      if (gX) {
        T* xhr = xh + row * G;
        T* xsr = xs.data() + (r - b0) * G;
        rxp[row] = ln0(g + row * G, xhr, G, eps);
        for (int64_t j = 0; j < G; ++j) xsr[j] = gX[j] * xhr[j] + (bX ? bX[j] : T(0));
      }
      const T* xr = x_of(r, row);
      for (int64_t j = 0; j < 2 * H; ++j) ar[j] = xr[j] + gh[j] * uhr[j] + b(j);
      act_inplace(SIGMOID, ar, 2 * H);
      if (before) {
        for (int64_t j = 0; j < H; ++j) q[row * H + j] = ar[j] * src[(r - b0) * H + j];
      } else {
        for (int64_t j = 0; j < H; ++j)
          ar[2 * H + j] = xr[2 * H + j] + ar[j] * (gh[2 * H + j] * uhr[2 * H + j] + b(2 * H + j));
      }
    }
    if (before) {
      gn.run(nr, q + (t * B + b0) * H, H, T(0), v.data(), H);
      for (int64_t r = b0; r < b1; ++r) {
        const int64_t row = t * B + r;
        T* uhr = uh + row * G;
        rup[row * 2 + 1] = ln0(v.data() + (r - b0) * H, uhr + 2 * H, H, eps);
        T* ar = a + row * G;
        const T* xr = x_of(r, row);
        for (int64_t j = 0; j < H; ++j)
          ar[2 * H + j] = xr[2 * H + j] + gh[2 * H + j] * uhr[2 * H + j] + b(2 * H + j);
      }
    }
    const T* zt = step_of(dz_, t, B * H);
    for (int64_t r = b0; r < b1; ++r) {
      T* ar = a + (t * B + r) * G;
      act_inplace(TANH, ar + 2 * H, H);
      gru_tail_row(L.valid(r, t), ar + H, ar + 2 * H, step_of(zt, r, H), hp + r * H, ht + r * H, H);
    }
  }
  });
}

std::vector<Tensor> ln_gru_forward(const Tensor& gx, const Tensor& w_hh, const Tensor& g_hh,
                                   const Tensor& b_hh, const Tensor& h0, const Tensor& mask_h,
                                   const Tensor& keep_h, const Tensor& lengths, bool before,
                                   double eps, const Tensor& g_x, const Tensor& b_x) {
  read_switches();
  auto g = gx.contiguous();
  auto w = w_hh.contiguous();
  auto gh = g_hh.contiguous();
  auto bh = b_hh.contiguous();
  auto m = mask_h.contiguous();
  auto zh = keep_h.contiguous();
  auto gX = g_x.contiguous();
  auto bX = b_x.contiguous();
  const int64_t S = g.size(0), B = g.size(1), H = g.size(2) / 3;
  const bool norm_x = gX.numel() > 0;
  Lengths L(lengths, B, S);
  Tensor hs = empty_like_shape(g, {S + 1, B, H});
  Tensor gates = empty_like_shape(g, {S, B, 3 * H});
  Tensor uhat = empty_like_shape(g, {S, B, 3 * H});
  Tensor ru = at::zeros({S, B, 2}, g.options());
  Tensor q = before ? empty_like_shape(g, {S, B, H}) : at::zeros({S, B, H}, g.options());
  Tensor xhat = norm_x ? empty_like_shape(g, {S, B, 3 * H}) : empty_like_shape(g, {0});
  Tensor rx = norm_x ? empty_like_shape(g, {S, B}) : empty_like_shape(g, {0});
  hs[0].copy_(h0);
  AT_DISPATCH_FLOATING_TYPES(g.scalar_type(), "ln_gru_forward", [&] {
    ln_gru_fwd_impl<scalar_t>(g, w, gh, bh, m, zh, gX, bX, hs, gates, uhat, ru, q, xhat, rx, L,
                              before, eps);
  });
  return {hs, gates, uhat, ru, q, xhat, rx};
}

template <typename T>
static void ln_gru_bwd_impl(const Tensor& ghs, const Tensor& hs, const Tensor& gates,
                            const Tensor& uhat, const Tensor& ru, const Tensor& qs,
                            const Tensor& whh, const Tensor& ghh, const Tensor& bhh,
                            const Tensor& mask, const Tensor& zh, const Tensor& xhat,
                            const Tensor& rx, const Tensor& gxg, Tensor& dgx, Tensor& dw,
                            Tensor& dgh, Tensor& dbh, Tensor& dh0, Tensor& dgxg, Tensor& dgxb,
                            const Lengths& L, bool before) {
  const int64_t S = gates.size(0), B = gates.size(1), H = gates.size(2) / 3, G = 3 * H;
  const T* Gh = ghs.data_ptr<T>();
  const T* h = hs.data_ptr<T>();
  const T* a = gates.data_ptr<T>();
  const T* uh = uhat.data_ptr<T>();
  const T* rup = ru.data_ptr<T>();
  const T* q = qs.data_ptr<T>();
  const T* W = whh.data_ptr<T>();
  const T* gh = ghh.data_ptr<T>();
  const T* bh = reg_ptr<T>(bhh);
  const T* m = reg_ptr<T>(mask);
  const T* dz_ = reg_ptr<T>(zh);
  T* dg = dgx.data_ptr<T>();
  const T* gX = reg_ptr<T>(gxg);  // with the input norm: dgx is d(W x), through LN0 below
  const T* xh = gX ? xhat.data_ptr<T>() : nullptr;
  const T* rxp = gX ? rx.data_ptr<T>() : nullptr;
  // du (S, B, G): the gradient of the products before the gain, every element written below
  std::unique_ptr<T[]> du(new T[S * B * G]);
  std::vector<T> dh(B * H, T(0));
  std::vector<T> hm;
  const T* hin_all = masked_steps(m, h, hm, S, B * H);
  auto b = [&](int64_t j) { return bh ? bh[j] : T(0); };
  const StepGemm<T> gu(B, before ? H : 0, H, W + 2 * H * H, H, false);
  const StepGemm<T> gw(B, H, before ? 2 * H : G, W, H, false);
  const int team = ln_team(B, H, G);
  const int64_t np = gX ? 4 * G : 2 * G;  // a thread's partial dg_h, db_h (and dg_x, db_x)
  std::vector<T> parts(std::max(team, 1) * np, T(0));
  over_rows(team, B, [&](int64_t b0, int64_t b1, int tid) {
  const int64_t nr = b1 - b0;
  T* dGh = parts.data() + tid * np;
  T* dBh = dGh + G;
  T* dGx = dBh + G;
  T* dBx = dGx + G;
  std::vector<T> tmp(nr * H), dq(nr * H);
  for (int64_t t = S - 1; t >= 0; --t) {
    add_into(dh.data() + b0 * H, Gh + ((t + 1) * B + b0) * H, nr * H);
    const T* zt = step_of(dz_, t, B * H);
    const T* hint = hin_all + t * B * H;
    T* dut = du.get() + t * B * G;
    for (int64_t r = b0; r < b1; ++r) {
      const int64_t row = t * B + r;
      T* dr = dg + row * G;
      T* dur = dut + r * G;
      T* dhr = &dh[r * H];
      if (!L.valid(r, t)) {
        std::fill(dr, dr + G, T(0));
        std::fill(dur, dur + G, T(0));
        continue;
      }
      const T* ar = a + row * G;
      const T *R = ar, *Z = ar + H, *N = ar + 2 * H;
      const T* uhr = uh + row * G;
      const T* hpr = h + (t * B + r) * H;
      for (int64_t j = 0; j < H; ++j) {
        T dir;
        const T dht = zone_split(step_of(zt, r, H), j, dhr[j], dir);
        T dn = dht * (T(1) - Z[j]) * (T(1) - N[j] * N[j]);
        dr[2 * H + j] = dn;
        dr[H + j] = dht * (hpr[j] - N[j]) * Z[j] * (T(1) - Z[j]);
        dhr[j] = dir + dht * Z[j];
        if (!before) {
          T ghn = gh[2 * H + j] * uhr[2 * H + j] + b(2 * H + j);
          dr[j] = dn * ghn * R[j] * (T(1) - R[j]);
          dur[2 * H + j] = dn * R[j];  // d gh_n
        } else {
          dur[2 * H + j] = dn;  // d (g ⊙ v̂ + b)
        }
      }
      // the n block's normalisation: its gain and bias, then back through LN0
      for (int64_t j = 2 * H; j < G; ++j) {
        dGh[j] += dur[j] * uhr[j];
        dBh[j] += dur[j];
        dur[j] *= gh[j];
      }
      if (before) {
        ln0_backward(dur + 2 * H, uhr + 2 * H, rup[row * 2 + 1], H);
      }
    }
    if (before) {
      // dq = dv U_n;  dr = dq ⊙ hin;  the direct path dq ⊙ r into hin
      gu.run(nr, dut + b0 * G + 2 * H, G, T(0), dq.data(), H);
      for (int64_t r = b0; r < b1; ++r) {
        if (!L.valid(r, t)) continue;
        T* dr = dg + (t * B + r) * G;
        const T* R = a + (t * B + r) * G;
        for (int64_t j = 0; j < H; ++j)
          dr[j] = dq[(r - b0) * H + j] * hint[r * H + j] * R[j] * (T(1) - R[j]);
      }
    }
    for (int64_t r = b0; r < b1; ++r) {
      const int64_t row = t * B + r;
      if (!L.valid(r, t)) continue;
      T* dr = dg + row * G;
      T* dur = dut + r * G;
      const T* uhr = uh + row * G;
      for (int64_t j = 0; j < 2 * H; ++j) {
        dGh[j] += dr[j] * uhr[j];
        dBh[j] += dr[j];
        dur[j] = dr[j] * gh[j];
      }
      if (before) {
        ln0_backward(dur, uhr, rup[row * 2], 2 * H);
      } else {
        ln0_backward(dur, uhr, rup[row * 2], G);
      }
      if (gX) {  // dr complete: the input norm's gain and bias, then d(W x) through LN0
        const T* xhr = xh + row * G;
        for (int64_t j = 0; j < G; ++j) {
          dGx[j] += dr[j] * xhr[j];
          dBx[j] += dr[j];
          dr[j] *= gX[j];
        }
        ln0_backward(dr, xhr, rxp[row], G);
      }
    }
    gw.run(nr, dut + b0 * G, G, T(0), tmp.data(), H);
    if (before)  // the direct path dq ⊙ r into hin
      for (int64_t r = b0; r < b1; ++r) {
        const T* R = a + (t * B + r) * G;
        for (int64_t j = 0; j < H; ++j) tmp[(r - b0) * H + j] += dq[(r - b0) * H + j] * R[j];
      }
    add_masked_rows(dh.data(), tmp.data(), m, L, t, b0, b1, H);
  }
  });
  const int nt = std::max(team, 1);
  sum_parts(parts, nt, np, 0, dgh.data_ptr<T>(), G);
  sum_parts(parts, nt, np, G, dbh.data_ptr<T>(), G);
  if (gX) {
    sum_parts(parts, nt, np, 2 * G, dgxg.data_ptr<T>(), G);
    sum_parts(parts, nt, np, 3 * G, dgxb.data_ptr<T>(), G);
  }
  T* dW = dw.data_ptr<T>();
  if (!before) {
    gemm(true, false, G, H, S * B, T(1), du.get(), G, hin_all, H, T(0), dW, H);
  } else {
    gemm(true, false, 2 * H, H, S * B, T(1), du.get(), G, hin_all, H, T(0), dW, H);
    gemm(true, false, H, H, S * B, T(1), du.get() + 2 * H, G, q, H, T(0), dW + 2 * H * H, H);
  }
  T* d0 = dh0.data_ptr<T>();
  for (int64_t k = 0; k < B * H; ++k) d0[k] = dh[k] + Gh[k];
}

std::vector<Tensor> ln_gru_backward(const Tensor& grad_hs, const Tensor& hs, const Tensor& gates,
                                    const Tensor& uhat, const Tensor& ru, const Tensor& q,
                                    const Tensor& w_hh, const Tensor& g_hh, const Tensor& b_hh,
                                    const Tensor& mask_h, const Tensor& keep_h,
                                    const Tensor& lengths, bool before, const Tensor& xhat,
                                    const Tensor& rx, const Tensor& g_x) {
  read_switches();
  auto gh_ = grad_hs.contiguous();
  auto h = hs.contiguous();
  auto a = gates.contiguous();
  auto uh = uhat.contiguous();
  auto ru_ = ru.contiguous();
  auto q_ = q.contiguous();
  auto w = w_hh.contiguous();
  auto ghh = g_hh.contiguous();
  auto bhh = b_hh.contiguous();
  auto m = mask_h.contiguous();
  auto zh = keep_h.contiguous();
  auto xh = xhat.contiguous();
  auto rx_ = rx.contiguous();
  auto gX = g_x.contiguous();
  const int64_t S = a.size(0), B = a.size(1), H = a.size(2) / 3;
  const int64_t nx = gX.numel() > 0 ? 3 * H : 0;
  Lengths L(lengths, B, S);
  Tensor dgx = empty_like_shape(h, {S, B, 3 * H});
  Tensor dw = empty_like_shape(h, {3 * H, H});
  Tensor dgh = empty_like_shape(h, {3 * H});
  Tensor dbh = empty_like_shape(h, {3 * H});
  Tensor dh0 = empty_like_shape(h, {B, H});
  Tensor dgxg = empty_like_shape(h, {nx});
  Tensor dgxb = empty_like_shape(h, {nx});
  AT_DISPATCH_FLOATING_TYPES(h.scalar_type(), "ln_gru_backward", [&] {
    ln_gru_bwd_impl<scalar_t>(gh_, h, a, uh, ru_, q_, w, ghh, bhh, m, zh, xh, rx_, gX, dgx, dw,
                              dgh, dbh, dh0, dgxg, dgxb, L, before);
  });
  return {dgx, dw, dgh, dbh, dh0, dgxg, dgxb};
}

}  // namespace rnnlab
