"""csrc/smallgemm.h, the small-M products of the per-step GEMMs, against torch.matmul.

The header is compiled on its own (g++, the flags of CompiledCell's loops) into a tiny library
that packs op(B) and multiplies; awkward sizes (rows not a multiple of the register tile,
columns not a multiple of a panel, strided and transposed operands, alpha and beta) in float32
and float64.
"""

from __future__ import annotations

import ctypes
import itertools
import subprocess

import pytest
import torch

from rnnlab.engine.codegen import cache

SRC = r"""
#include "smallgemm.h"
#include <vector>
template <typename T>
static void run(int ta, int tb, int M, int N, int K, T alpha, const T* A, int lda, const T* B,
                int ldb, T beta, T* C, int ldc) {
  std::vector<T> P(rnnlab_sg::packed_size<T>(N, K) + 1);
  rnnlab_sg::pack_b(tb != 0, N, K, B, ldb, P.data() + 1);  // + 1: an unaligned panel start
  rnnlab_sg::gemm_packed(ta != 0, M, N, K, alpha, A, lda, P.data() + 1, beta, C, ldc);
}
extern "C" void sg_f(int ta, int tb, int M, int N, int K, float alpha, const float* A, int lda,
                     const float* B, int ldb, float beta, float* C, int ldc) {
  run(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}
extern "C" void sg_d(int ta, int tb, int M, int N, int K, double alpha, const double* A, int lda,
                     const double* B, int ldb, double beta, double* C, int ldc) {
  run(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}
"""


@pytest.fixture(scope="module")
def lib(tmp_path_factory):
    d = tmp_path_factory.mktemp("sg")
    (d / "sg.cpp").write_text(SRC)
    inc = cache.SMALLGEMM_H.parent
    cmd = [cache.CXX, *cache.flags(), f"-I{inc}", str(d / "sg.cpp"), "-o", str(d / "sg.so")]
    subprocess.run(cmd, check=True, capture_output=True)
    return ctypes.CDLL(str(d / "sg.so"))


def _gemm(lib, ta, tb, M, N, K, alpha, beta, dtype):  # type: ignore[no-untyped-def]
    g = torch.Generator().manual_seed(M * 1000 + N * 10 + K)
    pad = 3  # leading dimensions larger than the rows: strided operands

    def mat(r, c):  # type: ignore[no-untyped-def]
        return torch.randn(r, c + pad, generator=g, dtype=dtype)[:, :c]

    a = mat(K, M) if ta else mat(M, K)
    b = mat(N, K) if tb else mat(K, N)
    c = mat(M, N)
    opa, opb = (a.t() if ta else a), (b.t() if tb else b)
    want = alpha * (opa.double() @ opb.double()) + beta * c.double()
    got_full = torch.full((M, N + pad), 7.0, dtype=dtype)
    got_full[:, :N] = c
    if beta == 0:
        got_full[:, :N] = float("nan")  # beta 0 must not read C
    fn, ct = (lib.sg_f, ctypes.c_float) if dtype == torch.float32 else (lib.sg_d, ctypes.c_double)
    p = ctypes.c_void_p
    fn(ta, tb, M, N, K, ct(alpha), p(a.data_ptr()), a.stride(0), p(b.data_ptr()), b.stride(0),
       ct(beta), p(got_full.data_ptr()), got_full.stride(0))  # fmt: skip
    got = got_full[:, :N]
    tol = dict(rtol=1e-5, atol=1e-5) if dtype == torch.float32 else dict(rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(got.double(), want, **tol)
    assert (got_full[:, N:] == 7.0).all()  # columns past N untouched


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_small_gemm_matches_matmul_on_awkward_sizes(lib, dtype):
    for M, N, K in itertools.product((1, 3, 8, 13, 32), (1, 17, 45, 128), (1, 7, 33)):
        _gemm(lib, 0, 1, M, N, K, 1.0, 0.0, dtype)
    for ta, tb in itertools.product((0, 1), repeat=2):
        _gemm(lib, ta, tb, 13, 45, 33, 0.5, 2.0, dtype)
        _gemm(lib, ta, tb, 8, 128, 128, 1.0, 1.0, dtype)
