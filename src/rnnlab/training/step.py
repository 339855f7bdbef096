"""One training batch: the data (an epoch's order from its number, a stream's chunks), the
unfolded inputs and targets, and the update(s) — each truncated-BPTT window a forward, a
backward, gradient clipping and an optimizer step. The functions taking ``self`` are
:class:`~rnnlab.training.Trainer` methods (bound in trainer.py).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._sequences import detach_state
from .build import _seeded
from .distributed import all_sum
from .forcing import feed_mask, schedule_at, teacher_probability
from .gradients import clip_gradients
from .supervision import IGNORE_INDEX
from .tbptt import TruncatedBPTT, Window

if TYPE_CHECKING:
    from .trainer import Trainer


def _batches_per_epoch(self: Trainer) -> int:
    B = self.config["train"]["batch_size"]
    if self.stream:
        assert self.task.stream is not None
        width = len(self.task.stream) // B
        return max(1, (width - 1) // self.config["task"]["length"])
    return len(self.task.train) // B


def _global_batch(self: Trainer) -> dict[str, Any]:
    B = self.config["train"]["batch_size"]
    if self.stream:
        from ..data import batchify

        assert self.task.stream is not None
        streams = batchify(self.task.stream, B)  # (B, L // B)
        T = self.config["task"]["length"]
        a = self.batch_in_epoch * T
        k = min(T, streams.shape[1] - 1 - a)
        return {
            "x": self.task.inputs(streams[:, a : a + k]),
            "y": streams[:, a + 1 : a + 1 + k],
            "lengths": None,
        }
    order = torch.randperm(
        len(self.task.train), generator=_seeded(self.config["train"]["seed"], self.epoch)
    )
    idx = order[self.batch_in_epoch * B : (self.batch_in_epoch + 1) * B]
    return self.task.batch("train", idx)


def _prepare(self: Trainer, batch: Mapping[str, Any]) -> dict[str, Any]:
    """Unfolded inputs, step targets, loss mask, reference (global batch)."""
    sup = self.supervision
    x = sup.inputs(batch["x"])
    y = batch["y"]
    lengths = batch["lengths"]
    out: dict[str, Any] = {"lengths": lengths, "source": None}
    if sup.case == "seq2seq":
        out["source"] = x
        x = self._decoder_inputs(y)  # (B, T, O): start, then r(0..T-2)
    T = x.shape[1]
    target, mask = sup.targets(y, T, lengths)
    out.update(x=x, target=target, mask=mask)
    out["reference"] = target.float() if self.model.feedback == "state" else None
    return out


def _decoder_inputs(self: Trainer, y: Tensor) -> Tensor:
    O = self.model.output_size
    if self.model.tokens:
        r = F.one_hot(y.clamp(min=0), O).float()
        r = r * (y != IGNORE_INDEX).unsqueeze(-1)
    else:
        r = y.float()
    return torch.cat([torch.zeros_like(r[:, :1]), r[:, :-1]], 1)


def _shard(self: Trainer, t: Any) -> Any:
    if t is None or not self.dist.enabled:
        return t
    b = t.shape[0] // self.dist.world_size
    return t[self.dist.rank * b : (self.dist.rank + 1) * b]


def _to(self: Trainer, t: Any) -> Any:
    return None if t is None else t.to(self.device)


def _train_batch(self: Trainer) -> tuple[float, float, float | None, list[Any]]:
    c = self.config
    p = self._prepare(self._global_batch())
    B, T = p["x"].shape[0], p["x"].shape[1]
    schedule = schedule_at(self.forcing, self.step, self.epoch)
    gen = _seeded(c["train"]["seed"], 7919, self.step)
    fm = feed_mask(schedule, B, T, generator=gen)
    warm = c["forcing"]["warmup"]
    if fm is not None and warm > 0:
        fm[:, :warm] = True
    per = p["target"].shape[2:].numel() if self.supervision.loss == "mse" else 1
    count = int(p["mask"].sum()) * per
    W = self.dist.world_size
    x, target, mask, lengths, reference, source = (
        self._to(self._shard(p[k]))
        for k in ("x", "target", "mask", "lengths", "reference", "source")
    )
    fm = self._to(self._shard(fm))
    k1 = c["bptt"]["k1"]
    tbptt = TruncatedBPTT(k1, c["bptt"]["k2"]) if k1 is not None else TruncatedBPTT.full(T)
    n_windows = len(tbptt.windows(T))
    every = c["train"]["grad_monitor_every"]
    # a multiple of `every` among this batch's updates (a function of the step: resumable)
    monitor = every > 0 and (self.step + n_windows - 1) // every * every >= self.step
    grad_norms: list[float] = []
    records: list[Any] = []
    tap = self.tap
    use_tap = tap is not None and (monitor or self._state_clip)
    if tap is not None:
        tap.record = monitor

    def before(w: Window) -> None:
        if tap is not None:
            tap.reset()

    def after(n: int, loss: Tensor) -> None:
        if use_tap and monitor:
            assert tap is not None
            w = windows[n]
            for key, sq in tap.squared_norms().items():
                norms = all_sum(sq.to(self.device), self.dist).sqrt().cpu()
                records.append(
                    {
                        "step": self.step,
                        "window_start": w.start,
                        "key": key,
                        "norms": [round(float(v), 8) for v in norms],
                    }
                )
        norm = clip_gradients(
            self.model.parameters(),
            max_norm=c["clip"]["grad_norm"],
            max_value=c["clip"]["grad_value"],
        )
        if not math.isfinite(norm):
            raise FloatingPointError(f"the gradient norm is {norm}")
        grad_norms.append(norm)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.scheduler is not None:
            self.scheduler.step()
        self.step += 1

    windows = tbptt.windows(T)
    self.model.train()
    self.optimizer.zero_grad(set_to_none=True)
    detach = schedule.detach if schedule is not None else True
    carry = self.carry if self.stream else None
    prev_out = self.carry_out if self.stream else None
    model = self.train_model
    if source is not None:
        # encoder-decoder: the encoder's final state starts the decoder
        model = _WithSource(self.train_model, source, lengths)
    ctx = tap if use_tap and tap is not None else _Null()
    with ctx:
        res = tbptt.run(
            model,
            x,
            target,
            mask,
            loss=self.loss_fn if self.loss_fn is not None else self.supervision.loss,
            state=carry,
            lengths=lengths,
            feed_mask=fm,
            detach=detach,
            reference=reference,
            prev_output=prev_out,
            normalizer=count / W,
            sample=c["forcing"]["token_feedback"] == "sample",
            generator=gen,
            after_backward=after,
            before_forward=before,
            reduce_loss=(lambda v: all_sum(v, self.dist) / W) if self.dist.enabled else None,
        )
    if self.stream:
        self.carry = detach_state(res.state)
        self.carry_out = res.last_output
    return (
        res.loss,
        grad_norms[-1] if grad_norms else 0.0,
        teacher_probability(schedule),
        records,
    )


class _Null:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


class _WithSource(nn.Module):
    """Binds an encoder-decoder's source to the calls truncated BPTT makes."""

    def __init__(self, model: nn.Module, source: Tensor, lengths: Tensor | None) -> None:
        super().__init__()
        self.inner = [model]
        self.source, self.lengths = source, lengths

    def forward(self, x: Tensor, state: Any = None, **kw: Any) -> Any:
        return self.inner[0](x, state, source=self.source, source_lengths=self.lengths, **kw)
