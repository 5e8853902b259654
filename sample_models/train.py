"""Deterministic CPU training of the sample models' shipped checkpoints.

    python -m prunescope.sample_models.train --all        # or: ... train digits_mlp

Writes ``weights/<name>.{init,early,trained}.pt`` beside this file. Reproducible: one thread,
deterministic algorithms, seeded generators for shuffling and augmentation. Retraining twice on
one machine gives bit-identical weights; on another CPU type float rounding (vectorised kernels
chosen per instruction set) may differ in the last bits, see ``tests/sample_models``.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import time
from pathlib import Path
from typing import Iterator

import torch
from torch import nn

from prunescope.sample_models import get_sample_model, list_sample_models

WEIGHTS_DIR = Path(__file__).parent / "weights"
#: theta_k, the rewinding checkpoint, is taken this fraction of the way into training.
EARLY_FRACTION = 0.03
#: Seeds of the mini-batch order and of the augmentation draws.
SHUFFLE_SEED = 1234
AUGMENT_SEED = 4321


def _clone_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@contextlib.contextmanager
def deterministic_cpu(threads: int = 1) -> Iterator[None]:
    """Deterministic algorithms on ``threads`` threads; restores the flags, thread count and RNG after."""
    flag = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    previous_threads = torch.get_num_threads()
    with torch.random.fork_rng(devices=[]):
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(True)
        try:
            yield
        finally:
            torch.use_deterministic_algorithms(flag, warn_only=warn_only)
            torch.set_num_threads(previous_threads)


def _dihedral(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Each image (B, C, H, W) under a random one of the 8 flips/quarter turns (exact, label-preserving
    for classes closed under them, like the shapes)."""
    ops = torch.randint(0, 8, (len(x),), generator=gen)
    out = torch.empty_like(x)
    for op in range(8):
        idx = (ops == op).nonzero().squeeze(1)
        part = torch.rot90(x[idx], op % 4, dims=(2, 3))
        out[idx] = part.flip(3) if op >= 4 else part
    return out


def _lr_factor(step: int, total: int, cfg: dict) -> float:
    """Linear warm-up over ``warmup_fraction`` of the steps, then cosine decay to 0 (or constant)."""
    if cfg.get("schedule") != "cosine":
        return 1.0
    warmup = max(1, round(cfg.get("warmup_fraction", 0.0) * total))
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1.0 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


def schedule_steps(name: str) -> tuple[int, int]:
    """(step of the ``early`` checkpoint, total optimiser steps) of training sample model ``name``."""
    spec = get_sample_model(name)
    cfg = spec.train_config
    total = cfg["epochs"] * -(-len(spec.data("train")[1]) // cfg["batch_size"])
    return max(1, round(EARLY_FRACTION * total)), total


def train_sample_model(
    name: str, max_steps: int | None = None, log_every: int = 0
) -> dict[str, dict[str, torch.Tensor]]:
    """Train ``name`` from its seeded init; return its ``init``, ``early`` and ``trained`` state dicts.

    ``max_steps`` stops after that many optimiser steps (``trained`` is then the state there; the
    schedule is still that of the full run, so the first steps equal those of the full run);
    ``log_every`` > 0 prints the loss and test accuracy every that many epochs. Global torch state
    (RNG, threads, deterministic flag) is as before afterwards.
    """
    spec = get_sample_model(name)
    cfg = spec.train_config
    if max_steps is not None and max_steps < 1:
        raise ValueError(f"max_steps must be a positive number of steps or None, got {max_steps}")
    with deterministic_cpu():
        model = spec.build()
        x, y = spec.data("train")
        states = {"init": _clone_state(model)}
        if cfg.get("optimizer", "adam") == "adamw":
            opt = torch.optim.AdamW(model.parameters(), lr=cfg["lr"], weight_decay=cfg["weight_decay"])
        else:
            opt = torch.optim.Adam(model.parameters(), lr=cfg["lr"])
        gen = torch.Generator().manual_seed(SHUFFLE_SEED)
        aug_gen = torch.Generator().manual_seed(AUGMENT_SEED)
        early_step, total = schedule_steps(name)
        step, start_time = 0, time.perf_counter()
        model.train()
        for epoch in range(cfg["epochs"]):
            order = torch.randperm(len(y), generator=gen)
            for start in range(0, len(y), cfg["batch_size"]):
                idx = order[start : start + cfg["batch_size"]]
                xb = _dihedral(x[idx], aug_gen) if cfg.get("augment") == "dihedral" else x[idx]
                for group in opt.param_groups:
                    group["lr"] = cfg["lr"] * _lr_factor(step, total, cfg)
                loss = nn.functional.cross_entropy(model(xb), y[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
                step += 1
                if step == early_step:
                    states["early"] = _clone_state(model)
                if step == max_steps:
                    states.setdefault("early", _clone_state(model))
                    states["trained"] = _clone_state(model)
                    return states
            if log_every and (epoch + 1) % log_every == 0:
                acc = accuracy_on(name, _clone_state(model))
                model.train()
                print(f"{name} epoch {epoch + 1}/{cfg['epochs']} step {step} loss {loss.item():.4f} "
                      f"test acc {acc:.4f} ({time.perf_counter() - start_time:.0f} s)", flush=True)
        states["trained"] = _clone_state(model)
        return states


def accuracy_on(name: str, state: dict[str, torch.Tensor], split: str = "test") -> float:
    """Accuracy of sample model ``name`` with weights ``state`` on ``split`` ('train' or 'test')."""
    spec = get_sample_model(name)
    model = spec.build()
    model.load_state_dict(state)
    x, y = spec.data(split)
    with torch.no_grad():
        return (model.eval()(x).argmax(1) == y).float().mean().item()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", help=f"models to train, among {list_sample_models()}")
    parser.add_argument("--all", action="store_true", help="train every sample model")
    parser.add_argument("--log-every", type=int, default=0, help="print test accuracy every N epochs")
    args = parser.parse_args(argv)
    names = list_sample_models() if args.all else args.names
    if not names:
        parser.error("name a model or pass --all")
    WEIGHTS_DIR.mkdir(exist_ok=True)
    for name in names:
        start = time.perf_counter()
        states = train_sample_model(name, log_every=args.log_every)
        for checkpoint, state in states.items():
            torch.save(state, WEIGHTS_DIR / f"{name}.{checkpoint}.pt")
        accs = ", ".join(f"{c} {accuracy_on(name, s):.4f}" for c, s in states.items())
        print(f"{name}: test accuracy {accs}; trained in {time.perf_counter() - start:.0f} s", flush=True)


if __name__ == "__main__":
    main()
