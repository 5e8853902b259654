"""Deterministic CPU training of the sample models' shipped checkpoints.

    python -m prunescope.sample_models.train --all        # or: ... train digits_mlp

Writes ``weights/<name>.{init,early,trained}.pt`` beside this file. Bit-for-bit reproducible on
CPU: one thread, deterministic algorithms, a seeded generator for the shuffling.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from torch import nn

from prunescope.sample_models import get_sample_model, list_sample_models

WEIGHTS_DIR = Path(__file__).parent / "weights"
#: theta_k, the rewinding checkpoint, is taken this fraction of the way into training.
EARLY_FRACTION = 0.03


def _clone_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def train_sample_model(name: str) -> dict[str, dict[str, torch.Tensor]]:
    """Train ``name`` from its seeded init; return its ``init``, ``early`` and ``trained`` state dicts."""
    spec = get_sample_model(name)
    cfg = spec.train_config
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    try:
        model = spec.build()
        x, y = spec.data("train")
        states = {"init": _clone_state(model)}
        opt = torch.optim.Adam(model.parameters(), lr=cfg["lr"])
        gen = torch.Generator().manual_seed(1234)
        steps_per_epoch = -(-len(y) // cfg["batch_size"])
        early_step = max(1, round(EARLY_FRACTION * cfg["epochs"] * steps_per_epoch))
        step = 0
        model.train()
        for _ in range(cfg["epochs"]):
            order = torch.randperm(len(y), generator=gen)
            for start in range(0, len(y), cfg["batch_size"]):
                idx = order[start : start + cfg["batch_size"]]
                loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
                step += 1
                if step == early_step:
                    states["early"] = _clone_state(model)
        states["trained"] = _clone_state(model)
        return states
    finally:
        torch.use_deterministic_algorithms(False)
        torch.set_num_threads(threads)


def test_accuracy(name: str, state: dict[str, torch.Tensor]) -> float:
    """Test-split accuracy of ``name`` with weights ``state``."""
    spec = get_sample_model(name)
    model = spec.build()
    model.load_state_dict(state)
    x, y = spec.data("test")
    with torch.no_grad():
        return (model.eval()(x).argmax(1) == y).float().mean().item()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", help=f"models to train, among {list_sample_models()}")
    parser.add_argument("--all", action="store_true", help="train every sample model")
    args = parser.parse_args(argv)
    names = list_sample_models() if args.all else args.names
    if not names:
        parser.error("name a model or pass --all")
    WEIGHTS_DIR.mkdir(exist_ok=True)
    for name in names:
        states = train_sample_model(name)
        for checkpoint, state in states.items():
            torch.save(state, WEIGHTS_DIR / f"{name}.{checkpoint}.pt")
        print(f"{name}: test accuracy {test_accuracy(name, states['trained']):.4f}")


if __name__ == "__main__":
    main()
