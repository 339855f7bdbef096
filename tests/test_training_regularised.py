"""Training configs with variational dropout and zoneout (issue 18): they build the wrapped
cells, train, and a resumed run reproduces the uninterrupted one, masks included."""

from __future__ import annotations

import pytest
import torch

from rnnlab.cells import VariationalDropoutCell, ZoneoutCell
from rnnlab.training import SequenceModel, Trainer
from rnnlab.training.checkpoint import latest_checkpoint, load_checkpoint


def _cfg(path, steps, cell="LSTMCell"):
    zone = {"h": 0.1, "c": 0.3} if cell == "LSTMCell" else {"h": 0.2}
    return {
        "task": {"name": "text", "length": 6, "options": {"path": str(path)}},
        "model": {
            "cell": cell,
            "hidden_size": 8,
            "dropout_input": 0.2,
            "dropout_state": 0.3,
            "zoneout": zone,
        },
        "bptt": {"stream": True, "k1": 3},
        "train": {
            "steps": steps,
            "batch_size": 4,
            "eval_every": 4,
            "log_every": 1,
            "checkpoint_every": 100,
            "progress": False,
            "grad_monitor_every": 0,
            "plots": False,
        },
    }


def _carry(run):
    meta = load_checkpoint(latest_checkpoint(run / "checkpoints")).meta
    return meta["carry"]


def _leaves(x):
    if isinstance(x, torch.Tensor):
        return [x]
    if isinstance(x, dict):
        return [t for k in sorted(x) for t in _leaves(x[k])]
    if isinstance(x, (list, tuple)):
        return [t for v in x for t in _leaves(v)]
    return []


def test_spec_builds_dropout_inside_zoneout():
    spec = {"cell": "LSTMCell", "input_size": 3, "hidden_size": 4, "output_size": 2,
            "dropout_input": 0.1, "dropout_state": 0.2, "zoneout": {"c": 0.5}}  # fmt: skip
    m = SequenceModel(spec)
    cell = m.core.cell
    assert isinstance(cell, ZoneoutCell) and isinstance(cell.cell, VariationalDropoutCell)
    assert cell.rates == {"h": 0.0, "c": 0.5, "mask_x": 0.0, "mask_h": 0.0}
    assert SequenceModel(m.config()).config() == m.config()
    with pytest.raises(
        ValueError, match=r"model\.dropout_state: expected a probability in \[0, 1\), got 1.5"
    ):
        SequenceModel({**spec, "dropout_state": 1.5})
    with pytest.raises(ValueError, match=r"model\.zoneout: rates: expected state fields"):
        SequenceModel({**spec, "zoneout": {"q": 0.5}})


@pytest.mark.parametrize("cell", ["LSTMCell", "GRUCell"])
def test_dropout_zoneout_config_trains_and_resumes_identically(tmp_path, cell):
    text = tmp_path / "t.txt"
    text.write_text("the quick brown fox jumps over the lazy dog\n" * 12)
    N = 6
    a = Trainer(_cfg(text, 2 * N, cell), tmp_path / "a")
    a.fit()
    b = Trainer(_cfg(text, N, cell), tmp_path / "b")
    b.fit()
    b2 = Trainer(_cfg(text, 2 * N, cell), tmp_path / "b", resume=True)
    assert b2.step == N
    b2.fit()
    for (k, p), q in zip(a.model.state_dict().items(), b2.model.state_dict().values()):
        assert torch.equal(p, q), k
    # the carried state holds the masks: the same after the resumed run as straight through
    ca, cb = _leaves(_carry(tmp_path / "a")), _leaves(_carry(tmp_path / "b"))
    assert ca and len(ca) == len(cb)
    for x, y in zip(ca, cb):
        assert torch.equal(x, y)
    masks = [t for t in ca if t.numel() and bool(((t == 0) | (t > 1)).all())]
    assert masks, "expected dropout masks (0 or 1/(1-p)) in the carried state"
