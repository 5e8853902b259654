"""``prunescope ticket``: a headless ticket search on a sample model with a progress bar."""

from __future__ import annotations

import argparse
import sys

from prunescope.explorer.lottery.imp import REWINDS


def add_ticket_parser(subparsers) -> argparse.ArgumentParser:
    """Add the ``ticket`` sub-command to an ``argparse`` sub-parsers object; returns its parser.

    The parser's default ``func`` is :func:`run_ticket_command` (``args.func(args)`` runs it).
    """
    p = subparsers.add_parser(
        "ticket", help="find lottery tickets by iterative pruning with rewinding",
        description="Iterative magnitude pruning with rewinding on a sample model; every level "
        "is written to the run directory, which --resume continues after an interruption.",
    )
    p.add_argument("--model", default="digits_mlp", help="sample model name (default: digits_mlp)")
    p.add_argument("--rounds", type=int, default=5, help="pruning rounds R >= 1 (default: 5)")
    p.add_argument("--prune-per-round", type=float, default=0.2, help="fraction of remaining weights pruned per round, in (0, 1)")
    p.add_argument("--criterion", default="global_magnitude", help="pruning criterion (global_magnitude, magnitude, lamp, random, ...)")
    p.add_argument("--rewind", choices=REWINDS, default="init", help="rewind survivors to theta_0, theta_k or not at all")
    p.add_argument("--variant", choices=("imp", "colt", "swamp"), default="imp")
    p.add_argument("--seeds", type=int, nargs="+", default=[0], help="seeds (batch orders, controls)")
    p.add_argument("--epochs", type=int, default=None, help="epochs per training (default: the model's train_config)")
    p.add_argument("--lr", type=float, default=None, help="learning rate (default: the model's train_config)")
    p.add_argument("--no-controls", action="store_true", help="skip the random re-init and random-mask controls")
    p.add_argument("--out", required=True, help="run directory (created; must be empty unless --resume)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out")
    p.add_argument("--scheduler", default=None, help="Dask scheduler address, or 'local' for an embedded 2-worker cluster")
    p.set_defaults(func=run_ticket_command)
    return p


def run_ticket_command(args: argparse.Namespace) -> int:
    """Run the search described by parsed ``args``; print a summary table; return the exit code."""
    from tqdm import tqdm

    from prunescope.explorer.lottery.sample import find_sample_ticket
    from prunescope.sample_models import get_sample_model

    cfg = get_sample_model(args.model).train_config
    settings = {
        "rounds": args.rounds, "prune_per_round": args.prune_per_round, "criterion": args.criterion,
        "rewind": args.rewind, "variant": args.variant, "seeds": args.seeds,
        "epochs": args.epochs if args.epochs is not None else cfg.get("epochs", 20),
        "controls": not args.no_controls, "run_dir": args.out, "resume": args.resume,
        "client": args.scheduler,
    }
    if args.lr is not None:
        settings["lr"] = args.lr
    bar = tqdm(total=None, unit="training", desc="ticket")

    def on_record(info: dict) -> None:
        bar.total = info["total"]
        bar.n = info["done"]
        bar.set_postfix(seed=info["seed"], level=f"{info['level']}/{info['rounds']}", kind=info["kind"], refresh=False)
        bar.refresh()

    try:
        run = find_sample_ticket(args.model, on_record=on_record, **settings)
    except ValueError as exc:
        print(f"prunescope ticket: error: {exc}", file=sys.stderr)
        return 2
    finally:
        bar.close()
    summary = run.metrics().groupby(["kind", "level"])[["sparsity", "accuracy"]].mean()
    print(summary.to_string(float_format=lambda v: f"{v:.4f}"))
    print(f"run written to {args.out}")
    return 0
