// Small-M matrix products for the per-step GEMMs of a recurrence: C[M,N] = alpha A op(B) + beta C
// with M the batch rows (a handful) and op(B) a weight that stays the same for the whole loop.
//
// op(B) is packed once per loop into panels of NR = 2 vectors of columns, K rows each, so that
// one step streams each panel contiguously; a micro-tile of up to MR rows x NR columns lives in
// registers for the whole K loop (MR x 2 accumulators), the rows of A are broadcast one value at
// a time. Portable C++ with GCC/Clang vector extensions (vector width from the target: 64 bytes
// with AVX-512, else 32), no ATen and no other header of the project: kernels.cpp includes it,
// and CompiledCell's generator pastes it into its header-free sources. Row-major throughout.
#pragma once
#include <cstddef>
#include <cstring>

namespace rnnlab_sg {

#if defined(__AVX512F__)
constexpr int kVecBytes = 64;
constexpr int kMR = 8;  // 16 accumulators + 2 panel vectors + 1 broadcast of 32 registers
#else
constexpr int kVecBytes = 32;
constexpr int kMR = 6;  // 12 accumulators + 3 of 16 registers
#endif
// M up to which the packed product is used (above, BLAS's blocking wins)
constexpr int kMaxM = 32;

typedef float vf __attribute__((vector_size(kVecBytes)));
typedef double vd __attribute__((vector_size(kVecBytes)));
template <typename T> struct Vec;
template <> struct Vec<float> { typedef vf type; };
template <> struct Vec<double> { typedef vd type; };

template <typename T> constexpr int vl() { return kVecBytes / int(sizeof(T)); }
template <typename T> constexpr int nr() { return 2 * vl<T>(); }

// Elements of the packed op(B) (N columns, K rows): whole panels, zero-padded.
template <typename T> inline std::size_t packed_size(int N, int K) {
  return std::size_t((N + nr<T>() - 1) / nr<T>()) * nr<T>() * std::size_t(K);
}

// op(B)[k][n] = tb ? B[n*ldb + k] : B[k*ldb + n] into P: panel p, row k, column c at
// P[(p*K + k)*NR + c].
template <typename T> inline void pack_b(bool tb, int N, int K, const T* B, int ldb, T* P) {
  constexpr int NR = nr<T>();
  for (int p = 0; p * NR < N; ++p)
    for (int k = 0; k < K; ++k) {
      T* dst = P + (std::size_t(p) * K + k) * NR;
      for (int c = 0; c < NR; ++c) {
        const int n = p * NR + c;
        dst[c] = n < N ? (tb ? B[std::size_t(n) * ldb + k] : B[std::size_t(k) * ldb + n]) : T(0);
      }
    }
}

// One MR x NR tile (ncols <= NR of its columns stored): A(r, k) = A[r*sar + k*sak].
template <typename T, int MR>
inline void tile(int K, const T* A, int sar, int sak, const T* P, T alpha, T beta, T* C, int ldc,
                 int ncols) {
  typedef typename Vec<T>::type V;
  constexpr int L = vl<T>(), NR = nr<T>();
  V acc0[MR], acc1[MR];
  for (int r = 0; r < MR; ++r) {
    acc0[r] = V{} ;
    acc1[r] = V{};
  }
  for (int k = 0; k < K; ++k) {
    V b0, b1;
    std::memcpy(&b0, P + std::size_t(k) * NR, sizeof(V));
    std::memcpy(&b1, P + std::size_t(k) * NR + L, sizeof(V));
    for (int r = 0; r < MR; ++r) {
      const T a = A[r * sar + k * sak];
      acc0[r] += a * b0;
      acc1[r] += a * b1;
    }
  }
  for (int r = 0; r < MR; ++r) {
    T* c = C + std::size_t(r) * ldc;
    V o0 = alpha * acc0[r], o1 = alpha * acc1[r];
    if (ncols == NR) {
      if (beta != T(0)) {
        V c0, c1;
        std::memcpy(&c0, c, sizeof(V));
        std::memcpy(&c1, c + L, sizeof(V));
        o0 += beta * c0;
        o1 += beta * c1;
      }
      std::memcpy(c, &o0, sizeof(V));
      std::memcpy(c + L, &o1, sizeof(V));
    } else {
      T buf[NR];
      std::memcpy(buf, &o0, sizeof(V));
      std::memcpy(buf + L, &o1, sizeof(V));
      for (int j = 0; j < ncols; ++j) c[j] = buf[j] + (beta != T(0) ? beta * c[j] : T(0));
    }
  }
}

template <typename T, int MR>
inline void rows(int M, int K, const T* A, int sar, int sak, const T* P, T alpha, T beta, T* C,
                 int ldc, int ncols) {
  int m = 0;
  for (; m + MR <= M; m += MR)
    tile<T, MR>(K, A + m * sar, sar, sak, P, alpha, beta, C + std::size_t(m) * ldc, ldc, ncols);
  const T* a = A + m * sar;
  T* c = C + std::size_t(m) * ldc;
  switch (M - m) {  // the last rows, fewer than MR
#define RNNLAB_SG_TAIL(n) \
  case n: if (n < MR) tile<T, (n < MR ? n : 1)>(K, a, sar, sak, P, alpha, beta, c, ldc, ncols); break;
    RNNLAB_SG_TAIL(1) RNNLAB_SG_TAIL(2) RNNLAB_SG_TAIL(3) RNNLAB_SG_TAIL(4)
    RNNLAB_SG_TAIL(5) RNNLAB_SG_TAIL(6) RNNLAB_SG_TAIL(7)
#undef RNNLAB_SG_TAIL
    default: break;
  }
}

// C[M,N] = alpha op(A)[M,K] op(B)[K,N] + beta C with op(B) packed by pack_b; op(A)(m, k) is
// A[m*lda + k] (ta false) or A[k*lda + m]. beta == 0 never reads C.
template <typename T>
inline void gemm_packed(bool ta, int M, int N, int K, T alpha, const T* A, int lda, const T* P,
                        T beta, T* C, int ldc) {
  constexpr int NR = nr<T>();
  if (M <= 0 || N <= 0) return;
  const int sar = ta ? 1 : lda, sak = ta ? lda : 1;
  for (int p = 0; p * NR < N; ++p) {
    const int nc = N - p * NR < NR ? N - p * NR : NR;
    rows<T, kMR>(M, K, A, sar, sak, P + std::size_t(p) * K * NR, alpha, beta, C + p * NR, ldc, nc);
  }
}

}  // namespace rnnlab_sg
