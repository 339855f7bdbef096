// Zoneout's per-step keep draws from a counter-based generator (docs/design/0020-zoneout-draws.md).
//
// Philox4x32-10 (Salmon, Moraes, Dror & Shaw, "Parallel random numbers: as easy as 1, 2, 3",
// SC 2011): a keyed bijection of a 128-bit counter, ten rounds of two 32x32->64 multiplies,
// with the key bumped by the Weyl constants between rounds. Every output word is a pure
// function of (key, counter), so any split of the counters over threads gives the same words.
//
// zoneout_keep(keys (T,) int64, sizes [n_f], thresholds [thr_f], dtype) -> flat (T * sum n_f):
//   step t's words come from key = keys[t] (k0 its low, k1 its high 32 bits) and the counters
//   (b, 0, 0, 0), b = 0, 1, ...; word j = 4 b + lane is the step's j-th word, the fields laid
//   end to end in field order (field f owns words off_f .. off_f + n_f - 1);
//   keep = word < thr_f (thr_f = ceil(p_f 2^32), at most 2^32: the keep rate is thr_f / 2^32);
//   written field-major: field f is the (T, n_f) row-major block at T * off_f, so that each
//   field's keep weights are one contiguous slice (the kernels read (T, B, n) contiguous).
// philox4x32(ctr (N, 4) int64, key (N, 2) int64) -> (N, 4) int64: the block function itself,
//   words in [0, 2^32), for the known-answer tests.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <vector>

namespace rnnlab_draws {

constexpr uint32_t kM0 = 0xD2511F53u, kM1 = 0xCD9E8D57u;  // the round multipliers
constexpr uint32_t kW0 = 0x9E3779B9u, kW1 = 0xBB67AE85u;  // the key's Weyl increments
constexpr int kLanes = 16;  // blocks computed side by side (the loop over them vectorises)

// Ten Philox rounds on kLanes blocks in place: x[w][v] is word w of block v, one key for all.
static inline void philox_rounds(uint32_t x[4][kLanes], uint32_t k0, uint32_t k1) {
  for (int r = 0; r < 10; ++r) {
    if (r > 0) {
      k0 += kW0;
      k1 += kW1;
    }
#pragma omp simd
    for (int v = 0; v < kLanes; ++v) {
      const uint64_t p0 = static_cast<uint64_t>(kM0) * x[0][v];
      const uint64_t p1 = static_cast<uint64_t>(kM1) * x[2][v];
      const uint32_t y0 = static_cast<uint32_t>(p1 >> 32) ^ x[1][v] ^ k0;
      const uint32_t y2 = static_cast<uint32_t>(p0 >> 32) ^ x[3][v] ^ k1;
      x[0][v] = y0;
      x[1][v] = static_cast<uint32_t>(p1);
      x[2][v] = y2;
      x[3][v] = static_cast<uint32_t>(p0);
    }
  }
}

at::Tensor philox4x32(const at::Tensor& ctr, const at::Tensor& key) {
  TORCH_CHECK(ctr.dim() == 2 && ctr.size(1) == 4 && ctr.scalar_type() == at::kLong,
              "philox4x32: ctr: expected an (N, 4) int64 tensor, got ", ctr.sizes(), " ",
              ctr.scalar_type());
  TORCH_CHECK(key.dim() == 2 && key.size(1) == 2 && key.size(0) == ctr.size(0) &&
                  key.scalar_type() == at::kLong,
              "philox4x32: key: expected an (N, 2) int64 tensor, got ", key.sizes(), " ",
              key.scalar_type());
  auto c = ctr.contiguous();
  auto k = key.contiguous();
  const int64_t N = c.size(0);
  auto out = at::empty({N, 4}, c.options());
  const int64_t* cp = c.data_ptr<int64_t>();
  const int64_t* kp = k.data_ptr<int64_t>();
  int64_t* op = out.data_ptr<int64_t>();
  for (int64_t n = 0; n < N; ++n) {  // one block at a time through the lanes' code
    uint32_t x[4][kLanes] = {};
    for (int w = 0; w < 4; ++w) x[w][0] = static_cast<uint32_t>(cp[4 * n + w]);
    philox_rounds(x, static_cast<uint32_t>(kp[2 * n]), static_cast<uint32_t>(kp[2 * n + 1]));
    for (int w = 0; w < 4; ++w) op[4 * n + w] = static_cast<int64_t>(x[w][0]);
  }
  return out;
}

at::Tensor zoneout_keep(const at::Tensor& keys, at::IntArrayRef sizes,
                        at::IntArrayRef thresholds, at::ScalarType dtype) {
  TORCH_CHECK(keys.dim() == 1 && keys.scalar_type() == at::kLong && keys.device().is_cpu(),
              "zoneout_keep: keys: expected a (T,) int64 CPU tensor, got ", keys.sizes(), " ",
              keys.scalar_type(), " on ", keys.device());
  TORCH_CHECK(sizes.size() == thresholds.size(), "zoneout_keep: thresholds: expected ",
              sizes.size(), " (one per size), got ", thresholds.size());
  const int F = static_cast<int>(sizes.size());
  std::vector<int64_t> off(F + 1, 0);
  for (int f = 0; f < F; ++f) {
    TORCH_CHECK(sizes[f] >= 0, "zoneout_keep: sizes: expected >= 0, got ", sizes[f]);
    TORCH_CHECK(thresholds[f] >= 0 && thresholds[f] <= (int64_t(1) << 32),
                "zoneout_keep: thresholds: expected 0 .. 2^32, got ", thresholds[f]);
    off[f + 1] = off[f] + sizes[f];
  }
  // word < thr_f as a 32-bit compare: thr_f = 2^32 (p = 1) is "keep all"
  std::vector<uint32_t> thr32(F);
  std::vector<int> keep_all(F);
  for (int f = 0; f < F; ++f) {
    keep_all[f] = thresholds[f] == (int64_t(1) << 32);
    thr32[f] = keep_all[f] ? 0u : static_cast<uint32_t>(thresholds[f]);
  }
  auto kc = keys.contiguous();
  const int64_t T = kc.numel(), W = off[F];
  auto out = at::empty({T * W}, keys.options().dtype(dtype));
  if (T == 0 || W == 0) return out;
  const int64_t blocks = (W + 3) / 4;                   // Philox blocks per step
  const int64_t groups = (blocks + kLanes - 1) / kLanes;  // lane groups per step
  const int64_t* kp = kc.data_ptr<int64_t>();
  AT_DISPATCH_ALL_TYPES_AND3(at::kBool, at::kHalf, at::kBFloat16, dtype, "zoneout_keep", [&] {
    scalar_t* o = out.data_ptr<scalar_t>();
    // the counters split over threads as (step, lane group) ranges: same words for any split
    at::parallel_for(0, T * groups, 64, [&](int64_t begin, int64_t end) {
      uint32_t x[4][kLanes];
      uint32_t words[4 * kLanes];
      for (int64_t q = begin; q < end; ++q) {
        const int64_t t = q / groups, g = q % groups;
        const uint64_t key = static_cast<uint64_t>(kp[t]);
        for (int v = 0; v < kLanes; ++v) {
          x[0][v] = static_cast<uint32_t>(g * kLanes + v);
          x[1][v] = x[2][v] = x[3][v] = 0u;
        }
        philox_rounds(x, static_cast<uint32_t>(key), static_cast<uint32_t>(key >> 32));
        for (int v = 0; v < kLanes; ++v)
          for (int w = 0; w < 4; ++w) words[4 * v + w] = x[w][v];
        const int64_t j0 = g * 4 * kLanes, j1 = std::min<int64_t>(j0 + 4 * kLanes, W);
        for (int f = 0; f < F; ++f) {
          const int64_t lo = std::max(j0, off[f]), hi = std::min(j1, off[f + 1]);
          if (lo >= hi) continue;
          scalar_t* __restrict__ dst = o + T * off[f] + t * sizes[f] + (lo - off[f]);
          const uint32_t* __restrict__ src = words + (lo - j0);
          const int n = static_cast<int>(hi - lo);
          // branch-free (a data-dependent branch mispredicts at rate ~min(p, 1 - p)), so
          // that the compare and the conversion vectorise
          const uint32_t thr = thr32[f];
          const int all = keep_all[f];
          _Pragma("omp simd")  // (a #pragma cannot stand inside the dispatch macro)
          for (int j = 0; j < n; ++j)
            dst[j] = static_cast<scalar_t>(static_cast<int>(src[j] < thr) | all);
        }
      }
    });
  });
  return out;
}

}  // namespace rnnlab_draws

TORCH_LIBRARY_FRAGMENT(rnnlab_engine, m) {
  m.def("philox4x32(Tensor ctr, Tensor key) -> Tensor");
  m.def("zoneout_keep(Tensor keys, int[] sizes, int[] thresholds, ScalarType dtype) -> Tensor");
}

TORCH_LIBRARY_IMPL(rnnlab_engine, CPU, m) {
  m.impl("philox4x32", &rnnlab_draws::philox4x32);
  m.impl("zoneout_keep", &rnnlab_draws::zoneout_keep);
}
