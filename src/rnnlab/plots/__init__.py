"""Figures (matplotlib), one function per figure kind; import needs ``rnnlab[plots]``."""

from .dynamics import (
    bifurcation_diagram,
    cobweb,
    continuation,
    eigenvalues,
    gradient_norms,
    trajectories_pca,
)

__all__ = [
    "bifurcation_diagram",
    "cobweb",
    "continuation",
    "eigenvalues",
    "gradient_norms",
    "trajectories_pca",
]
