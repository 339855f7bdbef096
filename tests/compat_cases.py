"""The compatibility matrix's rows and columns: every built-in cell in each layer kind, and the
ten transforms a user applies to a model, each checked against an independent answer (the
reference loop under ``rnnlab.engine.disabled()`` in float64, or float64 for half precision).

Shared by tests/test_compat_matrix.py and scripts/compat_matrix.py (which also measures
torch.nn's own modules for the README's table).

Shapes: B batch, T time, I input (3), H hidden (5).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils._pytree import tree_leaves

import rnnlab
from cell_zoo import ZOO, I
from rnnlab import Bidirectional, ElmanCell, Recurrent, Stacked, engine
from rnnlab.cells import cell_from_config, cell_to_config

KINDS = ("recurrent", "stacked", "bidirectional")
DROPINS: dict[str, Callable[[], nn.Module]] = {
    "nn.RNN": lambda: rnnlab.nn.RNN(I, 5, 2, batch_first=True, bidirectional=True),
    "nn.GRU": lambda: rnnlab.nn.GRU(I, 5, 2, batch_first=True, bidirectional=True),
    "nn.LSTM": lambda: rnnlab.nn.LSTM(I, 5, 2, batch_first=True, bidirectional=True),
}
TORCH_NN: dict[str, Callable[[], nn.Module]] = {
    "torch.nn.RNN": lambda: nn.RNN(I, 5, batch_first=True),
    "torch.nn.GRU": lambda: nn.GRU(I, 5, batch_first=True),
    "torch.nn.LSTM": lambda: nn.LSTM(I, 5, batch_first=True),
    "torch.nn.GRU(2, bi)": lambda: nn.GRU(I, 5, 2, batch_first=True, bidirectional=True),
}
TRANSFORMS = (
    "compile",
    "export",
    "onnx",
    "bf16",
    "autocast",
    "fp16",
    "vmap",
    "jacrev",
    "func.grad",
    "double_backward",
)
HALF_TOL = {torch.bfloat16: 5e-2, torch.float16: 2e-2}


def _second(cell: Any) -> Any:
    """A second layer of the same cell type, fed by the first."""
    cfg = cell_to_config(cell)
    if "input_size" in cfg["args"]:
        cfg["args"]["input_size"] = cell.output_size
        return cell_from_config(cfg)
    return ElmanCell(cell.output_size, 4)


class Model(nn.Module):
    """A layer as a function of (x (B, T, I), lengths (B,)) -> (y, every final-state tensor)."""

    def __init__(self, layer: nn.Module, takes_lengths: bool) -> None:
        super().__init__()
        self.layer = layer
        self.takes_lengths = takes_lengths

    def forward(self, x: Tensor, lengths: Tensor) -> tuple[Tensor, ...]:
        if self.takes_lengths:
            y, s = self.layer(x, lengths=lengths)
        else:
            y, s = self.layer(x)
        return (y, *tree_leaves(s))


def make(kind: str, name: str, seed: int = 0) -> Model:
    """Row ``name`` (a cell of tests/cell_zoo.py or a drop-in) in layer ``kind``, float64."""
    torch.manual_seed(seed)
    if name in DROPINS:
        return Model(DROPINS[name](), False).double()
    if name in TORCH_NN:
        return Model(TORCH_NN[name](), False).double()
    cell = ZOO[name]()
    if kind == "recurrent":
        layer: nn.Module = Recurrent(cell)
    elif kind == "stacked":
        layer = Stacked([Recurrent(cell), Recurrent(_second(cell))])
    else:
        layer = Bidirectional(Recurrent(cell))
    return Model(layer, True).double()


def rows() -> list[tuple[str, str]]:
    """Every (kind, name): each built-in cell in each layer kind, then the drop-ins."""
    return [(k, n) for k in KINDS for n in ZOO] + [("dropin", n) for n in DROPINS]


def inputs(B: int = 2, T: int = 3, seed: int = 1) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, T, I, generator=g, dtype=torch.float64)
    lengths = torch.full((B,), T, dtype=torch.int64)
    lengths[-1] = max(1, T - 2)  # one short sequence: the kernels' lengths paths
    return x, lengths


@contextlib.contextmanager
def reference() -> Iterator[None]:
    with engine.disabled():
        yield


def _close(a: Any, b: Any, tol: float) -> bool:
    la, lb = tree_leaves(a), tree_leaves(b)
    return len(la) == len(lb) and all(
        u.shape == v.shape and bool((u.double() - v.double()).abs().max() <= tol)
        for u, v in zip(la, lb)
    )


def _loss(out: tuple[Tensor, ...]) -> Tensor:
    # weights every output and state differently, so that no gradient path cancels
    return sum(((o.double() * (k + 1)).sin()).sum() for k, o in enumerate(out))  # type: ignore[return-value]


def check(model: Model, transform: str, tol: float = 1e-10) -> bool:
    """Whether ``model`` under ``transform`` (eager transforms only: compile, export and onnx
    are checked per kind on a shared module) equals the reference loop."""
    x, lengths = inputs()
    if transform in ("bf16", "fp16"):
        dtype = torch.bfloat16 if transform == "bf16" else torch.float16
        with reference():
            want = model(x, lengths)
        half = _copy(model).to(dtype)
        got = half(x.to(dtype), lengths)
        return all(g.dtype == dtype for g in got) and _close(got, want, HALF_TOL[dtype])
    if transform == "autocast":
        with reference():
            want = model(x, lengths)
        m32 = _copy(model).float()
        xf = x.float().requires_grad_()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            got = m32(xf, lengths)
        _loss(got).backward()  # and the backward runs
        return xf.grad is not None and _close(got, want, HALF_TOL[torch.bfloat16])
    if transform == "vmap":
        xs = torch.stack([x, x.flip(1) * 0.5])  # (V, B, T, I)
        got = torch.vmap(lambda v: model(v, lengths))(xs)
        with reference():
            want = tuple(torch.stack(o) for o in zip(*(model(v, lengths) for v in xs)))
        return _close(got, want, tol)
    if transform == "jacrev":

        def f(v: Tensor) -> tuple[Tensor, ...]:
            return model(v, lengths)

        got = torch.func.jacrev(f)(x)
        with reference():
            want = torch.func.jacrev(f)(x)
        return _close(got, want, tol)
    params = {k: p.detach() for k, p in model.named_parameters()}
    if transform == "func.grad":

        def loss(p: dict[str, Tensor], v: Tensor) -> Tensor:
            return _loss(torch.func.functional_call(model, p, (v, lengths)))

        got = torch.func.grad(loss, argnums=(0, 1))(params, x)
        with reference():
            want = torch.func.grad(loss, argnums=(0, 1))(params, x)
        return _close(got, want, tol)
    if transform == "double_backward":

        def gg() -> tuple[Tensor, ...]:
            xr = x.clone().requires_grad_()
            (g,) = torch.autograd.grad(_loss(model(xr, lengths)), xr, create_graph=True)
            return torch.autograd.grad(g.pow(2).sum(), [xr, *model.parameters()])

        got = gg()
        with reference():
            want = gg()
        return _close(got, want, 1e-9)
    raise ValueError(f"transform: expected one of {TRANSFORMS}, got {transform!r}")


def _copy(model: Model) -> Model:
    import copy

    return copy.deepcopy(model)


class Bundle(nn.Module):
    """Many models as one, so that one compile or export covers a whole layer kind."""

    def __init__(self, models: list[Model]) -> None:
        super().__init__()
        self.models = nn.ModuleList(models)

    def forward(self, x: Tensor, lengths: Tensor) -> tuple[Tensor, ...]:
        return tuple(o for m in self.models for o in m(x, lengths))
