"""The ``ticket`` sub-command on a parser built here (the project CLI calls the same function)."""

from __future__ import annotations

import argparse

import torch

from prunescope.explorer.lottery.cli import add_ticket_parser
from prunescope.explorer.lottery.runs import load_run


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="prunescope")
    add_ticket_parser(parser.add_subparsers(dest="command"))
    return parser


def test_ticket_command_writes_a_resumable_run(tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["ticket", "--model", "digits_mlp", "--rounds", "2", "--prune-per-round", "0.3", "--rewind", "early",
            "--seeds", "0", "1", "--epochs", "1", "--no-controls", "--out", str(out)]
    args = _parser().parse_args(argv)
    assert args.seeds == [0, 1] and args.rewind == "early" and args.scheduler is None
    assert args.func(args) == 0
    run = load_run(out)
    assert run.complete and run.config["rewind"] == "early" and run.config["seeds"] == [0, 1]
    assert abs(sum(int(m.sum()) for m in run.masks(-1, seed=1).values()) - 50200 * 0.49) <= 1
    printed = capsys.readouterr().out
    assert "run written to" in printed and "ticket" in printed
    mtime = (out / "seed_0" / "level_002.json").stat().st_mtime_ns
    args = _parser().parse_args(argv + ["--resume"])
    assert args.func(args) == 0
    assert (out / "seed_0" / "level_002.json").stat().st_mtime_ns == mtime  # nothing re-run or rewritten
    assert torch.equal(load_run(out).masks(-1)["fc1.weight"], run.masks(-1)["fc1.weight"])


def test_ticket_command_reports_bad_input(tmp_path, capsys):
    args = _parser().parse_args(["ticket", "--prune-per-round", "1.5", "--epochs", "1", "--out", str(tmp_path / "r")])
    assert args.func(args) == 2
    assert "prune_per_round must be in (0, 1)" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()
