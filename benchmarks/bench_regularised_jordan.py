"""Training cost of variational dropout and zoneout around a Jordan network, against without.

What is measured: seconds per training step (forward over T steps, a sum loss, backward) of
``Recurrent(JordanCell(I, H, O))`` at the engine's shapes S1 (T=100, B=32, I=128, H=256) and
S2 (T=500, B=8, I=64, H=128), for a tanh and a linear output layer, with an output (the fed-back
state) of O = H / 4 (the ``output`` column's ``tanh``, ``identity``) and of O = H (``tanh O=H``,
``identity O=H``: the per-step products four times larger, where dropout cost 1.7x at S2
before the kernel's row partition):

* ``plain``: the cell on its own kernel (``rnnlab::jordan_*``; with a linear output the
  recurrence folds into Elman's, one product per step);
* ``plain_ref``: the same under ``engine.disabled()`` (the reference loop with autograd);
* ``dropout``: ``Recurrent(cell, dropout_input=0.25, dropout_state=0.25)``;
* ``zoneout``: ``ZoneoutCell(cell, 0.1)``.

Dropout and zoneout run ``rnnlab::jordan_reg_*`` (engine/regularised_jordan.py): two
dependent products per step whatever the output layer (a mask on y(t-1) breaks the fold), so
the linear-output rows measure that too. With two or more threads that kernel splits the batch
rows between them (csrc/regularised_jordan.h; ``RNNLAB_ENGINE_PARTITION=0`` turns it off); the
plain Jordan kernel runs on one thread. Issue 18's target is at most 1.15x ``plain``.

Noise control as benchmarks/bench_regularised.py: interleaved rounds in rotated order, warm-up
discarded, medians. On a quiet machine:

    OMP_NUM_THREADS=2 python benchmarks/bench_regularised_jordan.py \\
        --out benchmarks/results/regularised_jordan

``--quick`` runs tiny shapes once (a smoke test, seconds).
"""

from __future__ import annotations

from bench_regularised import main  # the same timing, table and files (run from any folder)

from rnnlab.cells import JordanCell, ZoneoutCell
from rnnlab.layers import Recurrent

SHAPES = {"S1": (100, 32, 128, 256), "S2": (500, 8, 64, 128), "tiny": (6, 2, 3, 8)}


KINDS = ("tanh", "identity", "tanh O=H", "identity O=H")  # output activation, output size


def _variants(kind: str, I: int, H: int) -> dict[str, tuple[Recurrent, bool]]:
    oact, _, size = kind.partition(" ")
    O = H if size == "O=H" else H // 4

    def cell() -> JordanCell:
        return JordanCell(I, H, O, output_activation=oact)

    plain = cell()
    return {
        "plain": (Recurrent(plain), True),
        "plain_ref": (Recurrent(plain), False),
        "dropout": (Recurrent(cell(), dropout_input=0.25, dropout_state=0.25), True),
        "zoneout": (Recurrent(ZoneoutCell(cell(), 0.1)), True),
    }


if __name__ == "__main__":
    main(__doc__.splitlines()[0], "output", KINDS, _variants, SHAPES)
