"""Token-pruned forward vs the dense forward of a ViT, on the full test split, same run.

    .venv/bin/python benchmarks/tokens.py [--repeats 15] [--keeps 0.5 0.25] [--batch-size 0] [--threads 0]
    .venv/bin/python benchmarks/tokens.py --slider [--moves 30] [--threads 0]

On ``shapes_vit`` when the sample-model registry has it (shipped weights if present, else its
seeded initialisation, said in the output), otherwise on a small timm-layout ViT built here. For
every strategy at each keep ratio (one ratio from block 1 on, or the strategy's default
schedule): p50 / p95 wall time of the whole test split through ``core.forward`` with the token
intervention, the dense forward timed in the same loop (interleaved), the measured speed-up
beside the FLOPs reduction (blocks with the tokens present; and with the criterion's overhead),
and the accuracy. Prints a markdown table.

``--slider`` times what a token-budget slider move costs in the app instead: the Explorer's
``set_token_budget`` then ``evaluate()`` (the full test split, on release) or ``estimate(0.1)``
(the progressive estimate while the slider moves), p50 / p95 over random keep ratios per
strategy, each beside one dense forward pass of the full split timed in the same loop.
"""

from __future__ import annotations

import argparse
import time

import torch
from torch import nn

from prunescope.explorer.core.forward import forward
from prunescope.explorer.tokens import STRATEGIES, find_adapter, intervention_factory, make_token_setting
from prunescope.explorer.tokens.flops import token_cost


def fallback_vit() -> tuple[nn.Module, torch.Tensor, torch.Tensor, str]:
    """A seeded timm-layout ViT (4 blocks, 64 patches) and random images, when no sample ViT exists."""
    gen = torch.Generator().manual_seed(0)
    dim, heads, grid = 64, 4, 8

    class Attn(nn.Module):
        def __init__(self):
            super().__init__()
            self.num_heads, self.qkv, self.proj = heads, nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)

        def forward(self, x):
            B, N, C = x.shape
            q, k, v = self.qkv(x).reshape(B, N, 3, heads, C // heads).permute(2, 0, 3, 1, 4)
            return self.proj(nn.functional.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(B, N, C))

    class Blk(nn.Module):
        def __init__(self):
            super().__init__()
            self.norm1, self.attn, self.norm2 = nn.LayerNorm(dim), Attn(), nn.LayerNorm(dim)
            self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

        def forward(self, x):
            x = x + self.attn(self.norm1(x))
            return x + self.mlp(self.norm2(x))

    class ViT(nn.Module):
        def __init__(self):
            super().__init__()
            self.patch = nn.Conv2d(3, dim, 4, 4)
            self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
            self.pos_embed = nn.Parameter(torch.randn(1, grid * grid + 1, dim, generator=gen) * 0.02)
            self.blocks = nn.ModuleList(Blk() for _ in range(4))
            self.head = nn.Linear(dim, 6)

        def forward(self, x):
            x = self.patch(x).flatten(2).transpose(1, 2)
            x = torch.cat([self.cls_token.expand(len(x), -1, -1), x], 1) + self.pos_embed
            for blk in self.blocks:
                x = blk(x)
            return self.head(x[:, 0])

    state = torch.random.get_rng_state()
    torch.manual_seed(0)
    try:
        model = ViT().eval()
    finally:
        torch.random.set_rng_state(state)
    x = torch.rand(1200, 3, 32, 32, generator=gen)
    return model, x, torch.randint(0, 6, (1200,), generator=gen), "test timm-layout ViT (random weights, random images)"


def load_model() -> tuple[nn.Module, torch.Tensor, torch.Tensor, str]:
    from prunescope.sample_models import get_sample_model, list_sample_models

    if "shapes_vit" not in list_sample_models():
        return fallback_vit()
    spec = get_sample_model("shapes_vit")
    x, y = spec.data("test")
    try:
        return spec.load("trained"), x, y, "shapes_vit (trained weights)"
    except FileNotFoundError:
        return spec.build().eval(), x, y, "shapes_vit (seeded initialisation: no shipped weights yet)"


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] * 1e3


def slider(moves: int) -> None:
    """Slider-to-metrics of the token budget through the Explorer (fresh keep ratio each move)."""
    import numpy as np

    from prunescope.explorer import Explorer
    from prunescope.explorer.core.setting import DENSE

    ex = Explorer.from_sample("shapes_vit")
    ex.evaluate()
    rng = np.random.default_rng(0)
    rows, dense = [], []
    for name in STRATEGIES:
        full, estimate = [], []
        for _ in range(moves):
            for kind, store in (("full", full), ("estimate", estimate)):
                ex.set_token_budget(float(np.round(rng.uniform(0.15, 0.95), 2)), strategy=name)
                start = time.perf_counter()
                ex.evaluate() if kind == "full" else ex.estimate(0.1)
                store.append(time.perf_counter() - start)
            start = time.perf_counter()
            ex.logits(DENSE)  # one dense forward pass of the full split, not cached
            dense.append(time.perf_counter() - start)
        rows.append((name, full, estimate))
    d50 = _percentile(dense, 0.5)
    print(f"shapes_vit: {len(ex.eval_data[1])} test images, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, {moves} moves per strategy; one dense forward of the split: "
          f"p50 {d50:.0f} ms, p95 {_percentile(dense, 0.95):.0f} ms\n")
    print("| strategy | full p50 ms | full p95 ms | full p50 / dense forward | estimate p50 ms | estimate p95 ms |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, full, estimate in rows:
        print(f"| {name} | {_percentile(full, 0.5):.0f} | {_percentile(full, 0.95):.0f} | "
              f"{_percentile(full, 0.5) / d50:.2f}x | {_percentile(estimate, 0.5):.0f} | {_percentile(estimate, 0.95):.0f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--keeps", type=float, nargs="+", default=[0.5, 0.25])
    parser.add_argument("--batch-size", type=int, default=0, help="0: the whole split in one batch")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--slider", action="store_true", help="time the app's token slider (Explorer) instead")
    parser.add_argument("--moves", type=int, default=30, help="with --slider: keep ratios per strategy")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.slider:
        slider(args.moves)
        return
    model, x, y, label = load_model()
    batch = args.batch_size or len(x)
    adapter = find_adapter(model, example=x[:1])
    configs = [("dense", 1.0, None)]
    for name in STRATEGIES:
        for keep in args.keeps:
            setting = make_token_setting(name, keep, adapter.num_blocks)
            configs.append((name, keep, setting))
    times: dict[int, list[float]] = {i: [] for i in range(len(configs))}
    accuracy: dict[int, float] = {}
    for repeat in range(args.repeats + 1):  # the first round warms up
        for i, (_, _, setting) in enumerate(configs):
            factory = None if setting is None else intervention_factory(model, adapter, setting)
            start = time.perf_counter()
            logits = forward(model, {}, x, intervention=factory, batch_size=batch).logits
            elapsed = time.perf_counter() - start
            if repeat:
                times[i].append(elapsed)
            else:
                accuracy[i] = float((logits.argmax(1) == y).double().mean())

    pct = _percentile
    dense50, dense95 = pct(times[0], 0.5), pct(times[0], 0.95)
    print(f"{label}: {len(x)} test images, batch {batch}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{args.repeats} interleaved repeats\n")
    print("| strategy | keep (per block) | tokens per block | p50 ms | p95 ms | p50 speed-up | p95 speed-up "
          "| FLOPs reduction | with criterion | accuracy |")
    print("|---|---|---|---:|---:|---:|---:|---:|---:|---:|")
    print(f"| dense | 1.0 | {adapter.num_tokens} | {dense50:.1f} | {dense95:.1f} | 1.00x | 1.00x | 1.00x | 1.00x "
          f"| {accuracy[0]:.3f} |")
    for i, (name, keep, setting) in enumerate(configs[1:], start=1):
        cost = token_cost(model, adapter, setting, x[:1])
        table = cost["table"]
        with_overhead = cost["dense_flops"] / (cost["flops"] + cost["overhead_flops"])
        p50, p95 = pct(times[i], 0.5), pct(times[i], 0.95)
        keeps = "/".join(f"{k:g}" for k in setting.keep)
        tokens = "/".join(f"{t:g}" for t in table["tokens"])
        print(f"| {name} | {keeps} | {tokens} | {p50:.1f} | {p95:.1f} | {dense50 / p50:.2f}x | {dense95 / p95:.2f}x "
              f"| {cost['reduction']:.2f}x | {with_overhead:.2f}x | {accuracy[i]:.3f} |")
    print("\nadaptive: tokens per block are its caps (ceil(keep * patches)); its per-image counts vary.")


if __name__ == "__main__":
    main()
