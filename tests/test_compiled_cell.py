"""CompiledCell: the generated C++ loop against the reference loop, on a zoo of user cells.

Every case runs in float64 and compares outputs, the final state and the gradient of every
input (x, each initial-state field, each parameter) with the reference loop (``Recurrent`` of
the plain cell, which no kernel serves). Each test compiles into its own cache folder.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any, NamedTuple

import pytest
import torch
from torch import nn

from rnnlab import Recurrent
from rnnlab.bench import MinimalGatedUnit
from rnnlab.cells.base import Cell
from rnnlab.engine import CompiledCell

DT = torch.float64


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RNNLAB_CACHE_DIR", str(tmp_path / "cache"))


class H(NamedTuple):
    h: torch.Tensor


class HCM(NamedTuple):
    h: torch.Tensor
    c: torch.Tensor
    m: torch.Tensor


class _User(Cell):
    """A user cell: ``fn(self, x, state) -> (y, new_state)`` with modules made by ``build``."""

    def __init__(self, I, Hs, fn, build, State=H):  # type: ignore[no-untyped-def]
        super().__init__()
        self.input_size, self.hidden_size, self.output_size = I, Hs[0], Hs[0]
        self.State, self._sizes, self._fn = State, dict(zip(State._fields, Hs)), fn
        build(self)

    def state_sizes(self) -> dict[str, int]:
        return dict(self._sizes)

    def step(self, x: torch.Tensor, state: Any) -> tuple[torch.Tensor, Any]:
        return self._fn(self, x, state)

    def config(self) -> dict[str, Any]:
        return {}


def _min_gru(I: int, Hn: int) -> Cell:
    # minGRU (Feng et al. 2024): z = σ(W_z x), h̃ = W_h x, h' = (1 - z) h + z h̃; no GEMM on h
    def b(s):  # type: ignore[no-untyped-def]
        s.wz, s.wh = nn.Linear(I, Hn), nn.Linear(I, Hn)

    def f(s, x, st):  # type: ignore[no-untyped-def]
        z = torch.sigmoid(s.wz(x))
        h = (1 - z) * st.h + z * s.wh(x)
        return h, H(h)

    return _User(I, [Hn], f, b)


def _ind_rnn(I: int, Hn: int) -> Cell:
    # IndRNN (Li et al. 2018): h' = relu(W x + u ⊙ h + b); u is used pointwise
    def b(s):  # type: ignore[no-untyped-def]
        s.w = nn.Linear(I, Hn)
        s.u = nn.Parameter(torch.rand(Hn) * 0.9)

    def f(s, x, st):  # type: ignore[no-untyped-def]
        h = torch.relu(s.w(x) + s.u * st.h)
        return h, H(h)

    return _User(I, [Hn], f, b)


def _layer_norm(I: int, Hn: int) -> Cell:
    # h' = tanh(LN(W x + U h)) + 0.5 h: a reduction over H inside the loop, LN's gain and bias
    def b(s):  # type: ignore[no-untyped-def]
        s.w, s.u, s.ln = nn.Linear(I, Hn), nn.Linear(Hn, Hn, bias=False), nn.LayerNorm(Hn)
        nn.init.normal_(s.ln.weight)
        nn.init.normal_(s.ln.bias)

    def f(s, x, st):  # type: ignore[no-untyped-def]
        h = torch.tanh(s.ln(s.w(x) + s.u(st.h))) + 0.5 * st.h
        return h, H(h)

    return _User(I, [Hn], f, b)


def _two_gemms(I: int, Hn: int) -> Cell:
    # two independent recurrent GEMMs and an output that is not the state
    def b(s):  # type: ignore[no-untyped-def]
        s.w = nn.Linear(I, 2 * Hn)
        s.u1, s.u2 = nn.Linear(Hn, Hn), nn.Linear(Hn, Hn, bias=False)

    def f(s, x, st):  # type: ignore[no-untyped-def]
        a, c = s.w(x).chunk(2, dim=1)
        h = torch.tanh(a + s.u1(st.h)) * torch.sigmoid(c + s.u2(st.h))
        return h * h - st.h, H(h)

    return _User(I, [Hn], f, b)


def _three_fields(I: int, Hn: int) -> Cell:
    # an LSTM with a third state field m (a slow average of h), state sizes H, H, H
    def b(s):  # type: ignore[no-untyped-def]
        s.w, s.u = nn.Linear(I, 4 * Hn), nn.Linear(Hn, 4 * Hn, bias=False)
        s.v = nn.Parameter(torch.randn(4 * Hn) * 0.3)

    def f(s, x, st):  # type: ignore[no-untyped-def]
        i, fg, g, o = (s.w(x) + s.u(st.h) + s.v * torch.cat([st.m] * 4, 1)).chunk(4, 1)
        c = torch.sigmoid(fg) * st.c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        m = 0.9 * st.m + 0.1 * h
        return h, HCM(h, c, m)

    return _User(I, [Hn, Hn, Hn], f, b, State=HCM)


def _general(I: int, Hn: int) -> Cell:
    # rnnlab's GeneralCell around a module: the GEMM reads cat([h, x]), so x stays in the loop
    from rnnlab import GeneralCell

    class F(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = nn.Linear(Hn + I, Hn)

        def forward(self, h, x):  # type: ignore[no-untyped-def]
            return 0.5 * torch.tanh(self.lin(torch.cat([h, x], 1))) + 0.5 * h

    return GeneralCell(F(), input_size=I, state_size=Hn)


ZOO = {
    "mgu": lambda I, Hn: MinimalGatedUnit(I, Hn),
    "min_gru": _min_gru,
    "ind_rnn": _ind_rnn,
    "layer_norm": _layer_norm,
    "two_gemms": _two_gemms,
    "three_fields": _three_fields,
    "general_cell": _general,
}


def _compare(cell: Cell, B: int = 3, T: int = 6, lengths=None, reverse=False) -> CompiledCell:  # type: ignore[no-untyped-def]
    torch.manual_seed(1)
    cell = cell.to(DT)
    fast = CompiledCell(cell)
    x = torch.randn(B, T, cell.input_size, dtype=DT, requires_grad=True)
    s0 = cell.State(
        *(torch.randn(B, n, dtype=DT, requires_grad=True) for n in cell.state_sizes().values())
    )
    leaves = [x, *s0, *cell.parameters()]
    res = []
    for c in (cell, fast):
        y, s = Recurrent(c, reverse=reverse)(x, s0, lengths=lengths)
        w = torch.randn(y.shape, dtype=DT, generator=torch.Generator().manual_seed(2))
        loss = (w * y).sum() + sum(((k + 1) * f.sin()).sum() for k, f in enumerate(s))
        res.append((y, s, torch.autograd.grad(loss, leaves)))
    (y1, s1, g1), (y2, s2, g2) = res
    assert fast.last_fallback is None
    torch.testing.assert_close(y2, y1, rtol=1e-10, atol=1e-12)
    for a, b in zip(s2, s1):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    names = ["x", *(f"state.{f}" for f in cell.State._fields)]
    names += [n for n, _ in cell.named_parameters()]
    for n, a, b in zip(names, g2, g1):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-11, msg=lambda m, n=n: f"{n}: {m}")
    return fast


@pytest.mark.parametrize("name", list(ZOO))
def test_zoo_equals_reference_loop(name):
    fast = _compare(ZOO[name](4, 5))
    assert fast._plans, "the compiled loop was not used"


def test_lengths_and_reverse_equal_reference_loop():
    _compare(MinimalGatedUnit(4, 5), B=3, T=7, lengths=torch.tensor([7, 2, 5]), reverse=True)


def test_data_dependent_branch_falls_back_with_its_reason():
    def f(s, x, st):  # type: ignore[no-untyped-def]
        h = torch.tanh(s.w(x) + st.h)
        if h.sum() > 0:  # a Python branch on a value: no traced loop can follow it
            h = -h
        return h, H(h)

    cell = _User(3, [4], f, lambda s: setattr(s, "w", nn.Linear(3, 4))).to(DT)
    fast = CompiledCell(cell)
    x = torch.randn(2, 5, 3, dtype=DT)
    with pytest.warns(RuntimeWarning, match="reference loop instead, because .*data-dependent"):
        y2, _ = Recurrent(fast)(x)
    y1, _ = Recurrent(cell)(x)
    torch.testing.assert_close(y2, y1)
    assert "data-dependent" in (fast.last_fallback or "")


def test_float32_mgu_and_torch_func_grad():
    torch.manual_seed(0)
    cell = MinimalGatedUnit(4, 6)
    fast = Recurrent(CompiledCell(cell))
    x = torch.randn(2, 5, 4)
    y1, _ = Recurrent(cell)(x)
    torch.testing.assert_close(fast(x)[0], y1, rtol=1e-5, atol=1e-6)
    with torch.no_grad():  # the loop variant that saves nothing for a backward
        torch.testing.assert_close(fast(x)[0], y1, rtol=1e-5, atol=1e-6)

    def loss(x_):  # type: ignore[no-untyped-def]
        return fast(x_)[0].square().sum()

    g_func = torch.func.grad(loss)(x)
    xr = x.clone().requires_grad_()
    (g_ref,) = torch.autograd.grad(Recurrent(cell)(xr)[0].square().sum(), xr)
    torch.testing.assert_close(g_func, g_ref, rtol=1e-4, atol=1e-5)


def test_first_use_under_no_grad_still_gives_gradients():
    # the loop is generated at the first call; made under no_grad, its traced backward once
    # recorded no gradient (a cached backward of zeros for every later training call)
    torch.manual_seed(0)
    cell = MinimalGatedUnit(3, 5).to(DT)
    fast = Recurrent(CompiledCell(cell))
    x = torch.randn(2, 4, 3, dtype=DT)
    with torch.no_grad():
        fast(x)
    g2 = torch.autograd.grad(fast(x)[0].sum(), list(cell.parameters()))
    g1 = torch.autograd.grad(Recurrent(cell)(x)[0].sum(), list(cell.parameters()))
    for a, b in zip(g2, g1):
        torch.testing.assert_close(a, b)


def test_cached_loop_loads_in_a_new_process_without_tracing(tmp_path):
    cell_code = textwrap.dedent(
        """
        import sys, torch
        from rnnlab import Recurrent
        from rnnlab.bench import MinimalGatedUnit
        from rnnlab.engine import CompiledCell
        import rnnlab.engine.codegen.trace as tr
        if sys.argv[1] == "cached":
            def boom(*a, **k):
                raise AssertionError("traced on a cache hit")
            tr.trace = boom
        torch.manual_seed(0)
        cell = MinimalGatedUnit(3, 4).double()
        y, _ = Recurrent(CompiledCell(cell))(torch.randn(2, 5, 3, dtype=torch.float64))
        print("dynamo" if "torch._dynamo" in sys.modules else "no-dynamo",
              "inductor" if "torch._inductor" in sys.modules else "no-inductor")
        print(repr(y.sum().item()))
        """
    )
    script = tmp_path / "run.py"
    script.write_text(cell_code)
    env = {**os.environ, "RNNLAB_CACHE_DIR": str(tmp_path / "shared_cache")}
    env["PYTHONPATH"] = str(Path(__file__).parents[1] / "src")
    cold = subprocess.run([sys.executable, str(script), "cold"], env=env, capture_output=True,
                          text=True, timeout=120)  # fmt: skip
    assert cold.returncode == 0, cold.stderr
    assert "rnnlab: compiling MinimalGatedUnit" in cold.stderr
    hot = subprocess.run([sys.executable, str(script), "cached"], env=env, capture_output=True,
                         text=True, timeout=120)  # fmt: skip
    assert hot.returncode == 0, hot.stderr
    assert "compiling" not in hot.stderr
    assert hot.stdout.splitlines()[0] == "no-dynamo no-inductor"
    assert hot.stdout.splitlines()[1] == cold.stdout.splitlines()[1]
    files = list((tmp_path / "shared_cache" / "cells").iterdir())
    assert any(f.suffix == ".so" for f in files) and any(f.name == ".rnnlab-cache" for f in files)
    assert not any(f.name.endswith(".tmp") for f in files)


def test_export_sees_one_operator_and_matches():
    # torch.export (dynamo) traces the loop as one rnnlab_user.forward node through its fake
    torch.manual_seed(0)
    layer = Recurrent(CompiledCell(MinimalGatedUnit(3, 4)))
    x = torch.randn(2, 5, 3)
    y0, _ = Recurrent(layer.cell.cell)(x)

    class M(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.layer = layer

        def forward(self, x):  # type: ignore[no-untyped-def]
            return self.layer(x)[0]

    layer(x)  # compile the loop before the export traces it
    ep = torch.export.export(M(), (x,))
    ops = [str(n.target) for n in ep.graph.nodes if "rnnlab_user" in str(n.target)]
    assert ops == ["rnnlab_user.forward.default"]
    torch.testing.assert_close(ep.module()(x), y0, rtol=1e-5, atol=1e-6)


def test_input_part_that_mixes_rows_is_vmapped_over_time():
    # x - mean over the batch: the hoisted part must not see all T·B rows at once
    def f(s, x, st):  # type: ignore[no-untyped-def]
        h = torch.tanh(s.w(x - x.mean(0, keepdim=True)) + 0.5 * st.h)
        return h, H(h)

    fast = _compare(_User(3, [4], f, lambda s: setattr(s, "w", nn.Linear(3, 4))))
    assert fast._plans[(3, DT)].vmap_hoist


def test_a_step_symbolic_trace_cannot_key_is_compiled_but_not_cached(tmp_path):
    # a branch on a shape: fine for the traced loop (shapes are fixed), but symbolic_trace has
    # no key for it, so nothing is written to the cache folder
    def f(s, x, st):  # type: ignore[no-untyped-def]
        h = torch.tanh(s.w(x) + st.h) if x.shape[1] == 3 else st.h
        return h, H(h)

    _compare(_User(3, [4], f, lambda s: setattr(s, "w", nn.Linear(3, 4))))
    cells = tmp_path / "cache" / "cells"
    assert not cells.exists() or not any(p.suffix == ".so" for p in cells.iterdir())


def test_blas_threads_switch_keeps_results(monkeypatch):
    # RNNLAB_CC_BLAS_THREADS (an A/B switch for the benchmark) changes threads, not maths
    from rnnlab.engine.codegen import runtime

    monkeypatch.setenv("RNNLAB_CC_BLAS_THREADS", "1")
    monkeypatch.setattr(runtime, "_BLAS", runtime._blas_threads())
    assert runtime._BLAS is not None
    _compare(MinimalGatedUnit(4, 5))
