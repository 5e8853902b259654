"""Token budgets as an intervention of the one ``forward``: temporary hooks that shorten the sequence.

At the input of every block ``b`` whose budget ``keep[b]`` is below the tokens present, a
forward pre-hook asks the strategy for a :class:`~prunescope.explorer.tokens.strategies.Plan`
and applies it: kept tokens stay in their original order, CLS always stays where it is, merged
tokens become their (size- or importance-) weighted mean, a recycled token sits after the kept
patches, padding (per-image budgets) after that. The block and all later ones really process the
shorter sequence; the user's forward (embedding, pooling, head) runs unchanged. Every hook is
removed on exit, also on error, and no attribute is left on any module.
"""

from __future__ import annotations

import contextlib
import itertools
from typing import Any, Callable, ContextManager, Iterator

import torch
from torch import nn

from prunescope.explorer.core.setting import TokenSetting, freeze_options
from prunescope.explorer.tokens.adapters import TokenAdapter
from prunescope.explorer.tokens.budget import kept_count, token_budget
from prunescope.explorer.tokens.context import DROP, RECYCLE, SelectionContext
from prunescope.explorer.tokens.strategies import STRATEGIES, Plan, TokenStrategy, get_strategy, strategy_options

#: Token status codes in a :class:`TokenRecord`'s maps.
KEPT, MERGED, RECYCLED, DROPPED = 0, 1, 2, 3
STATUS_NAMES = ("kept", "merged", "recycled", "dropped")


def make_token_setting(
    strategy: str, keep: float | list[float] | tuple[float, ...], blocks: int, *, start_block: int = 1,
    schedule: str | None = None, seed: int = 0, **options: Any,
) -> TokenSetting:
    """A complete :class:`TokenSetting`: per-block budget (``token_budget``; the strategy's default
    schedule for a single ratio) and every option of the strategy at its validated value.
    ``drop_at`` and ``late_block`` go to the schedule, the other options to the strategy."""
    chosen = get_strategy(strategy)
    schedule_args = {k: options.pop(k) for k in ("drop_at", "late_block") if k in options}
    if schedule is None and not isinstance(keep, (list, tuple)) and float(keep) < 1.0:
        schedule = chosen.default_schedule
    if schedule == "two_stage" and blocks - start_block < 2:
        schedule = None
    per_block = token_budget(keep, blocks, start_block, schedule, **schedule_args)
    return TokenSetting(strategy, per_block, freeze_options(strategy_options(strategy, **options)), int(seed))


class TokenRecord:
    """What token pruning did, per block, gathered over the batches of a forward.

    Per block: ``status(b)`` (images, patches) with KEPT / MERGED / RECYCLED / DROPPED for every
    original patch, ``tokens(b)`` tokens the block processed per image (CLS and recycled included,
    padding not), ``mass(b)`` the summed sizes of its patch-side tokens, and, when built with
    ``attention=True``, ``attention(b)``: per batch the block's attention (B, H, N, N) and the
    original patch position of each of its N tokens (-1 CLS / recycled / padding).
    """

    def __init__(self, attention: bool = False) -> None:
        self.keep_attention = attention
        self._blocks: dict[int, dict[str, list[torch.Tensor]]] = {}

    def add(self, block: int, **items: torch.Tensor) -> None:
        entry = self._blocks.setdefault(block, {})
        for key, value in items.items():
            entry.setdefault(key, []).append(value.detach())

    @property
    def blocks(self) -> list[int]:
        return sorted(self._blocks)

    def _cat(self, block: int, key: str) -> torch.Tensor:
        if block not in self._blocks:
            raise ValueError(f"no record of block {block}; recorded: {self.blocks}")
        return torch.cat(self._blocks[block][key])

    def status(self, block: int) -> torch.Tensor:
        return self._cat(block, "status")

    def tokens(self, block: int) -> torch.Tensor:
        return self._cat(block, "tokens")

    def patches(self, block: int) -> torch.Tensor:
        """Real patch tokens (not recycled, not padding) block ``block`` processed per image."""
        return self._cat(block, "patches")

    def mass(self, block: int) -> torch.Tensor:
        return self._cat(block, "mass")

    def sequence(self, block: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per batch ``(positions, sizes)`` (B, N) of the tokens block ``block`` processed:
        original patch index (-1: CLS, recycled, padding) and size (CLS 1, padding 0)."""
        entry = self._blocks[block]
        return list(zip(entry["positions"], entry["sizes"]))

    def attention(self, block: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per batch ``(attention (B, H, N, N), positions (B, N))`` of block ``block``."""
        if not self.keep_attention:
            raise ValueError("this record was made without attention=True")
        entry = self._blocks[block]
        return list(zip(entry["attention"], entry["positions"]))


class _Run:
    """Bookkeeping of one batch through the blocks."""

    def __init__(self, adapter: TokenAdapter, strategy: TokenStrategy, options: dict, generator: torch.Generator):
        self.adapter, self.strategy, self.options, self.generator = adapter, strategy, options, generator
        self.patches: int | None = None
        self.stage = 0
        self.bias: torch.Tensor | None = None
        self.image: torch.Tensor | None = None

    def start(self, x: torch.Tensor) -> None:
        B, N, _ = x.shape
        has_cls = self.adapter.cls_index is not None
        self.patches = P = N - has_cls
        self.index = torch.arange(P).expand(B, P).clone()
        self.size = torch.ones(B, P, dtype=x.dtype)
        self.valid = torch.ones(B, P, dtype=torch.bool)
        self.owner = self.index.clone()
        self.grid = self.adapter.patch_grid(P)

    def cls_pos(self, x: torch.Tensor) -> int | None:
        if self.adapter.cls_index is None:
            return None
        return 0 if self.adapter.cls_index == 0 else x.shape[1] - 1

    def split(self, x: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor]:
        pos = self.cls_pos(x)
        if pos is None:
            return None, x
        return (x[:, :1], x[:, 1:]) if pos == 0 else (x[:, -1:], x[:, :-1])

    def join(self, cls: torch.Tensor | None, patches: torch.Tensor) -> torch.Tensor:
        if cls is None:
            return patches
        return torch.cat([cls, patches], 1) if self.adapter.cls_index == 0 else torch.cat([patches, cls], 1)

    def prune(self, block: nn.Module, b: int, x: torch.Tensor, k: int) -> torch.Tensor:
        ctx = SelectionContext(
            self.adapter, block, b, x, self.cls_pos(x), self.index, self.size, self.valid, k, self.grid,
            self.bias, self.generator, self.stage, self.image,
        )
        plan = self.strategy.plan(ctx, **self.options)
        cls, xp = self.split(x)
        xp = self.apply(xp, plan)
        self.stage += 1
        self.update_bias()
        return self.join(cls, xp)

    def apply(self, xp: torch.Tensor, plan: Plan) -> torch.Tensor:
        """The patch-side tokens after ``plan``; updates index, size, valid and owner."""
        B, n, C = xp.shape
        slots = torch.arange(n).expand(B, n)
        dest = torch.where(self.valid, plan.dest, torch.full_like(plan.dest, DROP))
        anchor = dest == slots
        target = dest.clamp_min(0)
        if bool(((dest >= 0) & ~anchor.gather(1, target)).any()):
            raise RuntimeError(f"token strategy {self.strategy.name!r} merged a token into one that is not kept")
        recycled = dest == RECYCLE
        new_anchor = anchor.long().cumsum(1) - 1
        kept = anchor.sum(1)
        if not bool(((dest >= 0) & ~anchor).any() or recycled.any()):
            return self._select(xp, anchor, kept, new_anchor)
        total = kept + recycled.any(1).long()
        T = int(total.max())
        slot = torch.where(dest >= 0, new_anchor.gather(1, target), torch.where(recycled, kept[:, None], -1))
        spill = torch.where(slot >= 0, slot, T)  # column T collects what is dropped
        weight = self.size if plan.weight is None else plan.weight.to(xp.dtype) * self.size
        weight = torch.where(slot >= 0, weight, 0.0)
        count = torch.zeros(B, T + 1).scatter_add_(1, spill, torch.ones(B, n))
        wsum = torch.zeros(B, T + 1, dtype=xp.dtype).scatter_add_(1, spill, weight)
        wx = torch.zeros(B, T + 1, C, dtype=xp.dtype).scatter_add_(1, spill[..., None].expand(B, n, C), weight[..., None] * xp)
        merged = wx / wsum[..., None].clamp_min(torch.finfo(xp.dtype).tiny)
        source = torch.zeros(B, T + 1, dtype=torch.long).scatter_(1, spill, slots)
        direct = xp.gather(1, source[..., None].expand(B, T + 1, C))
        single = (count == 1)[..., None]
        new_x = torch.where(single, direct, torch.where(count[..., None] > 1, merged, torch.zeros_like(merged)))[:, :T]
        self.size = torch.zeros(B, T + 1, dtype=self.size.dtype).scatter_add_(1, spill, self.size)[:, :T]
        index = torch.full((B, T + 1), -1, dtype=torch.long)
        index.scatter_(1, torch.where(anchor, new_anchor, T), self.index)
        index[:, T] = -1
        self.index = index[:, :T]
        self.valid = torch.arange(T).expand(B, T) < total[:, None]
        self.owner = torch.where(self.owner >= 0, slot.gather(1, self.owner.clamp_min(0)), -1)
        return new_x.contiguous()

    def _select(self, xp: torch.Tensor, anchor: torch.Tensor, kept: torch.Tensor, new_anchor: torch.Tensor) -> torch.Tensor:
        """``apply`` for a plan that only keeps and drops: one gather (padding after, zeros)."""
        B, n, C = xp.shape
        T = int(kept.max())
        order = torch.sort((~anchor).to(torch.int8), dim=1, stable=True).indices[:, :T]  # kept first, in order
        valid = torch.arange(T).expand(B, T) < kept[:, None]
        new_x = xp.gather(1, order[..., None].expand(B, T, C))
        if not bool(valid.all()):
            new_x = new_x.masked_fill(~valid[..., None], 0.0)
        self.size = self.size.gather(1, order) * valid
        self.index = torch.where(valid, self.index.gather(1, order), -1)
        self.valid = valid
        slot = torch.where(anchor, new_anchor, -1)
        self.owner = torch.where(self.owner >= 0, slot.gather(1, self.owner.clamp_min(0)), -1)
        return new_x

    def update_bias(self) -> None:
        """Key bias of the following blocks: log(size) with proportional attention, -inf for padding."""
        padded = bool((~self.valid).any())
        if not (padded or (self.strategy.proportional_attention and bool((self.size != 1).any()))):
            self.bias = None
            return
        bias = torch.zeros_like(self.size)
        if self.strategy.proportional_attention:
            bias = self.size.clamp_min(1e-30).log()
        bias = bias.masked_fill(~self.valid, float("-inf"))
        if self.adapter.cls_index is not None:
            zero = bias.new_zeros(bias.shape[0], 1)
            bias = torch.cat([zero, bias], 1) if self.adapter.cls_index == 0 else torch.cat([bias, zero], 1)
        self.bias = bias

    def status(self) -> torch.Tensor:
        """(B, P) what became of every original patch so far."""
        has_owner = self.owner >= 0
        at = self.index.gather(1, self.owner.clamp_min(0))
        patch = torch.arange(self.patches).expand_as(self.owner)
        status = torch.where(at == patch, KEPT, torch.where(at == -1, RECYCLED, MERGED))
        return torch.where(has_owner, status, DROPPED).to(torch.int8)


def token_intervention(
    model: nn.Module, adapter: TokenAdapter, setting: TokenSetting, record: TokenRecord | None = None,
    *, seed_offset: int = 0,
) -> ContextManager[None]:
    """A context manager that applies ``setting``'s token budget to every forward of ``model`` inside it.

    Validates first (ValueError: wrong number of budgets, keep outside (0, 1] or increasing, a
    strategy that reads attention on attention-free blocks, unknown options), so a bad setting
    never touches the module. ``record`` collects per-block token maps (and attention). The
    random draws are seeded by ``setting.seed + seed_offset``. The hooks live on ``model`` while
    the context is open: serialise forwards on one module, as ``core.forward`` already requires.
    """
    strategy = get_strategy(setting.strategy)
    options = strategy_options(setting.strategy, **dict(setting.options))
    if len(setting.keep) != adapter.num_blocks:
        raise ValueError(f"token budget must have one keep value per block ({adapter.num_blocks}), got {len(setting.keep)}")
    keep = token_budget(list(setting.keep), adapter.num_blocks)
    if strategy.needs_attention and not adapter.has_attention:
        raise ValueError(
            f"token strategy {setting.strategy!r} reads attention, but the model's blocks "
            f"({adapter.kind}) have none; strategies that work without attention: "
            + ", ".join(n for n, s in STRATEGIES.items() if not s.needs_attention)
        )
    return _intervene(model, adapter, strategy, options, keep, record, setting.seed + seed_offset)


@contextlib.contextmanager
def _intervene(model, adapter, strategy, options, keep, record, seed) -> Iterator[None]:
    prune_at = [b for b in range(len(keep)) if keep[b] < (keep[b - 1] if b else 1.0)]
    if not prune_at and record is None:
        yield
        return
    first = prune_at[0] if prune_at else len(keep)
    carries_bias = strategy.proportional_attention or strategy.varies_per_image
    hooked = set(prune_at) | (set(range(first, len(keep))) if carries_bias else set())
    if record is not None:
        hooked = set(range(len(keep)))
    blocks = adapter.blocks(model)
    run = _Run(adapter, strategy, options, torch.Generator().manual_seed(int(seed)))

    def capture_input(module, args, kwargs):
        run.image = args[0] if args and isinstance(args[0], torch.Tensor) else None

    def pre_hook(b: int):
        def hook(module, args, kwargs):
            x = adapter.block_input(args, kwargs)
            if run.patches is None:
                run.start(x)
            if b in prune_at:
                k = kept_count(keep[b], run.patches)
                present = int((run.valid & (run.index >= 0)).sum(1).max())
                if present > k:
                    x = run.prune(module, b, x, k)
            if record is not None:
                _record(record, run, adapter, module, b, x)
            args, kwargs = adapter.with_block_input(args, kwargs, x)
            return adapter.bias_kwargs(module, args, kwargs, run.bias, run.stage > 0)
        return hook

    handles = []
    try:
        handles.append(model.register_forward_pre_hook(capture_input, with_kwargs=True))
        for b in sorted(hooked):
            handles.append(blocks[b].register_forward_pre_hook(pre_hook(b), with_kwargs=True))
            if carries_bias:
                handles.extend(adapter.install_bias(blocks[b], lambda: run.bias))
        yield
    finally:
        for handle in handles:
            handle.remove()
        run.image = None


def _record(record: TokenRecord, run: _Run, adapter: TokenAdapter, module: nn.Module, b: int, x: torch.Tensor) -> None:
    has_cls = adapter.cls_index is not None
    record.add(
        b,
        status=run.status(),
        tokens=run.valid.sum(1) + has_cls,
        patches=(run.valid & (run.index >= 0)).sum(1),
        mass=(run.size * run.valid).sum(1),
    )
    positions = torch.where(run.valid, run.index, -1)
    sizes = run.size * run.valid
    if has_cls:
        minus, one = positions.new_full((positions.shape[0], 1), -1), sizes.new_ones(sizes.shape[0], 1)
        first = adapter.cls_index == 0
        positions = torch.cat([minus, positions] if first else [positions, minus], 1)
        sizes = torch.cat([one, sizes] if first else [sizes, one], 1)
    record.add(b, positions=positions, sizes=sizes)
    if record.keep_attention and adapter.has_attention:
        with torch.no_grad():
            record.add(b, attention=adapter.attention(module, x, run.bias))


def intervention_factory(
    model: nn.Module, adapter: TokenAdapter, setting: TokenSetting, record: TokenRecord | None = None,
) -> Callable[[], ContextManager[None]]:
    """The zero-argument factory ``core.forward(..., intervention=...)`` takes: validated once, and
    each batch seeded by ``setting.seed + batch number`` (so batches draw different random tokens)."""
    token_intervention(model, adapter, setting)  # validate now, not inside the forward
    counter = itertools.count()
    return lambda: token_intervention(model, adapter, setting, record, seed_offset=next(counter))
