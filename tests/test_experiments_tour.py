"""The tour's own pieces: the analytic maps experiment end to end, and the helpers the other
experiments stand on (Hénon's fixed points, the GRU's closed-loop map, the schedule's k)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from rnnlab.data import henon_map
from rnnlab.experiments import forcing, henon, maps
from rnnlab.experiments._common import threads
from rnnlab.experiments.registry import RunContext
from rnnlab.training import InverseSigmoid, SequenceModel


def test_maps_experiment_measures_the_lecture_numbers(tmp_path: Path) -> None:
    rows = maps.maps(RunContext("maps", tmp_path, progress=lambda m: None))
    assert [r.status for r in rows] == ["pass"] * len(rows), [
        (r.claim, r.measured) for r in rows if r.status != "pass"
    ]
    assert rows[0].measured == [5.0] and rows[4].measured == [-2.5]
    assert rows[1].measured == 0.8 and rows[5].measured == 1.4
    assert sorted(p.name for p in tmp_path.glob("*.png")) == [
        "cobweb_stable.png",
        "cobweb_stable_from_above.png",
        "cobweb_unstable.png",
        "map_orbits.png",
    ]


def test_henon_fixed_points_and_eigenvalues() -> None:
    P = henon.henon_fixed_points()
    assert torch.allclose(henon_map(1.4, 0.3)(P), P, atol=1e-14)
    assert P[0, 0] > 0 > P[1, 0]  # the one on the attractor first
    w = henon.henon_jacobian_eigenvalues(P[0])
    x = float(P[0, 0])
    J = torch.tensor([[-2.8 * x, 1.0], [0.3, 0.0]], dtype=torch.float64)
    assert torch.allclose(torch.linalg.eigvals(J).abs().sort().values, w.abs().sort().values)
    assert abs(float(w[0].real) - (-1.9237)) < 1e-3  # a saddle: |λ₁| > 1 > |λ₂|
    assert abs(float(w[1])) < 1


def test_closed_loop_map_is_what_generate_runs() -> None:
    torch.manual_seed(0)
    model = SequenceModel(
        {
            "cell": "GRUCell",
            "input_size": 2,
            "hidden_size": 8,
            "output_size": 2,
            "feedback": "input",
        }
    )
    prime = torch.randn(3, 5, 2)
    gen = model.generate(6, prime=prime).values  # (3, 6, 2)
    f = henon.closed_loop_map(model)
    with torch.no_grad():
        h, _ = model.core(prime)
        traj = f.simulate(h[:, -1], 5)  # (3, 6, 8): h after the prime, then F(h), ...
        assert model.readout is not None
        assert torch.allclose(model.readout(traj), gen, atol=1e-6)
        # the float64 copy computes the same map
        h64 = f(h[:, -1].double())
        assert h64.dtype == torch.float64
        assert torch.allclose(h64.float(), traj[:, 1], atol=1e-5)


@pytest.mark.parametrize("steps", [300, 1000, 3000])
def test_scheduled_sampling_is_half_way_at_half_the_budget(steps: int) -> None:
    k = forcing._k_for_midpoint(steps)
    assert math.isclose(InverseSigmoid(k=k)(steps // 2), 0.5, abs_tol=0.01)


def test_threads_restores_the_setting() -> None:
    before = torch.get_num_threads()
    with threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with pytest.raises(RuntimeError), threads(1):
        raise RuntimeError("inside")
    assert torch.get_num_threads() == before
