"""Token budgets for vision transformers: adapters, strategies, the token intervention, FLOPs, analysis.

>>> adapter = find_adapter(model)
>>> setting = make_token_setting("cls_attention", 0.5, adapter.num_blocks)
>>> forward(model, params, x, intervention=intervention_factory(model, adapter, setting))
"""

from prunescope.explorer.tokens.adapters import TokenAdapter, find_adapter, measure_tokens
from prunescope.explorer.tokens.budget import check_keep, kept_count, token_budget
from prunescope.explorer.tokens.flops import count_flops, token_cost, token_counts, token_flops
from prunescope.explorer.tokens.intervention import (
    DROPPED, KEPT, MERGED, RECYCLED, STATUS_NAMES, TokenRecord, intervention_factory, make_token_setting,
    token_intervention,
)
from prunescope.explorer.tokens.strategies import STRATEGIES, Plan, TokenStrategy, get_strategy, register_strategy, strategy_options

__all__ = [
    "TokenAdapter", "find_adapter", "measure_tokens", "check_keep", "kept_count", "token_budget", "count_flops",
    "token_cost", "token_counts", "token_flops", "DROPPED", "KEPT", "MERGED", "RECYCLED", "STATUS_NAMES",
    "TokenRecord", "intervention_factory", "make_token_setting", "token_intervention", "STRATEGIES", "Plan",
    "TokenStrategy", "get_strategy", "register_strategy", "strategy_options",
]
