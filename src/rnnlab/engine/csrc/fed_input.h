// Input feedback through a built-in linear readout, inside the kernel's time loop: one op call
// per sequence chunk for a one-layer autoregressive model (rnnlab.training.SequenceModel with
// feedback "input"). Per step t and sequence b:
//
//   s(t) = x(t)                                   if mask[t, b] (or t = 0 without y(-1))
//        = feed(y(t-1))                           else
//   h'(t) = cell(s(t), h(t-1))                    Elman, GRU (reset after / before), or LSTM
//                                                  (i, f, g, o; no peepholes: state h and c)
//   y(t) = W_r h'(t) + b_r  if t < length[b]      the linear readout
//        = b_r              else                  (past a length the core's output is zero, the
//                                                  layer contract, so y is the readout of zero)
//   h(t) = h'(t) if t < length[b] else h(t-1)     (past a length the state is held)
//
// feed: real values: y itself (I = O); tokens: the one-hot of argmax_k (y_k + noise[t, b, k])
// (noise empty: the plain argmax; the lowest index wins a tie, a NaN counts as the maximum, as
// torch.argmax). The noise is the Gumbel noise the caller drew up front (sampling by
// Gumbel-max, docs/design/0019), so the kernel and the Python reference make the same choice.
// The backward sends the gradient of s(t) to x(t) where the reference was fed and to y(t-1)
// elsewhere for real values unless `detach`; token feedback carries none.
// Python side: rnnlab/engine/fed_input.py.
#pragma once
#include <torch/library.h>

#include "common.h"

namespace rnnlab {
using at::Tensor;

enum FedCell : int64_t { FED_ELMAN = 0, FED_GRU_AFTER = 1, FED_GRU_BEFORE = 2, FED_LSTM = 3 };
inline int64_t fed_blocks(int64_t cell) { return cell == FED_ELMAN ? 1 : cell == FED_LSTM ? 4 : 3; }

template <typename T>
static int64_t fed_choice(const T* y, const T* n, int64_t O) {
  int64_t best = 0;
  T bv = n ? y[0] + n[0] : y[0];
  for (int64_t k = 1; k < O; ++k) {
    T v = n ? y[k] + n[k] : y[k];
    if (std::isnan(bv)) break;
    if (v > bv || std::isnan(v)) { bv = v; best = k; }
  }
  return best;
}

template <typename T>
static void fin_fwd_impl(const Tensor& xr, const Tensor& mask, const Tensor& y0,
                         const Tensor& noise, const Tensor& wih, const Tensor& bx,
                         const Tensor& whh, const Tensor& bh, const Tensor& wr, const Tensor& br,
                         Tensor& ys, Tensor& hs, Tensor& xs, Tensor& gates, Tensor& aux,
                         Tensor& hn, Tensor& cs, const Lengths& L, int64_t cell, int64_t act,
                         int64_t cact, int64_t feed) {
  const int64_t S = xr.size(0), B = xr.size(1), I = xr.size(2), H = hs.size(2), O = wr.size(0);
  const int64_t GH = fed_blocks(cell) * H;
  const bool has_y0 = y0.numel() > 0;
  const T* X = xr.data_ptr<T>();
  const bool* M = mask.data_ptr<bool>();
  const T* N = noise.numel() ? noise.data_ptr<T>() : nullptr;
  const T* Wi = wih.data_ptr<T>();
  const T* Bx = bx.numel() ? bx.data_ptr<T>() : nullptr;
  const T* Wh = whh.data_ptr<T>();
  const T* Bh = bh.numel() ? bh.data_ptr<T>() : nullptr;
  const T* Wr = wr.data_ptr<T>();
  const T* Br = br.numel() ? br.data_ptr<T>() : nullptr;
  const T* Y0 = has_y0 ? y0.data_ptr<T>() : nullptr;
  T* Y = ys.data_ptr<T>();
  T* Hs = hs.data_ptr<T>();
  T* Xs = xs.data_ptr<T>();
  T* Hn = hn.data_ptr<T>();
  std::vector<T> gx(B * GH), gh(B * GH);
  for (int64_t t = 0; t < S; ++t) {
    const T* yp = t == 0 ? Y0 : Y + (t - 1) * B * O;  // y(t-1), null at t = 0 without y0
    T* s = Xs + t * B * I;
    for (int64_t r = 0; r < B; ++r) {
      T* sr = s + r * I;
      if (!yp || M[t * B + r]) {
        std::memcpy(sr, X + (t * B + r) * I, sizeof(T) * I);
      } else if (feed == 0) {
        std::memcpy(sr, yp + r * O, sizeof(T) * I);
      } else {
        std::fill(sr, sr + I, T(0));
        sr[fed_choice(yp + r * O, N ? N + (t * B + r) * O : nullptr, O)] = T(1);
      }
    }
    for (int64_t r = 0; r < B; ++r)
      for (int64_t k = 0; k < GH; ++k) gx[r * GH + k] = Bx ? Bx[k] : T(0);
    gemm(false, true, B, GH, I, T(1), s, I, Wi, I, T(1), gx.data(), GH);
    const T* hp = Hs + t * B * H;
    T* ho = Hn + t * B * H;
    if (cell == FED_ELMAN) {
      std::memcpy(ho, gx.data(), sizeof(T) * B * H);
      gemm(false, true, B, H, H, T(1), hp, H, Wh, H, T(1), ho, H);
      act_inplace(act, ho, B * H);
    } else if (cell == FED_LSTM) {
      T* o = gates.data_ptr<T>() + t * B * GH;  // i, f, g, o
      T* a = aux.data_ptr<T>() + t * B * H;     // cact(c(t))
      const T* cp = cs.data_ptr<T>() + t * B * H;
      T* cc = cs.data_ptr<T>() + (t + 1) * B * H;
      std::memcpy(o, gx.data(), sizeof(T) * B * GH);
      gemm(false, true, B, GH, H, T(1), hp, H, Wh, H, T(1), o, GH);
      for (int64_t r = 0; r < B; ++r) {
        T* orow = o + r * GH;
        for (int64_t j = 0; j < 2 * H; ++j) orow[j] = sigmoid(orow[j]);
        for (int64_t j = 3 * H; j < 4 * H; ++j) orow[j] = sigmoid(orow[j]);
        act_inplace(act, orow + 2 * H, H);
        for (int64_t j = 0; j < H; ++j) {
          const T c = orow[H + j] * cp[r * H + j] + orow[j] * orow[2 * H + j];
          const T y = act_fwd(cact, c);
          a[r * H + j] = y;
          ho[r * H + j] = orow[3 * H + j] * y;
          cc[r * H + j] = L.valid(r, t) ? c : cp[r * H + j];
        }
      }
    } else {
      T* o = gates.data_ptr<T>() + t * B * GH;  // r, z, n
      T* a = aux.data_ptr<T>() + t * B * H;     // U_n h + b_hn (after), r ⊙ h (before)
      const int64_t nb = cell == FED_GRU_AFTER ? 3 : 2;
      for (int64_t r = 0; r < B; ++r)
        for (int64_t k = 0; k < nb * H; ++k) gh[r * nb * H + k] = Bh ? Bh[k] : T(0);
      gemm(false, true, B, nb * H, H, T(1), hp, H, Wh, H, T(1), gh.data(), nb * H);
      for (int64_t r = 0; r < B; ++r) {
        const T* xg = gx.data() + r * GH;
        const T* hg = gh.data() + r * nb * H;
        T* orow = o + r * GH;
        for (int64_t j = 0; j < 2 * H; ++j) orow[j] = sigmoid(xg[j] + hg[j]);
        for (int64_t j = 0; j < H; ++j) {
          if (cell == FED_GRU_AFTER) {
            a[r * H + j] = hg[2 * H + j];
            orow[2 * H + j] = xg[2 * H + j] + orow[j] * hg[2 * H + j];
          } else {
            a[r * H + j] = orow[j] * hp[r * H + j];
            orow[2 * H + j] = xg[2 * H + j];
          }
        }
      }
      if (cell == FED_GRU_BEFORE)  // n's pre-activation += (r ⊙ h) U_nᵀ
        gemm(false, true, B, H, H, T(1), a, H, Wh + 2 * H * H, H, T(1), o + 2 * H, GH);
      for (int64_t r = 0; r < B; ++r) {
        T* orow = o + r * GH;
        act_inplace(act, orow + 2 * H, H);
        for (int64_t j = 0; j < H; ++j) {
          T z = orow[H + j];
          ho[r * H + j] = z * hp[r * H + j] + (T(1) - z) * orow[2 * H + j];
        }
      }
    }
    T* yt = Y + t * B * O;
    for (int64_t r = 0; r < B; ++r)
      for (int64_t k = 0; k < O; ++k) yt[r * O + k] = Br ? Br[k] : T(0);
    gemm(false, true, B, O, H, T(1), ho, H, Wr, H, T(1), yt, O);
    for (int64_t r = 0; r < B; ++r)  // past the length: the readout of a zero output, b_r
      if (!L.valid(r, t))
        for (int64_t k = 0; k < O; ++k) yt[r * O + k] = Br ? Br[k] : T(0);
    T* hc = Hs + (t + 1) * B * H;
    for (int64_t r = 0; r < B; ++r)
      std::memcpy(hc + r * H, (L.valid(r, t) ? ho : hp) + r * H, sizeof(T) * H);
  }
}

// fed_input_forward(xr (S,B,I), mask (S,B) bool, y0 (B,O) or empty, noise (S,B,O) or empty,
//   w_ih (GH,I), bx (GH) or empty, w_hh (GH,H), bh (3H, GRU after) or empty, h0 (B,H),
//   c0 (B,H, LSTM) or empty, w_r (O,H), b_r (O) or empty, lengths, cell, act, cact, feed)
//   -> ys (S,B,O), hs (S+1,B,H), xs (S,B,I), gates (S,B,GH), aux (S,B,H), hn (S,B,H),
//      cs (S+1,B,H) (LSTM; else empty)
std::vector<Tensor> fed_input_forward(const Tensor& xr, const Tensor& mask, const Tensor& y0,
                                      const Tensor& noise, const Tensor& w_ih, const Tensor& bx,
                                      const Tensor& w_hh, const Tensor& bh, const Tensor& h0,
                                      const Tensor& c0, const Tensor& w_r, const Tensor& b_r,
                                      const Tensor& lengths, int64_t cell, int64_t act,
                                      int64_t cact, int64_t feed) {
  read_switches();
  auto X = xr.contiguous();
  auto M = mask.to(at::kBool).contiguous();
  auto Y0 = y0.contiguous();
  auto Nz = noise.contiguous();
  auto Wi = w_ih.contiguous(), Bx = bx.contiguous(), Wh = w_hh.contiguous();
  auto Bh = bh.contiguous(), Wr = w_r.contiguous(), Br = b_r.contiguous();
  const int64_t S = X.size(0), B = X.size(1), I = X.size(2), H = h0.size(1), O = Wr.size(0);
  const int64_t GH = fed_blocks(cell) * H;
  TORCH_CHECK(cell >= 0 && cell <= 3, "fed_input_forward: unknown cell code ", cell);
  TORCH_CHECK(Wi.size(0) == GH && Wi.size(1) == I, "fed_input_forward: w_ih is not (GH, I)");
  TORCH_CHECK(I == O, "fed_input_forward: the fed-back output needs I == O, got ", I, ", ", O);
  Lengths L(lengths, B, S);
  Tensor ys = empty_like_shape(X, {S, B, O});
  Tensor hs = empty_like_shape(X, {S + 1, B, H});
  Tensor xs = empty_like_shape(X, {S, B, I});
  Tensor gates = empty_like_shape(X, {cell == FED_ELMAN ? 0 : S, B, GH});  // post-activation
  Tensor aux = empty_like_shape(X, {cell == FED_ELMAN ? 0 : S, B, H});
  Tensor hn = empty_like_shape(X, {S, B, H});
  const bool lstm = cell == FED_LSTM;
  TORCH_CHECK(!lstm || c0.numel() == B * H, "fed_input_forward: the LSTM needs c0 (B, H)");
  Tensor cs = empty_like_shape(X, {lstm ? S + 1 : 0, B, H});
  hs[0].copy_(h0);
  if (lstm) cs[0].copy_(c0);
  AT_DISPATCH_FLOATING_TYPES(X.scalar_type(), "fed_input_forward", [&] {
    fin_fwd_impl<scalar_t>(X, M, Y0, Nz, Wi, Bx, Wh, Bh, Wr, Br, ys, hs, xs, gates, aux, hn, cs,
                           L, cell, act, cact, feed);
  });
  return {ys, hs, xs, gates, aux, hn, cs};
}

template <typename T>
static void fin_bwd_impl(const Tensor& gys, const Tensor& ghs, const Tensor& gcs,
                         const Tensor& cs, const Tensor& xs, const Tensor& hs,
                         const Tensor& hn, const Tensor& gates, const Tensor& aux,
                         const Tensor& mask, const Tensor& wih, const Tensor& whh,
                         const Tensor& wr, Tensor& dxr, Tensor& dy0, Tensor& dwih, Tensor& dbx,
                         Tensor& dwhh, Tensor& dbh, Tensor& dh0, Tensor& dc0, Tensor& dwr,
                         Tensor& dbr, const Lengths& L, bool has_y0, int64_t cell, int64_t act,
                         int64_t cact, int64_t feed, bool detach) {
  const int64_t S = xs.size(0), B = xs.size(1), I = xs.size(2), H = hs.size(2), O = wr.size(0);
  const int64_t GH = fed_blocks(cell) * H;
  const T* GY = gys.data_ptr<T>();
  const T* GHs = ghs.data_ptr<T>();
  const T* Xs = xs.data_ptr<T>();
  const T* Hs = hs.data_ptr<T>();
  const T* Hn = hn.data_ptr<T>();
  const bool* M = mask.data_ptr<bool>();
  const T* Wi = wih.data_ptr<T>();
  const T* Wh = whh.data_ptr<T>();
  const T* Wr = wr.data_ptr<T>();
  T* DX = dxr.data_ptr<T>();
  std::fill(DX, DX + S * B * I, T(0));
  T* DY0 = dy0.data_ptr<T>();
  std::fill(DY0, DY0 + B * O, T(0));
  const bool carry = feed == 0 && !detach;  // does s(t) pass gradient to y(t-1)?
  std::vector<T> dh(GHs + S * B * H, GHs + (S + 1) * B * H);  // d h(t), from step t + 1 on
  std::vector<T> dyc(B * O, T(0)), dY(S * B * O), dhn(B * H), dhp(B * H), ds(B * I);
  std::vector<T> dbr_sum(O, T(0));  // d b_r: every step's dy, past the lengths included
  std::vector<T> dgx(S * B * GH), dgh(cell == FED_GRU_AFTER ? S * B * GH : 0);
  std::vector<T> dA(cell == FED_GRU_BEFORE ? B * H : 0);
  const bool lstm = cell == FED_LSTM;
  const T* GCs = lstm ? gcs.data_ptr<T>() : nullptr;
  const T* Cs = lstm ? cs.data_ptr<T>() : nullptr;
  std::vector<T> dc(lstm ? B * H : 0);  // d c(t), from step t + 1 on
  if (lstm) std::memcpy(dc.data(), GCs + S * B * H, sizeof(T) * B * H);
  for (int64_t t = S - 1; t >= 0; --t) {
    T* dy = dY.data() + t * B * O;
    for (int64_t k = 0; k < B * O; ++k) dy[k] = GY[t * B * O + k] + dyc[k];
    for (int64_t r = 0; r < B; ++r) {
      for (int64_t o = 0; o < O; ++o) dbr_sum[o] += dy[r * O + o];
      if (!L.valid(r, t)) std::fill(dy + r * O, dy + (r + 1) * O, T(0));  // y = b_r: no more
    }
    gemm(false, false, B, H, O, T(1), dy, O, Wr, H, T(0), dhn.data(), H);  // dh' = dy W_r
    for (int64_t r = 0; r < B; ++r) {
      const bool v = L.valid(r, t);
      for (int64_t j = 0; j < H; ++j) {
        if (v) dhn[r * H + j] += dh[r * H + j];
        dhp[r * H + j] = v ? T(0) : dh[r * H + j];  // a held state passes its gradient on
      }
    }
    const T* hp = Hs + t * B * H;
    const T* ho = Hn + t * B * H;
    T* dg = dgx.data() + t * B * GH;
    if (cell == FED_ELMAN) {
      for (int64_t k = 0; k < B * H; ++k) dg[k] = dhn[k];
      act_backward_inplace(act, dg, ho, B * H);
      gemm(false, false, B, H, H, T(1), dg, H, Wh, H, T(1), dhp.data(), H);
    } else if (lstm) {
      const T* o = gates.data_ptr<T>() + t * B * GH;
      const T* a = aux.data_ptr<T>() + t * B * H;
      const T* cp = Cs + t * B * H;
      for (int64_t r = 0; r < B; ++r) {
        const T* orow = o + r * GH;
        T* drow = dg + r * GH;
        const bool v = L.valid(r, t);
        for (int64_t j = 0; j < H; ++j) {
          const T gi = orow[j], gf = orow[H + j], gg = orow[2 * H + j], go = orow[3 * H + j];
          const int64_t k = r * H + j;
          const T d = dhn[k], y = a[k];
          const T dcn = (v ? dc[k] : T(0)) + d * go * act_grad(cact, y);
          drow[3 * H + j] = d * y * go * (T(1) - go);
          drow[j] = dcn * gg * gi * (T(1) - gi);
          drow[H + j] = dcn * cp[k] * gf * (T(1) - gf);
          drow[2 * H + j] = dcn * gi * act_grad(act, gg);
          dc[k] = dcn * gf + (v ? T(0) : dc[k]) + GCs[t * B * H + k];
        }
      }
      gemm(false, false, B, H, GH, T(1), dg, GH, Wh, H, T(1), dhp.data(), H);
    } else {
      const T* o = gates.data_ptr<T>() + t * B * GH;
      const T* a = aux.data_ptr<T>() + t * B * H;
      for (int64_t r = 0; r < B; ++r) {
        const T* orow = o + r * GH;
        T* drow = dg + r * GH;
        for (int64_t j = 0; j < H; ++j) {
          const T rr = orow[j], z = orow[H + j], n = orow[2 * H + j], d = dhn[r * H + j];
          const T hv = hp[r * H + j];
          dhp[r * H + j] += d * z;
          drow[H + j] = d * (hv - n) * z * (T(1) - z);
          drow[2 * H + j] = d * (T(1) - z) * act_grad(act, n);
          if (cell == FED_GRU_AFTER) drow[j] = drow[2 * H + j] * a[r * H + j] * rr * (T(1) - rr);
        }
      }
      if (cell == FED_GRU_AFTER) {
        T* dgg = dgh.data() + t * B * GH;
        for (int64_t r = 0; r < B; ++r)
          for (int64_t j = 0; j < GH; ++j)
            dgg[r * GH + j] = j < 2 * H ? dg[r * GH + j] : dg[r * GH + j] * o[r * GH + j - 2 * H];
        gemm(false, false, B, H, GH, T(1), dgg, GH, Wh, H, T(1), dhp.data(), H);
      } else {
        // d(r ⊙ h) = dn U_n; r's gradient and h's share of it
        gemm(false, false, B, H, H, T(1), dg + 2 * H, GH, Wh + 2 * H * H, H, T(0), dA.data(), H);
        for (int64_t r = 0; r < B; ++r)
          for (int64_t j = 0; j < H; ++j) {
            const T rr = o[r * GH + j], da = dA[r * H + j];
            dg[r * GH + j] = da * hp[r * H + j] * rr * (T(1) - rr);
            dhp[r * H + j] += da * rr;
          }
        gemm(false, false, B, H, 2 * H, T(1), dg, GH, Wh, H, T(1), dhp.data(), H);
      }
    }
    gemm(false, false, B, I, GH, T(1), dg, GH, Wi, I, T(0), ds.data(), I);  // ds = dgx W_ih
    std::fill(dyc.begin(), dyc.end(), T(0));
    for (int64_t r = 0; r < B; ++r) {
      const T* d = ds.data() + r * I;
      if ((t == 0 && !has_y0) || M[t * B + r])
        std::memcpy(DX + (t * B + r) * I, d, sizeof(T) * I);
      else if (carry)
        std::memcpy(t == 0 ? DY0 + r * O : dyc.data() + r * O, d, sizeof(T) * O);
    }
    for (int64_t k = 0; k < B * H; ++k) dh[k] = dhp[k] + GHs[t * B * H + k];
  }
  std::memcpy(dh0.data_ptr<T>(), dh.data(), sizeof(T) * B * H);
  if (lstm) std::memcpy(dc0.data_ptr<T>(), dc.data(), sizeof(T) * B * H);
  const int SB = int(S * B);
  // weights: sums over all steps at once
  gemm(true, false, O, H, SB, T(1), dY.data(), O, Hn, H, T(0), dwr.data_ptr<T>(), H);
  gemm(true, false, GH, I, SB, T(1), dgx.data(), GH, Xs, I, T(0), dwih.data_ptr<T>(), I);
  T* Dbr = dbr.data_ptr<T>();
  T* Dbx = dbx.data_ptr<T>();
  T* Dbh = dbh.data_ptr<T>();
  std::copy(dbr_sum.begin(), dbr_sum.end(), Dbr);
  std::fill(Dbx, Dbx + GH, T(0));
  std::fill(Dbh, Dbh + dbh.numel(), T(0));
  for (int64_t k = 0; k < S * B; ++k)
    for (int64_t j = 0; j < GH; ++j) Dbx[j] += dgx[k * GH + j];
  T* Dwh = dwhh.data_ptr<T>();
  if (cell == FED_ELMAN || lstm) {
    gemm(true, false, GH, H, SB, T(1), dgx.data(), GH, Hs, H, T(0), Dwh, H);
  } else if (cell == FED_GRU_AFTER) {
    gemm(true, false, GH, H, SB, T(1), dgh.data(), GH, Hs, H, T(0), Dwh, H);
    for (int64_t k = 0; k < S * B; ++k)
      for (int64_t j = 0; j < GH; ++j) Dbh[j] += dgh[k * GH + j];
  } else {
    gemm(true, false, 2 * H, H, SB, T(1), dgx.data(), GH, Hs, H, T(0), Dwh, H);
    gemm(true, false, H, H, SB, T(1), dgx.data() + 2 * H, GH, aux.data_ptr<T>(), H, T(0),
         Dwh + 2 * H * H, H);
  }
}

// fed_input_backward(grad_ys (S,B,O), grad_hs (S+1,B,H), grad_cs (S+1,B,H) or empty, cs, xs,
//   hs, hn, gates, aux, mask, w_ih, w_hh, w_r, lengths, has_y0, cell, act, cact, feed, detach)
//   -> dxr (S,B,I), dy0 (B,O), dw_ih, dbx (GH), dw_hh, dbh (3H or 0), dh0 (B,H), dc0 (B,H or
//      0), dw_r, db_r (O)
std::vector<Tensor> fed_input_backward(const Tensor& grad_ys, const Tensor& grad_hs,
                                       const Tensor& grad_cs, const Tensor& cs, const Tensor& xs, const Tensor& hs, const Tensor& hn,
                                       const Tensor& gates, const Tensor& aux,
                                       const Tensor& mask, const Tensor& w_ih,
                                       const Tensor& w_hh, const Tensor& w_r,
                                       const Tensor& lengths, bool has_y0, int64_t cell,
                                       int64_t act, int64_t cact, int64_t feed, bool detach) {
  read_switches();
  auto GY = grad_ys.contiguous(), GHs = grad_hs.contiguous(), Xs = xs.contiguous();
  auto GCs = grad_cs.contiguous(), Cs = cs.contiguous();
  auto Hs = hs.contiguous(), Hn = hn.contiguous(), Gt = gates.contiguous(), Ax = aux.contiguous();
  auto M = mask.to(at::kBool).contiguous();
  auto Wi = w_ih.contiguous(), Wh = w_hh.contiguous(), Wr = w_r.contiguous();
  const int64_t S = Xs.size(0), B = Xs.size(1), I = Xs.size(2), H = Hs.size(2), O = Wr.size(0);
  const int64_t GH = fed_blocks(cell) * H;
  Lengths L(lengths, B, S);
  Tensor dxr = empty_like_shape(Xs, {S, B, I});
  Tensor dy0 = empty_like_shape(Xs, {B, O});
  Tensor dwih = empty_like_shape(Xs, {GH, I});
  Tensor dbx = empty_like_shape(Xs, {GH});
  Tensor dwhh = empty_like_shape(Xs, {GH, H});
  Tensor dbh = empty_like_shape(Xs, {cell == FED_GRU_AFTER ? GH : 0});
  Tensor dh0 = empty_like_shape(Xs, {B, H});
  Tensor dc0 = empty_like_shape(Xs, {cell == FED_LSTM ? B : 0, H});
  Tensor dwr = empty_like_shape(Xs, {O, H});
  Tensor dbr = empty_like_shape(Xs, {O});
  AT_DISPATCH_FLOATING_TYPES(Xs.scalar_type(), "fed_input_backward", [&] {
    fin_bwd_impl<scalar_t>(GY, GHs, GCs, Cs, Xs, Hs, Hn, Gt, Ax, M, Wi, Wh, Wr, dxr, dy0, dwih,
                           dbx, dwhh, dbh, dh0, dc0, dwr, dbr, L, has_y0, cell, act, cact, feed,
                           detach);
  });
  return {dxr, dy0, dwih, dbx, dwhh, dbh, dh0, dc0, dwr, dbr};
}

}  // namespace rnnlab

TORCH_LIBRARY_FRAGMENT(rnnlab_engine, m) {
  m.def("fed_input_forward(Tensor xr, Tensor mask, Tensor y0, Tensor noise, Tensor w_ih, Tensor bx, Tensor w_hh, Tensor bh, Tensor h0, Tensor c0, Tensor w_r, Tensor b_r, Tensor lengths, int cell, int act, int cact, int feed) -> Tensor[]");
  m.def("fed_input_backward(Tensor grad_ys, Tensor grad_hs, Tensor grad_cs, Tensor cs, Tensor xs, Tensor hs, Tensor hn, Tensor gates, Tensor aux, Tensor mask, Tensor w_ih, Tensor w_hh, Tensor w_r, Tensor lengths, bool has_y0, int cell, int act, int cact, int feed, bool detach) -> Tensor[]");
}

TORCH_LIBRARY_IMPL(rnnlab_engine, CPU, m) {
  m.impl("fed_input_forward", &rnnlab::fed_input_forward);
  m.impl("fed_input_backward", &rnnlab::fed_input_backward);
}
