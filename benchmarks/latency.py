"""Slider-to-estimate and slider-to-full latency, p50/p95, per model and method.

    .venv/bin/python benchmarks/latency.py [--settings 30] [--resnet-settings 6] [--threads 1]

What a slider move costs in the app: *estimate* = ``prune`` + ``cost`` + ``estimate(0.1)`` (the
progressive estimate shown while the slider moves), *full* = ``prune`` + ``evaluate()`` (the full
split, on release). Each timed setting starts from a fresh memo (the criterion's scores are kept,
as in the app, so the cold first call of a method is timed apart). Models: the digits sample
models and a ResNet-20-sized CNN (He et al., 2016: 3 stages x 3 basic blocks, 16/32/64 channels,
32x32 inputs, ~0.27 M parameters) on >= 2000 generated images. Each setting is a random global
sparsity, and half the time one hidden weight set by hand as well.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from torch import nn

from prunescope.explorer import Explorer
from prunescope.explorer.pruning import METHODS, get_method
from prunescope.sample_models.architectures import BasicBlock

ESTIMATE_SECONDS = 0.1


class ResNet20(nn.Module):
    """ResNet-20 for 32x32 images: stem 16 ch, stages of 3 blocks at 16, 32, 64 channels, global pool, fc."""

    def __init__(self, classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.bn = nn.BatchNorm2d(16)
        blocks, cin = [], 16
        for cout, stride in ((16, 1), (32, 2), (64, 2)):
            for i in range(3):
                blocks.append(BasicBlock(cin, cout, stride if i == 0 else 1))
                cin = cout
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(64, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 3, 32, 32)
        x = torch.relu(self.bn(self.stem(x)))  # (B, 16, 32, 32)
        x = self.blocks(x)  # (B, 64, 8, 8)
        return self.fc(x.mean((2, 3)))  # (B, classes)


def resnet20_explorer(images: int, seed: int = 0) -> Explorer:
    """An explorer on a randomly initialised ResNet-20 (BatchNorm statistics randomised) and
    ``images`` generated 3x32x32 inputs labelled by the model itself, a fifth of them at random."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = ResNet20().eval()
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 2.0)
        inputs = torch.randn(images, 3, 32, 32)
        with torch.no_grad():
            labels = torch.cat([model(inputs[i:i + 500]).argmax(1) for i in range(0, images, 500)])
        noisy = torch.rand(images) < 0.2
        labels[noisy] = torch.randint(0, 10, (int(noisy.sum()),))
    return Explorer(model, (inputs, labels), device="cpu", name=f"resnet20 ({images} images)")


def _time(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _runnable(name: str) -> bool:
    try:
        get_method(name).check_options({})
    except ValueError:  # needs input (a ticket run): not a slider setting
        return False
    return True


def method_latencies(ex: Explorer, method: str, settings: int, rng: np.random.Generator) -> dict:
    """First call, estimate and full latencies (seconds) of ``settings`` random settings of ``method``."""
    strategy = get_method(method)
    fixed = strategy.fixed_sparsity(dict(strategy.check_options({})))
    hidden = [w for w in ex.weights[:-1]]  # channel pruning never removes the model's outputs

    def move(i: int) -> None:
        if fixed is None:
            ex.prune(method, sparsity=float(rng.uniform(0.0, 0.95)))
        else:  # its sparsity is its options' (N:M at its default 2:4)
            ex.prune(method)
        if i % 2:
            steps = strategy.layer_steps(dict(ex.setting.weights.options))
            value = float(rng.choice(steps)) if steps else float(rng.uniform(0.0, 0.95))
            try:
                ex.set_layer_sparsity(hidden[int(rng.integers(len(hidden)))], value)
            except ValueError:
                pass  # refused as the UI would (e.g. Unif+ cannot then reach its target): a global move only

    ex.clear_caches()
    first = _time(lambda: (move(0), ex.evaluate()))
    estimate, full, samples = [], [], []
    for i in range(settings):
        ex.clear_caches(scores=False)
        estimate.append(_time(lambda: (move(i), ex.cost(), samples.append(ex.estimate(ESTIMATE_SECONDS).samples))))
        ex.clear_caches(scores=False)  # the release: the full split of the same setting, measured afresh
        full.append(_time(ex.evaluate))
    return {"first": first, "estimate": estimate, "full": full, "samples": samples}


def dense_forward_seconds(ex: Explorer, repeats: int = 5) -> float:
    """Median time of one plain forward pass of the unpruned model over the evaluation data."""
    inputs = ex.eval_data[0]
    model = ex.model.eval()
    with torch.no_grad():
        model(inputs[:64])
        return float(np.median([_time(lambda: model(inputs)) for _ in range(repeats)]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--settings", type=int, default=30, help="random settings per method, digits models")
    parser.add_argument("--resnet-settings", type=int, default=6, help="random settings per method, ResNet-20")
    parser.add_argument("--resnet-images", type=int, default=2000, help="evaluation images of the ResNet-20")
    parser.add_argument("--resnet-methods", default="magnitude,lamp,erk,nm,channel",
                        help="comma-separated methods for the ResNet-20 ('all' for every one)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    methods = [m for m in METHODS if _runnable(m)]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; estimate budget {ESTIMATE_SECONDS * 1e3:.0f} ms\n")
    print("| model | method | first call ms | estimate p50 ms | estimate p95 ms | estimate samples | "
          "full p50 ms | full p95 ms |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    runs = [(Explorer.from_sample(name, device="cpu"), methods, args.settings) for name in ("digits_mlp", "digits_cnn")]
    resnet_methods = methods if args.resnet_methods == "all" else [m for m in args.resnet_methods.split(",") if m in methods]
    runs.append((resnet20_explorer(args.resnet_images), resnet_methods, args.resnet_settings))
    for ex, chosen, settings in runs:
        dense = dense_forward_seconds(ex)
        for method in chosen:
            r = method_latencies(ex, method, settings, rng)
            e50, e95 = np.percentile(r["estimate"], [50, 95]) * 1e3
            f50, f95 = np.percentile(r["full"], [50, 95]) * 1e3
            lo, hi = min(r["samples"]), max(r["samples"])
            samples = f"{lo}" if lo == hi else f"{lo}-{hi}"
            print(f"| {ex.name} | {method} | {r['first'] * 1e3:.1f} | {e50:.1f} | {e95:.1f} | {samples} of "
                  f"{len(ex.eval_data[1])} | {f50:.1f} | {f95:.1f} |", flush=True)
        print(f"| {ex.name} | *dense forward, {len(ex.eval_data[1])} samples* | | | | | {dense * 1e3:.2f} | |", flush=True)


if __name__ == "__main__":
    main()
