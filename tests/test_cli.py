"""The command line: --help, --version, python -m rnnlab, and a short demo run."""

from __future__ import annotations

import subprocess
import sys

import rnnlab
from rnnlab.cli import main


def test_version_and_help(capsys):
    try:
        main(["--version"])
    except SystemExit as e:
        assert e.code == 0
    assert rnnlab.__version__ in capsys.readouterr().out
    assert main([]) == 0
    assert "demo" in capsys.readouterr().out


def test_python_dash_m():
    out = subprocess.run(
        [sys.executable, "-m", "rnnlab", "--version"], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == f"rnnlab {rnnlab.__version__}"


def test_demo_loss_falls(capsys):
    assert main(["demo", "--steps", "60"]) == 0
    out = capsys.readouterr().out
    lines = [ln for ln in out.splitlines() if "->" in ln]
    assert len(lines) == 2
    for ln in lines:  # "Elman   mse 0.5166 -> 0.00589  (88x lower)"
        first, last = float(ln.split()[2]), float(ln.split()[4])
        assert last < 0.5 * first, ln
