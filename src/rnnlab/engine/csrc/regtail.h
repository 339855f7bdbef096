// The step pieces every regularised recurrence shares (regularised.h, layernorm.h and the
// Jordan kernel of regularised_jordan.h): the variational state mask on h(t-1), zoneout, the
// length freeze, and their backward. One place, so that the cells cannot drift apart.
//
//   hin(t-1) = m ⊙ h(t-1)                      (m (B, n): the per-sequence state mask, or 1)
//   s(t) = d(t) ⊙ s(t-1) + (1 - d(t)) ⊙ s̃(t)  (zoneout keep weights d (S, B, n), or 0)
//   s(t) = s(t-1) where the sequence has ended (Lengths)
#pragma once

namespace rnnlab {

// the data of an optional tensor argument (an absent one comes in empty): nullptr when absent
template <typename T>
static const T* reg_ptr(const Tensor& t) { return t.numel() ? t.data_ptr<T>() : nullptr; }

// step t's slice of n values of an optional (S, ...) buffer, or nullptr when absent
template <typename T>
static inline const T* step_of(const T* base, int64_t t, int64_t n) {
  return base ? base + t * n : nullptr;
}

// hin = m ⊙ hp (n values) into buf; hp itself without a mask
template <typename T>
static inline const T* masked(const T* m, const T* hp, std::vector<T>& buf, int64_t n) {
  if (!m) return hp;
  for (int64_t k = 0; k < n; ++k) buf[k] = m[k] * hp[k];
  return buf.data();
}

// every step's hin(t-1), t = 0..S-1, from h (S+1, B, H) with the same mask m (B, H) at each
// step (for the weight gradient, one GEMM after the loop); h itself without a mask
template <typename T>
static inline const T* masked_steps(const T* m, const T* h, std::vector<T>& buf, int64_t S,
                                    int64_t BH) {
  if (!m) return h;
  buf.resize(S * BH);
  for (int64_t t = 0; t < S; ++t)
    for (int64_t k = 0; k < BH; ++k) buf[t * BH + k] = m[k] * h[t * BH + k];
  return buf.data();
}

// the end of one row's step: zoneout (d: the row's keep weights, or nullptr), then the length
// freeze (s = prev where the sequence has ended)
template <typename T>
static inline void zone_row(const T* d, const T* prev, T* s, int64_t n) {
  if (d)
    for (int64_t j = 0; j < n; ++j) s[j] = d[j] * prev[j] + (T(1) - d[j]) * s[j];
}
template <typename T>
static inline void tail_row(bool valid, const T* d, const T* prev, T* s, int64_t n) {
  if (!valid) {
    std::memcpy(s, prev, sizeof(T) * n);
    return;
  }
  zone_row(d, prev, s, n);
}

// the GRU's step end for one row: s = z ⊙ prev + (1 - z) ⊙ n, then zoneout; a frozen row
// keeps prev
template <typename T>
static inline void gru_tail_row(bool valid, const T* Z, const T* N, const T* d, const T* prev,
                                T* s, int64_t n) {
  if (!valid) {
    std::memcpy(s, prev, sizeof(T) * n);
    return;
  }
  for (int64_t j = 0; j < n; ++j) s[j] = Z[j] * prev[j] + (T(1) - Z[j]) * N[j];
  zone_row(d, prev, s, n);
}

// zoneout's backward for one unit: the gradient g of s(t) splits into the direct part d g
// into s(t-1) (written to dir) and the part (1 - d) g into the candidate s̃(t) (returned)
template <typename T>
static inline T zone_split(const T* d, int64_t k, T g, T& dir) {
  if (!d) {
    dir = T(0);
    return g;
  }
  dir = d[k] * g;
  return (T(1) - d[k]) * g;
}

// the columns [u, u + w) of hin = m ⊙ h (h, m and buf (B, H)): one thread's hidden units in a
// unit-partitioned loop (common.h, note 0007), which all threads read after a barrier
template <typename T>
static inline void mask_cols(const T* m, const T* h, T* buf, int64_t B, int64_t H, int64_t u,
                             int64_t w) {
  for (int64_t r = 0; r < B; ++r)
    for (int64_t j = u; j < u + w; ++j) buf[r * H + j] = m[r * H + j] * h[r * H + j];
}

// dh(t-1) += m ⊙ dhin over the columns [u, u + w) of dh and m (B, H), for the rows still
// running at step t; dhin (B, ldin) holds those columns from its column 0 (the products'
// gradient: all H columns, or one thread's units in a unit-partitioned loop)
template <typename T>
static inline void add_masked_cols(T* dh, const T* dhin, int64_t ldin, const T* m,
                                   const Lengths& L, int64_t t, int64_t B, int64_t H, int64_t u,
                                   int64_t w) {
  for (int64_t r = 0; r < B; ++r) {
    if (!L.valid(r, t)) continue;
    const int64_t o = r * H + u;
    const T* g = dhin + r * ldin;
    if (m)
      for (int64_t j = 0; j < w; ++j) dh[o + j] += m[o + j] * g[j];
    else
      for (int64_t j = 0; j < w; ++j) dh[o + j] += g[j];
  }
}
// dh(t-1) += m ⊙ dhin for the rows still running at step t (all H columns)
template <typename T>
static inline void add_masked(T* dh, const T* dhin, const T* m, const Lengths& L, int64_t t,
                              int64_t B, int64_t H) {
  add_masked_cols(dh, dhin, H, m, L, t, B, H, 0, H);
}

// acc += g (n values): an output's gradient into the carried one
template <typename T>
static inline void add_into(T* acc, const T* g, int64_t n) {
  for (int64_t k = 0; k < n; ++k) acc[k] += g[k];
}

}  // namespace rnnlab
