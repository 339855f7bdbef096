"""``rnnlab train``, ``rnnlab eval`` and ``rnnlab generate``.

``rnnlab train`` takes a YAML config (``--config``) and/or flags; a flag overrides the file.
Every option of :data:`rnnlab.training.config.OPTIONS` has a flag, documented with its default
in ``--help``. Multi-process: ``torchrun --nproc_per_node=N -m rnnlab train ...``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from .generate_cli import _add_generate, run_generate

_EXAMPLES = """\
examples:
  rnnlab train --task series --cell GRUCell --steps 300 --run-dir runs/sine
  rnnlab train --config examples/train_sine.yaml --run-dir runs/sine --overwrite
  rnnlab train --run-dir runs/sine --resume --steps 600      # continue to 600 updates
  rnnlab train --task text --task-option path=../shared/data/shakespeare/tragedies.txt \\
      --length 64 --hidden-size 128 --forcing scheduled --decay inverse_sigmoid --decay-k 200
  rnnlab train --task flipflop --cell JordanCell --forcing alternating --teacher-steps 5 \\
      --free-steps 5 --k1 10 --k2 20
  torchrun --nproc_per_node=2 -m rnnlab train --task adding --batch-size 64 --run-dir runs/ddp

A run directory holds config.yaml, metrics.jsonl, metrics.csv, grad_norms.jsonl, loss.png,
grad_norms.png and checkpoints/ (step-*.safetensors, best.safetensors). It is never overwritten
unless --resume or --overwrite is given.
"""


def _default_text(o: Any) -> str:
    v = o.default
    if v is None:
        return "none"
    if isinstance(v, bool):
        return "on" if v else "off"
    if isinstance(v, dict):
        return "{}" if not v else json.dumps(v)
    return str(v)


def _tasks_text() -> str:
    from .training.tasks import TASKS

    lines = ["tasks (task.options with their defaults):"]
    for name, spec in sorted(TASKS.items()):
        opts = ", ".join(f"{k}={'none' if v is None else v}" for k, v in spec.options.items())
        need = f" [needs {spec.needs}]" if spec.needs else ""
        lines.append(f"  {name:14s} {spec.description}{need}")
        if opts:
            lines.append(f"  {'':14s}   options: {opts}")
    return "\n".join(lines)


def _add_train(p: argparse.ArgumentParser) -> None:
    from .training.config import OPTIONS

    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.epilog = _tasks_text() + "\n\n" + _EXAMPLES
    p.add_argument(
        "--config",
        type=Path,
        default=None,
        help="YAML file with sections task, model, supervision, forcing, bptt, "
        "optim, clip, train (default: none; flags override it)",
    )
    p.add_argument("--run-dir", type=Path, default=None, help="run directory (default: runs/TASK)")
    g = p.add_mutually_exclusive_group()
    g.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --run-dir from its latest checkpoint (default: off)",
    )
    g.add_argument(
        "--overwrite", action="store_true", help="delete an existing --run-dir first (default: off)"
    )
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="check the config, the data and the model, print the resolved config, "
        "write nothing (default: off)",
    )
    for section in dict.fromkeys(o.section for o in OPTIONS):
        grp = p.add_argument_group(f"{section} (config section '{section}')")
        for o in (o for o in OPTIONS if o.section == section):
            text = f"{o.help} (default: {_default_text(o)})"
            if o.choices is not None:
                text += f"; one of {', '.join(map(str, o.choices))}"
            dest = f"opt__{o.section}__{o.key}"
            if o.kind == "bool":
                grp.add_argument(
                    o.flag,
                    dest=dest,
                    action=argparse.BooleanOptionalAction,
                    default=argparse.SUPPRESS,
                    help=text,
                )
            elif o.kind == "dict":
                grp.add_argument(
                    o.flag,
                    dest=dest,
                    action="append",
                    metavar="KEY=VALUE",
                    default=argparse.SUPPRESS,
                    help=text,
                )
            else:
                grp.add_argument(
                    o.flag,
                    dest=dest,
                    default=argparse.SUPPRESS,
                    metavar=o.kind.upper() if o.choices is None else "CHOICE",
                    help=text,
                )


def _parse_value(o: Any, raw: Any) -> Any:
    import yaml

    from .training.config import ConfigError

    if o.kind == "bool":
        return raw
    if o.kind == "dict":
        out: dict[str, Any] = {}
        for item in raw:
            if "=" not in item:
                raise ConfigError(f"{o.name}: expected KEY=VALUE, got {item!r}")
            k, v = item.split("=", 1)
            try:
                out[k.strip()] = yaml.safe_load(v) if v.strip() else None
            except yaml.YAMLError:
                out[k.strip()] = v
        return out
    if o.nullable and raw.lower() in ("none", "null"):
        return None
    if o.kind == "int":
        try:
            return int(raw)
        except ValueError:
            raise ConfigError(f"{o.name} ({o.flag}): expected an int, got {raw!r}") from None
    if o.kind == "float":
        try:
            return float(raw)
        except ValueError:
            raise ConfigError(f"{o.name} ({o.flag}): expected a number, got {raw!r}") from None
    if o.kind == "case":
        return int(raw) if raw.isdigit() else raw
    return raw


def config_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """The config a ``rnnlab train`` command line asks for: the file, then the flags."""
    from .training.config import OPTIONS, load_config_file, merge

    base = load_config_file(args.config) if args.config is not None else {}
    flags: dict[str, dict[str, Any]] = {}
    for o in OPTIONS:
        dest = f"opt__{o.section}__{o.key}"
        if hasattr(args, dest):
            value = _parse_value(o, getattr(args, dest))
            if o.kind == "dict":
                prev = base.get(o.section, {}) or {}
                value = {**(prev.get(o.key) or {}), **value} if isinstance(prev, dict) else value
            flags.setdefault(o.section, {})[o.key] = value
    return merge(base, flags)


def _fail(cmd: str, err: BaseException) -> int:
    print(f"rnnlab {cmd}: error: {err}", file=sys.stderr)
    return 2


def run_train(args: argparse.Namespace) -> int:
    import yaml

    from ._files import describe_os_error
    from .training.config import ConfigError, check_config
    from .training.trainer import (
        RunDirError,
        RunWriteError,
        Trainer,
        TrainingDiverged,
        TrainingInterrupted,
    )

    try:
        if args.resume and args.run_dir is None:
            raise ValueError("--run-dir: expected the run directory to resume, got none")
        config = config_from_args(args)
        name = check_config(config)["task"]["name"]
        run_dir = args.run_dir if args.run_dir is not None else Path("runs") / name
        if args.dry_run:
            trainer = Trainer(config, None)
            print(yaml.safe_dump(trainer.config, sort_keys=False), end="")
            n = sum(p.numel() for p in trainer.model.parameters())
            print(
                f"# ok: {len(trainer.task.train)} training / {len(trainer.task.val)} "
                f"validation sequences, {n} parameters; nothing written"
            )
            return 0
        trainer = Trainer(config, run_dir, resume=args.resume, overwrite=args.overwrite)
    except (ConfigError, RunDirError, ValueError, TypeError, FileNotFoundError, ImportError) as err:
        return _fail("train", err)
    except OSError as err:  # the run folder cannot be made or written (read-only, disk full)
        print(f"rnnlab train: error: could not write {describe_os_error(err)}", file=sys.stderr)
        return 1
    main = trainer.is_main
    if main:
        n = sum(p.numel() for p in trainer.model.parameters())
        W = trainer.dist.world_size
        name = trainer.config["task"]["name"]
        spec = trainer.spec
        what = (
            f"{spec['cell']} x{spec['num_layers']}"
            if spec is not None
            else f"{type(trainer.net).__name__} from {trainer.config['model']['factory']}"
        )
        print(
            f"rnnlab train: task {name} (case {trainer.supervision.case}, "
            f"{trainer.supervision.loss}), {what}, {n} parameters, "
            f"{len(trainer.task.train)} training sequences, device "
            f"{trainer.device}{f', {W} processes' if W > 1 else ''}"
            f"{f', resuming at step {trainer.step}' if args.resume else ''}",
            flush=True,
        )
    finished = False
    try:
        result = trainer.fit()
        finished = True
    except TrainingDiverged as err:
        if main:
            print(f"rnnlab train: {err}", file=sys.stderr)
        return 1
    except RunWriteError as err:
        if main:
            print(f"rnnlab train: error: {err}", file=sys.stderr)
        return 1
    except TrainingInterrupted as err:
        if main:
            print(f"rnnlab train: {err}", file=sys.stderr)
        return 128 + err.signum
    except RunDirError as err:  # the run folder's lock is held by another trainer
        return _fail("train", err)
    finally:
        from .training.distributed import shutdown

        shutdown(trainer.dist, finished=finished)
    if main:
        val = result.last_val
        base = trainer.task.baseline
        print(
            f"step {result.step} (epoch {result.epoch}), stopped by {result.stopped}: "
            f"val loss {val.get('loss', float('nan')):.5g}"
            + (
                f", teacher-forced {val['forced_loss']:.5g}"
                if trainer.model.feedback != "none"
                else ""
            )
            + (f", accuracy {val['accuracy']:.4g}" if "accuracy" in val else "")
            + (f"; trivial baseline {base:.5g}" if base is not None else "")
        )
        print(
            f"best val {result.best:.5g} at step {result.best_step}; run directory {result.run_dir}"
            if result.best is not None
            else f"run directory {result.run_dir}"
        )
    return 0


# --- eval --------------------------------------------------------------------------------------
def _add_eval(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", metavar="RUN_OR_CHECKPOINT", help="a run directory or a checkpoint file")
    p.add_argument(
        "--which",
        choices=("latest", "best"),
        default="best",
        help="which checkpoint of a run directory (best falls back to latest)",
    )
    p.add_argument("--split", choices=("val", "train"), default="val", help="which data")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N, mps or auto")


def run_eval(args: argparse.Namespace) -> int:
    from .training.config import ConfigError
    from .training.trainer import trainer_from_checkpoint

    try:
        t = trainer_from_checkpoint(args.run, which=args.which, device=args.device)
    except (ConfigError, ValueError, TypeError, FileNotFoundError, ImportError) as err:
        return _fail("eval", err)
    res = t.evaluate(args.split)
    out: dict[str, Any] = {
        "checkpoint": str(t.checkpoint),
        "step": t.step,
        "split": args.split,
        "task": t.config["task"]["name"],
        "case": t.supervision.case,
        "loss_kind": t.supervision.loss,
        "loss": res["loss"],
    }
    if t.model.feedback != "none":
        out["loss_mode"] = "free running"
        out["forced_loss"] = res["forced_loss"]
    if "accuracy" in res:  # cross-entropy: per sequence (cases 2, 3) or per labelled step
        out["accuracy"] = res["accuracy"]
        out["accuracy_per"] = "sequence" if t.supervision.case in (2, 3) else "step"
    if t.user_model:
        out["model"] = t.config["model"]["factory"]
    out["baseline"] = t.task.baseline if args.split == "val" else None
    print(json.dumps(out, indent=2))
    return 0


# The commands this module adds to ``rnnlab`` (cli.py reads this table; no import of cli.py
# here, so no import circle).
COMMANDS = {
    "train": (
        "Train a model on a task; a run directory gets config, metrics, checkpoints and plots.",
        _add_train,
        run_train,
    ),
    "eval": (
        "Evaluate a run's checkpoint on its task (free-running for feedback models); print JSON.",
        _add_eval,
        run_eval,
    ),
    "generate": (
        "Free-running generation from a run's checkpoint (text, series, sequence-to-sequence).",
        _add_generate,
        run_generate,
    ),
}
