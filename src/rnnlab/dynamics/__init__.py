"""The lecture's first part made computable: RNNs as discrete dynamic systems.

``h(t+1) = f(h(t), x(t))``: one :class:`Map` for functions, linear systems, rnnlab cells and
stacks, and torch.nn RNN/LSTM/GRU modules; trajectories; fixed points (closed form or search
with certificates) and their stability; periodic orbits; Lyapunov spectra; vanishing/exploding
diagnostics; continuation in a constant input with bifurcation detection.
"""

from .behaviour import Behaviour, long_run_behaviour
from .continuation import Bifurcation, Branch, Continuation, continue_fixed_points
from .fixedpoints import (
    FixedPoints,
    FixedPointSolver,
    NonConverged,
    find_fixed_points,
    linear_fixed_points,
    sample_seeds,
)
from .gradients import (
    GradientFlow,
    JacobianProducts,
    MatrixSpectrum,
    NormPrediction,
    gradient_flow,
    jacobian_products,
    predict_gradient_norms,
    predict_state_norms,
    recurrent_weight,
    spectrum,
)
from .lyapunov import LyapunovSpectrum, lyapunov_spectrum
from .maps import (
    CellMap,
    FunctionMap,
    IteratedMap,
    LinearMap,
    Map,
    StackedCellsMap,
    TorchRNNMap,
    as_map,
    simulate,
)
from .modules import ClosedLoopMap, DropInMap, LayersMap, module_map
from .periodic import PeriodicOrbits, detect_period, find_periodic_orbits, monodromy
from .stability import (
    Linearization,
    Stability,
    classify,
    input_jacobian,
    jacobian,
    linearize,
    multiplier,
    stability,
    time_constants,
)

__all__ = [
    "Behaviour",
    "long_run_behaviour",
    "Bifurcation",
    "Branch",
    "CellMap",
    "ClosedLoopMap",
    "DropInMap",
    "LayersMap",
    "module_map",
    "Continuation",
    "FixedPointSolver",
    "FixedPoints",
    "FunctionMap",
    "GradientFlow",
    "IteratedMap",
    "JacobianProducts",
    "LinearMap",
    "Linearization",
    "LyapunovSpectrum",
    "Map",
    "MatrixSpectrum",
    "NonConverged",
    "NormPrediction",
    "PeriodicOrbits",
    "Stability",
    "StackedCellsMap",
    "TorchRNNMap",
    "as_map",
    "classify",
    "continue_fixed_points",
    "detect_period",
    "find_fixed_points",
    "find_periodic_orbits",
    "gradient_flow",
    "input_jacobian",
    "jacobian",
    "jacobian_products",
    "linear_fixed_points",
    "linearize",
    "lyapunov_spectrum",
    "monodromy",
    "multiplier",
    "predict_gradient_norms",
    "predict_state_norms",
    "recurrent_weight",
    "sample_seeds",
    "simulate",
    "spectrum",
    "stability",
    "time_constants",
]
