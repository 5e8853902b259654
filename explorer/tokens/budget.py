"""Per-block token budgets: ``keep[b]`` is the fraction of the original patch tokens block b processes."""

from __future__ import annotations

import math
from typing import Sequence

SCHEDULES = ("constant", "linear", "drops", "two_stage")


def check_keep(value: float, what: str = "keep") -> float:
    """``value`` as a float in (0, 1], or a ValueError naming the value and the allowed range."""
    try:
        keep = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be a number in (0, 1], got {value!r}") from None
    if not 0.0 < keep <= 1.0 or math.isnan(keep):
        raise ValueError(f"{what} must be in (0, 1] (fraction of the patch tokens kept), got {value!r}")
    return keep


def token_budget(
    keep: float | Sequence[float],
    blocks: int,
    start_block: int = 1,
    schedule: str | None = None,
    drop_at: Sequence[int] = (3, 6, 9),
    late_block: int | None = None,
) -> tuple[float, ...]:
    """Normalise a token budget to one keep ratio per block.

    ``keep`` is one ratio or a non-increasing per-block list (length ``blocks``). A ratio means,
    by ``schedule``: None / "constant": every block from ``start_block`` on keeps ``keep``;
    "linear": decays linearly from 1 to ``keep`` at the last block; "drops": EViT's schedule,
    each block in ``drop_at`` multiplies the kept fraction by ``keep``; "two_stage": FEATHER's
    light-then-heavy pruning, ``sqrt(keep)`` from ``start_block`` and ``keep`` from ``late_block``
    (default: halfway between ``start_block`` and the end). Blocks before ``start_block`` keep all.
    """
    if not isinstance(blocks, int) or blocks < 1:
        raise ValueError(f"blocks must be a positive integer, got {blocks!r}")
    if isinstance(keep, (list, tuple)):
        if schedule not in (None, "constant"):
            raise ValueError(f"a per-block keep list takes no schedule, got schedule={schedule!r}")
        values = tuple(check_keep(k, f"keep[{i}]") for i, k in enumerate(keep))
        if len(values) != blocks:
            raise ValueError(f"per-block keep list must have one value per block ({blocks}), got {len(values)}")
        for i in range(1, blocks):
            if values[i] > values[i - 1]:
                raise ValueError(
                    f"per-block keep must be non-increasing (dropped tokens do not come back): "
                    f"keep[{i}]={values[i]} > keep[{i - 1}]={values[i - 1]}"
                )
        return values
    ratio = check_keep(keep)
    if not isinstance(start_block, int) or not 0 <= start_block < blocks:
        raise ValueError(f"start_block must be an integer in [0, {blocks - 1}], got {start_block!r}")
    schedule = schedule or "constant"
    if schedule == "constant":
        return (1.0,) * start_block + (ratio,) * (blocks - start_block)
    if schedule == "linear":
        steps = blocks - start_block
        return (1.0,) * start_block + tuple(1.0 - (1.0 - ratio) * (i + 1) / steps for i in range(steps))
    if schedule == "drops":
        bad = [b for b in drop_at if not (isinstance(b, int) and 0 <= b < blocks)]
        if bad or not drop_at:
            raise ValueError(f"drop_at must name blocks in [0, {blocks - 1}], got {tuple(drop_at)!r}")
        return tuple(ratio ** sum(1 for d in drop_at if d <= b) for b in range(blocks))
    if schedule == "two_stage":
        late = late_block if late_block is not None else start_block + max(1, (blocks - start_block) // 2)
        if not isinstance(late, int) or not start_block < late < blocks:
            raise ValueError(f"late_block must be an integer in [{start_block + 1}, {blocks - 1}], got {late!r}")
        early = math.sqrt(ratio)
        return tuple(1.0 if b < start_block else early if b < late else ratio for b in range(blocks))
    raise ValueError(f"unknown schedule {schedule!r}; known: {', '.join(SCHEDULES)}")


def kept_count(keep: float, patches: int) -> int:
    """Patch tokens a block keeps at ratio ``keep``: ``ceil(keep * patches)`` (at least 1)."""
    return max(1, min(patches, math.ceil(keep * patches - 1e-9)))
