"""What a run is built from: the device, a memory check before allocation, the optimizer, the
learning-rate schedule and the seeded generators that make a run reproducible."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import torch

from .config import ConfigError
from .distributed import env_world_size


def resolve_device(name: str, local_rank: int | None = None) -> torch.device:
    """``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"mps"`` as an available device.

    Under torchrun, ``"cuda"`` is the process's own GPU, ``cuda:LOCAL_RANK``.
    """
    if local_rank is None:
        try:
            local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        except ValueError:
            local_rank = 0
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cpu":
        return torch.device("cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(
                f"train.device: expected an available device (cpu), got {name!r} "
                "(CUDA is not available)"
            )
        if name == "cuda":
            return torch.device("cuda", local_rank if env_world_size() > 1 else 0)
        try:
            dev = torch.device(name)
        except RuntimeError:
            raise ConfigError(f"train.device: expected cuda:N, got {name!r}") from None
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ConfigError(
                f"train.device: expected cuda:0..cuda:{torch.cuda.device_count() - 1}, got {name!r}"
            )
        return dev
    if name == "mps":
        if not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
            raise ConfigError(
                "train.device: expected an available device, got 'mps' (MPS is not available)"
            )
        return torch.device("mps")
    raise ConfigError(f"train.device: expected one of auto, cpu, cuda, cuda:N, mps, got {name!r}")


_GATES = {"LSTMCell": 4, "GRUCell": 3}


def estimated_bytes(spec: Mapping[str, Any]) -> int:
    """A lower estimate of the float32 bytes training ``spec`` needs: the recurrent weights
    (gates x H x (I + H + 2) per layer and direction) and the output layer, counted four times
    (parameters, gradients and Adam's two moments).

    Example:
        >>> estimated_bytes({"cell": "GRUCell", "input_size": 1, "hidden_size": 10,
        ...                  "output_size": 1, "num_layers": 1, "bidirectional": False})
        6416
    """
    H, I, O = int(spec["hidden_size"]), int(spec["input_size"]), int(spec["output_size"])
    g = _GATES.get(str(spec["cell"]), 1)
    dirs = 2 if spec.get("bidirectional") else 1
    n = 0
    for layer in range(int(spec["num_layers"])):
        width = I if layer == 0 else H * dirs
        n += dirs * g * H * (width + H + 2)
    n += O * (H * dirs + 1)
    return 4 * 4 * n


def _memory_bytes() -> int | None:
    try:
        return int(os.sysconf("SC_PHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):  # pragma: no cover - not POSIX
        return None


def check_model_size(spec: Mapping[str, Any]) -> None:
    """Refuse a model that cannot fit in this machine's memory, *before* allocating it (a
    hidden size of 10^6 would otherwise fail deep inside torch, or swap the machine)."""
    need, have = estimated_bytes(spec), _memory_bytes()
    if have is not None and need > have:
        raise ConfigError(
            f"model.hidden_size: {spec['hidden_size']} needs about {need / 2**30:.1f} GiB for "
            f"the parameters, gradients and optimizer state ({spec['num_layers']} layer(s) of "
            f"{spec['cell']}), more than this machine's {have / 2**30:.1f} GiB; choose a smaller "
            "hidden size"
        )


def _make_optimizer(c: Mapping[str, Any], params: Any) -> torch.optim.Optimizer:
    o = c["optim"]
    lr, wd, mom = o["lr"], o["weight_decay"], o["momentum"]
    if o["name"] == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=wd)
    if o["name"] == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=wd)
    if o["name"] == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=mom, weight_decay=wd)
    return torch.optim.RMSprop(params, lr=lr, momentum=mom, weight_decay=wd)


def _make_scheduler(c: Mapping[str, Any], opt: torch.optim.Optimizer) -> Any:
    o = c["optim"]
    if o["scheduler"] == "step":
        return torch.optim.lr_scheduler.StepLR(opt, o["step_size"], o["gamma"])
    if o["scheduler"] == "exponential":
        return torch.optim.lr_scheduler.ExponentialLR(opt, o["gamma"])
    if o["scheduler"] == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, o["t_max"])
    return None


def _seeded(seed: int, *salt: int) -> torch.Generator:
    v = seed
    for s in salt:
        v = (v * 1_000_003 + s + 1) % (2**63 - 1)
    return torch.Generator().manual_seed(v)
