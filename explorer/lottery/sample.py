"""Ticket searches on the built-in sample models (their theta_0, theta_k, data and prunable weights)."""

from __future__ import annotations

from typing import Any

from prunescope.explorer.lottery.imp import find_ticket
from prunescope.explorer.lottery.runs import TicketRun


def sample_prunable(spec: Any) -> list[str]:
    """Parameter names a sample model prunes (``prunable_weights``, else ``<layer>.weight``)."""
    weights = getattr(spec, "prunable_weights", None)
    if weights:
        return list(weights)
    return [f"{layer}.weight" for layer in spec.prunable_layers]


def sample_ticket_inputs(name: str) -> dict[str, Any]:
    """Everything :func:`find_ticket` needs about sample model ``name`` except the search settings."""
    from prunescope.sample_models import get_sample_model

    spec = get_sample_model(name)
    cfg = spec.train_config
    return {
        "model": spec.build(), "theta0_state": spec.state_dict("init"), "theta_k_state": spec.state_dict("early"),
        "train_data": spec.data("train"), "eval_data": spec.data("test"), "prunable": sample_prunable(spec),
        "model_name": name, "lr": cfg.get("lr", 1e-3), "batch_size": cfg.get("batch_size", 64),
    }


def find_sample_ticket(name: str, **settings: Any) -> TicketRun:
    """:func:`find_ticket` on sample model ``name``; ``settings`` override its defaults (lr, batch size)."""
    inputs = sample_ticket_inputs(name)
    inputs.update(settings)
    return find_ticket(**inputs)
