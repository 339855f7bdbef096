"""``rnnlab train``, ``rnnlab eval`` and ``rnnlab generate`` (registered by rnnlab.train_cli)."""

from __future__ import annotations

import json
import re

import pytest

import rnnlab.train_cli  # noqa: F401  (registers the commands)
from rnnlab.cli import build_parser, main
from rnnlab.training.config import OPTIONS

FAST = [
    "--n-train",
    "16",
    "--n-val",
    "8",
    "--batch-size",
    "8",
    "--hidden-size",
    "8",
    "--no-progress",
    "--grad-monitor-every",
    "0",
    "--no-plots",
]


def test_help_documents_every_option_with_its_default(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = re.sub(r"\s+", " ", capsys.readouterr().out)
    parser = build_parser()
    sub = parser._subparsers._group_actions[0].choices
    assert {"train", "eval", "generate"} <= set(sub)
    flags = {}
    for action in sub["train"]._actions:
        if action.option_strings and action.dest != "help":
            assert "(default: " in action.help, action.option_strings
            for f in action.option_strings:
                flags[f] = action
    for o in OPTIONS:
        assert o.flag in flags and o.flag in text, o.flag
    for flag in ("--config", "--run-dir", "--resume", "--overwrite", "--dry-run"):
        assert flag in flags and flag in text
    assert "reverse" in text and "series_length=2000" in text  # the task list with options


def test_train_eval_generate_end_to_end(tmp_path, capsys):
    run = tmp_path / "sine"
    rc = main(
        [
            "train",
            "--task",
            "series",
            "--length",
            "12",
            "--steps",
            "20",
            "--cell",
            "GRUCell",
            "--run-dir",
            str(run),
            *FAST,
            "--plots",
            "--grad-monitor-every",
            "10",
        ]
    )
    assert rc == 0
    assert (run / "loss.png").exists() and (run / "grad_norms.png").exists()
    out = capsys.readouterr().out
    assert "step 20" in out and "val loss" in out
    assert (run / "checkpoints" / "best.safetensors").exists()
    assert main(["eval", str(run)]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["step"] == 20 and res["loss_mode"] == "free running"
    assert res["loss"] > 0 and res["forced_loss"] > 0
    assert main(["generate", str(run), "--steps", "7", "--prime-steps", "5"]) == 0
    lines = [ln for ln in capsys.readouterr().out.splitlines() if not ln.startswith("#")]
    assert len(lines) == 7 and lines[0].startswith("0,")
    # ... and written: CSV (the printed values), JSON, a plot
    import csv

    rows = list(csv.DictReader((run / "generated.csv").open()))
    printed = [float(ln.split(",")[1]) for ln in lines]
    values = [r for r in rows if r["part"] == "values"]
    assert [float(r["value_0"]) for r in values] == pytest.approx(printed, rel=1e-4)
    assert len([r for r in rows if r["part"] == "prime"]) == 5
    gen = json.loads((run / "generated.json").read_text())
    assert gen["args"]["steps"] == 7 and len(gen["sequences"][0]["values"]) == 7
    assert (run / "generated.png").stat().st_size > 0
    # a second train into the same directory is refused and changes nothing
    before = {p.name: p.stat().st_mtime_ns for p in run.rglob("*")}
    assert main(["train", "--run-dir", str(run), "--steps", "5"]) == 2
    assert "exists and is not empty" in capsys.readouterr().err
    assert {p.name: p.stat().st_mtime_ns for p in run.rglob("*")} == before
    # --resume continues it
    assert main(["train", "--run-dir", str(run), "--resume", "--steps", "24", "--no-progress"]) == 0
    assert "resuming at step 20" in capsys.readouterr().out


def test_yaml_config_and_flag_override(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        "task: {name: temporal_xor, length: 6, n_train: 16, n_val: 8}\n"
        "model: {cell: ElmanCell, hidden_size: 4}\n"
        "train: {steps: 3, batch_size: 8, progress: false}\n"
    )
    assert main(["train", "--config", str(cfg), "--hidden-size", "5", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "hidden_size: 5" in out and "cell: ElmanCell" in out and "nothing written" in out
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: {hiden_size: 4}\n")
    assert main(["train", "--config", str(bad), "--run-dir", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "model.hiden_size: unknown config key" in err and "did you mean 'hidden_size'" in err
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize(
    "argv, match",
    [
        (["--steps", "abc"], r"train\.steps \(--steps\): expected an int, got 'abc'"),
        (["--forcing", "teacher", "--task", "adding"], r"forcing\.mode: 'teacher' feeds"),
        (["--task", "text", "--task-option", "path=/no/such/file.txt"], r"no such file"),
        (["--config", "/no/such.yaml"], r"config: expected a YAML file"),
        (["--case", "seq2seq"], r"supervision\.case: the task 'series' is case 4"),
    ],
)
def test_bad_command_lines(tmp_path, capsys, argv, match):
    assert main(["train", "--run-dir", str(tmp_path / "r"), *FAST, *argv]) == 2
    assert re.search(match, capsys.readouterr().err)
    assert not (tmp_path / "r").exists()


def test_generate_text_and_refusals(tmp_path, capsys):
    text = tmp_path / "t.txt"
    text.write_text("abcabcabcabd\n" * 40)
    run = tmp_path / "text"
    assert (
        main(
            [
                "train",
                "--task",
                "text",
                "--task-option",
                f"path={text}",
                "--length",
                "8",
                "--steps",
                "30",
                "--lr",
                "0.02",
                "--run-dir",
                str(run),
                *FAST,
            ]
        )
        == 0
    )
    capsys.readouterr()
    text.unlink()  # generation needs the checkpoint only
    assert (
        main(
            [
                "generate",
                str(run),
                "--prime",
                "ab",
                "--steps",
                "12",
                "--num",
                "2",
                "--temperature",
                "0",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out.split("-" * 40)
    assert out[0].strip().startswith("ab") and len(out[0].strip()) == 14
    assert out[0].strip() == out[1].strip()  # argmax: the same twice
    gen = json.loads((run / "generated.json").read_text())
    assert gen["kind"] == "text" and "ab" + gen["sequences"][0]["text"] == out[0].strip()
    assert main(["generate", str(run), "--prime", "xyz"]) == 2
    assert "--prime: expected characters of the vocabulary" in capsys.readouterr().err
    assert main(["eval", str(run)]) == 2  # evaluation needs the data again
    assert "no such file" in capsys.readouterr().err
    adding = tmp_path / "adding"
    assert (
        main(
            [
                "train",
                "--task",
                "adding",
                "--length",
                "6",
                "--steps",
                "2",
                "--run-dir",
                str(adding),
                *FAST,
            ]
        )
        == 0
    )
    capsys.readouterr()
    assert main(["generate", str(adding)]) == 2
    assert "no output feedback" in capsys.readouterr().err
    assert main(["eval", str(tmp_path / "nothing")]) == 2
