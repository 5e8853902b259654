"""What the Tokens tab and the tokens widget draw, from the data functions of
:mod:`prunescope.explorer.tokens` (glue only: every number comes from there or from the Explorer).

:class:`TokenData` belongs to one Explorer. The image inspector runs through the facade
(``explorer.run(..., record=TokenRecord(attention=True))``); the long jobs (retention maps,
Captum attributions, accuracy curves) call the analysis functions on a private copy of the model
with the explorer's masked parameters, so they never hold the explorer's forward lock for long
and the live evaluation keeps going beside them. No module imported here needs Panel.
"""

from __future__ import annotations

import copy
import math
import threading
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Callable, Sequence

import pandas as pd
import param
import torch

from prunescope.explorer.core.jobs import check_cancel
from prunescope.explorer.core.setting import DENSE, Setting, TokenSetting
from prunescope.explorer.tokens import (
    STRATEGIES, TokenRecord, find_adapter, get_strategy, kept_count, make_token_setting, strategy_options,
)
from prunescope.explorer.tokens.analysis import (
    accuracy_curves, attention_rollout, attributions, cls_attention_maps, dense_setting, record_forward,
    region_coverage, retention_map, token_map,
)
from prunescope.explorer.tokens.flops import token_flops
from prunescope.explorer.tokens.intervention import intervention_factory
from prunescope.explorer.viewmodel import Option

if TYPE_CHECKING:  # pragma: no cover
    from prunescope.explorer.core.cost import Metrics
    from prunescope.explorer.engine import Explorer

Progress = Callable[[int, int], None]
#: Regions (rows, cols) the patch grid is cut into for FEATHER's coverage measure.
COVERAGE_REGIONS = (2, 2)


@dataclass(frozen=True)
class Inspection:
    """One test image under one setting: what each block saw and kept."""

    index: int
    setting: Setting
    image: torch.Tensor | None  # (C, H, W) in the explorer's dtype, None for non-image inputs
    label: int
    blocks: list[dict]  # per block {"block", "attention" (heads, N, N), "positions" (N,)}
    attention: torch.Tensor | None  # (blocks, heads, rows, cols) CLS attention, NaN where absent
    rollout: torch.Tensor | None  # (rows, cols) attention rollout relevance
    status: torch.Tensor  # (blocks, rows, cols) KEPT / MERGED / RECYCLED / DROPPED
    tokens: list[int]  # tokens each block processed (CLS and recycled included)
    prediction: int
    probability: float
    dense_prediction: int
    dense_probability: float


@dataclass(frozen=True)
class Retention:
    """Retention maps per strategy at one per-block budget, over the evaluation split."""

    setting: Setting
    keep: tuple[float, ...]
    maps: dict[str, torch.Tensor]  # strategy -> (blocks, rows, cols) fraction of images keeping the patch
    table: pd.DataFrame  # strategy, block, keep, coverage, patches_mean, patches_std
    images: int


@dataclass(frozen=True)
class Attribution:
    """Captum attributions of one image by the dense model and under one setting."""

    index: int
    method: str
    setting: Setting
    dense: dict  # attributions() result
    pruned: dict


@dataclass(frozen=True)
class Curves:
    """Accuracy vs keep per strategy (``accuracy_curves``) and the current setting's metrics."""

    table: pd.DataFrame
    setting: Setting
    current: "Metrics"
    cancelled: bool


class TokenData:
    """Data for the token views of one explorer; ``ValueError`` if the model has no transformer blocks."""

    def __init__(self, explorer: "Explorer") -> None:
        self.explorer = explorer
        inputs, _ = explorer.eval_data
        # a private copy for the long jobs: functional_call swaps parameters on the module
        self.model = copy.deepcopy(explorer.model).to(explorer.device).eval()
        self.adapter = find_adapter(self.model, example=inputs[:1])
        self.patches = self.adapter.num_patches
        self.grid = self.adapter.patch_grid(self.patches) if self.patches else None
        if self.grid is None:
            raise ValueError(f"the token views need a rectangular patch grid; {self.patches} patch tokens have none")
        self._lock = threading.RLock()

    # ------------------------------------------------------------------ facts
    @property
    def num_blocks(self) -> int:
        return self.adapter.num_blocks

    @property
    def num_images(self) -> int:
        return len(self.explorer.eval_data[1])

    @property
    def heads(self) -> int:
        return self.adapter.heads(self.adapter.blocks(self.model)[0]) if self.adapter.has_attention else 0

    def strategies(self) -> list[str]:
        """Registered strategies that work on this model (attention-free blocks refuse some)."""
        return [n for n, s in STRATEGIES.items() if self.adapter.has_attention or not s.needs_attention]

    def image(self, index: int) -> torch.Tensor | None:
        """Test image ``index`` as (C, H, W), or None when inputs are not images."""
        x = self.explorer.eval_data[0][self.check_index(index)]
        shape = getattr(self.explorer.sample, "image_shape", None)
        if x.dim() == 3:
            return x
        if shape is not None and len(shape) == 3 and x.numel() == math.prod(shape):
            return x.reshape(shape)
        return None

    def check_index(self, index: int) -> int:
        n = self.num_images
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < n:
            raise ValueError(f"test image index must be an integer in [0, {n - 1}], got {index!r}")
        return index

    def with_tokens(self, setting: Setting) -> Setting:
        """``setting`` with a token part (the dense token setting when it has none), so a record is made."""
        if setting.tokens is not None:
            return setting
        strategy = "cls_attention" if self.adapter.has_attention else "random"
        return replace(setting, tokens=dense_setting(self.adapter, strategy))

    def budget_table(self, tokens: TokenSetting | None) -> pd.DataFrame:
        """Per block: keep, tokens processed, FLOPs beside dense (``token_flops``, one image)."""
        table = token_flops(self.model, self.adapter, self.with_tokens(DENSE).tokens if tokens is None else tokens,
                            self.patches)
        keep = tokens.keep if tokens is not None else (1.0,) * self.num_blocks
        table.insert(1, "keep", list(keep))
        return table

    # ------------------------------------------------------------------ one image
    def inspect(self, setting: Setting, index: int) -> Inspection:
        """Attention per block and head, rollout and token map of test image ``index`` under ``setting``."""
        ex = self.explorer
        x = ex.eval_data[0][self.check_index(index)][None]
        record = TokenRecord(attention=self.adapter.has_attention)
        logits = ex.run(x, self.with_tokens(setting), record=record).logits
        dense = ex.run(x, DENSE).logits
        blocks, attention, rollout = [], None, None
        if self.adapter.has_attention:
            for b in record.blocks:
                (attn, pos), = record.attention(b)
                blocks.append({"block": b, "attention": attn[0], "positions": pos[0]})
            attention = cls_attention_maps(blocks, self.adapter, self.grid)
            rollout = attention_rollout(blocks, self.adapter, self.patches).reshape(self.grid)
        probs, dense_probs = logits.softmax(-1)[0], dense.softmax(-1)[0]
        return Inspection(
            index=index, setting=setting, image=self.image(index), label=int(ex.eval_data[1][index]),
            blocks=blocks, attention=attention, rollout=rollout, status=token_map(record, 0, self.grid),
            tokens=[int(record.tokens(b)[0]) for b in record.blocks],
            prediction=int(probs.argmax()), probability=float(probs.max()),
            dense_prediction=int(dense_probs.argmax()), dense_probability=float(dense_probs.max()),
        )

    def rollout(self, inspection: Inspection, head_fusion: str) -> torch.Tensor:
        """Rollout of an inspection with another head fusion ("mean" or "max")."""
        return attention_rollout(inspection.blocks, self.adapter, self.patches, head_fusion).reshape(self.grid)

    # ------------------------------------------------------------------ long jobs
    def _token_setting(self, name: str, keep: Sequence[float], setting: Setting, **schedule) -> TokenSetting:
        """``name`` at ``keep``; the current strategy keeps its options, the others their defaults."""
        tokens = setting.tokens
        options = dict(tokens.options) if tokens is not None and tokens.strategy == name else {}
        seed = tokens.seed if tokens is not None else 0
        return make_token_setting(name, keep, self.num_blocks, seed=seed, **schedule, **options)

    def retention(self, setting: Setting, strategies: Sequence[str] | None = None, *, chunk: int = 400,
                  progress: Progress | None = None, cancel: threading.Event | None = None) -> Retention:
        """How often each patch position survives each block, over the evaluation split, for every
        strategy at ``setting``'s per-block budget (``retention_map``), with the share of (image,
        region) pairs that keep a token (``region_coverage``, FEATHER's finding) and the kept counts."""
        tokens = setting.tokens
        if tokens is None or tokens.is_dense:
            raise ValueError("retention maps need a token budget below 1 (keep < 1 at some block); "
                             "the dense model keeps every patch")
        strategies = list(strategies or self.strategies())
        inputs = self.explorer.eval_data[0]
        params = self.explorer.params_for(setting)
        starts = list(range(0, len(inputs), chunk))
        total, done = len(strategies) * len(starts), 0
        regions_fit = self.grid[0] % COVERAGE_REGIONS[0] == 0 and self.grid[1] % COVERAGE_REGIONS[1] == 0
        maps, rows = {}, []
        for name in strategies:
            ts = self._token_setting(name, list(tokens.keep), setting)
            acc = torch.zeros(self.num_blocks, *self.grid, dtype=torch.float64)
            coverage = torch.zeros(self.num_blocks, dtype=torch.float64)
            counts = [[] for _ in range(self.num_blocks)]
            for start in starts:
                check_cancel(cancel, "retention maps", done, total)
                part = inputs[start:start + chunk]
                with self._lock:
                    _, record = record_forward(self.model, params, self.adapter, ts, part,
                                               batch_size=self.explorer.batch_size)
                acc += retention_map(record, self.grid) * len(part)
                for b in record.blocks:
                    if regions_fit:
                        coverage[b] += region_coverage(record.status(b), self.grid, COVERAGE_REGIONS) * len(part)
                    counts[b].append(record.patches(b).double())
                done += 1
                if progress is not None:
                    progress(done, total)
            maps[name] = acc / len(inputs)
            for b in range(self.num_blocks):
                c = torch.cat(counts[b])
                rows.append({"strategy": name, "block": b, "keep": ts.keep[b],
                             "coverage": float(coverage[b] / len(inputs)) if regions_fit else float("nan"),
                             "patches_mean": float(c.mean()), "patches_std": float(c.std(unbiased=False))})
        return Retention(setting=setting, keep=tuple(tokens.keep), maps=maps, table=pd.DataFrame(rows), images=len(inputs))

    def attribution(self, setting: Setting, index: int, method: str, *, n_steps: int = 32,
                    progress: Progress | None = None, cancel: threading.Event | None = None) -> Attribution:
        """``attributions`` of test image ``index`` by the dense model and under ``setting`` (weights
        and tokens), both for the dense model's predicted class."""
        ex = self.explorer
        x = ex.eval_data[0][self.check_index(index)]
        intervention = None
        if setting.tokens is not None and not setting.tokens.is_dense:
            intervention = intervention_factory(self.model, self.adapter, setting.tokens)
        with self._lock:
            dense = attributions(self.model, ex.params_for(DENSE), x, None, method, n_steps=n_steps)
        if progress is not None:
            progress(1, 2)
        check_cancel(cancel, "attributions", 1, 2)
        with self._lock:
            pruned = attributions(self.model, ex.params_for(setting), x, dense["target"], method,
                                  intervention, n_steps=n_steps)
        if progress is not None:
            progress(2, 2)
        return Attribution(index=index, method=method, setting=setting, dense=dense, pruned=pruned)

    def curves(self, setting: Setting, strategies: Sequence[str], keeps: Sequence[float], *, start_block: int = 1,
               schedule: dict | None = None, progress: Progress | None = None,
               cancel: threading.Event | None = None) -> Curves:
        """``accuracy_curves`` at ``setting``'s weights (and the current strategy's options), every
        strategy under the same ``schedule`` (``{"schedule": ..., "drop_at": ...}``), and the
        measured metrics of ``setting`` itself (``explorer.evaluate``)."""
        for name in strategies:
            get_strategy(name)
        ex = self.explorer
        tokens = setting.tokens
        options = {}
        for name in strategies:
            opts = dict(tokens.options) if tokens is not None and tokens.strategy == name else {}
            options[name] = {**opts, **(schedule or {})}
        inputs, labels = ex.eval_data
        with self._lock:
            table = accuracy_curves(self.model, ex.params_for(setting), self.adapter, inputs, labels, list(strategies),
                                    list(keeps), start_block=start_block, options=options,
                                    seed=tokens.seed if tokens is not None else 0, batch_size=ex.batch_size,
                                    progress=progress, cancel=cancel)
        return Curves(table=table, setting=setting, current=ex.evaluate(setting=setting),
                      cancelled=bool(table.attrs.get("cancelled", False)))


def token_data_for(explorer: "Explorer") -> tuple[TokenData | None, str]:
    """``(TokenData, "")`` for a model with transformer blocks, else ``(None, reason)``."""
    try:
        return TokenData(explorer), ""
    except ValueError as err:
        return None, str(err)


# ---------------------------------------------------------------------- the controls' view model
@dataclass(frozen=True)
class TokenControls:
    """What the token controls show for a state: both the Panel tab and the widget render it."""

    strategies: dict[str, str]  # display name -> registry name
    strategy: str
    description: str
    options: tuple[Option, ...]
    keep: tuple[float, ...]  # per block, as the state holds it (1.0 everywhere without a budget)
    seed: int
    active: bool  # a budget below 1 is set somewhere
    note: str


def token_options(strategy: str, values: dict | None = None) -> tuple[Option, ...]:
    """The options of ``strategy`` as view-model :class:`Option` s, at ``values`` (else defaults)."""
    cls = get_strategy(strategy).Options
    values = {**strategy_options(strategy), **(values or {})}
    out = []
    for name in (p for p in cls.param if p != "name"):
        p = cls.param[name]
        label, doc = name.replace("_", " "), p.doc or ""
        if isinstance(p, param.Boolean):
            out.append(Option(name, label, "bool", values[name], doc=doc))
        elif isinstance(p, param.Selector):
            out.append(Option(name, label, "select", values[name], choices=tuple(p.objects), doc=doc))
        elif isinstance(p, param.Integer):
            out.append(Option(name, label, "int", values[name], bounds=p.bounds, doc=doc))
        elif isinstance(p, param.Number):
            out.append(Option(name, label, "float", values[name], bounds=p.bounds, doc=doc))
        else:
            out.append(Option(name, label, "text", values[name], doc=doc))
    return tuple(out)


def token_controls(data: TokenData, strategy: str | None = None) -> TokenControls:
    """The token controls' view model of ``data.explorer``'s state (``strategy``: the picker's
    choice when the state has no budget)."""
    tokens = data.explorer.setting.tokens
    name = tokens.strategy if tokens is not None else (strategy or "cls_attention")
    if name not in data.strategies():
        name = data.strategies()[0]
    keep = tuple(tokens.keep) if tokens is not None else (1.0,) * data.num_blocks
    counts = [kept_count(k, data.patches) for k in keep]
    active = tokens is not None and not tokens.is_dense
    note = ("No token budget: every block processes all "
            f"{data.patches} patch tokens." if tokens is None else
            "Patch tokens per block: " + ", ".join(f"{c}" for c in counts)
            + f" of {data.patches} (ceil(keep x {data.patches})"
            + ("; the strategy adds tokens of its own)" if get_strategy(name).extra_tokens else ")")
            + ("; the count varies per image up to these." if get_strategy(name).varies_per_image else "."))
    return TokenControls(
        strategies={s.display_name: n for n, s in STRATEGIES.items() if n in data.strategies()},
        strategy=name, description=get_strategy(name).description,
        options=token_options(name, dict(tokens.options) if tokens is not None and tokens.strategy == name else None),
        keep=keep, seed=tokens.seed if tokens is not None else 0, active=active, note=note,
    )


def parse_blocks(text: str, blocks: int) -> tuple[int, ...]:
    """``"1, 3"`` -> (1, 3): block indices for EViT's drops; ValueError names the text and the range."""
    try:
        values = tuple(int(v) for v in text.replace(";", ",").split(",") if v.strip())
    except ValueError:
        raise ValueError(f"drop blocks must be integers in [0, {blocks - 1}] separated by commas, got {text!r}") from None
    if not values or any(not 0 <= v < blocks for v in values):
        raise ValueError(f"drop blocks must be integers in [0, {blocks - 1}] separated by commas, got {text!r}")
    return values
