"""Sample models: registry, accuracy, shipped checkpoints and bit-for-bit reproducibility."""

from __future__ import annotations

import pytest
import torch

from prunescope.sample_models import CHECKPOINTS, get_sample_model, list_sample_models
from prunescope.sample_models.train import test_accuracy as accuracy_of
from prunescope.sample_models.train import train_sample_model

MIN_ACCURACY = {"digits_mlp": 0.96, "digits_cnn": 0.97}


def test_registry_lists_the_digits_models():
    assert {"digits_mlp", "digits_cnn"} <= set(list_sample_models())
    with pytest.raises(ValueError, match="unknown sample model 'nope'; known: digits_cnn, digits_mlp"):
        get_sample_model("nope")


def test_trained_weights_reach_the_accuracy_bar(sample_name):
    spec = get_sample_model(sample_name)
    assert accuracy_of(sample_name, spec.state_dict("trained")) >= MIN_ACCURACY[sample_name]


def test_checkpoints_are_small_distinct_and_loadable(sample_name):
    spec = get_sample_model(sample_name)
    states = {c: spec.state_dict(c) for c in CHECKPOINTS}
    for c in CHECKPOINTS:
        assert spec.checkpoint_path(c).stat().st_size < 2 * 1024 * 1024
    assert not torch.equal(states["init"]["fc1.weight"], states["early"]["fc1.weight"])
    assert not torch.equal(states["early"]["fc1.weight"], states["trained"]["fc1.weight"])
    # theta_0 is the seeded initialisation of build()
    fresh = spec.build().state_dict()
    assert all(torch.equal(fresh[k], states["init"][k]) for k in fresh)
    # the early checkpoint is early: much worse than trained
    assert accuracy_of(sample_name, states["early"]) < accuracy_of(sample_name, states["trained"]) - 0.05


def test_data_split_is_fixed_and_disjoint(sample_name):
    spec = get_sample_model(sample_name)
    (xtr, ytr), (xte, yte) = spec.data("train"), spec.data("test")
    assert len(yte) == 539 and len(ytr) == 1797 - 539
    assert torch.equal(spec.data("test")[0], xte)
    flat_tr = {tuple(r) for r in xtr.reshape(len(xtr), -1).tolist()}
    overlap = sum(tuple(r) in flat_tr for r in xte.reshape(len(xte), -1).tolist())
    assert overlap < 10  # the digits set has a few exact duplicate images, nothing more


@pytest.mark.slow
def test_training_reproduces_the_shipped_weights_bit_for_bit(sample_name):
    spec = get_sample_model(sample_name)
    states = train_sample_model(sample_name)
    for checkpoint, state in states.items():
        shipped = spec.state_dict(checkpoint)
        assert shipped.keys() == state.keys()
        assert all(torch.equal(shipped[k], state[k]) for k in state), checkpoint
