"""Moving shapes: objects moving and bouncing in a frame, generated procedurally, offline.

Shapes: N examples, T steps, S frame side (pixels), K objects, P sprite side.

Each sequence has K sprites, each with a random start position and a constant velocity; a
sprite that would leave the frame bounces off its edge (the velocity component flips). Frames
are grey images in [0, 1], the pixelwise maximum of the sprites (overlaps do not add up). The
sprites are simple shapes (square, disc, triangle, cross, ring), or Fashion-MNIST images
shrunk to P x P when ``data_root`` points at the IDX files (the "Moving MNIST" of Srivastava
et al. 2015, with Fashion-MNIST; Shi et al. 2015 trained the ConvLSTM on Moving MNIST).

Task: next-frame prediction, lecture case 4: ``x`` are frames 0..T-1, ``y`` frames 1..T, both
(N, T, 1, S, S), loss MSE. Trivial baseline: "nothing moves", predict frame t+1 = frame t.
A per-frame model cannot beat much more than that, since one frame does not show the motion.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .._checks import check_choice, check_float, check_int
from ._checks import make_rng, seed_value
from .base import SequenceTask

SHAPES = ("square", "disc", "triangle", "cross", "ring")

__all__ = ["SHAPES", "MovingShapes", "shape_sprite"]


def shape_sprite(name: str, size: int) -> np.ndarray:
    """A (P, P) float32 sprite in {0, 1} of one of :data:`SHAPES`."""
    check_choice(name, "name", SHAPES)
    size = check_int(size, "size", low=3)
    r = (np.arange(size) + 0.5) / size * 2 - 1  # pixel centres in (-1, 1)
    yy, xx = np.meshgrid(r, r, indexing="ij")
    rad = np.sqrt(xx**2 + yy**2)
    if name == "square":
        m = np.ones((size, size), bool)
    elif name == "disc":
        m = rad <= 1.0
    elif name == "ring":
        m = (rad <= 1.0) & (rad >= 0.55)
    elif name == "cross":
        m = (np.abs(xx) <= 0.3) | (np.abs(yy) <= 0.3)
    else:  # triangle, apex up
        m = np.abs(xx) <= (yy + 1) / 2
    return m.astype(np.float32)


def _fashion_sprites(root: str | os.PathLike[str], size: int, count: int, rng: Any) -> np.ndarray:
    from .images import load_fashion_mnist

    try:
        images, _ = load_fashion_mnist(root, train=True)
    except FileNotFoundError as e:  # name this task's argument, not the loader's
        message = str(e).removeprefix("root: ")
        raise FileNotFoundError(f"data_root: {message}") from e
    idx = torch.from_numpy(rng.integers(0, images.shape[0], size=count))
    small = F.interpolate(images[idx].float().unsqueeze(1) / 255.0, size=(size, size), mode="area")
    return small[:, 0].numpy()  # (count, P, P)


class MovingShapes(SequenceTask):
    """Bouncing sprites, next-frame prediction (see the module docstring).

    Args:
        n: number of sequences N.
        steps: T, frames in ``x`` (the sequence has T + 1 frames).
        size: S, the frame side in pixels.
        objects: K sprites per sequence.
        sprite_size: P, the sprite side (P < S).
        speed: (lowest, highest) speed in pixels per step; directions are uniform.
        shapes: which of :data:`SHAPES` to draw from (ignored with ``data_root``).
        data_root: a folder with the Fashion-MNIST IDX files, or a data root holding them
            in ``fashion-mnist/`` or ``FashionMNIST/raw/`` (see
            :func:`rnnlab.data.find_fashion_mnist`), for image sprites; None for shapes.
        seed: int or ``numpy.random.Generator``.

    Items: ``{"x": (T, 1, S, S), "y": (T, 1, S, S)}`` float32.

    Example:
        >>> task = MovingShapes(4, 6, size=16, sprite_size=5, seed=0)
        >>> task.x.shape, bool((task.x[:, 1:] == task.y[:, :-1]).all())
        (torch.Size([4, 6, 1, 16, 16]), True)
    """

    case = 4
    loss = "mse"
    baseline = "nothing moves: predict frame t+1 = frame t"

    def __init__(
        self,
        n: int,
        steps: int = 10,
        *,
        size: int = 32,
        objects: int = 2,
        sprite_size: int = 8,
        speed: tuple[float, float] = (1.0, 3.0),
        shapes: tuple[str, ...] = SHAPES,
        data_root: str | os.PathLike[str] | None = None,
        seed: Any = 0,
    ) -> None:
        n = check_int(n, "n", low=1)
        steps = check_int(steps, "steps", low=1)
        size = check_int(size, "size", low=4)
        objects = check_int(objects, "objects", low=1)
        sprite_size = check_int(sprite_size, "sprite_size", low=3, high=size - 1)
        if not isinstance(speed, (tuple, list)) or len(speed) != 2:
            raise ValueError(f"speed: expected (lowest, highest), got {speed!r}")
        lo = check_float(speed[0], "speed[0]", low=0.0)
        hi = check_float(speed[1], "speed[1]", low=lo)
        if not shapes or any(s not in SHAPES for s in shapes):
            raise ValueError(f"shapes: expected a non-empty subset of {SHAPES}, got {shapes!r}")
        rng = make_rng(seed)
        if data_root is not None:
            sprites = _fashion_sprites(data_root, sprite_size, n * objects, rng)
        else:
            bank = np.stack([shape_sprite(s, sprite_size) for s in shapes])
            sprites = bank[rng.integers(0, len(shapes), size=n * objects)]
        sprites = sprites.reshape(n, objects, sprite_size, sprite_size)

        room = float(size - sprite_size)  # top-left corner lies in [0, room]
        pos = rng.uniform(0.0, room, size=(n, objects, 2))
        angle = rng.uniform(0.0, 2 * np.pi, size=(n, objects))
        speed_v = rng.uniform(lo, hi, size=(n, objects))
        vel = np.stack([np.sin(angle), np.cos(angle)], -1) * speed_v[..., None]  # (N, K, 2)
        frames = np.zeros((n, steps + 1, size, size), np.float32)
        for t in range(steps + 1):
            corner = np.rint(pos).astype(int)  # (N, K, 2)
            for i in range(n):
                for k in range(objects):
                    r, c = corner[i, k]
                    window = frames[i, t, r : r + sprite_size, c : c + sprite_size]
                    np.maximum(window, sprites[i, k], out=window)
            pos = pos + vel
            # Bounce: reflect the position back into [0, room] and flip that velocity.
            low, high = pos < 0, pos > room
            pos = np.clip(np.where(low, -pos, np.where(high, 2 * room - pos, pos)), 0.0, room)
            vel = np.where(low | high, -vel, vel)
        video = torch.from_numpy(frames).unsqueeze(2)  # (N, T+1, 1, S, S)
        params = {
            "task": "moving_shapes",
            "n": n,
            "steps": steps,
            "size": size,
            "objects": objects,
            "sprite_size": sprite_size,
            "speed": [lo, hi],
            "shapes": list(shapes),
            "sprites": "fashion-mnist" if data_root is not None else "shapes",
            "seed": seed_value(seed),
        }
        super().__init__(video[:, :-1].contiguous(), video[:, 1:].contiguous(), params)

    def baseline_prediction(self) -> Tensor:
        """Frame t as the prediction of frame t+1: ``x`` itself."""
        return self.x.clone()
