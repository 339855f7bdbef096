"""Training: the lecture's unfolding cases, output feedback over training time, truncated BPTT,
gradient tools, checkpoints, the trainer and multi-process data parallelism.

==========================  ==============================================================
``Supervision``             the unfolding cases 1-4 and seq2seq; masked losses
``ScheduledSampling``       ε_i over training (``Linear``, ``Exponential``, ``InverseSigmoid``)
``TruncatedBPTT(k1, k2)``   every k1 steps backpropagate k2 steps (Williams & Peng 1990)
``StateGradientTap``        record / clip ∂L/∂h(t) per time step (Graves 2013)
``SequenceModel``           models from a JSON-able spec (rebuilt from checkpoints)
``Trainer``                 run directory, metrics, checkpoints, resume, early stopping, DDP;
                            any nn.Module ``model(x, lengths=None)`` (``UserModel``)
``Callback``                on_step / on_eval / on_checkpoint / on_end, state in checkpoints
==========================  ==============================================================
"""

from .callbacks import Callback, EarlyStopping, GradMonitor
from .checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from .config import OPTIONS, ConfigError, check_config, default_config, resolve
from .forcing import (
    DECAYS,
    Constant,
    Decay,
    Exponential,
    InverseSigmoid,
    Linear,
    ScheduledSampling,
    feed_mask,
    schedule_at,
)
from .gradients import StateGradientTap, clip_gradients
from .model import Generated, ModelOutput, SequenceModel, build_model
from .supervision import (
    Supervision,
    masked_accuracy,
    masked_loss,
    masked_loss_sum,
    step_targets,
    unfold_input,
)
from .tasks import TASKS, TaskData, build_task
from .tbptt import TruncatedBPTT, Window, WindowResult
from .trainer import (
    FitResult,
    RunDirError,
    RunWriteError,
    Trainer,
    TrainingDiverged,
    TrainingInterrupted,
    load_run,
    trainer_from_checkpoint,
)
from .user_model import UserModel

__all__ = [
    "DECAYS",
    "OPTIONS",
    "TASKS",
    "Callback",
    "ConfigError",
    "Constant",
    "Decay",
    "EarlyStopping",
    "Exponential",
    "FitResult",
    "Generated",
    "GradMonitor",
    "InverseSigmoid",
    "Linear",
    "ModelOutput",
    "RunDirError",
    "RunWriteError",
    "ScheduledSampling",
    "SequenceModel",
    "StateGradientTap",
    "Supervision",
    "TaskData",
    "Trainer",
    "TrainingDiverged",
    "TrainingInterrupted",
    "TruncatedBPTT",
    "UserModel",
    "Window",
    "WindowResult",
    "build_model",
    "build_task",
    "check_config",
    "clip_gradients",
    "default_config",
    "feed_mask",
    "latest_checkpoint",
    "load_checkpoint",
    "load_run",
    "masked_accuracy",
    "masked_loss",
    "masked_loss_sum",
    "resolve",
    "save_checkpoint",
    "schedule_at",
    "step_targets",
    "trainer_from_checkpoint",
    "unfold_input",
]
