"""``python -m rnnlab`` (also what ``torchrun -m rnnlab`` runs)."""

from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
