"""Data for the Tokens views, as pure functions: attention per block and head, attention rollout,
token maps, retention maps and coverage, accuracy-vs-budget curves, Captum attributions."""

from __future__ import annotations

import contextlib
import threading
from typing import Callable, Sequence

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from prunescope.explorer.core.forward import eval_mode, forward
from prunescope.explorer.core.setting import TokenSetting
from prunescope.explorer.tokens.adapters import TokenAdapter
from prunescope.explorer.tokens.flops import token_flops
from prunescope.explorer.tokens.intervention import KEPT, TokenRecord, intervention_factory, make_token_setting

Progress = Callable[[int, int], None]


def dense_setting(adapter: TokenAdapter, strategy: str = "cls_attention") -> TokenSetting:
    """The token setting that keeps every token (the dense model)."""
    return make_token_setting(strategy, 1.0, adapter.num_blocks)


def record_forward(
    model: nn.Module, params: dict[str, torch.Tensor], adapter: TokenAdapter, setting: TokenSetting,
    inputs: torch.Tensor, *, attention: bool = False, batch_size: int = 512,
) -> tuple[torch.Tensor, TokenRecord]:
    """Logits and the :class:`TokenRecord` of ``model`` on ``inputs`` under ``setting`` (recording
    hooks every block, so PyTorch's fused encoder-layer path is off for this forward)."""
    record = TokenRecord(attention=attention)
    logits = forward(model, params, inputs, intervention=intervention_factory(model, adapter, setting, record),
                     batch_size=batch_size).logits
    return logits, record


def block_attention(
    model: nn.Module, params: dict[str, torch.Tensor], adapter: TokenAdapter, setting: TokenSetting | None,
    image: torch.Tensor,
) -> list[dict]:
    """Per block, for one image (C, H, W) or (1, ...): ``{"block", "attention" (heads, N, N),
    "positions" (N,) original patch index of each token (-1: CLS, recycled)}``, as the block computes it."""
    setting = setting or dense_setting(adapter)
    _, record = record_forward(model, params, adapter, setting, _one(image), attention=True)
    out = []
    for b in range(adapter.num_blocks):
        (attn, pos), = record.attention(b)
        out.append({"block": b, "attention": attn[0], "positions": pos[0]})
    return out


def _one(image: torch.Tensor) -> torch.Tensor:
    """One sample as a batch of one: (C, H, W) -> (1, C, H, W); a 4-D input must hold one image."""
    if image.dim() == 4:
        if image.shape[0] != 1:
            raise ValueError(f"expected one image, got a batch of {image.shape[0]}")
        return image
    return image[None]


def on_grid(values: torch.Tensor, positions: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """Token ``values`` (N,) placed at their patch ``positions`` on a (rows, cols) grid; NaN where absent."""
    rows, cols = grid
    out = torch.full((rows * cols,), float("nan"), dtype=torch.float64)
    real = positions >= 0
    out[positions[real]] = values[real].double()
    return out.reshape(rows, cols)


def cls_attention_maps(blocks: list[dict], adapter: TokenAdapter, grid: tuple[int, int]) -> torch.Tensor:
    """(blocks, heads, rows, cols): attention from the CLS token (or, without one, the mean
    attention received) to each patch, per block and head, on the image grid (NaN: not present)."""
    maps = []
    for entry in blocks:
        attn, pos = entry["attention"], entry["positions"]
        if adapter.cls_index is not None:
            cls = 0 if adapter.cls_index == 0 else attn.shape[-1] - 1
            rows = attn[:, cls]
        else:
            rows = attn.mean(1)
        maps.append(torch.stack([on_grid(r, pos, grid) for r in rows]))
    return torch.stack(maps)


def attention_rollout(blocks: list[dict], adapter: TokenAdapter, patches: int, head_fusion: str = "mean") -> torch.Tensor:
    """Attention rollout (Abnar & Zuidema, ACL 2020): relevance (patches,) of each input patch for
    the CLS token (or the mean token) after the last block, multiplying ``0.5 A + 0.5 I`` over blocks.

    Across a pruning block a token keeps the relevance row of the token at its position before;
    a recycled token gets the mean row of the tokens that left. Heads fuse by "mean" or "max".
    """
    if head_fusion not in ("mean", "max"):
        raise ValueError(f"head_fusion must be 'mean' or 'max', got {head_fusion!r}")
    has_cls = adapter.cls_index is not None
    relevance = None  # (N, inputs): inputs = CLS (if any) then patches
    previous = None
    for entry in blocks:
        attn, pos = entry["attention"].double(), entry["positions"]
        fused = attn.mean(0) if head_fusion == "mean" else attn.max(0).values
        fused = fused / fused.sum(-1, keepdim=True)
        n = fused.shape[0]
        if relevance is None:
            relevance = torch.eye(n, dtype=torch.float64)
        else:
            relevance = _carry(relevance, previous, pos, adapter)
        relevance = (0.5 * fused + 0.5 * torch.eye(n, dtype=torch.float64)) @ relevance
        previous = pos
    if relevance is None:
        raise ValueError("attention rollout needs at least one block")
    last = blocks[-1]["positions"]
    if has_cls:
        row = relevance[0 if adapter.cls_index == 0 else len(last) - 1]
    else:
        row = relevance[last >= 0].mean(0)
    row = row[1:] if has_cls and adapter.cls_index == 0 else row[:-1] if has_cls else row
    return row[:patches]


def _carry(relevance: torch.Tensor, before: torch.Tensor, after: torch.Tensor, adapter: TokenAdapter) -> torch.Tensor:
    """Relevance rows of the tokens present ``after`` a pruning step, from those ``before`` it."""
    if torch.equal(before, after):
        return relevance
    before_l, after_l = before.tolist(), after.tolist()
    cls_before = cls_after = None
    if adapter.cls_index is not None:
        cls_before = 0 if adapter.cls_index == 0 else len(before_l) - 1
        cls_after = 0 if adapter.cls_index == 0 else len(after_l) - 1
    where = {p: i for i, p in enumerate(before_l) if p >= 0}
    carried = {where[p] for p in after_l if p >= 0}
    left = [i for i in range(len(before_l)) if i != cls_before and i not in carried]
    rows = []
    for j, p in enumerate(after_l):
        if p >= 0:
            rows.append(relevance[where[p]])
        elif j == cls_after:
            rows.append(relevance[cls_before])
        else:  # the recycled token (or padding): what left
            rows.append(relevance[left].mean(0) if left else torch.zeros_like(relevance[0]))
    return torch.stack(rows)


def token_map(record: TokenRecord, image: int, grid: tuple[int, int]) -> torch.Tensor:
    """(blocks, rows, cols) status of every patch of one recorded image at each block's input
    (KEPT, MERGED, RECYCLED, DROPPED)."""
    return torch.stack([record.status(b)[image].reshape(grid) for b in record.blocks])


def retention_map(record: TokenRecord, grid: tuple[int, int]) -> torch.Tensor:
    """(blocks, rows, cols): fraction of the recorded images in which each patch position is kept
    (its own token still present) at each block's input."""
    return torch.stack([(record.status(b) == KEPT).double().mean(0).reshape(grid) for b in record.blocks])


def region_coverage(status: torch.Tensor, grid: tuple[int, int], regions: tuple[int, int] = (2, 2)) -> float:
    """Share of (image, region) pairs, the grid cut into ``regions`` equal blocks, in which at
    least one patch of the region is kept: 1.0 means every region of every image keeps a token."""
    rows, cols = grid
    rr, rc = regions
    if rows % rr or cols % rc:
        raise ValueError(f"regions {regions} must divide the patch grid {grid}")
    kept = (status == KEPT).reshape(-1, rr, rows // rr, rc, cols // rc)
    return float(kept.any(4).any(2).double().mean())


def kept_count_stats(record: TokenRecord, block: int) -> dict[str, float]:
    """Mean, spread (std), min and max of the patch tokens block ``block`` processed per image."""
    counts = record.patches(block).double()
    return {"mean": float(counts.mean()), "std": float(counts.std(unbiased=False)),
            "min": float(counts.min()), "max": float(counts.max())}


def accuracy_curves(
    model: nn.Module, params: dict[str, torch.Tensor], adapter: TokenAdapter, inputs: torch.Tensor,
    labels: torch.Tensor, strategies: Sequence[str], keeps: Sequence[float], *, start_block: int = 1,
    options: dict[str, dict] | None = None, seed: int = 0, batch_size: int = 512,
    progress: Progress | None = None, cancel: threading.Event | None = None,
) -> pd.DataFrame:
    """Accuracy, loss and FLOPs reduction per (strategy, keep): one row each, in order.

    Calls ``progress(done, total)`` after every point; stops early when ``cancel`` is set (the
    table then holds the finished points and ``attrs["cancelled"]`` is True).
    """
    total = len(strategies) * len(keeps)
    rows, done = [], 0
    patches = adapter.num_patches
    for name in strategies:
        for keep in keeps:
            if cancel is not None and cancel.is_set():
                table = pd.DataFrame(rows)
                table.attrs["cancelled"] = True
                return table
            setting = make_token_setting(name, keep, adapter.num_blocks, start_block=start_block, seed=seed,
                                         **(options or {}).get(name, {}))
            logits = forward(model, params, inputs, intervention=intervention_factory(model, adapter, setting),
                             batch_size=batch_size).logits
            row = {"strategy": name, "keep": float(keep),
                   "accuracy": float((logits.argmax(1) == labels).double().mean()),
                   "loss": float(F.cross_entropy(logits, labels))}
            if patches is not None:
                table = token_flops(model, adapter, setting, patches)
                row["flops_reduction"] = float(table["dense_flops"].sum() / table["flops"].sum())
            rows.append(row)
            done += 1
            if progress is not None:
                progress(done, total)
    table = pd.DataFrame(rows)
    table.attrs["cancelled"] = False
    return table


ATTRIBUTION_METHODS = ("integrated_gradients", "saliency", "occlusion")


def attributions(
    model: nn.Module, params: dict[str, torch.Tensor], image: torch.Tensor, target: int | None = None,
    method: str = "integrated_gradients", intervention: Callable | None = None, *, n_steps: int = 64,
    window: int = 4, baseline: torch.Tensor | None = None,
) -> dict:
    """Captum attribution of one ``image`` (C, H, W) for class ``target`` (default: the prediction).

    ``method``: "integrated_gradients" (Sundararajan et al. 2017; ``delta`` is Captum's convergence
    delta, the completeness error), "saliency" (|gradient|, Simonyan et al. 2014) or "occlusion"
    (Zeiler & Fergus 2014, ``window`` x ``window`` patches). ``intervention`` (a factory, as for
    ``forward``) prunes tokens inside every forward Captum makes. Returns ``{"attribution" (C, H, W),
    "delta" (IG only, else None), "prediction", "probability", "target"}``.
    """
    from captum.attr import IntegratedGradients, Occlusion, Saliency

    if method not in ATTRIBUTION_METHODS:
        raise ValueError(f"unknown attribution method {method!r}; known: {', '.join(ATTRIBUTION_METHODS)}")
    x = image[None] if image.dim() == 3 else image

    def run(inputs: torch.Tensor) -> torch.Tensor:
        with intervention() if intervention is not None else contextlib.nullcontext():
            return functional_call(model, params, (inputs,), strict=False)

    with eval_mode(model):
        with torch.no_grad():
            probs = run(x).softmax(-1)[0]
        prediction = int(probs.argmax())
        target = prediction if target is None else int(target)
        delta = None
        if method == "integrated_gradients":
            base = torch.zeros_like(x) if baseline is None else baseline.reshape(x.shape)
            attr, d = IntegratedGradients(run).attribute(x, base, target=target, n_steps=n_steps,
                                                         return_convergence_delta=True)
            delta = float(d.reshape(-1)[0])
        elif method == "saliency":
            attr = Saliency(run).attribute(x.clone().requires_grad_(True), target=target)
        else:
            shape = (x.shape[1], window, window)
            attr = Occlusion(run).attribute(x, sliding_window_shapes=shape, strides=shape, target=target)
    return {"attribution": attr[0].detach(), "delta": delta, "prediction": prediction,
            "probability": float(probs[prediction]), "target": target}
