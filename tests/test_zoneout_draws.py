"""Zoneout's keep draws (docs/design/0020-zoneout-draws.md): Philox4x32-10 against Random123's
published known-answer vectors, the keep decisions against a written-out scalar Philox in
plain Python integers, the compiled kernel against the pure-torch fallback, the same values
for 1, 2 and 3 threads, the keep rate within 3 sigma, and the masks reproduced under
torch.manual_seed, a passed generator, stream chunks and a restored generator state."""

from __future__ import annotations

import math

import pytest
import torch

from rnnlab import engine
from rnnlab.cells import GRUCell, LSTMCell, VariationalDropoutCell, ZoneoutCell, _philox
from rnnlab.engine import build
from rnnlab.engine.kernels_extra import zoneout_keep
from rnnlab.layers import Recurrent

# Random123's tests/kat_vectors for philox4x32_10: (counter words, key words, output words)
KAT = [
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((0xFFFFFFFF,) * 4, (0xFFFFFFFF,) * 2, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    (
        (0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344),
        (0xA4093822, 0x299F31D0),
        (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1),
    ),
]
needs_build = pytest.mark.skipif(not build.available(), reason="compiled kernels unavailable")


def _philox_scalar(ctr, key):
    """Philox4x32-10 written out on Python integers (the paper's round, 10 rounds)."""
    x, (k0, k1), m = list(ctr), key, 0xFFFFFFFF
    for r in range(10):
        if r:
            k0, k1 = (k0 + 0x9E3779B9) & m, (k1 + 0xBB67AE85) & m
        p0, p1 = 0xD2511F53 * x[0], 0xCD9E8D57 * x[2]
        x = [(p1 >> 32) ^ x[1] ^ k0, p1 & m, (p0 >> 32) ^ x[3] ^ k1, p0 & m]
    return x


def _keep_scalar(key, sizes, rates):
    """One step's keep decisions per field, from the contract: words of the counters
    (b, 0, 0, 0) under the key's low/high halves, fields end to end, keep iff
    word < ceil(p 2^32)."""
    u = key & (2**64 - 1)
    words = []
    for b in range((sum(sizes) + 3) // 4):
        words += _philox_scalar((b, 0, 0, 0), (u & 0xFFFFFFFF, u >> 32))
    out, j = [], 0
    for n, p in zip(sizes, rates):
        out.append([w < min(2**32, math.ceil(p * 2**32)) for w in words[j : j + n]])
        j += n
    return out


@pytest.mark.parametrize("ctr,key,want", KAT)
def test_philox_known_answers(ctr, key, want):
    assert _philox_scalar(ctr, key) == list(want)
    words = _philox.philox4x32([torch.tensor([c]) for c in ctr], [torch.tensor([k]) for k in key])
    assert [int(w) for w in words] == list(want)
    if build.available():
        got = build.ops().philox4x32(torch.tensor([ctr]), torch.tensor([key]))
        assert got.tolist() == [list(want)]


def test_keys_in_one_draw_equal_per_step_draws():
    g = torch.Generator().manual_seed(5)
    many = _philox.step_keys(9, g)
    g.manual_seed(5)
    one_by_one = torch.cat([_philox.step_keys(1, g) for _ in range(9)])
    assert many.dtype == torch.int64 and torch.equal(many, one_by_one)
    assert bool((many < 0).any()) or bool((many >= 2**32).any())  # full-width keys


@pytest.mark.parametrize("backend", ["torch", pytest.param("compiled", marks=needs_build)])
def test_keep_decisions_equal_the_written_out_contract(backend, monkeypatch):
    if backend == "torch":
        monkeypatch.setattr(_philox, "_FAST", [None])
    keys = torch.tensor([0, -1, 2**62 + 12345, -(2**63)], dtype=torch.int64)
    sizes, rates = [7, 10, 1], [0.3, 1.0, 0.5]
    got = _philox.keep_draws(keys, sizes, rates, torch.bool)
    for t, key in enumerate(keys.tolist()):
        want = _keep_scalar(key, sizes, rates)
        for f in range(3):
            assert got[f][t].tolist() == want[f], (t, f)
    assert all(bool(g.all()) for g in got[1:2])  # p = 1 keeps everything


@needs_build
@pytest.mark.parametrize("dtype", [torch.bool, torch.float32, torch.float64, torch.bfloat16])
def test_compiled_kernel_equals_pure_torch(dtype):
    g = torch.Generator().manual_seed(1)
    for T, sizes, rates in [(1, [5], [0.4]), (13, [37, 64, 3], [0.1, 0.5, 0.9]),
                            (40, [1024, 1024], [0.05, 0.5]), (3, [0, 9], [0.2, 0.7])]:  # fmt: skip
        keys = _philox.step_keys(T, g)
        thr = _philox.thresholds(rates)
        got = build.ops().zoneout_keep(keys, sizes, thr, dtype)
        want = _philox.keep_reference(keys, sizes, thr, dtype)
        assert got.dtype == dtype and torch.equal(got, want), (T, sizes)


@needs_build
def test_the_same_values_for_any_thread_count():
    keys = _philox.step_keys(300, torch.Generator().manual_seed(2))
    thr = _philox.thresholds([0.05, 0.5])
    before = torch.get_num_threads()
    try:
        outs = []
        for n in (1, 2, 3):
            torch.set_num_threads(n)
            outs.append(build.ops().zoneout_keep(keys, [1024, 1024], thr, torch.float32))
    finally:
        torch.set_num_threads(before)
    assert torch.equal(outs[0], outs[1]) and torch.equal(outs[0], outs[2])


@pytest.mark.parametrize("p", [0.05, 0.3, 0.5])
def test_keep_rate_within_three_sigma(p):
    keys = _philox.step_keys(200, torch.Generator().manual_seed(3))
    (d,) = _philox.keep_draws(keys, [4 * 257], [p], torch.float64)
    n = d.numel()
    assert abs(float(d.sum()) - n * p) < 3 * math.sqrt(n * p * (1 - p))
    for lane in range(4):  # every Philox output word, and each step, is used
        col = d.view(200, 257, 4)[:, :, lane]
        m = col.numel()
        assert abs(float(col.sum()) - m * p) < 3 * math.sqrt(m * p * (1 - p)), lane
    assert not torch.equal(d[0], d[1])  # a fresh draw every step


def _layer(gen=None):
    torch.manual_seed(0)
    cell = ZoneoutCell(VariationalDropoutCell(LSTMCell(3, 6), 0.0, 0.2), {"h": 0.3, "c": 0.6},
                       generator=gen)  # fmt: skip
    return Recurrent(cell).double()


@pytest.mark.parametrize("use_engine", [True, False], ids=["engine", "reference"])
def test_masks_reproduced_by_seed_generator_chunks_and_restored_state(use_engine):
    x = torch.randn(2, 11, 3, dtype=torch.float64)
    layer = _layer()

    def run(*a):
        if use_engine:
            return layer(*a)
        with engine.disabled():
            return layer(*a)

    torch.manual_seed(7)
    s0 = layer.initial_state(2, dtype=torch.float64)
    y1, _ = run(x, s0)
    torch.manual_seed(7)
    s0b = layer.initial_state(2, dtype=torch.float64)
    y2, _ = run(x, s0b)
    assert torch.equal(y1, y2)  # manual_seed reproduces
    torch.manual_seed(8)
    assert not torch.equal(run(x, s0)[0], y1)  # another seed, other draws
    # stream chunks: a run in two windows with the carried state equals one run
    state = torch.get_rng_state()
    ya, sa = run(x[:, :4], s0)
    yb, _ = run(x[:, 4:], sa)
    torch.set_rng_state(state)  # a resumed run restores the generator
    y, _ = run(x, s0)
    torch.testing.assert_close(torch.cat([ya, yb], 1), y, rtol=0, atol=1e-13)
    # a passed generator: its own stream, untouched by the global one
    g = torch.Generator().manual_seed(4)
    layer.cell.generator = g
    y3, _ = run(x, s0)
    g.manual_seed(4)
    torch.manual_seed(123)
    y4, _ = run(x, s0)
    assert torch.equal(y3, y4)


@needs_build
@pytest.mark.parametrize("gru", [False, True], ids=["lstm", "gru"])
def test_engine_equals_the_reference_loop_on_the_pure_torch_draws(gru, monkeypatch):
    # the engine draws with the compiled kernel; the reference loop, with the fast path
    # removed, with the pure-torch Philox: the same decisions, so the same run
    inner = GRUCell(3, 6) if gru else LSTMCell(3, 6)
    g = torch.Generator()
    layer = Recurrent(ZoneoutCell(inner, 0.4, generator=g)).double()
    x = torch.randn(3, 9, 3, dtype=torch.float64)
    g.manual_seed(9)
    y1, s1 = layer(x)
    monkeypatch.setattr(_philox, "_FAST", [None])
    g.manual_seed(9)
    with engine.disabled():
        y2, s2 = layer(x)
    torch.testing.assert_close(y1, y2, rtol=1e-12, atol=1e-13)
    for a, b in zip(s1, s2):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-13)


def test_zoneout_keep_matches_the_reference_steps_written_out():
    g = torch.Generator().manual_seed(11)
    cell = ZoneoutCell(LSTMCell(4, 5), {"h": 0.3, "c": 0.6}, generator=g).double()
    x = torch.randn(3, 6, 4, dtype=torch.float64)
    got = zoneout_keep(cell, x, cell.initial_state(3, dtype=torch.float64))
    g.manual_seed(11)
    for t in range(6):
        key = int(_philox.step_keys(1, g))
        want_h, want_c = _keep_scalar(key, [15, 15], [0.3, 0.6])
        assert got["h"][t].flatten().tolist() == [float(w) for w in want_h], t
        assert got["c"][t].flatten().tolist() == [float(w) for w in want_c], t
    assert got["h"].shape == (6, 3, 5) and got["h"].dtype == torch.float64
    assert got["h"].is_contiguous() and got["c"].is_contiguous()
