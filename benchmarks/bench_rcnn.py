"""Training throughput of RCNN-K: a plain PyTorch RCNN against rnnlab's, BatchNorm and LRN.

What is measured: images per second of full training steps (forward, cross-entropy, backward,
SGD with momentum) of RCNN-K (Liang & Hu 2015: 5x5 conv, pool, RCL, RCL, pool, RCL, RCL, global
max-pool, linear; T = 3, dropout 0.5) on random 1x28x28 images, batch 128, K = 32 / 64 / 96.

Implementations (all the same function, checked at start-up on one batch):

* ``plain``: the straightforward PyTorch RCL found in public code (nn.Conv2d modules, NCHW,
  per-iteration BatchNorm after ReLU) which recomputes the feed-forward convolution at every
  iteration;
* ``plain_hoisted``: the same with the feed-forward convolution computed once;
* ``rnnlab_bn``: ``rnnlab.layers.rcnn.RCNN(norm="batch")`` (channels_last, feed-forward term
  once, added in place);
* ``rnnlab_bn_nchw``: the same in NCHW (shows what the memory format alone gives);
* ``rnnlab_lrn``: the paper's exact model, ``RCNN(norm="lrn")`` (fused ReLU + LRN).

Noise control: implementations are interleaved (each round times every implementation, in a
rotated order), warm-up steps are discarded, and the median over rounds is reported, both of
wall-clock throughput and of throughput per CPU-second of this process (``process_time``). On
a shared machine run it single-threaded: then CPU time leaves out the time spent waiting for
other tenants, and is the steadier of the two. Minor page faults per step are recorded too:
on a VM they are expensive, and glibc's heap trimming makes their number vary from run to
run. The JSON records the CPU, torch version, thread count, load average and date.

    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/bench_rcnn.py --threads 1
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import statistics
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rnnlab.layers.rcnn import RCNN, count_parameters


class PlainRCL(nn.Module):
    """The RCL as plain PyTorch code usually writes it, with the paper's t = 0."""

    def __init__(self, channels: int, steps: int, hoist: bool) -> None:
        super().__init__()
        self.ff = nn.Conv2d(channels, channels, 3, padding=1)
        self.rec = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn = nn.ModuleList(nn.BatchNorm2d(channels) for _ in range(steps + 1))
        self.steps = steps
        self.hoist = hoist

    def forward(self, u: Tensor) -> Tensor:
        ff = self.ff(u)
        x = self.bn[0](F.relu(ff))
        for t in range(1, self.steps + 1):
            drive = ff if self.hoist else self.ff(u)
            x = self.bn[t](F.relu(drive + self.rec(x)))
        return x


class PlainRCNN(nn.Module):
    def __init__(self, channels: int, steps: int = 3, hoist: bool = False) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, channels, 5, padding=2)
        self.bn1 = nn.BatchNorm2d(channels)
        self.pool = nn.MaxPool2d(3, 2, padding=1)
        self.rcls = nn.ModuleList(PlainRCL(channels, steps, hoist) for _ in range(4))
        self.drop = nn.Dropout(0.5)
        self.fc = nn.Linear(channels, 10)

    def forward(self, x: Tensor) -> Tensor:
        h = self.pool(self.bn1(F.relu(self.conv1(x))))
        for i, rcl in enumerate(self.rcls):
            h = rcl(h)
            if i < 3:
                h = self.drop(h)
            if i == 1:
                h = self.pool(h)
        return self.fc(h.amax(dim=(2, 3)))


def _copy_plain_into_rnnlab(plain: PlainRCNN, net: RCNN) -> None:
    """Give rnnlab's BatchNorm model the plain model's weights (for the equality check)."""
    with torch.no_grad():
        net.layer1.conv.weight.copy_(plain.conv1.weight)
        net.layer1.conv.bias.copy_(plain.conv1.bias)
        for src, dst in zip(plain.rcls, net.rcls):
            dst.cell.weight_ih.copy_(src.ff.weight)
            dst.cell.bias.copy_(src.ff.bias)
            dst.cell.weight_hh.copy_(src.rec.weight)
        net.classifier.weight.copy_(plain.fc.weight)
        net.classifier.bias.copy_(plain.fc.bias)


def build(name: str, k: int) -> nn.Module:
    if name == "plain":
        return PlainRCNN(k, hoist=False)
    if name == "plain_hoisted":
        return PlainRCNN(k, hoist=True)
    if name == "rnnlab_bn":
        return RCNN(1, 10, k, norm="batch", image_size=28)
    if name == "rnnlab_bn_nchw":
        return RCNN(1, 10, k, norm="batch", image_size=28, channels_last=False)
    if name == "rnnlab_lrn":
        return RCNN(1, 10, k, norm="lrn", image_size=28)
    raise ValueError(name)


IMPLS = ["plain", "plain_hoisted", "rnnlab_bn", "rnnlab_bn_nchw", "rnnlab_lrn"]


def check_equal(k: int) -> float:
    """Max |logit difference| between plain and rnnlab's BN model on one batch (eval mode)."""
    torch.manual_seed(0)
    plain = PlainRCNN(k).eval()
    net = RCNN(1, 10, k, norm="batch", image_size=28).eval()
    _copy_plain_into_rnnlab(plain, net)
    x = torch.randn(8, 1, 28, 28)
    with torch.no_grad():
        return float((plain(x) - net(x)).abs().max())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ks", type=int, nargs="+", default=[32, 64, 96])
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--steps-per-sample", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "rcnn.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    started = time.perf_counter()

    results: dict[str, Any] = {}
    for k in args.ks:
        err = check_equal(k)
        torch.manual_seed(0)
        x = torch.randn(args.batch, 1, 28, 28)
        y = torch.randint(0, 10, (args.batch,))
        runs = {}
        for name in IMPLS:
            model = build(name, k).train()
            opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

            def step(
                model: nn.Module = model,
                opt: torch.optim.Optimizer = opt,
                x: Tensor = x,
                y: Tensor = y,
            ) -> None:
                opt.zero_grad(set_to_none=True)
                F.cross_entropy(model(x), y).backward()
                opt.step()

            for _ in range(args.warmup):
                step()
            runs[name] = (step, count_parameters(model))
        wall: dict[str, list[float]] = {name: [] for name in IMPLS}
        cpu_s: dict[str, list[float]] = {name: [] for name in IMPLS}
        faults: dict[str, list[float]] = {name: [] for name in IMPLS}
        images = args.batch * args.steps_per_sample
        for r in range(args.rounds):
            order = IMPLS[r % len(IMPLS) :] + IMPLS[: r % len(IMPLS)]
            for name in order:
                step = runs[name][0]
                f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
                c0, t0 = time.process_time(), time.perf_counter()
                for _ in range(args.steps_per_sample):
                    step()
                dt, dc = time.perf_counter() - t0, time.process_time() - c0
                df = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0
                wall[name].append(images / dt)
                cpu_s[name].append(images / dc)
                faults[name].append(df / args.steps_per_sample)
        med = {name: statistics.median(v) for name, v in wall.items()}
        cmed = {name: statistics.median(v) for name, v in cpu_s.items()}

        def ratios(m: dict[str, float]) -> dict[str, float]:
            return {
                "rnnlab_bn_vs_plain": round(m["rnnlab_bn"] / m["plain"], 3),
                "rnnlab_bn_vs_plain_hoisted": round(m["rnnlab_bn"] / m["plain_hoisted"], 3),
                "rnnlab_bn_vs_rnnlab_bn_nchw": round(m["rnnlab_bn"] / m["rnnlab_bn_nchw"], 3),
                "lrn_cost_vs_bn": round(m["rnnlab_bn"] / m["rnnlab_lrn"], 3),
            }

        results[str(k)] = {
            "images_per_s_median": {n: round(v, 1) for n, v in med.items()},
            "images_per_cpu_s_median": {n: round(v, 1) for n, v in cmed.items()},
            "ratios_wall": ratios(med),
            "ratios_cpu": ratios(cmed),
            "page_faults_per_step_median": {n: statistics.median(v) for n, v in faults.items()},
            "images_per_s_samples": {n: [round(s, 1) for s in v] for n, v in wall.items()},
            "images_per_cpu_s_samples": {n: [round(s, 1) for s in v] for n, v in cpu_s.items()},
            "parameters": {n: runs[n][1] for n in IMPLS},
            "max_abs_logit_diff_plain_vs_rnnlab_bn": err,
        }
        print(f"K={k} wall: " + ", ".join(f"{n} {v:.0f}/s" for n, v in med.items()), flush=True)
        print(f"K={k} cpu:  " + ", ".join(f"{n} {v:.0f}/s" for n, v in cmed.items()), flush=True)
        print(f"      wall {json.dumps(ratios(med))}\n      cpu  {json.dumps(ratios(cmed))}")

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    record = {
        "benchmark": "bench_rcnn.py",
        "what": "RCNN-K training steps (fwd+CE+bwd+SGD), 1x28x28, T=3, dropout 0.5, images/s",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "threads": args.threads,
        "loadavg_1_5_15_min_at_end": None,
        "batch": args.batch,
        "rounds": args.rounds,
        "steps_per_sample": args.steps_per_sample,
        "results": results,
        "wall_s": round(time.perf_counter() - started, 1),
    }
    try:
        record["loadavg_1_5_15_min_at_end"] = os.getloadavg()
    except OSError:
        pass
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {args.out} ({record['wall_s']} s)")


if __name__ == "__main__":
    main()
