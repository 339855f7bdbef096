"""Layers that run cells over time: the reference unroll, bidirectional and deep RNNs."""

from .bidirectional import Bidirectional, BidirectionalOutput, BidirectionalState
from .deep import Stacked
from .feedback import Alternating, FeedbackSchedule, FreeRunning, Mixed, TeacherForcing
from .recurrent import Recurrent, RecurrentResult, unroll

__all__ = [
    "Alternating",
    "Bidirectional",
    "BidirectionalOutput",
    "BidirectionalState",
    "FeedbackSchedule",
    "FreeRunning",
    "Mixed",
    "Recurrent",
    "RecurrentResult",
    "Stacked",
    "TeacherForcing",
    "unroll",
]
