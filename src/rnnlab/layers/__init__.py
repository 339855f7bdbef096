"""Layers that run cells over time: the reference unroll, bidirectional and deep RNNs."""

from .bidirectional import Bidirectional, BidirectionalOutput, BidirectionalState
from .deep import Stacked
from .feedback import (
    Alternating,
    FeedbackSchedule,
    FreeRunning,
    GivenMask,
    Mixed,
    TeacherForcing,
)
from .rcl import RCL, RecurrentMLP
from .rcnn import RCNN, FeedForwardCNN, count_parameters, wcnn_channels
from .rcnn import build_model as build_rcnn_model
from .recurrent import Recurrent, RecurrentResult, unroll

__all__ = [
    "RCL",
    "RCNN",
    "FeedForwardCNN",
    "RecurrentMLP",
    "build_rcnn_model",
    "count_parameters",
    "wcnn_channels",
    "Alternating",
    "Bidirectional",
    "BidirectionalOutput",
    "BidirectionalState",
    "FeedbackSchedule",
    "FreeRunning",
    "GivenMask",
    "Mixed",
    "Recurrent",
    "RecurrentResult",
    "Stacked",
    "TeacherForcing",
    "unroll",
]
