"""RCL, recurrent MLP, RCNN-K and baselines (Liang & Hu 2015), and the CIFAR-10 reader.

The reference computations here are written from the paper's equations with explicit loops
over pixels and feature maps, independently of rnnlab's convolutions.
"""

from __future__ import annotations

import pickle
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from rnnlab.cells.conv import RCLCell, RCLState, RecurrentMLPCell, paper_lrn_size
from rnnlab.layers.rcl import _Normalization
from rnnlab.layers.rcnn import (
    RCL,
    RCNN,
    FeedForwardCNN,
    RecurrentMLP,
    build_model,
    count_parameters,
    wcnn_channels,
)

D = torch.float64


# --- the paper's equations, by hand -----------------------------------------------------------
def _patch_dot(w: torch.Tensor, inp: torch.Tensor) -> torch.Tensor:
    """sum over the k x k neighbourhood and input maps: (w_k)^T u^(i,j) for every (i, j, k)."""
    b, c, h, wd = inp.shape
    k = w.shape[-1]
    p = k // 2
    padded = torch.zeros(b, c, h + 2 * p, wd + 2 * p, dtype=inp.dtype)
    padded[:, :, p : p + h, p : p + wd] = inp
    out = torch.zeros(b, w.shape[0], h, wd, dtype=inp.dtype)
    for i in range(h):
        for j in range(wd):
            patch = padded[:, :, i : i + k, j : j + k]  # u^(i,j): (B, C, k, k)
            out[:, :, i, j] = torch.einsum("bcxy,kcxy->bk", patch, w)
    return out


def _lrn(f: torch.Tensor, n: int, alpha: float = 1e-3, beta: float = 0.75) -> torch.Tensor:
    """g(f_ijk) = f_ijk / (1 + α/N Σ_{k'=max(0,k-N/2)}^{min(K-1,k+N/2)} f_ijk'^2)^β (odd N)."""
    big_k = f.shape[1]
    out = torch.empty_like(f)
    for k in range(big_k):
        s = sum(f[:, j] ** 2 for j in range(max(0, k - n // 2), min(big_k - 1, k + n // 2) + 1))
        out[:, k] = f[:, k] / (1 + alpha / n * s) ** beta
    return out


def _rcl_by_hand(u, w_in, w_rec, b, steps, *, norm="lrn", input_at="all"):
    """x(0..T) of the RCL, written from Eqs. (1)-(4) of the paper."""
    n = paper_lrn_size(w_in.shape[0])

    def g_f(z):
        f = torch.clamp(z, min=0)
        return _lrn(f, n) if norm == "lrn" else f

    ff = _patch_dot(w_in, u) + b.view(1, -1, 1, 1)
    xs = [g_f(ff)]
    for _ in range(steps):
        rec = _patch_dot(w_rec, xs[-1])
        z = (ff if input_at == "all" else b.view(1, -1, 1, 1)) + rec
        xs.append(g_f(z))
    return xs


def _close(a, b, tol=1e-10):
    assert a.shape == b.shape
    torch.testing.assert_close(a, b, atol=tol, rtol=tol)


# --- RCL equations ----------------------------------------------------------------------------
@pytest.mark.parametrize("norm", ["lrn", "none"])
def test_rcl_cell_iterated_equals_hand_written_loop(norm):
    torch.manual_seed(0)
    cell = RCLCell(2, 16, norm=norm, dtype=D)  # N = 16/8 + 1 = 3
    u = torch.randn(2, 2, 5, 4, dtype=D)
    want = _rcl_by_hand(u, cell.weight_ih, cell.weight_hh, cell.bias, 3, norm=norm)
    state = cell.initial_state(2, size=(5, 4))
    for t in range(4):
        x, state = cell(u, state)
        assert isinstance(state, RCLState)
        _close(x, want[t])


@pytest.mark.parametrize("norm", ["lrn", "none"])
@pytest.mark.parametrize("input_at", ["all", "first"])
def test_rcl_layer_iterates_equal_hand_written_loop(norm, input_at):
    torch.manual_seed(1)
    layer = RCL(3, 16, steps=3, norm=norm, input_at=input_at, dtype=D)
    c = layer.cell
    u = torch.randn(2, 3, 4, 5, dtype=D)
    want = _rcl_by_hand(u, c.weight_ih, c.weight_hh, c.bias, 3, norm=norm, input_at=input_at)
    got = layer.iterates(u)
    assert len(got) == 4
    for a, b in zip(got, want):
        _close(a, b)
    _close(layer(u), want[-1])


def test_rcl_zero_state_is_the_feedforward_t0():
    torch.manual_seed(2)
    cell = RCLCell(3, 8, norm="none", dtype=D)
    u = torch.randn(1, 3, 4, 4, dtype=D)
    x0, _ = cell(u)  # no state: zeros
    _close(x0, torch.clamp(F.conv2d(u, cell.weight_ih, cell.bias, padding=1), min=0))


def test_rcl_layer_equals_cell_reference_with_gradients():
    """The fused fast path (drive once, in-place, fused ReLU+LRN) equals the readable cell."""
    torch.manual_seed(3)
    layer = RCL(3, 13, steps=3, dtype=D)  # N = 2: the even, asymmetric torch window
    u = torch.randn(2, 3, 5, 6, dtype=D, requires_grad=True)
    fast = layer.iterates(u)
    state, ref = layer.cell.initial_state(2, size=(5, 6), dtype=D), []
    for _ in range(4):
        x, state = layer.cell(u, state)
        ref.append(x)
    weights = [torch.randn_like(x) for x in ref]
    params = [u, *layer.parameters()]
    g_fast = torch.autograd.grad(sum((w * x).sum() for w, x in zip(weights, fast)), params)
    g_ref = torch.autograd.grad(sum((w * x).sum() for w, x in zip(weights, ref)), params)
    for a, b in zip(fast, ref):
        _close(a, b, 1e-12)
    for a, b in zip(g_fast, g_ref):
        _close(a, b, 1e-10)


def test_lrn_matches_torch_and_gradcheck():
    torch.manual_seed(4)
    z = torch.randn(2, 9, 3, 3, dtype=D) * 3
    for size, beta, k in ((3, 0.75, 1.0), (4, 0.6, 2.0)):
        norm = _Normalization(9, "lrn", lrn_size=size, lrn_alpha=0.7, lrn_beta=beta, lrn_k=k)
        norm = norm.to(D)
        want = F.local_response_norm(torch.relu(z), size, 0.7, beta, k)
        _close(norm(z), want, 1e-12)
        _close(norm(z.clone(), inplace=True), want, 1e-12)
        zz = z.clone().requires_grad_()
        assert torch.autograd.gradcheck(lambda a, n=norm: n(a), (zz,))
        assert torch.autograd.gradcheck(lambda a, n=norm: n(a * 1.0, inplace=True), (zz,))


def test_rcl_gradcheck_float64():
    torch.manual_seed(5)
    layer = RCL(2, 8, steps=2, dtype=D)
    u = torch.randn(1, 2, 3, 3, dtype=D, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a: layer(a), (u,))


# --- weight sharing ---------------------------------------------------------------------------
def test_recurrent_weights_are_shared_over_iterations():
    torch.manual_seed(6)
    layer = RCL(2, 8, steps=3, norm="none", dtype=D)
    names = sorted(n for n, _ in layer.named_parameters())
    assert names == ["cell.bias", "cell.weight_hh", "cell.weight_ih"]
    n_params = count_parameters(layer)
    assert all(count_parameters(RCL(2, 8, steps=t, norm="none")) == n_params for t in (0, 1, 7))

    # The shared kernel's gradient is the sum of the gradients of per-iteration copies.
    u = torch.randn(2, 2, 4, 4, dtype=D)
    layer(u).square().sum().backward()
    c = layer.cell
    copies = [c.weight_hh.detach().clone().requires_grad_() for _ in range(3)]
    ff = F.conv2d(u, c.weight_ih.detach(), c.bias.detach(), padding=1)
    x = torch.relu(ff)
    for w in copies:
        x = torch.relu(ff + F.conv2d(x, w, padding=1))
    x.square().sum().backward()
    _close(c.weight_hh.grad, sum(w.grad for w in copies), 1e-10)


# --- shapes -----------------------------------------------------------------------------------
@pytest.mark.parametrize("norm", ["lrn", "batch", "none"])
@pytest.mark.parametrize("steps", [0, 1, 3, 5])
def test_every_iterate_shape(norm, steps):
    layer = RCL(3, 8, steps=3, norm=norm)
    its = layer.iterates(torch.randn(2, 3, 6, 5), steps=steps)
    assert len(its) == steps + 1
    assert all(x.shape == (2, 8, 6, 5) for x in its)


def test_iterations_changeable_at_inference_and_batchnorm_per_iteration():
    torch.manual_seed(7)
    layer = RCL(3, 8, steps=2, norm="batch")
    assert len(layer.normalization.batch_norms) == 3  # one per iterate x(0), x(1), x(2)
    layer(torch.randn(4, 3, 5, 5))
    assert all(int(bn.num_batches_tracked) == 1 for bn in layer.normalization.batch_norms)
    layer.eval()
    assert layer(torch.randn(1, 3, 5, 5), steps=6).shape == (1, 8, 5, 5)
    net = RCNN(1, 10, 8, steps=3, image_size=12).eval()
    x = torch.randn(2, 1, 12, 12)
    assert net(x).shape == net(x, steps=0).shape == net(x, steps=6).shape == (2, 10)
    assert not torch.allclose(net(x, steps=0), net(x))


def test_batch_of_one_and_float64():
    net = RCNN(3, 5, 8, steps=1, dtype=D, channels_last=False).eval()
    assert net(torch.randn(1, 3, 9, 9, dtype=D)).dtype == D


def test_channels_last_equals_nchw():
    torch.manual_seed(8)
    a = RCNN(1, 10, 16, steps=2, norm="batch", channels_last=True)
    b = RCNN(1, 10, 16, steps=2, norm="batch", channels_last=False)
    b.load_state_dict(a.state_dict())
    x = torch.randn(3, 1, 14, 14)
    torch.testing.assert_close(a.eval()(x), b.eval()(x), atol=1e-4, rtol=1e-4)


# --- rCNN -------------------------------------------------------------------------------------
def test_rcnn_first_input_only_at_t0():
    torch.manual_seed(9)
    layer = RCL(3, 8, steps=3, norm="none", input_at="first", dtype=D)
    u1, u2 = torch.randn(2, 1, 3, 4, 4, dtype=D)
    # With the recurrent kernels at zero, the input cannot reach t >= 1: x(t) = relu(b).
    with torch.no_grad():
        layer.cell.weight_hh.zero_()
    its1, its2 = layer.iterates(u1), layer.iterates(u2)
    assert not torch.allclose(its1[0], its2[0])
    want = torch.relu(layer.cell.bias).view(1, -1, 1, 1).expand(1, 8, 4, 4)
    for t in (1, 2, 3):
        _close(its1[t], want)
        _close(its2[t], want)
    # The RCL proper keeps re-injecting u: x(t) = x(0) here.
    rcl = RCL(3, 8, steps=3, norm="none", dtype=D)
    rcl.load_state_dict(layer.state_dict())
    its = rcl.iterates(u1)
    for t in (1, 2, 3):
        _close(its[t], its[0])


def test_rcnn_first_gradient_reaches_u_only_through_x0():
    torch.manual_seed(10)
    layer = RCL(2, 8, steps=2, norm="none", input_at="first", dtype=D)
    u = torch.randn(1, 2, 4, 4, dtype=D, requires_grad=True)
    its = layer.iterates(u)
    (g_direct,) = torch.autograd.grad(its[2].sum(), its[0], retain_graph=True)
    (g_u,) = torch.autograd.grad(its[2].sum(), u)
    # chain rule through x(0) only: dL/du = conv^T(dL/dx0 * relu'(z0)), w^in
    z0 = F.conv2d(u.detach(), layer.cell.weight_ih, layer.cell.bias, padding=1)
    want = torch.nn.grad.conv2d_input(u.shape, layer.cell.weight_ih, g_direct * (z0 > 0), padding=1)
    _close(g_u, want)


# --- parameter counts -------------------------------------------------------------------------
@pytest.mark.parametrize(
    "in_channels,k,exact,paper_m",
    [
        (3, 96, 672_202, 0.67),
        (3, 128, 1_191_178, 1.19),
        (3, 160, 1_857_610, 1.86),
        (1, 32, 75_018, 0.08),
        (1, 64, 297_482, 0.30),
        (1, 96, 667_402, 0.67),
    ],
)
def test_paper_parameter_counts(in_channels, k, exact, paper_m):
    net = RCNN(in_channels, 10, k, norm="lrn", device="meta", channels_last=False)
    n = count_parameters(net)
    assert n == exact
    assert round(n / 1e6, 2) == paper_m
    # by hand: 5x5 layer 1, four RCLs (w^in, w^rec, one bias), softmax layer
    assert n == (25 * in_channels + 1) * k + 4 * (2 * 9 * k * k + k) + (k + 1) * 10


def test_baseline_parameter_counts():
    rcnn = count_parameters(build_model("RCNN", 32, in_channels=1, device="meta"))
    assert count_parameters(build_model("rCNN", 32, in_channels=1, device="meta")) == rcnn
    ff = count_parameters(build_model("FF", 32, in_channels=1, device="meta"))
    assert ff == (25 + 1) * 32 + 4 * (9 * 32 * 32 + 32) + 33 * 10
    assert wcnn_channels(32, in_channels=1) == 45
    wide = build_model("WCNN", 32, in_channels=1, device="meta")
    assert isinstance(wide, FeedForwardCNN) and wide.channels == 45
    assert abs(count_parameters(wide) - rcnn) / rcnn < 0.01
    assert wcnn_channels(96, in_channels=3) == 135


# --- recurrent MLP ----------------------------------------------------------------------------
def test_recurrent_mlp_equals_hand_loop_and_shapes():
    torch.manual_seed(11)
    net = RecurrentMLP(6, [5, 4], steps=3, output_size=2, dtype=D)
    u = torch.randn(3, 6, dtype=D)
    h = u
    for cell in net.cells:
        w_in, w_rec, b = cell.weight_ih, cell.weight_hh, cell.bias
        hs = [torch.clamp(h @ w_in.T + b, min=0)]
        for _ in range(3):
            hs.append(torch.clamp(h @ w_in.T + hs[-1] @ w_rec.T + b, min=0))
        h = hs[-1]
    want = h @ net.readout.weight.T + net.readout.bias
    _close(net(u), want)
    its = net.iterates(u, steps=2)
    assert [len(t) for t in its] == [3, 3]
    assert [t[0].shape for t in its] == [(3, 5), (3, 4)]
    cell = RecurrentMLPCell(6, 5, dtype=D)
    y, state = cell(u)
    _close(y, torch.relu(u @ cell.weight_ih.T + cell.bias))
    _close(state.h, y)


# --- bad input --------------------------------------------------------------------------------
def _raises(exc, *parts):
    return pytest.raises(exc, match=".*".join(re.escape(p) for p in parts))


def test_bad_input_errors_name_argument_expected_and_received():
    layer = RCL(3, 8)
    with _raises(ValueError, "u:", "(B, 3, H, W)", "(2, 4, 6, 6)"):
        layer(torch.randn(2, 4, 6, 6))
    with _raises(ValueError, "u:", "(B, 3, H, W)", "(3, 6, 6)"):
        layer(torch.randn(3, 6, 6))
    with _raises(TypeError, "u:", "floating-point", "torch.int64"):
        layer(torch.zeros(1, 3, 4, 4, dtype=torch.long))
    with _raises(TypeError, "u:", "torch.Tensor", "list"):
        layer([1.0])
    with _raises(ValueError, "steps:", "non-negative int", "-1"):
        layer(torch.randn(1, 3, 4, 4), steps=-1)
    with _raises(ValueError, "steps:", "non-negative int", "-2"):
        RCL(3, 8, steps=-2)
    with _raises(ValueError, "steps:", "non-negative int", "-1"):
        RCNN(1, 10, 8, steps=-1)
    with _raises(TypeError, "u:", "torch.float32", "torch.float64"):
        layer(torch.randn(1, 3, 4, 4, dtype=D))
    net = RCNN(1, 10, 8, image_size=28)
    with _raises(ValueError, "x:", "(B, 1, 28, 28)", "(2, 1, 32, 32)"):
        net(torch.randn(2, 1, 32, 32))
    with _raises(ValueError, "x:", "(B, 1, 28, 28)", "(2, 3, 28, 28)"):
        net(torch.randn(2, 3, 28, 28))
    with _raises(ValueError, "steps:", "non-negative int", "-1"):
        net(torch.randn(1, 1, 28, 28), steps=-1)
    cell = RCLCell(3, 8)
    with _raises(ValueError, "state.x:", "(2, 8, 5, 5)", "(2, 8, 4, 4)"):
        cell(torch.randn(2, 3, 5, 5), torch.zeros(2, 8, 4, 4))
    with _raises(ValueError, "size:", "(H, W)", "None"):
        cell.initial_state(2)
    with _raises(ValueError, "norm:", "'lrn'", "'layer'"):
        RCL(3, 8, norm="layer")
    with _raises(ValueError, "kernel_size:", "odd", "4"):
        RCLCell(3, 8, kernel_size=4)
    with _raises(ValueError, "kind:", "'RCNN'", "'VGG'"):
        build_model("VGG", 8)
    with _raises(ValueError, "image_size:", "(H, W)", "(0, 3)"):
        RCNN(1, 10, 8, image_size=(0, 3))


# --- CIFAR-10 reader --------------------------------------------------------------------------
def _write_batch(path, data, labels):
    with open(path, "wb") as f:
        pickle.dump({b"batch_label": b"x", b"labels": labels, b"data": data}, f, protocol=2)


def test_load_cifar10_tiny_pickles(tmp_path):
    from rnnlab.experiments.rcnn import load_cifar10

    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(0)
    batches = []
    for i in range(1, 6):
        data = rng.integers(0, 256, size=(2, 3072), dtype=np.uint8)
        _write_batch(folder / f"data_batch_{i}", data, [i, 9 - i])
        batches.append(data)
    test = rng.integers(0, 256, size=(3, 3072), dtype=np.uint8)
    _write_batch(folder / "test_batch", test, [0, 1, 2])

    x, y = load_cifar10(tmp_path, train=True)  # the parent folder works too
    assert x.shape == (10, 3, 32, 32) and x.dtype == torch.uint8
    assert y.tolist() == [1, 8, 2, 7, 3, 6, 4, 5, 5, 4] and y.dtype == torch.int64
    # row layout: 1024 red, then green, then blue values, each row-major 32 x 32
    assert int(x[0, 0, 0, 1]) == int(batches[0][0, 1])
    assert int(x[0, 1, 0, 0]) == int(batches[0][0, 1024])
    assert int(x[3, 2, 31, 31]) == int(batches[1][1, 3071])
    xt, yt = load_cifar10(folder, train=False)
    assert xt.shape == (3, 3, 32, 32) and yt.tolist() == [0, 1, 2]


def test_load_cifar10_errors(tmp_path):
    from rnnlab.experiments.rcnn import load_cifar10

    with pytest.raises(FileNotFoundError, match="test_batch"):
        load_cifar10(tmp_path, train=False)
    with open(tmp_path / "test_batch", "wb") as f:
        pickle.dump(print, f)  # a global other than a numpy array is refused
    with pytest.raises(pickle.UnpicklingError, match="builtins.print"):
        load_cifar10(tmp_path, train=False)
    _write_batch(tmp_path / "test_batch", np.zeros((2, 100), dtype=np.uint8), [0, 1])
    with pytest.raises(ValueError, match=re.escape("(N, 3072)")):
        load_cifar10(tmp_path, train=False)


# --- the experiment, tiny ---------------------------------------------------------------------
def test_experiment_pipeline_on_tiny_data(tmp_path):
    from rnnlab.experiments.rcnn import RCNNExperimentConfig, _claims, run_comparison

    torch.manual_seed(12)
    x = torch.randn(40, 1, 12, 12)
    y = torch.arange(40) % 4
    cfg = RCNNExperimentConfig(
        channels=4,
        steps=1,
        train_size=None,
        epochs=1,
        batch_size=20,
        seeds=(0, 1),
        curve_test_size=20,
        loss_every=1,
    )
    summary, runs = run_comparison(cfg, (x, y, x[:20], y[:20]), tmp_path, progress=lambda m: None)
    assert len(runs) == 8 and set(summary) == {"RCNN", "FF", "WCNN", "rCNN"}
    assert summary["WCNN"]["parameters"] > summary["FF"]["parameters"]
    assert all(0.0 <= s["mean"] <= 1.0 for s in summary.values())
    for name in ("results.md", "results.json", "curves.png"):
        assert (tmp_path / name).stat().st_size > 0
    assert "| RCNN |" in (tmp_path / "results.md").read_text()
    claims = _claims(summary, 1.0, results=runs)
    assert [c.status for c in claims][:3] == [
        "pass" if summary["RCNN"]["mean"] > summary[b]["mean"] else "fail"
        for b in ("WCNN", "FF", "rCNN")
    ]
    assert claims[3].status == ("pass" if summary["rCNN"]["mean"] > 0.2 else "fail")
    # a smoke run (toy budget) never passes or fails the paper's claims: it says what it is
    smoke = _claims(summary, 1.0, "toy budget: 40 images", runs)
    assert {c.status for c in smoke} == {"info"}
    assert all(c.claim.startswith("SMOKE RUN (toy budget: 40 images") for c in smoke[:4])


def test_rcnn_first_runs_in_its_working_setting():
    """rCNN gets He-initialised convolutions and BatchNorm per iteration (it trains there)."""
    from rnnlab.experiments.rcnn import CPU_CONFIG, TOUR_CONFIG, train_one

    assert "rCNN" in TOUR_CONFIG.models and CPU_CONFIG.rcnn_first_norm == "batch"
    torch.manual_seed(0)
    x = torch.randn(16, 1, 12, 12)
    y = torch.arange(16) % 4
    from dataclasses import replace

    cfg = replace(CPU_CONFIG, channels=4, steps=1, epochs=1, batch_size=16, seeds=(0,))
    r = train_one("rCNN", cfg, 0, (x, y, x, y), num_classes=4, progress=lambda m: None)
    assert (
        r.parameters
        > train_one("RCNN", cfg, 0, (x, y, x, y), num_classes=4, progress=lambda m: None).parameters
    )  # BatchNorm's γ, β


def test_docstring_examples():
    import doctest

    import rnnlab.cells.conv
    import rnnlab.layers.rcl
    import rnnlab.layers.rcnn

    for module in (rnnlab.cells.conv, rnnlab.layers.rcl, rnnlab.layers.rcnn):
        result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
        assert result.failed == 0 and result.attempted > 0
