"""CompiledCell's row-split forward (codegen.rows): batch rows on 2 and 3 threads give what the
reference loop gives in float64 (outputs, final states, every gradient; with lengths and
reversed), which cells split, and that a step mixing its batch rows keeps one thread."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from rnnlab import Recurrent
from rnnlab.bench import MinimalGatedUnit
from rnnlab.engine import CompiledCell
from test_compiled_cell import DT, ZOO, H, _compare, _User

# the cells whose forward step never mixes batch rows (general_cell: cat([h, x]) is row-local
# too); none of the zoo mixes rows
SPLIT = set(ZOO)


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RNNLAB_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture(params=[2, 3], ids=["2-threads", "3-threads"])
def threads(request, monkeypatch):
    from rnnlab.engine.codegen import runtime

    monkeypatch.setattr(runtime, "ROWS", True)  # opt-in (RNNLAB_CC_ROWS=1)
    monkeypatch.setattr(runtime, "ROWS_MIN_MACS", 0)  # split these small calls too
    before = torch.get_num_threads()
    torch.set_num_threads(request.param)
    yield request.param
    torch.set_num_threads(before)


def _split(fast: CompiledCell) -> bool:
    (plan,) = fast._plans.values()
    return bool(plan.meta["split"])


@pytest.mark.parametrize("name", list(ZOO))
def test_row_split_zoo_equals_reference_loop(name, threads):
    fast = _compare(ZOO[name](4, 5), B=5)
    assert _split(fast) == (name in SPLIT)


def test_row_split_with_lengths_reversed_and_no_grad(threads):
    fast = _compare(MinimalGatedUnit(4, 5), B=5, T=7, lengths=torch.tensor([7, 2, 5, 1, 6]),
                    reverse=True)  # fmt: skip
    assert _split(fast)
    torch.manual_seed(0)
    cell = MinimalGatedUnit(4, 5).to(DT)
    x = torch.randn(5, 6, 4, dtype=DT)
    with torch.no_grad():  # the loop that saves nothing (rnnlab_infer), split likewise
        torch.testing.assert_close(Recurrent(CompiledCell(cell))(x)[0], Recurrent(cell)(x)[0])


def _mixing(kind: str) -> nn.Module:
    def b(s):  # type: ignore[no-untyped-def]
        s.w, s.u = nn.Linear(3, 4), nn.Linear(4, 4, bias=False)

    def f(s, x, st):  # type: ignore[no-untyped-def]
        h = torch.tanh(s.w(x) + s.u(st.h))
        if kind == "batch_mean":  # a reduction over the batch inside the step
            h = h - h.mean(0, keepdim=True)
        else:  # a product with a row-dependent right-hand side: (h hᵀ) h over the batch
            h = torch.tanh(h @ h.t() @ h * 0.1)
        return h, H(h)

    return _User(3, [4], f, b)


@pytest.mark.parametrize("kind", ["batch_mean", "gram"])
def test_a_step_that_mixes_batch_rows_keeps_one_thread(kind, threads):
    fast = _compare(_mixing(kind), B=4)
    assert not _split(fast)


def test_generated_forward_runs_row_ranges():
    from rnnlab.engine import compiled

    fast = CompiledCell(MinimalGatedUnit(4, 5).to(DT))
    with torch.enable_grad():
        src, meta = compiled._generate(fast, 5, DT)
    assert meta["split"]
    assert src.count("run_rows(5, 5,") == 2  # rnnlab_forward and rnnlab_infer
    assert "for (int i = r0; i < r1; ++i)" in src
