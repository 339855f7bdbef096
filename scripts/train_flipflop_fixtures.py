"""Train the 3-bit flip-flop fixtures and compute their reference fixed points.

Writes, for a tanh RNN (``ElmanCell(3, 16, output_size=3)``) and a GRU (``GRUCell(3, 16)`` plus a
linear readout), under ``tests/fixtures/``:

* ``flipflop_<kind>16.safetensors``: the weights (``cell.*``, ``readout.*``), float32;
* ``flipflop_<kind>16.json``: the cell config, training record and the *reference* fixed points
  at zero input.

The reference set is computed independently of :mod:`rnnlab.dynamics`: the step and its
Jacobian are written out again in numpy (checked against the cell), and a float64 damped-Newton
search (backtracking line search on ‖F‖, F(h) = f(h) - h) runs from 10^4 seeds: states of the
trained network on the task with several noise levels, and uniform draws from [-1, 1]^16.
Converged zeros (‖F‖ <= 1e-12) inside the box (-1, 1)^16, where every fixed point of these
networks lies, are de-duplicated at 1e-6.

The 3-bit flip-flop (Sussillo & Barak 2013): three input channels carry sparse ±1 pulses; each
output must hold the sign of the last pulse on its channel. Every sequence starts with a pulse on
every channel, so the target is always ±1.

Run (a few minutes on 2 cores)::

    nice -n 10 .venv/bin/python scripts/train_flipflop_fixtures.py --iters 3000
    nice -n 10 .venv/bin/python scripts/train_flipflop_fixtures.py --reference-only
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from rnnlab.cells import ElmanCell, GRUCell

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "tests" / "fixtures"
BITS, HIDDEN = 3, 16


def flipflop_batch(
    batch: int, steps: int, p: float, generator: torch.Generator
) -> tuple[Tensor, Tensor]:
    """Inputs and targets (B, T, 3): sparse ±1 pulses and the sign of the last pulse."""
    pulses = (torch.rand(batch, steps, BITS, generator=generator) < p).float()
    signs = torch.randint(0, 2, (batch, steps, BITS), generator=generator).float() * 2 - 1
    x = pulses * signs
    x[:, 0] = signs[:, 0]  # a pulse on every channel at t = 0
    y = torch.empty_like(x)
    last = x[:, 0]
    for t in range(steps):
        last = torch.where(x[:, t] != 0, x[:, t], last)
        y[:, t] = last
    return x, y


class Model(nn.Module):
    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind
        if kind == "rnn":
            self.cell: nn.Module = ElmanCell(BITS, HIDDEN, output_size=BITS)
            self.readout: nn.Module | None = None
        else:
            self.cell = GRUCell(BITS, HIDDEN)
            self.readout = nn.Linear(HIDDEN, BITS)

    def forward(self, x: Tensor, h0: Tensor | None = None) -> tuple[Tensor, Tensor]:
        B, T, _ = x.shape
        state = self.cell.initial_state(B) if h0 is None else self.cell.State(h0)  # type: ignore[operator]
        ys, hs = [], []
        for t in range(T):
            y, state = self.cell.step(x[:, t], state)  # type: ignore[operator]
            ys.append(y if self.readout is None else self.readout(y))
            hs.append(state.h)
        return torch.stack(ys, 1), torch.stack(hs, 1)  # (B, T, 3), (B, T, H)


def train(kind: str, iters: int, seed: int) -> tuple[Model, dict]:
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model = Model(kind)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, iters, eta_min=5e-4)
    t0 = time.perf_counter()
    for it in range(iters):
        x, y = flipflop_batch(64, 64, 0.05, gen)
        out, _ = model(x)
        loss = ((out - y) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        if it % 200 == 0:
            print(f"{kind} iter {it} loss {loss.item():.4f}", flush=True)
    with torch.no_grad():
        x, y = flipflop_batch(512, 200, 0.05, torch.Generator().manual_seed(seed + 1))
        out, _ = model(x)
        mse = float(((out - y) ** 2).mean())
        acc = float((out.sign() == y).float().mean())
    record = {
        "iters": iters,
        "seed": seed,
        "batch": 64,
        "steps": 64,
        "pulse_probability": 0.05,
        "optimizer": "Adam lr 1e-2 cosine to 5e-4, grad clip 1.0",
        "test_mse": mse,
        "test_sign_accuracy": acc,
        "train_seconds": round(time.perf_counter() - t0, 1),
    }
    print(kind, record, flush=True)
    return model, record


# --- the independent reference: numpy step, Jacobian and damped Newton ------------------------


def np_weights(model: Model) -> dict[str, np.ndarray]:
    return {k: v.detach().double().numpy() for k, v in model.cell.state_dict().items()}


def np_step(kind: str, w: dict[str, np.ndarray], h: np.ndarray, x: np.ndarray) -> np.ndarray:
    if kind == "rnn":
        return np.tanh(x @ w["weight_ih"].T + w["bias_ih"] + h @ w["weight_hh"].T + w["bias_hh"])
    H = h.shape[1]
    gi = x @ w["weight_ih"].T + w["bias_ih"]
    gh = h @ w["weight_hh"].T + w["bias_hh"]
    r = 1 / (1 + np.exp(-(gi[:, :H] + gh[:, :H])))
    z = 1 / (1 + np.exp(-(gi[:, H : 2 * H] + gh[:, H : 2 * H])))
    n = np.tanh(gi[:, 2 * H :] + r * gh[:, 2 * H :])
    return (1 - z) * n + z * h


def np_jacobian(kind: str, w: dict[str, np.ndarray], h: np.ndarray) -> np.ndarray:
    """∂f/∂h at zero input, written out by hand: (S, H, H)."""
    S, H = h.shape
    if kind == "rnn":
        hn = np_step(kind, w, h, np.zeros((S, BITS)))
        return (1 - hn**2)[:, :, None] * w["weight_hh"][None]
    Wr, Wz, Wn = w["weight_hh"][:H], w["weight_hh"][H : 2 * H], w["weight_hh"][2 * H :]
    gi = w["bias_ih"]
    gh = h @ w["weight_hh"].T + w["bias_hh"]
    r = 1 / (1 + np.exp(-(gi[:H] + gh[:, :H])))
    z = 1 / (1 + np.exp(-(gi[H : 2 * H] + gh[:, H : 2 * H])))
    un = gh[:, 2 * H :]  # U_n h + b_hn
    n = np.tanh(gi[2 * H :] + r * un)
    dr = (r * (1 - r))[:, :, None] * Wr[None]
    dz = (z * (1 - z))[:, :, None] * Wz[None]
    dn = (1 - n**2)[:, :, None] * (un[:, :, None] * dr + r[:, :, None] * Wn[None])
    eye = np.eye(H)[None]
    return (1 - z)[:, :, None] * dn + z[:, :, None] * eye + (h - n)[:, :, None] * dz


def _singular(J: np.ndarray) -> bool:
    return bool((np.abs(np.linalg.det(J)) < 1e-300).any())


def reference_fixed_points(kind: str, model: Model, n_seeds: int, seed: int) -> tuple[dict, float]:
    w = np_weights(model)
    rng = np.random.default_rng(seed)
    # numpy step == the cell's step
    h_test = rng.uniform(-1, 1, (64, HIDDEN))
    x_test = rng.normal(size=(64, BITS))
    with torch.no_grad():
        cell64 = model.cell.double()
        ref = cell64.step(torch.from_numpy(x_test), cell64.State(torch.from_numpy(h_test)))[1].h
        model.cell.float()
    assert np.abs(np_step(kind, w, h_test, x_test) - ref.numpy()).max() < 1e-12
    # seeds: task states with noise at several scales, and uniform draws in the cube
    with torch.no_grad():
        x, _ = flipflop_batch(64, 200, 0.05, torch.Generator().manual_seed(seed))
        _, hs = model(x)
    pool = hs.reshape(-1, HIDDEN).double().numpy()
    n_task = int(0.6 * n_seeds)
    picks = pool[rng.integers(0, pool.shape[0], n_task)]
    scales = np.repeat([0.0, 0.05, 0.2, 0.5], int(np.ceil(n_task / 4)))[:n_task]
    task_seeds = picks + scales[:, None] * rng.normal(size=picks.shape)
    cube = rng.uniform(-1, 1, (n_seeds - n_task, HIDDEN))
    h = np.concatenate([task_seeds, cube])
    t0 = time.perf_counter()
    eye = np.eye(HIDDEN)[None]
    active = np.ones(h.shape[0], dtype=bool)
    with np.errstate(over="ignore", invalid="ignore"):
        for _ in range(200):
            idx = np.nonzero(active)[0]
            if idx.size == 0:
                break
            ha = h[idx]
            zero = np.zeros((idx.size, BITS))
            F = np_step(kind, w, ha, zero) - ha
            r = np.linalg.norm(F, axis=1)
            done = (r <= 1e-14) | ~np.isfinite(r)
            J = np_jacobian(kind, w, ha) - eye
            J[done] = eye[0]  # placeholders, not used
            d = (
                np.stack([np.linalg.lstsq(Ji, -Fi, rcond=None)[0] for Ji, Fi in zip(J, F)])
                if _singular(J)
                else np.linalg.solve(J, -F[..., None])[..., 0]
            )
            t = np.ones(idx.size)
            accepted = done.copy()
            h_new = ha.copy()
            for _ in range(30):  # backtracking: halve until ‖F‖ decreases
                trial = ha + t[:, None] * d
                rt = np.linalg.norm(np_step(kind, w, trial, zero) - trial, axis=1)
                good = (rt < r) & ~accepted & np.isfinite(rt)
                h_new[good] = trial[good]
                accepted |= good
                t = np.where(accepted, t, t / 2)
                if accepted.all():
                    break
            h[idx] = h_new
            # converged, diverged, or stuck (no decrease along the Newton direction)
            active[idx[done | ~accepted]] = False
    zero = np.zeros((h.shape[0], BITS))
    with np.errstate(over="ignore", invalid="ignore"):
        F = np_step(kind, w, h, zero) - h
        r = np.linalg.norm(F, axis=1)
    r[~np.isfinite(r)] = np.inf
    # Every fixed point of a tanh RNN or GRU lies in the open box (-1, 1)^H: h' is tanh(.) or a
    # convex combination z h + (1 - z) n with |n| < 1, which equals h only for |h| < 1 (z < 1).
    # Zeros found outside are floating-point artefacts where a saturated gate rounds z to 1.
    outside = np.abs(h).max(axis=1) >= 1.0
    n_artefacts = int(((r <= 1e-12) & outside).sum())
    conv = np.nonzero((r <= 1e-12) & ~outside)[0]
    conv = conv[np.argsort(r[conv])]
    uniq: list[int] = []
    for i in conv:
        if all(np.linalg.norm(h[i] - h[j]) > 1e-6 for j in uniq):
            uniq.append(int(i))
    P = h[uniq]
    J = np_jacobian(kind, w, P)
    ev = np.linalg.eigvals(J)
    mod = np.abs(ev)
    n_unst = (mod > 1 + 1e-6).sum(axis=1)
    rho = mod.max(axis=1)
    order = np.lexsort((rho, n_unst))
    elapsed = time.perf_counter() - t0
    counts: dict[str, int] = {}
    for k in n_unst:
        counts[str(int(k))] = counts.get(str(int(k)), 0) + 1
    ref_json = {
        "method": "numpy float64 damped Newton (backtracking on ||F||), hand-written Jacobian",
        "input": [0.0] * BITS,
        "n_seeds": int(h.shape[0]),
        "n_converged_seeds": int(conv.size),
        "n_rejected_outside_box": n_artefacts,
        "residual_tol": 1e-12,
        "unique_tol": 1e-6,
        "stability_tol": 1e-6,
        "counts_by_unstable_directions": dict(sorted(counts.items())),
        "points": P[order].tolist(),
        "residuals": r[uniq][order].tolist(),
        "spectral_radius": rho[order].tolist(),
        "n_unstable": n_unst[order].tolist(),
        "labels": [
            "stable" if x < 1 - 1e-6 else ("marginal" if x <= 1 + 1e-6 else "unstable")
            for x in rho[order]
        ],
    }
    return ref_json, elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iters", type=int, default=3000)
    ap.add_argument("--seeds", type=int, default=10_000)
    ap.add_argument("--kinds", nargs="+", default=["rnn", "gru"])
    ap.add_argument(
        "--reference-only",
        action="store_true",
        help="keep the committed weights and training record; recompute the reference set",
    )
    args = ap.parse_args()
    torch.set_num_threads(1)
    OUT.mkdir(parents=True, exist_ok=True)
    for kind, seed in (("rnn", 1), ("gru", 2)):
        if kind not in args.kinds:
            continue
        name = f"flipflop_{kind}{HIDDEN}"
        if args.reference_only:
            model = Model(kind)
            sd = load_file(str(OUT / f"{name}.safetensors"))
            model.cell.load_state_dict({k[5:]: v for k, v in sd.items() if k.startswith("cell.")})
            if model.readout is not None:
                model.readout.load_state_dict(
                    {k[8:]: v for k, v in sd.items() if k.startswith("readout.")}
                )
            record = json.loads((OUT / f"{name}.json").read_text())["training"]
        else:
            model, record = train(kind, args.iters, seed)
        ref, secs = reference_fixed_points(kind, model, args.seeds, seed=100 + seed)
        print(
            kind,
            "reference:",
            len(ref["points"]),
            "points",
            ref["counts_by_unstable_directions"],
            f"in {secs:.1f} s",
            flush=True,
        )
        tensors = {f"cell.{k}": v.detach().contiguous() for k, v in model.cell.state_dict().items()}
        if model.readout is not None:
            tensors.update(
                {
                    f"readout.{k}": v.detach().contiguous()
                    for k, v in model.readout.state_dict().items()
                }
            )
        save_file(tensors, str(OUT / f"{name}.safetensors"))
        meta = {
            "task": "3-bit flip-flop (Sussillo & Barak 2013)",
            "cell": {"type": type(model.cell).__name__, "args": model.cell.config()},  # type: ignore[operator]
            "readout": None if model.readout is None else {"in": HIDDEN, "out": BITS},
            "training": record,
            "reference_fixed_points": ref,
            "created": datetime.date.today().isoformat(),
            "torch": torch.__version__,
            "machine": platform.processor() or platform.machine(),
            "script": "scripts/train_flipflop_fixtures.py",
        }
        (OUT / f"{name}.json").write_text(json.dumps(meta, indent=1) + "\n")
        print("wrote", OUT / f"{name}.safetensors", flush=True)


if __name__ == "__main__":
    main()
