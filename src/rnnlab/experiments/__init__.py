"""Experiments: each measures one claim of the lecture or of a paper (``rnnlab run NAME``)."""

from .registry import EXPERIMENTS, Claim, RunContext, experiment, load_all

__all__ = ["EXPERIMENTS", "Claim", "RunContext", "experiment", "load_all"]
