"""Evaluation: the validation (or training-set) losses of the current parameters. The function
is the :meth:`~rnnlab.training.Trainer.evaluate` method (bound in trainer.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from .._checks import check_choice
from .supervision import masked_accuracy, masked_loss_sum

if TYPE_CHECKING:
    from .trainer import Trainer


@torch.no_grad()
def evaluate(self: Trainer, split: str = "val") -> dict[str, float]:
    """Validation (or training-set) losses of the current parameters.

    ``loss`` (the trainer's loss function, else the task's): free-running for a model with
    output feedback (feeding its own outputs, as at test time), plain otherwise;
    ``forced_loss`` (feedback models): feeding the reference.
    ``accuracy`` (cross-entropy tasks): the fraction of labelled steps whose argmax is the
    label, from the ``loss`` pass; that is per sequence for the one-label cases 2 and 3 (one
    labelled step each) and per step otherwise, counting only valid steps (lengths, masks).
    Every process computes the same numbers.
    """
    check_choice(split, "split", ("train", "val"))
    part = self.task.train if split == "train" else self.task.val
    B = self.config["train"]["batch_size"]
    self.model.eval()
    sums = {"loss": 0.0, "forced_loss": 0.0}
    total = correct = labelled = 0
    ce = self.supervision.loss == "cross_entropy"
    fb = self.model.feedback != "none"
    for a in range(0, len(part), B):
        idx = torch.arange(a, min(a + B, len(part)))
        p = self._prepare(self.task.batch(split, idx))
        x, target, mask = self._to(p["x"]), self._to(p["target"]), self._to(p["mask"])
        lengths, ref, source = self._to(p["lengths"]), self._to(p["reference"]), None
        if p["source"] is not None:
            source = self._to(p["source"])
        per = target.shape[2:].numel() if self.supervision.loss == "mse" else 1
        total += int(mask.sum()) * per
        modes = [("loss", False), ("forced_loss", True)] if fb else [("loss", None)]
        for key, teacher in modes:
            fm = None
            if teacher is not None:
                fm = torch.full(x.shape[:2], teacher, dtype=torch.bool, device=x.device)
                fm[:, : self.config["forcing"]["warmup"]] = True
            with self._autocast():
                y = self.model(
                    x,
                    lengths=lengths,
                    feed_mask=fm,
                    reference=ref,
                    source=source,
                    source_lengths=lengths if source is not None else None,
                ).output.float()
            if self.loss_fn is not None:
                s = self.loss_fn(y, target, mask)
            else:
                s, _ = masked_loss_sum(y, target, mask, self.supervision.loss)
            sums[key] += float(s)
            if ce and key == "loss":
                hit, n = masked_accuracy(y, target, mask)
                correct, labelled = correct + hit, labelled + n
    out = {"loss": sums["loss"] / max(total, 1)}
    out["forced_loss"] = sums["forced_loss"] / max(total, 1) if fb else out["loss"]
    if ce:
        out["accuracy"] = correct / max(labelled, 1)
    self.model.train()
    return out
