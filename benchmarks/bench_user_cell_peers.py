"""A user's own cell against JAX: rnnlab's CompiledCell vs ``jax.jit`` + ``lax.scan``.

The cell is the Minimal Gated Unit of ``rnnlab.bench`` (Zhou et al. 2016),
f = σ(W_f x + U_f h + b_f), h̃ = tanh(W x + U (f ⊙ h) + b), h' = (1 - f) ⊙ h + f ⊙ h̃,
written once for each framework; rnnlab's built-in GRU is compared with the same GRU in JAX
(jit + scan) and in Flax (``flax.linen.GRUCell`` under ``nn.RNN``).

Method: one worker process per framework (torch and JAX never share a process or a thread
pool), started once. The driver asks them in turn, one at a time, for one *round*: every
implementation of that worker, in an order rotated every round, timed ``--repeats`` times after
warm-up, median kept. Rounds alternate between the workers (torch, JAX, torch, JAX, ...), so
that drift of the machine hits both; the result is the median over rounds, and the ratios
rnnlab / JAX at S1 (T=100, B=32, I=128, H=256) and S2 (T=500, B=8, I=64, H=128), forward
(no gradient) and training (forward + backward of a weighted sum of the outputs, gradients for
the inputs and every parameter). Threads: ``--threads`` for both (torch.set_num_threads; XLA's
CPU thread pool through ``XLA_FLAGS`` when 1).

Compile times, each in a fresh process (``import torch`` / ``import jax`` not counted):
``cold``: CompiledCell's first call with an empty cache folder (trace, generate, g++);
``cached``: a second process finding the cell in that folder; ``jax``: the first jit call.

Run (the lead's measurement; about 10 minutes)::

    PYTHONPATH=src python benchmarks/bench_user_cell_peers.py --rounds 7 --repeats 10

An A/B of the loops' BLAS threading (MKL's thread-local setting around each loop)::

    RNNLAB_CC_BLAS_THREADS=1 PYTHONPATH=src python benchmarks/bench_user_cell_peers.py \
        --rounds 7 --repeats 10 --out benchmarks/results/user_cell_peers-blas1

Without the projections through oneDNN (``rnnlab.engine.dense``), the kernels' weight
gradients through oneDNN (``RNNLAB_ENGINE_DNNL=0``) and the row-split CompiledCell loop, for an
A/B::

    RNNLAB_DENSE_DNNL=0 RNNLAB_ENGINE_DNNL=0 RNNLAB_CC_ROWS=0 PYTHONPATH=src \
        python benchmarks/bench_user_cell_peers.py --rounds 7 --repeats 10 \
        --out benchmarks/results/user_cell_peers-nodnnl

Without the engine's malloc setting (glibc's default thresholds: every training step re-maps
its 10 MB buffers, about 5600 minor faults a GRU S1 step; ``rnnlab.engine.build``), for an
A/B of that variance source::

    RNNLAB_ENGINE_MALLOC=0 PYTHONPATH=src python benchmarks/bench_user_cell_peers.py \
        --rounds 7 --repeats 10 --out benchmarks/results/user_cell_peers-malloc0

``--tiny`` checks the script in seconds at (T, B, I, H) = (5, 2, 3, 4). Results go to
``benchmarks/results/user_cell_peers.json`` and ``.md`` (``--out`` to change).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

SHAPES = {"S1": (100, 32, 128, 256), "S2": (500, 8, 64, 128)}
TINY = {"S1": (5, 2, 3, 4), "S2": (7, 2, 3, 4)}
HERE = Path(__file__).resolve().parent


# ----------------------------------------------------------------------- torch worker ----
def _torch_impls(shape: tuple[int, int, int, int], threads: int) -> dict[str, Any]:
    import torch

    from rnnlab import GRUCell, Recurrent
    from rnnlab.bench import MinimalGatedUnit
    from rnnlab.engine import CompiledCell

    torch.set_num_threads(threads)
    T, B, I, H = shape
    torch.manual_seed(0)
    x = torch.randn(B, T, I)
    w = torch.randn(B, T, H)
    mgu = MinimalGatedUnit(I, H)
    layers = {
        "mgu_compiled": Recurrent(CompiledCell(mgu)),
        "mgu_reference": Recurrent(mgu),
        "gru_rnnlab": Recurrent(GRUCell(I, H)),
    }
    fns: dict[str, Any] = {}
    for name, layer in layers.items():

        def fwd(layer: Any = layer) -> None:
            with torch.no_grad():
                layer(x)

        def train(layer: Any = layer) -> None:
            xr = x.requires_grad_(True)
            y, _ = layer(xr)
            torch.autograd.grad((w * y).sum(), [xr, *layer.parameters()])

        fns[f"{name}/forward"] = fwd
        fns[f"{name}/train"] = train
    return fns


# ------------------------------------------------------------------------- JAX worker ----
def _jax_impls(shape: tuple[int, int, int, int], threads: int) -> dict[str, Any]:
    import jax
    import jax.numpy as jnp
    import numpy as np
    from flax import linen as fnn

    T, B, I, H = shape
    rng = np.random.default_rng(0)

    def init(*s: int) -> Any:
        return jnp.asarray(rng.uniform(-(H**-0.5), H**-0.5, s), jnp.float32)

    x = jnp.asarray(rng.standard_normal((B, T, I)), jnp.float32)
    w = jnp.asarray(rng.standard_normal((B, T, H)), jnp.float32)
    mgu = {"wx": init(I, 2 * H), "bx": init(2 * H), "uf": init(H, H), "uh": init(H, H)}

    def mgu_run(p: Any, x: Any) -> Any:
        gx = x @ p["wx"] + p["bx"]  # (B, T, 2H): the input projection, hoisted as in rnnlab

        def step(h: Any, g: Any) -> Any:
            a, b = jnp.split(g, 2, axis=-1)
            f = jax.nn.sigmoid(a + h @ p["uf"])
            h = (1 - f) * h + f * jnp.tanh(b + (f * h) @ p["uh"])
            return h, h

        _, ys = jax.lax.scan(step, jnp.zeros((B, H), x.dtype), jnp.swapaxes(gx, 0, 1))
        return jnp.swapaxes(ys, 0, 1)

    gru = {"wi": init(I, 3 * H), "bi": init(3 * H), "wh": init(H, 3 * H), "bh": init(3 * H)}

    def gru_run(p: Any, x: Any) -> Any:
        gx = x @ p["wi"] + p["bi"]

        def step(h: Any, g: Any) -> Any:  # torch.nn.GRU's equations, gate order r, z, n
            gh = h @ p["wh"] + p["bh"]
            xr, xz, xn = jnp.split(g, 3, axis=-1)
            hr, hz, hn = jnp.split(gh, 3, axis=-1)
            r, z = jax.nn.sigmoid(xr + hr), jax.nn.sigmoid(xz + hz)
            n = jnp.tanh(xn + r * hn)
            h = (1 - z) * n + z * h
            return h, h

        _, ys = jax.lax.scan(step, jnp.zeros((B, H), x.dtype), jnp.swapaxes(gx, 0, 1))
        return jnp.swapaxes(ys, 0, 1)

    flax_rnn = fnn.RNN(fnn.GRUCell(features=H))
    flax_p = flax_rnn.init(jax.random.PRNGKey(0), x)

    runs = {"mgu_jax": (mgu_run, mgu), "gru_jax": (gru_run, gru),
            "gru_flax": (lambda p, x: flax_rnn.apply(p, x), flax_p)}  # fmt: skip
    fns: dict[str, Any] = {}
    for name, (run, params) in runs.items():
        f = jax.jit(run)
        g = jax.jit(jax.grad(lambda p, x, run=run: (w * run(p, x)).sum(), argnums=(0, 1)))
        fns[f"{name}/forward"] = lambda f=f, p=params: f(p, x).block_until_ready()
        fns[f"{name}/train"] = lambda g=g, p=params: jax.block_until_ready(g(p, x))
    return fns


def worker(kind: str, shape: tuple[int, int, int, int], threads: int) -> None:
    """Serve rounds on stdin/stdout: each line ``repeats rotation`` -> one JSON line of medians."""
    fns = (_torch_impls if kind == "torch" else _jax_impls)(shape, threads)
    names = list(fns)
    for f in fns.values():  # warm-up: compiles (JAX) and the first calls
        f()
        f()
    print(json.dumps({"ready": names}), flush=True)
    for line in sys.stdin:
        repeats, rot = (int(v) for v in line.split())
        order = names[rot % len(names) :] + names[: rot % len(names)]
        med = {}
        for n in order:
            ts = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                fns[n]()
                ts.append((time.perf_counter() - t0) * 1e3)
            med[n] = statistics.median(ts)
        print(json.dumps(med), flush=True)


# ------------------------------------------------------------------ compile timings ----
_COLD = """
import sys, time, torch
t0 = time.perf_counter()
from rnnlab import Recurrent
from rnnlab.bench import MinimalGatedUnit
from rnnlab.engine import CompiledCell
t1 = time.perf_counter()
T, B, I, H = {shape}
Recurrent(CompiledCell(MinimalGatedUnit(I, H)))(torch.randn(B, T, I))
t2 = time.perf_counter()
print(t1 - t0, t2 - t1, "torch._dynamo" in sys.modules, "torch._inductor" in sys.modules)
"""

_JAX_COLD = """
import time, jax, jax.numpy as jnp
t0 = time.perf_counter()
T, B, I, H = {shape}
def run(p, x):
    gx = x @ p[0] + p[1]
    def step(h, g):
        a, b = jnp.split(g, 2, axis=-1)
        f = jax.nn.sigmoid(a + h @ p[2])
        h = (1 - f) * h + f * jnp.tanh(b + (f * h) @ p[3])
        return h, h
    return jax.lax.scan(step, jnp.zeros((B, H)), jnp.swapaxes(gx, 0, 1))[1]
p = (jnp.ones((I, 2 * H)) * 0.01, jnp.zeros(2 * H), jnp.ones((H, H)) * 0.01,
     jnp.ones((H, H)) * 0.01)
jax.jit(run)(p, jnp.ones((B, T, I))).block_until_ready()
print(0.0, time.perf_counter() - t0, False, False)
"""


def compile_times(shape: tuple[int, int, int, int], env: dict[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="rnnlab-bench-cache-") as cache:
        e = {**env, "RNNLAB_CACHE_DIR": cache}
        for label, code in [("cold", _COLD), ("cached", _COLD), ("jax", _JAX_COLD)]:
            res = subprocess.run([sys.executable, "-c", code.format(shape=shape)], env=e,
                                 capture_output=True, text=True, check=True)  # fmt: skip
            imp, call, dyn, ind = res.stdout.split()
            out[label] = {
                "import_rnnlab_s": float(imp),
                "first_call_s": float(call),
                "dynamo_imported": dyn == "True",
                "inductor_imported": ind == "True",
            }
    return out


# ---------------------------------------------------------------------------- driver ----
def _start(kind: str, shape: Any, threads: int, env: dict[str, str]) -> subprocess.Popen[str]:
    cmd = [sys.executable, __file__, "--worker", kind, "--shape", ",".join(map(str, shape)),
           "--threads", str(threads)]  # fmt: skip
    p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
    assert p.stdout is not None
    json.loads(p.stdout.readline())  # ready
    return p


def _ask(p: subprocess.Popen[str], repeats: int, rot: int) -> dict[str, float]:
    assert p.stdin is not None and p.stdout is not None
    p.stdin.write(f"{repeats} {rot}\n")
    p.stdin.flush()
    return json.loads(p.stdout.readline())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", 2)))
    ap.add_argument("--tiny", action="store_true", help="a seconds-long check of the script")
    ap.add_argument("--out", default=str(HERE / "results" / "user_cell_peers"))
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--shape", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        worker(a.worker, tuple(int(v) for v in a.shape.split(",")), a.threads)  # type: ignore
        return
    env = {**os.environ, "OMP_NUM_THREADS": str(a.threads), "MKL_NUM_THREADS": str(a.threads)}
    if a.threads == 1:
        env["XLA_FLAGS"] = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
    shapes = TINY if a.tiny else SHAPES
    result: dict[str, Any] = {
        "machine": {"cpu": platform.processor() or platform.machine(), "threads": a.threads,
                    "python": platform.python_version(), "date": time.strftime("%Y-%m-%d")},
        "shapes": {}, "rounds": a.rounds, "repeats": a.repeats,
    }  # fmt: skip
    lines = [
        "| shape | mode | CompiledCell MGU | JAX MGU | ratio | rnnlab GRU | JAX GRU | Flax GRU "
        "| ratio to the better |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for s, shape in shapes.items():
        workers = {k: _start(k, shape, a.threads, env) for k in ("torch", "jax")}
        rounds: dict[str, list[float]] = {}
        for r in range(a.rounds):
            for k in ("torch", "jax") if r % 2 == 0 else ("jax", "torch"):
                for n, v in _ask(workers[k], a.repeats, r).items():
                    rounds.setdefault(n, []).append(v)
        for p in workers.values():
            assert p.stdin is not None
            p.stdin.close()
            p.wait()
        med = {n: statistics.median(v) for n, v in rounds.items()}
        result["shapes"][s] = {"shape": shape, "median_ms": med, "rounds_ms": rounds}
        for mode in ("forward", "train"):
            m = {k.split("/")[0]: v for k, v in med.items() if k.endswith(mode)}
            best = min(m["gru_jax"], m["gru_flax"])
            lines.append(
                f"| {s} {shape} | {mode} | {m['mgu_compiled']:.2f} ms | {m['mgu_jax']:.2f} ms | "
                f"{m['mgu_compiled'] / m['mgu_jax']:.2f}x | {m['gru_rnnlab']:.2f} ms | "
                f"{m['gru_jax']:.2f} ms | {m['gru_flax']:.2f} ms | {m['gru_rnnlab'] / best:.2f}x |"
            )
        print(lines[-2], lines[-1], sep="\n", flush=True)
    ct = compile_times(shapes["S1"], env)
    result["compile"] = ct
    lines += ["", "| first call (S1) | import rnnlab | first call | dynamo/inductor imported |",
              "|---|---|---|---|"]  # fmt: skip
    for k, v in ct.items():
        lines.append(f"| {k} | {v['import_rnnlab_s']:.2f} s | {v['first_call_s']:.2f} s | "
                     f"{v['dynamo_imported']}/{v['inductor_imported']} |")  # fmt: skip
    print("\n".join(lines[-5:]))
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=1))
    head = [f"# CompiledCell vs JAX ({result['machine']}, {a.rounds} rounds x {a.repeats})", ""]
    out.with_suffix(".md").write_text("\n".join(head + lines) + "\n")


if __name__ == "__main__":
    main()
