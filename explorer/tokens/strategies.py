"""Token strategies as registered objects: a block's tokens in, a plan (keep / merge / drop) out.

Each strategy has a registry ``name``, a ``display_name``, a one-line ``description`` citing its
paper, its options as ``param`` parameters (bounds, docs) on a nested ``Options`` class, and one
verb, ``plan(ctx, **options)``. A :class:`Plan` says for every patch-side token of the block's
input where it goes: ``dest[i] == i`` keeps it, ``dest[i] == j`` merges it into the kept token j,
``DROP`` removes it, ``RECYCLE`` merges it into one recycled token. The intervention applies the
plan (see :mod:`prunescope.explorer.tokens.intervention`); nothing outside a strategy branches
on its name.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import param
import torch
import torch.nn.functional as F

from prunescope.explorer.core.registry import Registry
from prunescope.explorer.tokens.context import DROP, RECYCLE, SelectionContext

__all__ = [
    "DROP", "RECYCLE", "Plan", "TokenStrategy", "STRATEGIES", "register_strategy", "get_strategy",
    "strategy_options", "topk_plan", "keep_plan",
]


@dataclass
class Plan:
    """Where each patch-side token goes: ``dest`` (B, n) long; ``weight`` (B, n) for merged means."""

    dest: torch.Tensor
    weight: torch.Tensor | None = None


def keep_plan(ctx: SelectionContext, keep: torch.Tensor) -> Plan:
    """Keep the candidates marked in ``keep`` (B, n); other valid non-candidates (a recycled token) stay."""
    slots = torch.arange(ctx.n).expand(ctx.batch, ctx.n)
    stay = keep | (ctx.valid & ~ctx.candidates)
    return Plan(torch.where(stay, slots, torch.full_like(slots, DROP)))


def rank_candidates(ctx: SelectionContext, score: torch.Tensor) -> torch.Tensor:
    """Rank (0 = best) of every token by ``score`` among the candidates (ties: earlier first)."""
    score = score.masked_fill(~ctx.candidates, float("-inf"))
    order = torch.sort(score, dim=1, descending=True, stable=True).indices
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(ctx.n).expand_as(order))
    return rank


def topk_plan(ctx: SelectionContext, score: torch.Tensor, k: int | torch.Tensor | None = None) -> Plan:
    """Keep the ``k`` (default ``ctx.k``; per image when a tensor) highest-``score`` candidates."""
    k = ctx.k if k is None else k
    limit = k[:, None] if isinstance(k, torch.Tensor) else k
    return keep_plan(ctx, (rank_candidates(ctx, score) < limit) & ctx.candidates)


class TokenStrategy:
    """Base strategy: declare ``name``, ``display_name``, ``description``, ``Options`` and ``plan``."""

    name: ClassVar[str] = ""
    display_name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    #: Reads the blocks' attention (refused on attention-free blocks).
    needs_attention: ClassVar[bool] = True
    #: Adds log(size) to the attention logits of every later block (ToMe).
    proportional_attention: ClassVar[bool] = False
    #: The kept count varies per image (batches are padded and masked).
    varies_per_image: ClassVar[bool] = False
    #: Extra tokens a pruning block adds beside the ``ceil(keep * patches)`` kept ones.
    extra_tokens: ClassVar[int] = 0
    #: Schedule used when ``keep`` is one ratio and no schedule is given.
    default_schedule: ClassVar[str | None] = None

    class Options(param.Parameterized):
        pass

    def plan(self, ctx: SelectionContext, **options: Any) -> Plan:
        raise NotImplementedError

    def selection_flops(self, tokens: int, kept: int, width: int, attn_width: int, heads: int, has_cls: bool) -> int:
        """Matmul FLOPs (FlopCounterMode's count) the criterion spends at a pruning block that
        ``tokens`` enter (CLS included) and ``kept`` patch tokens leave."""
        if not self.needs_attention:
            return 0
        return attention_score_flops(tokens, width, attn_width, has_cls)

    def get_name(self) -> str:
        return self.display_name


def attention_score_flops(tokens: int, width: int, attn_width: int, has_cls: bool) -> int:
    """FLOPs of the explicit attention a criterion reads: CLS row only with a CLS token, else all rows."""
    queries = 1 if has_cls else tokens
    return 2 * queries * width * attn_width + 2 * tokens * width * attn_width + 2 * queries * tokens * attn_width


#: Every token strategy by name (one instance each); a plain dict for reading.
STRATEGIES: Registry[TokenStrategy] = Registry("token strategy")


def register_strategy(cls: type[TokenStrategy]) -> type[TokenStrategy]:
    """Class decorator: add one instance of ``cls`` to :data:`STRATEGIES`; a name is registered once."""
    return STRATEGIES.register(cls)


def get_strategy(name: str) -> TokenStrategy:
    """The strategy registered as ``name``; unknown names list the known ones."""
    return STRATEGIES.lookup(name)


def strategy_options(name: str, **options: Any) -> dict[str, Any]:
    """Every option of strategy ``name`` at its value (defaults filled in), validated by its bounds."""
    cls = get_strategy(name).Options
    known = [p for p in cls.param if p != "name"]
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise ValueError(f"token strategy {name!r} has no option(s) {unknown}; its options: {known or 'none'}")
    values = cls(**options).param.values()
    return {k: values[k] for k in known}


# ---- the strategies --------------------------------------------------------------------------


@register_strategy
class ClsAttention(TokenStrategy):
    """EViT (Liang et al., ICLR 2022) / FoPru's "rank" (Jiang et al., 2024): top-k by attention."""

    name = "cls_attention"
    display_name = "CLS attention (EViT)"
    description = "Keep the tokens the CLS token attends to most, averaged over heads (EViT, Liang et al. 2022)."

    def plan(self, ctx: SelectionContext, **options: Any) -> Plan:
        return topk_plan(ctx, ctx.importance())


@register_strategy
class RandomTokens(TokenStrategy):
    """A seeded random baseline: every image keeps its own uniformly random tokens."""

    name = "random"
    display_name = "Random"
    description = "Keep uniformly random tokens (seeded baseline)."
    needs_attention = False

    def plan(self, ctx: SelectionContext, **options: Any) -> Plan:
        return topk_plan(ctx, torch.rand(ctx.batch, ctx.n, generator=ctx.generator))


@register_strategy
class RowRuns(TokenStrategy):
    """FoPru's row strategy (Jiang et al., 2024), as read here: score each image row by the mean
    attention of its present tokens, keep whole rows best first, and fill the remainder with the
    contiguous run (along that row) of highest summed attention in the next best row."""

    name = "row"
    display_name = "Row runs (FoPru row)"
    description = "Keep whole image rows of highest mean attention, then one contiguous run (FoPru row, Jiang et al. 2024)."

    def plan(self, ctx: SelectionContext, **options: Any) -> Plan:
        rows, cols = ctx.require_grid(self.name)
        score = ctx.importance().masked_fill(~ctx.candidates, 0.0)
        row = torch.where(ctx.candidates, ctx.index // cols, rows)  # non-candidates in a spare row
        count = torch.zeros(ctx.batch, rows + 1).scatter_add_(1, row, ctx.candidates.float())
        total = torch.zeros(ctx.batch, rows + 1).scatter_add_(1, row, score)
        mean = torch.where(count[:, :rows] > 0, total[:, :rows] / count[:, :rows].clamp_min(1), -1.0)
        order = torch.sort(mean, dim=1, descending=True, stable=True).indices  # (B, rows)
        taken = torch.cumsum(count[:, :rows].gather(1, order), 1)
        full_sorted = taken <= ctx.k
        full = torch.zeros(ctx.batch, rows + 1, dtype=torch.bool)
        full[:, :rows].scatter_(1, order, full_sorted)
        keep = full.gather(1, row) & ctx.candidates
        left = ctx.k - keep.sum(1)  # (B,) remainder, < length of the next row
        partial_pos = (~full_sorted).float().argmax(1)
        partial = order.gather(1, partial_pos[:, None])  # (B, 1) next best row
        in_row = (row == partial) & ctx.candidates & (left[:, None] > 0)
        keep |= best_run(score, in_row, left)
        return keep_plan(ctx, keep)


def best_run(score: torch.Tensor, mask: torch.Tensor, length: torch.Tensor) -> torch.Tensor:
    """Per row of ``mask``, the ``length`` consecutive marked entries of highest summed ``score``."""
    B, n = mask.shape
    order = torch.sort((~mask).to(torch.int8), dim=1, stable=True).indices  # marked first, in order
    vals = score.gather(1, order) * mask.gather(1, order)
    csum = torch.cat([vals.new_zeros(B, 1), vals.cumsum(1)], 1)
    starts = torch.arange(n + 1).expand(B, n + 1)
    ends = (starts + length[:, None]).clamp_max(n)
    window = csum.gather(1, ends) - csum
    fits = (starts + length[:, None]) <= mask.sum(1, keepdim=True)
    best = window.masked_fill(~fits, float("-inf")).argmax(1)
    rank = torch.arange(n).expand(B, n)
    chosen_sorted = (rank >= best[:, None]) & (rank < best[:, None] + length[:, None])
    chosen = torch.zeros_like(mask)
    chosen.scatter_(1, order, chosen_sorted)
    return chosen & mask


def lattice_points(count: int, rows: int, cols: int) -> torch.Tensor:
    """``count`` (row, col) points spread evenly over a ``rows x cols`` grid (cell centres)."""
    gh = max(1, min(rows, round(math.sqrt(count * rows / cols))))
    gw = max(1, math.ceil(count / gh))
    r = (torch.arange(gh, dtype=torch.float64) + 0.5) * rows / gh - 0.5
    c = (torch.arange(gw, dtype=torch.float64) + 0.5) * cols / gw - 0.5
    pts = torch.cartesian_prod(r, c)
    pick = torch.linspace(0, len(pts) - 1, count).round().long()
    return pts[pick]


def uniform_pick(ctx: SelectionContext, count: int, grid: tuple[int, int]) -> torch.Tensor:
    """``count`` candidates per image, each the nearest free one to a point of an even lattice."""
    rows, cols = grid
    index, candidates = ctx.index, ctx.candidates
    same = bool((index == index[:1]).all() and (candidates == candidates[:1]).all())
    if same:  # every image has the same tokens (the usual first stage): pick once
        index, candidates = index[:1], candidates[:1]
    pos = torch.stack([index // cols, index % cols], -1).double()  # (B, n, 2)
    chosen = torch.zeros(index.shape, dtype=torch.bool)
    for point in lattice_points(count, rows, cols):
        dist = (pos - point).pow(2).sum(-1).masked_fill(chosen | ~candidates, float("inf"))
        chosen.scatter_(1, dist.argmin(1, keepdim=True), True)
    chosen &= candidates
    return chosen.expand(ctx.batch, ctx.n) if same else chosen


@register_strategy
class Feather(TokenStrategy):
    """FEATHER (Endo et al., ICCV 2025): the attention criterion ensembled with uniform sampling at
    the first (light) pruning stage so every image region keeps tokens, and the criterion alone at
    the later (heavier) stages. Its default schedule is two-stage (``token_budget``'s "two_stage")."""

    name = "feather"
    display_name = "FEATHER (attention + uniform)"
    description = "Attention top-k ensembled with uniform-grid sampling, light early then heavy late (Endo et al. 2025)."
    default_schedule = "two_stage"

    class Options(param.Parameterized):
        uniform_fraction = param.Number(
            0.5, bounds=(0.0, 1.0), doc="Share of the first stage's budget taken by uniform-grid sampling."
        )
        late_uniform_fraction = param.Number(
            0.0, bounds=(0.0, 1.0), doc="Share of later stages' budget taken by uniform sampling (FEATHER: 0)."
        )

    def plan(self, ctx: SelectionContext, uniform_fraction: float = 0.5, late_uniform_fraction: float = 0.0,
             **options: Any) -> Plan:
        fraction = uniform_fraction if ctx.stage == 0 else late_uniform_fraction
        grid = ctx.require_grid(self.name)
        count = min(ctx.k, int(round(fraction * ctx.k)))
        uniform = uniform_pick(ctx, count, grid) if count else torch.zeros(ctx.batch, ctx.n, dtype=torch.bool)
        score = ctx.importance().masked_fill(uniform, float("inf"))
        return topk_plan(ctx, score)


@register_strategy
class EntropyRecycle(TokenStrategy):
    """VFlowOpt-style (Yang et al., ICCV 2025): importance = attention relevance x patch information
    entropy; the kept top-k stay, every pruned token (and an earlier recycled token) is merged into
    one recycled token, their importance-weighted mean, instead of being dropped."""

    name = "entropy_recycle"
    display_name = "Entropy x attention + recycling (VFlowOpt)"
    description = "Attention relevance times patch entropy; pruned tokens recycled into one token (VFlowOpt, Yang et al. 2025)."
    extra_tokens = 1

    class Options(param.Parameterized):
        bins = param.Integer(16, bounds=(2, 256), doc="Histogram bins of a patch's pixel-intensity entropy.")
        entropy_source = param.Selector(
            default="auto", objects=["auto", "pixels", "features"],
            doc="Entropy of the image patch's pixels (auto: when the input is an image) or of the token's softmaxed features.",
        )

    def plan(self, ctx: SelectionContext, bins: int = 16, entropy_source: str = "auto", **options: Any) -> Plan:
        relevance = ctx.importance()
        entropy = ctx.patch_entropy(bins, entropy_source)
        importance = relevance * (entropy + 1e-6)
        keep = topk_plan(ctx, importance).dest
        dest = torch.where((keep == DROP) & ctx.valid, torch.full_like(keep, RECYCLE), keep)
        recycled = ctx.valid & ~ctx.candidates
        dest = torch.where(recycled, torch.full_like(dest, RECYCLE), dest)
        return Plan(dest, weight=importance.masked_fill(~ctx.valid, 0.0).clamp_min(1e-12))


@register_strategy
class Merge(TokenStrategy):
    """ToMe (Bolya et al., ICLR 2023): bipartite soft matching on the block's keys (mean over heads);
    the most similar pairs merge into their size-weighted mean, sizes travel with tokens and every
    later block adds log(size) to its attention logits (proportional attention). ToMe merges at
    most half the tokens per round; larger steps run several rounds at the same block."""

    name = "merge"
    display_name = "Token merging (ToMe)"
    description = "Bipartite soft matching, size-weighted means, proportional attention (ToMe, Bolya et al. 2023)."
    needs_attention = False
    proportional_attention = True

    def plan(self, ctx: SelectionContext, **options: Any) -> Plan:
        B, n = ctx.batch, ctx.n
        metric = F.normalize(ctx.keys().double(), dim=-1)
        size = ctx.size.double().clone()
        alive = ctx.candidates.clone()
        dest = torch.arange(n).expand(B, n).clone()
        todo = int(alive.sum(1).max()) - ctx.k
        while todo > 0:
            m = int(alive.sum(1)[0])
            idx = torch.sort((~alive).to(torch.int8), dim=1, stable=True).indices[:, :m]
            a_idx, b_idx = idx[:, ::2], idx[:, 1::2]
            step = min(todo, a_idx.shape[1])
            ma = metric.gather(1, a_idx[..., None].expand(-1, -1, metric.shape[-1]))
            mb = metric.gather(1, b_idx[..., None].expand(-1, -1, metric.shape[-1]))
            best, match = (ma @ mb.transpose(1, 2)).max(-1)
            chosen = torch.sort(best, dim=1, descending=True, stable=True).indices[:, :step]
            src = a_idx.gather(1, chosen)
            dst = b_idx.gather(1, match.gather(1, chosen))
            remap = torch.arange(n).expand(B, n).clone()
            remap.scatter_(1, src, dst)
            dest = remap.gather(1, dest)
            moved = metric.gather(1, src[..., None].expand(-1, -1, metric.shape[-1])) * size.gather(1, src)[..., None]
            weighted = (metric * size[..., None]).scatter_add(1, dst[..., None].expand_as(moved), moved)
            size = size.scatter_add(1, dst, size.gather(1, src))
            metric = F.normalize(weighted / size[..., None].clamp_min(1e-12), dim=-1)
            alive.scatter_(1, src, False)
            todo -= step
        dest = torch.where(ctx.valid, dest, torch.full_like(dest, DROP))
        return Plan(dest)

    def selection_flops(self, tokens: int, kept: int, width: int, attn_width: int, heads: int, has_cls: bool) -> int:
        flops = 2 * tokens * width * attn_width  # keys of every token
        alive, head_dim = tokens - has_cls, attn_width // max(heads, 1)
        while alive > kept:  # one similarity matmul per bipartite round
            a, b = (alive + 1) // 2, alive // 2
            flops += 2 * a * b * head_dim
            alive -= min(alive - kept, a)
        return flops


@register_strategy
class Adaptive(TokenStrategy):
    """ATP-LLaVA-style per-image budget (Ye et al., CVPR 2025): each image keeps the fewest tokens
    whose share of the attention mass reaches ``mass``, at most ``ceil(keep * patches)`` and at
    least ``min_tokens``; the kept count varies by image. A batch is padded to its largest count;
    padding tokens are zeros that every later attention masks out as keys (-inf), so a CLS-pooled
    model gives exactly its per-image result. A model that mean-pools over all tokens would
    average the padding in: run it one image at a time (``forward(..., batch_size=1)``)."""

    name = "adaptive"
    display_name = "Adaptive per-image (ATP-LLaVA)"
    description = "Per image, the fewest tokens holding a share of the attention mass (ATP-LLaVA, Ye et al. 2025)."
    varies_per_image = True

    class Options(param.Parameterized):
        mass = param.Number(0.9, bounds=(0.0, 1.0), inclusive_bounds=(False, True),
                            doc="Share of the CLS attention mass the kept tokens must hold.")
        min_tokens = param.Integer(1, bounds=(1, None), doc="Fewest patch tokens an image keeps.")

    def plan(self, ctx: SelectionContext, mass: float = 0.9, min_tokens: int = 1, **options: Any) -> Plan:
        score = ctx.importance().masked_fill(~ctx.candidates, 0.0)
        share = score / score.sum(1, keepdim=True).clamp_min(1e-30)
        ordered = torch.sort(share, dim=1, descending=True, stable=True).values
        reached = ordered.cumsum(1) >= mass - 1e-9
        count = reached.float().argmax(1) + 1
        count = torch.where(reached.any(1), count, ctx.candidates.sum(1))
        count = count.clamp(min=min(min_tokens, ctx.k), max=ctx.k)
        return topk_plan(ctx, share, count)
