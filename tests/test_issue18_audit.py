"""Regressions from the outside-in audit of issue 18's public API (a torch.nn user's view):
the drop-ins' ``reset_parameters`` (torch.nn.RNNBase has it; code calls it), a ``layer_norm``
that must be a bool, ConvLSTM's ``spatial_size`` errors, the moving-shapes ``data_root`` and
Recurrent's ``generator`` argument, zoneout rates on dropout masks,
torch.jit.trace of the drop-ins, the map of a ConvLSTM. Each failed before its fix."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
import torch

import rnnlab
from rnnlab.cells import ConvLSTMCell, LSTMCell, VariationalDropoutCell, ZoneoutCell
from rnnlab.data import MovingShapes
from rnnlab.layers import Recurrent


@pytest.mark.parametrize(
    ("kind", "kw"),
    [("LSTM", {"num_layers": 2, "proj_size": 2}), ("GRU", {"bidirectional": True}), ("RNN", {})],
)
def test_dropin_reset_parameters_is_torch_nn_s(kind, kw):
    ref = getattr(torch.nn, kind)(3, 4, **kw)
    m = getattr(rnnlab.nn, kind)(3, 4, **kw)
    with torch.no_grad():
        for p in m.parameters():
            p.fill_(7.0)
    # torch.nn.RNNBase.reset_parameters: uniform(±1/√H) on every weight, in torch's order,
    # so the same seed gives torch's weights
    torch.manual_seed(3)
    ref.reset_parameters()
    torch.manual_seed(3)
    m.reset_parameters()
    for name, w in ref.state_dict().items():
        assert torch.equal(m.state_dict()[name], w), name
    x = torch.randn(5, 2, 3, dtype=torch.float64)
    ref.double(), m.double()
    assert torch.allclose(m(x)[0], ref(x)[0], atol=1e-12)  # the cells run the new weights


def test_dropin_layer_norm_reset_parameters_restores_gains_and_biases():
    m = rnnlab.nn.LSTM(3, 4, layer_norm=True, forget_bias=1.0)
    with torch.no_grad():
        for p in m.parameters():
            p.fill_(7.0)
    m.reset_parameters()
    assert torch.equal(m.gain_ih_l0, torch.ones(16)) and torch.equal(m.gain_c_l0, torch.ones(4))
    assert torch.equal(m.bias_hh_l0, torch.zeros(16)) and torch.equal(m.bias_c_l0, torch.zeros(4))
    assert torch.equal(m.bias_ih_l0[4:8], torch.ones(4))  # forget_bias applied again
    assert float(m.weight_hh_l0.detach().abs().max()) <= 0.5  # uniform(±1/√H), H = 4


@pytest.mark.parametrize("value", ["False", "yes", 1.0, None])
def test_layer_norm_must_be_a_bool(value):
    for cls in (rnnlab.nn.LSTM, rnnlab.nn.GRU):
        with pytest.raises(TypeError, match=rf"layer_norm: expected a bool, got .*{value!r}"):
            cls(3, 4, layer_norm=value)
    assert rnnlab.nn.GRU(3, 4, layer_norm=np.bool_(True)).layer_norm is True


def test_dropin_repr_names_the_extras_only_when_set():
    assert repr(rnnlab.nn.LSTM(3, 4)) == repr(torch.nn.LSTM(3, 4))
    m = rnnlab.nn.GRU(3, 4, layer_norm=True, recurrent_dropout=0.25)
    assert repr(m) == "GRU(3, 4, layer_norm=True, recurrent_dropout=0.25)"


@pytest.mark.parametrize("size", [5, "5x5", (5,), (5, 5, 1)])
def test_convlstm_spatial_size_errors_name_the_argument(size):
    cell = ConvLSTMCell(1, 2, 3)
    with pytest.raises(ValueError, match=rf"spatial_size: expected \(height, width\).*{size!r}"):
        cell.initial_state(2, spatial_size=size)
    with pytest.raises(ValueError, match="spatial_size: expected"):
        cell.flat(size)
    assert cell.initial_state(2, spatial_size=torch.Size([3, 4])).h.shape == (2, 2, 3, 4)


def _tiny_fashion(folder: Path) -> None:
    """Four 28x28 IDX images (raw, uncompressed) and their labels."""
    folder.mkdir(parents=True)
    pixels = (np.arange(4 * 28 * 28) % 251).astype(np.uint8)
    header = struct.pack(">HBBIII", 0, 0x08, 3, 4, 28, 28)
    (folder / "train-images-idx3-ubyte").write_bytes(header + pixels.tobytes())
    labels = struct.pack(">HBBI", 0, 0x08, 1, 4) + bytes([0, 1, 2, 3])
    (folder / "train-labels-idx1-ubyte").write_bytes(labels)


def test_moving_shapes_data_root_may_be_the_data_folder_above_fashion_mnist(tmp_path):
    _tiny_fashion(tmp_path / "fashion-mnist")  # the layout $RNNLAB_DATA is searched in
    direct = MovingShapes(2, 3, size=12, sprite_size=6, data_root=tmp_path / "fashion-mnist")
    above = MovingShapes(2, 3, size=12, sprite_size=6, data_root=tmp_path)
    assert above.params["sprites"] == "fashion-mnist" and torch.equal(above.x, direct.x)
    with pytest.raises(FileNotFoundError, match=r"^data_root: the folder given, .*empty"):
        MovingShapes(2, 3, data_root=tmp_path / "empty")


def test_recurrent_generator_must_be_a_generator():
    layer = Recurrent(LSTMCell(3, 4), dropout_state=0.2)
    with pytest.raises(TypeError, match="generator: expected a torch.Generator or None, got int"):
        layer(torch.randn(2, 5, 3), generator=5)


def test_zoneout_refuses_rates_on_dropout_masks():
    # the masks never change within a sequence: zoning them out was silently a no-op
    inner = VariationalDropoutCell(LSTMCell(3, 4), 0.1, 0.2)
    with pytest.raises(ValueError, match=r"rates: \['mask_h'\] are dropout masks"):
        ZoneoutCell(inner, {"h": 0.1, "mask_h": 0.5})
    assert ZoneoutCell(inner, 0.1).rates == {"h": 0.1, "c": 0.1, "mask_x": 0.0, "mask_h": 0.0}


@pytest.mark.parametrize(
    ("kind", "kw"), [("LSTM", {"layer_norm": True}), ("GRU", {"layer_norm": True})]
)
def test_dropins_trace_with_torch_jit_as_torch_nn_does(kind, kw):
    # under torch.jit.trace a batch size is a 0-d tensor: initial_state refused it
    m = getattr(rnnlab.nn, kind)(3, 4, num_layers=2, **kw).eval()
    traced = torch.jit.trace(m, (torch.randn(5, 2, 3),), check_trace=False)
    x = torch.randn(6, 3, 3)  # another T and B
    out, state = traced(x)
    ref, ref_state = m(x)
    assert torch.allclose(out, ref, atol=1e-6) and out.shape == (6, 3, 4)


def test_map_of_a_convlstm_points_to_its_flat_view():
    from rnnlab.dynamics import Map

    with pytest.raises(TypeError, match=r"Map\.from_cell\(cell\.flat\(\(H, W\)\)\)"):
        Map.from_cell(ConvLSTMCell(1, 2, 3))
    assert Map.from_cell(ConvLSTMCell(1, 2, 3).flat((3, 3))).state_size == 36
