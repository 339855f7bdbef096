"""The API reference covers the public surface: every name in rnnlab.__all__ and in every
public sub-package's __all__ has an entry, and every class and function has a runnable example
(in its docstring or in docs/reference/examples/<namespace>.rst).

The public names are computed here, at test time, from the packages themselves (the same
functions the Sphinx extension uses to write the pages), so a name another change adds later is
caught. This checks presence; `make docs` runs the examples (sphinx.ext.doctest).
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[1] / "docs"
sys.path.insert(0, str(DOCS / "_ext"))

import rnnlab_docs  # noqa: E402 - docs/_ext is not a package

# Names whose examples are still being written (issue 20). This list only shrinks: a name that
# gets an example must leave it, and a name not on it must have an example.
PENDING: set[str] = {
    "rnnlab.data.CharCorpus",
    "rnnlab.data.CharSequences",
    "rnnlab.data.Digits",
    "rnnlab.data.ElmanLetters",
    "rnnlab.data.FlipFlop",
    "rnnlab.data.ForecastWindows",
    "rnnlab.data.FutureContext",
    "rnnlab.data.ImageClassification",
    "rnnlab.data.SequenceTask",
    "rnnlab.data.Series",
    "rnnlab.data.TemporalXOR",
    "rnnlab.data.adding_baseline_mse",
    "rnnlab.data.batchify",
    "rnnlab.data.copy_memory_baseline_ce",
    "rnnlab.data.damped_oscillator_series",
    "rnnlab.data.find_fashion_mnist",
    "rnnlab.data.fixed_permutation",
    "rnnlab.data.flipflop_baseline_mse",
    "rnnlab.data.flipflop_targets",
    "rnnlab.data.forecasting_split",
    "rnnlab.data.henon_map",
    "rnnlab.data.henon_series",
    "rnnlab.data.image_view",
    "rnnlab.data.iterate_map",
    "rnnlab.data.letter_stream",
    "rnnlab.data.letters_to_features",
    "rnnlab.data.linear_map",
    "rnnlab.data.load_digits",
    "rnnlab.data.load_fashion_mnist",
    "rnnlab.data.logistic_map",
    "rnnlab.data.logistic_series",
    "rnnlab.data.lorenz_series",
    "rnnlab.data.mackey_glass_series",
    "rnnlab.data.make_series",
    "rnnlab.data.read_idx",
    "rnnlab.data.read_text",
    "rnnlab.data.sequence_loss",
    "rnnlab.data.sine_series",
    "rnnlab.data.split_by_position",
    "rnnlab.data.sunspots_forecasting",
    "rnnlab.data.sunspots_series",
    "rnnlab.data.unigram_log_probs",
    "rnnlab.data.xor_stream",
    "rnnlab.dynamics.Bifurcation",
    "rnnlab.dynamics.Branch",
    "rnnlab.dynamics.Continuation",
    "rnnlab.dynamics.FixedPointSolver",
    "rnnlab.dynamics.FixedPoints",
    "rnnlab.dynamics.GradientFlow",
    "rnnlab.dynamics.IteratedMap",
    "rnnlab.dynamics.JacobianProducts",
    "rnnlab.dynamics.LinearMap",
    "rnnlab.dynamics.Linearization",
    "rnnlab.dynamics.LyapunovSpectrum",
    "rnnlab.dynamics.Map",
    "rnnlab.dynamics.MatrixSpectrum",
    "rnnlab.dynamics.NonConverged",
    "rnnlab.dynamics.NormPrediction",
    "rnnlab.dynamics.PeriodicOrbits",
    "rnnlab.dynamics.Stability",
    "rnnlab.dynamics.StackedCellsMap",
    "rnnlab.dynamics.TorchRNNMap",
    "rnnlab.dynamics.as_map",
    "rnnlab.dynamics.classify",
    "rnnlab.dynamics.detect_period",
    "rnnlab.dynamics.find_fixed_points",
    "rnnlab.dynamics.find_periodic_orbits",
    "rnnlab.dynamics.gradient_flow",
    "rnnlab.dynamics.input_jacobian",
    "rnnlab.dynamics.jacobian_products",
    "rnnlab.dynamics.linear_fixed_points",
    "rnnlab.dynamics.linearize",
    "rnnlab.dynamics.monodromy",
    "rnnlab.dynamics.multiplier",
    "rnnlab.dynamics.predict_gradient_norms",
    "rnnlab.dynamics.predict_state_norms",
    "rnnlab.dynamics.recurrent_weight",
    "rnnlab.dynamics.sample_seeds",
    "rnnlab.dynamics.simulate",
    "rnnlab.dynamics.time_constants",
    "rnnlab.engine.clear",
    "rnnlab.engine.disabled",
    "rnnlab.engine.lookup",
    "rnnlab.engine.lookup_teacher_forced",
    "rnnlab.engine.register",
    "rnnlab.engine.register_defaults",
    "rnnlab.engine.register_teacher_forced",
    "rnnlab.engine.status",
    "rnnlab.experiments.Claim",
    "rnnlab.experiments.RunContext",
    "rnnlab.experiments.experiment",
    "rnnlab.experiments.load_all",
    "rnnlab.init.chrono_",
    "rnnlab.init.forget_bias_",
    "rnnlab.init.identity_",
    "rnnlab.init.orthogonal_",
    "rnnlab.init.recurrent_blocks",
    "rnnlab.init.spectral_radius",
    "rnnlab.init.spectral_radius_",
    "rnnlab.layers.build_rcnn_model",
    "rnnlab.layers.count_parameters",
    "rnnlab.layers.wcnn_channels",
    "rnnlab.layers.Alternating",
    "rnnlab.layers.BidirectionalOutput",
    "rnnlab.layers.FeedbackSchedule",
    "rnnlab.layers.FreeRunning",
    "rnnlab.layers.Mixed",
    "rnnlab.layers.RecurrentResult",
    "rnnlab.layers.TeacherForcing",
    "rnnlab.layers.unroll",
    "rnnlab.plots.continuation",
    "rnnlab.plots.eigenvalues",
    "rnnlab.plots.gradient_norms",
    "rnnlab.plots.trajectories_pca",
    "rnnlab.training.ConfigError",
    "rnnlab.training.Constant",
    "rnnlab.training.Decay",
    "rnnlab.training.Exponential",
    "rnnlab.training.FitResult",
    "rnnlab.training.Generated",
    "rnnlab.training.InverseSigmoid",
    "rnnlab.training.Linear",
    "rnnlab.training.ModelOutput",
    "rnnlab.training.RunDirError",
    "rnnlab.training.ScheduledSampling",
    "rnnlab.training.StateGradientTap",
    "rnnlab.training.TaskData",
    "rnnlab.training.TrainingDiverged",
    "rnnlab.training.Window",
    "rnnlab.training.WindowResult",
    "rnnlab.training.build_model",
    "rnnlab.training.build_task",
    "rnnlab.training.check_config",
    "rnnlab.training.clip_gradients",
    "rnnlab.training.default_config",
    "rnnlab.training.feed_mask",
    "rnnlab.training.latest_checkpoint",
    "rnnlab.training.load_checkpoint",
    "rnnlab.training.load_run",
    "rnnlab.training.masked_loss",
    "rnnlab.training.masked_loss_sum",
    "rnnlab.training.resolve",
    "rnnlab.training.save_checkpoint",
    "rnnlab.training.schedule_at",
    "rnnlab.training.step_targets",
    "rnnlab.training.trainer_from_checkpoint",
    "rnnlab.training.unfold_input",
}


def test_every_public_class_and_function_has_an_example() -> None:
    missing = [name for name in rnnlab_docs.missing_examples() if name not in PENDING]
    assert not missing, (
        f"{len(missing)} public name(s) have no runnable example. Add a '>>>' example to the "
        "docstring, or an entry to docs/reference/examples/<namespace>.rst:\n\n"
        "    .. example:: NAME\n\n        >>> ...\n\nmissing:\n  " + "\n  ".join(missing)
    )


def test_pending_list_only_shrinks() -> None:
    done = PENDING - set(rnnlab_docs.missing_examples())
    assert not done, "these have an example now: remove them from PENDING:\n  " + "\n  ".join(
        sorted(done)
    )


def test_no_example_for_a_name_that_is_not_public() -> None:
    stale = rnnlab_docs.stale_examples()
    assert not stale, "examples for names no __all__ lists (renamed or removed?):\n  " + (
        "\n  ".join(stale)
    )


def test_every_public_name_has_exactly_one_entry() -> None:
    entries = rnnlab_docs.entries()
    spaces = rnnlab_docs.namespaces()
    pages = {space: rnnlab_docs.render_page(space, entries) for space in spaces}
    problems = []
    for entry in entries:
        page = pages[entry.canonical]
        if entry.kind == "module":
            assert entry.name in rnnlab_docs.namespaces() or f"{entry.qualname}" in spaces
            continue
        directive = rnnlab_docs._DIRECTIVE[entry.kind]
        wanted = (
            f".. py:data:: {entry.canonical}.{entry.name}"
            if entry.kind == "data"
            else f".. {directive}:: {entry.canonical}.{entry.name}"
        )
        if page.count(wanted + "\n") != 1:
            problems.append(f"{entry.qualname}: no entry on the page of {entry.canonical}")
        if (
            entry.canonical != entry.namespace
            and f"{entry.canonical}.{entry.name}`" not in (pages[entry.namespace])
        ):
            problems.append(f"{entry.qualname}: the page of {entry.namespace} does not link it")
    assert not problems, "\n".join(problems)


def test_namespaces_are_found_from_the_package() -> None:
    spaces = rnnlab_docs.namespaces()
    # Every sub-package that rnnlab loads on demand, and the modules rnnlab.__all__ exports.
    rnnlab = importlib.import_module("rnnlab")
    for sub in rnnlab._SUBMODULES:
        assert f"rnnlab.{sub}" in spaces
    assert {"rnnlab", "rnnlab.cells", "rnnlab.layers", "rnnlab.nn", "rnnlab.init"} <= set(spaces)
    assert not [s for s in spaces if any(p.startswith("_") for p in s.split("."))]


def test_kinds() -> None:
    kinds = {e.qualname: e.kind for e in rnnlab_docs.entries()}
    assert kinds["rnnlab.cells.ElmanCell"] == "class"
    assert kinds["rnnlab.cells.LSTMState"] == "state"  # listed, no example needed
    assert kinds["rnnlab.dynamics.as_map"] == "function"
    assert kinds["rnnlab.data.IGNORE_INDEX"] == "data"
    assert kinds["rnnlab.nn"] == "module"
    canon = {e.qualname: e.canonical for e in rnnlab_docs.entries()}
    assert canon["rnnlab.ElmanCell"] == "rnnlab.cells"  # one entry, where it is defined


def test_examples_file_format(tmp_path: Path) -> None:
    path = tmp_path / "rnnlab.x.rst"
    path.write_text(".. example:: f\n\n   >>> 1 + 1\n   2\n\n.. example:: g\n\n   >>> 3\n   3\n")
    assert rnnlab_docs.read_examples(path) == {"f": ">>> 1 + 1\n2", "g": ">>> 3\n3"}
    path.write_text(".. example:: f\n   >>> 1\n   1\n.. example:: f\n   >>> 2\n   2\n")
    with pytest.raises(ValueError, match="two examples for 'f'"):
        rnnlab_docs.read_examples(path)
