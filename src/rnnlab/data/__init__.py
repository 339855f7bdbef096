"""Tasks and data sets: synthetic tasks, dynamic-system series, images and text, all offline.

Conventions (details in :mod:`rnnlab.data.base`): batch-first tensors (B, T, F); every data set
item is a dict ``{"x", "y"}`` (+ ``"length"`` for variable lengths, batched by
:func:`pad_collate`); each task states its lecture unfolding ``case`` (1-4) and its trivial
baseline (``baseline_prediction()``, ``baseline_loss()``, ``expected_baseline_loss``); every
generator is seeded and never touches a global RNG.

==================== ===================================================== ====
name                 what                                                  case
==================== ===================================================== ====
AddingProblem        Le et al. 2015 / Hochreiter & Schmidhuber 1997        3
CopyMemory           Arjovsky et al. 2016                                  4
TemporalXOR          Elman 1990, every third bit the XOR of two            4
ElmanLetters         Elman 1990, b/d/g -> ba/dii/guuu, 6-bit features      4
FlipFlop             Sussillo & Barak 2013, K-bit flip-flop                4
FutureContext        the lecture's "bank": labels from future inputs       4
MapSequences         the lecture's maps / any map, from h(0) or one-step   1/4
ForecastWindows      windows over a Series (lorenz, mackey_glass, ...)     3/4
FashionMNIST         IDX files; image / rows / pixels / permuted views     2/3
Digits               scikit-learn's 8x8 digits                             2/3
CharSequences        character-level text (with CharCorpus, StreamBatches) 4
MovingShapes         bouncing sprites, next frame (B, T, 1, S, S)          4
==================== ===================================================== ====
"""

from .adding import ADDING_VARIANTS, AddingProblem, adding_baseline_mse
from .bank import FutureContext
from .base import IGNORE_INDEX, SequenceTask, pad_collate, sequence_loss
from .copy_memory import CopyMemory, copy_memory_baseline_ce
from .digits import Digits, load_digits
from .elman import (
    FEATURE_NAMES,
    LETTER_BASELINE_MSE,
    LETTER_FEATURES,
    SYLLABLES,
    XOR_BASELINE_MSE,
    XOR_OPTIMAL_MSE,
    ElmanLetters,
    TemporalXOR,
    letter_stream,
    letters_to_features,
    xor_stream,
)
from .flipflop import FlipFlop, flipflop_baseline_mse, flipflop_targets
from .forecasting import ForecastWindows, forecasting_split
from .images import (
    DEBIAN_DIR,
    FASHION_MNIST_CLASSES,
    VIEWS,
    FashionMNIST,
    ImageClassification,
    find_fashion_mnist,
    fixed_permutation,
    image_view,
    load_fashion_mnist,
    read_idx,
)
from .maps import MAPS, MapSequences, henon_map, iterate_map, linear_map, logistic_map
from .moving_shapes import SHAPES, MovingShapes, shape_sprite
from .series import (
    SERIES,
    Series,
    damped_oscillator_series,
    henon_series,
    logistic_series,
    lorenz_series,
    mackey_glass_series,
    make_series,
    sine_series,
)
from .sunspots import sunspots_forecasting, sunspots_series
from .text import (
    CharCorpus,
    CharSequences,
    CharVocab,
    StreamBatches,
    batchify,
    read_text,
    split_by_position,
    unigram_log_probs,
)

__all__ = [
    "ADDING_VARIANTS",
    "DEBIAN_DIR",
    "FASHION_MNIST_CLASSES",
    "FEATURE_NAMES",
    "IGNORE_INDEX",
    "LETTER_BASELINE_MSE",
    "LETTER_FEATURES",
    "MAPS",
    "SERIES",
    "SHAPES",
    "SYLLABLES",
    "VIEWS",
    "XOR_BASELINE_MSE",
    "XOR_OPTIMAL_MSE",
    "AddingProblem",
    "CharCorpus",
    "CharSequences",
    "CharVocab",
    "CopyMemory",
    "Digits",
    "ElmanLetters",
    "FashionMNIST",
    "FlipFlop",
    "ForecastWindows",
    "FutureContext",
    "ImageClassification",
    "MapSequences",
    "MovingShapes",
    "SequenceTask",
    "Series",
    "StreamBatches",
    "TemporalXOR",
    "adding_baseline_mse",
    "batchify",
    "copy_memory_baseline_ce",
    "damped_oscillator_series",
    "find_fashion_mnist",
    "fixed_permutation",
    "flipflop_baseline_mse",
    "flipflop_targets",
    "forecasting_split",
    "henon_map",
    "henon_series",
    "image_view",
    "iterate_map",
    "letter_stream",
    "letters_to_features",
    "linear_map",
    "load_digits",
    "load_fashion_mnist",
    "logistic_map",
    "logistic_series",
    "lorenz_series",
    "mackey_glass_series",
    "make_series",
    "pad_collate",
    "read_idx",
    "read_text",
    "sequence_loss",
    "shape_sprite",
    "sine_series",
    "split_by_position",
    "sunspots_forecasting",
    "sunspots_series",
    "unigram_log_probs",
    "xor_stream",
]
