"""The GPU engine's dispatch, checked without a GPU: which path a CUDA tensor takes
(``rnnlab.engine.gpu.plan`` and the registry's device hook, with the device check patched), and
the cuDNN path itself (torch's functional RNNs with the cell's weights) against the reference
loop and torch.nn on CPU. The last tests run only with CUDA (skipped cleanly otherwise)."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn as tnn
from torch.nn.utils.rnn import pack_padded_sequence

import rnnlab
from rnnlab.cells import ElmanCell, GRUCell, JordanCell, LSTMCell
from rnnlab.engine import registry
from rnnlab.engine.gpu import cudnn, dispatch, fused
from rnnlab.layers.recurrent import unroll

CUDA = torch.cuda.is_available()
F64 = torch.float64


@pytest.mark.parametrize(
    "make, lengths, want",
    [
        (lambda: ElmanCell(3, 4), False, "cudnn"),
        (lambda: ElmanCell(3, 4, activation="relu", bias=False), True, "cudnn"),
        (lambda: ElmanCell(3, 4, output_size=2), False, "triton"),
        (lambda: ElmanCell(3, 4, activation="sigmoid"), False, "triton"),
        (lambda: ElmanCell(3, 4, activation="elu"), False, None),
        (lambda: JordanCell(3, 4, 2), False, "triton"),
        (lambda: GRUCell(3, 4), True, "cudnn"),
        (lambda: GRUCell(3, 4, reset="before"), False, "triton"),
        (lambda: GRUCell(3, 4, reset="after", activation="relu"), False, None),
        (lambda: LSTMCell(3, 4), True, "cudnn"),
        (lambda: LSTMCell(3, 4, variant="V"), False, "triton"),
        (lambda: LSTMCell(3, 4, variant="FGR"), False, "triton"),
        (lambda: LSTMCell(3, 4, variant="CIFG"), True, "triton"),
        (lambda: LSTMCell(3, 4, proj_size=2), False, None),  # projection: the loop
    ],
)
def test_plan_names_the_path_a_cuda_run_takes(make: Any, lengths: bool, want: Any) -> None:
    cell = make()
    lens = torch.tensor([3, 2, 1]) if lengths else None
    if want == "triton" and not dispatch.triton_available():
        want = None
    assert dispatch.plan(cell, lens) == want


def test_a_subclass_is_never_dispatched() -> None:
    class MyGRU(GRUCell):
        pass

    assert dispatch.plan(MyGRU(3, 4)) is None
    assert not cudnn.torch_maths(MyGRU(3, 4))


def _random_state(cell: Any, B: int) -> Any:
    st = cell.initial_state(B, dtype=F64)
    return type(st)(*(torch.randn_like(s).requires_grad_() for s in st))


def _grads(y: Any, state: Any, inputs: list[torch.Tensor], seed: int = 1) -> list[Any]:
    gen = torch.Generator().manual_seed(seed)
    loss = (y * torch.randn(y.shape, generator=gen, dtype=y.dtype)).sum()
    for s in state:
        loss = loss + (s * torch.randn(s.shape, generator=gen, dtype=s.dtype)).sum()
    return list(torch.autograd.grad(loss, inputs))


@pytest.mark.parametrize(
    "make",
    [
        lambda: ElmanCell(3, 5),
        lambda: ElmanCell(3, 5, activation="relu", bias=False),
        lambda: GRUCell(3, 5),
        lambda: LSTMCell(3, 5),
        lambda: LSTMCell(3, 5, bias=False),
    ],
)
@pytest.mark.parametrize("padded", [False, True])
def test_cudnn_path_equals_reference_loop(make: Any, padded: bool) -> None:
    """Outputs (zero past each length), final states and every gradient, initial state
    included, in float64 on CPU (the same torch functions cuDNN sits behind on CUDA)."""
    torch.manual_seed(0)
    cell = make().double()
    x = torch.randn(4, 6, 3, dtype=F64, requires_grad=True)
    state = _random_state(cell, 4)
    lengths = torch.tensor([6, 2, 5, 1]) if padded else None
    y, final = cudnn.run(cell, x, state, lengths)
    with rnnlab.engine.disabled():
        ref = unroll(cell, x, state, lengths)
    torch.testing.assert_close(y, ref.output, rtol=0, atol=1e-12)
    for a, b in zip(final, ref.state):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)
    inputs = [x, *state, *cell.parameters()]
    for a, b in zip(_grads(y, final, inputs), _grads(ref.output, ref.state, inputs)):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-11)


@pytest.fixture
def as_if_cuda(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """Every tensor looks like a CUDA tensor to the registry; counts the paths taken."""
    calls = {"cudnn": 0, "triton": 0}
    run = cudnn.run

    def spy_cudnn(*a: Any) -> Any:
        calls["cudnn"] += 1
        return run(*a)

    def spy_fused(*a: Any) -> Any:
        calls["triton"] += 1
        return (
            None  # decline: the reference loop runs (no Triton on this CPU without the interpreter)
        )

    monkeypatch.setattr(registry, "_device_type", lambda x: "cuda")
    monkeypatch.setattr(cudnn, "run", spy_cudnn)
    monkeypatch.setattr(fused, "RUNNERS", {t: spy_fused for t in fused.RUNNERS})
    return calls


def _copy_torch(mod: Any, kind: type, **kw: Any) -> Any:
    ref = kind(mod.input_size, mod.hidden_size, mod.num_layers, **kw).double()
    ref.load_state_dict(mod.state_dict())
    return ref


@pytest.mark.parametrize(
    "ours, theirs, fn, kw",
    [
        (rnnlab.nn.RNN, tnn.RNN, "rnn_relu", {"nonlinearity": "relu"}),
        (rnnlab.nn.GRU, tnn.GRU, "gru", {"bidirectional": True}),
        (rnnlab.nn.LSTM, tnn.LSTM, "lstm", {"num_layers": 2, "bidirectional": True}),
        (rnnlab.nn.LSTM, tnn.LSTM, "lstm", {"num_layers": 3, "dropout": 0.5}),
    ],
)
def test_drop_ins_make_torchs_one_call_on_cuda(
    as_if_cuda: Any, monkeypatch: pytest.MonkeyPatch, ours: Any, theirs: Any, fn: str, kw: Any
) -> None:
    """With the device check patched, a plain drop-in makes torch.nn's call: torch's functional
    RNN once for all layers and directions (so cuDNN on CUDA), and equals torch.nn with the same
    weights, on a padded (packed) batch as well, in training with inter-layer dropout too (the
    same function draws the same masks from the same seed)."""
    calls = []
    real = getattr(torch, fn)
    monkeypatch.setattr(torch, fn, lambda *a: calls.append(1) or real(*a))
    torch.manual_seed(0)
    layers = kw.pop("num_layers", 1)
    mod = ours(3, 5, layers, **kw).double()
    ref = _copy_torch(mod, theirs, **kw)
    x = torch.randn(6, 4, 3, dtype=F64)  # (T, B, I)
    packed = pack_padded_sequence(x, torch.tensor([6, 3, 5, 1]), enforce_sorted=False)
    for inp in (x, packed):
        torch.manual_seed(1)
        out, h = mod(inp)
        torch.manual_seed(1)
        want, h_want = ref(inp)
        out = out.data if not isinstance(out, torch.Tensor) else out
        want = want.data if not isinstance(want, torch.Tensor) else want
        torch.testing.assert_close(out, want, rtol=0, atol=1e-12)
        hs = h if isinstance(h, tuple) else (h,)
        for a, b in zip(hs, h_want if isinstance(h_want, tuple) else (h_want,)):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-12)
    assert len(calls) == 2  # one per forward, whatever the layers and directions
    assert as_if_cuda == {"cudnn": 0, "triton": 0}


def test_drop_in_with_options_runs_layer_by_layer_on_cuda(as_if_cuda: Any) -> None:
    """Not torch's maths (peepholes): no whole-module call; each layer asks its own path."""
    torch.manual_seed(0)
    mod = rnnlab.nn.LSTM(3, 4, 2, peephole=True).double()
    x = torch.randn(5, 2, 3, dtype=F64)
    out, _ = mod(x)
    with rnnlab.engine.disabled():
        ref, _ = mod(x)
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-12)
    want = 2 if dispatch.triton_available() else 0
    assert as_if_cuda == {"cudnn": 0, "triton": want}


def test_whole_module_path_is_off_on_cpu_and_when_disabled(monkeypatch: pytest.MonkeyPatch) -> None:
    mod = rnnlab.nn.GRU(3, 4, 2)
    x = torch.randn(2, 5, 3)
    states = mod._initial(None, 2, x)
    assert cudnn.whole_module(mod, x, states, None) is None  # a CPU tensor
    monkeypatch.setattr(registry, "_device_type", lambda x: "cuda")
    assert cudnn.whole_module(mod, x, states, None) is not None
    with rnnlab.engine.disabled():
        assert cudnn.whole_module(mod, x, states, None) is None
    monkeypatch.setenv("RNNLAB_ENGINE", "0")
    assert cudnn.whole_module(mod, x, states, None) is None
    assert dispatch.plan(GRUCell(3, 4)) is None
    monkeypatch.delenv("RNNLAB_ENGINE")
    mod.recurrent_dropout = 0.3
    assert cudnn.whole_module(mod, x, states, None) is None  # training, variational masks
    mod.eval()
    assert cudnn.whole_module(mod, x, states, None) is not None


def test_lecture_cells_ask_for_the_fused_op_on_cuda(as_if_cuda: Any) -> None:
    torch.manual_seed(0)
    cell = GRUCell(3, 4, reset="before").double()
    x = torch.randn(2, 5, 3, dtype=F64)
    layer = rnnlab.layers.Recurrent(cell)
    y, _ = layer(x)  # the spy declines; the CPU kernel (a CPU tensor after all) runs instead
    with rnnlab.engine.disabled():
        ref, _ = layer(x)
    torch.testing.assert_close(y, ref, rtol=0, atol=1e-12)
    assert as_if_cuda == {"cudnn": 0, "triton": 1 if dispatch.triton_available() else 0}


def test_cpu_tensors_never_reach_the_gpu_paths(monkeypatch: pytest.MonkeyPatch) -> None:
    """CPU behaviour is unchanged: the device hook passes CPU tensors to the CPU kernels."""
    hit = []
    monkeypatch.setattr(cudnn, "run", lambda *a: hit.append(a))
    for cell in (ElmanCell(3, 4), GRUCell(3, 4), LSTMCell(3, 4, variant="V")):
        rnnlab.layers.Recurrent(cell)(torch.randn(2, 3, 3))
    rnnlab.nn.GRU(3, 4)(torch.randn(3, 2, 3))
    assert hit == []


def test_device_kernel_that_declines_falls_back_to_the_general_kernel(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    class Toy(ElmanCell):
        pass

    seen = []
    monkeypatch.setattr(registry, "_KERNELS", {})
    monkeypatch.setattr(registry, "_DEVICE_KERNELS", {})
    monkeypatch.setattr(registry, "_DISPATCH", {})
    registry.register(Toy, lambda *a: seen.append("general"))
    registry.register(Toy, lambda *a: seen.append("cuda"), device="cuda")
    kernel = registry.lookup(Toy(2, 3))
    assert kernel is not None
    x = torch.randn(1, 2, 2)
    kernel(Toy(2, 3), x, None, None)
    assert seen == ["general"]  # a CPU tensor: the device kernel is not asked
    monkeypatch.setattr(registry, "_device_type", lambda x: "cuda")
    kernel(Toy(2, 3), x, None, None)
    assert seen == ["general", "cuda", "general"]  # asked first; it declined (None)


def test_wrapping_what_lookup_returns_and_restoring_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """The spy pattern (tests/test_nn_reparam.py): wrap lookup(cell), register the wrapper,
    restore. No loop, the wrapper runs, and afterwards the registry is as before."""
    monkeypatch.setattr(registry, "_KERNELS", dict(registry._KERNELS))
    monkeypatch.setattr(registry, "_DISPATCH", dict(registry._DISPATCH))
    cell = ElmanCell(2, 3)
    original = registry.lookup(cell)
    assert original is not None
    calls = []

    def spy(*a: Any) -> Any:
        calls.append(1)
        return original(*a)

    registry.register(ElmanCell, spy)
    x = torch.randn(1, 2, 2)
    y, _ = rnnlab.layers.Recurrent(cell)(x)
    assert calls == [1]
    registry.register(ElmanCell, original)
    assert registry._KERNELS[ElmanCell] is getattr(original, "general", original)
    rnnlab.layers.Recurrent(cell)(x)
    assert calls == [1]


# ----------------------------------------------------------------------- with a GPU only ----
@pytest.mark.skipif(not CUDA, reason="needs a CUDA device")
@pytest.mark.parametrize("kind", ["RNN", "GRU", "LSTM"])
def test_on_cuda_drop_ins_equal_torch_nn_through_cudnn(kind: str, monkeypatch: Any) -> None:
    calls = []
    whole = cudnn.whole_module
    monkeypatch.setattr(cudnn, "whole_module", lambda *a: calls.append(whole(*a)) or calls[-1])
    torch.manual_seed(0)
    mod = getattr(rnnlab.nn, kind)(8, 16, 2, batch_first=True).cuda()
    ref = getattr(tnn, kind)(8, 16, 2, batch_first=True).cuda()
    ref.load_state_dict(mod.state_dict())
    x = torch.randn(4, 12, 8, device="cuda", requires_grad=True)
    out, _ = mod(x)
    want, _ = ref(x)
    torch.testing.assert_close(out, want, rtol=1e-5, atol=1e-6)
    (g,) = torch.autograd.grad(out.square().sum(), x)
    (g_want,) = torch.autograd.grad(want.square().sum(), x)
    torch.testing.assert_close(g, g_want, rtol=1e-4, atol=1e-5)
    assert len(calls) == 1 and calls[0] is not None  # the whole module in one cuDNN call


@pytest.mark.skipif(not (CUDA and dispatch.triton_available()), reason="needs CUDA and triton")
@pytest.mark.parametrize(
    "make", [lambda: GRUCell(8, 32, reset="before"), lambda: LSTMCell(8, 32, variant="V")]
)
def test_on_cuda_lecture_cells_run_the_fused_ops(make: Any) -> None:
    torch.manual_seed(0)
    cell = make().cuda()
    x = torch.randn(4, 12, 8, device="cuda", requires_grad=True)
    layer = rnnlab.layers.Recurrent(cell)
    y, _ = layer(x)
    with rnnlab.engine.disabled():
        ref, _ = layer(x)
    torch.testing.assert_close(y, ref, rtol=1e-4, atol=1e-5)
    (g,) = torch.autograd.grad(y.square().sum(), x)
    (g_ref,) = torch.autograd.grad(ref.square().sum(), x)
    torch.testing.assert_close(g, g_ref, rtol=1e-4, atol=1e-5)
