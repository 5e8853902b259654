"""The sample-model registry: names, errors, prunable weights, data metadata, seeded builds."""

from __future__ import annotations

import pytest
import torch

from prunescope.sample_models import SampleModel, get_sample_model, list_sample_models, register_sample_model

ALL = ("digits_mlp", "digits_cnn", "shapes_vit")


def test_registry_lists_the_built_in_models_sorted():
    names = list_sample_models()
    assert set(ALL) <= set(names)
    assert names == sorted(names)


def test_unknown_name_lists_the_known_ones():
    with pytest.raises(ValueError, match="unknown sample model 'nope'; known: ") as err:
        get_sample_model("nope")
    assert all(name in str(err.value) for name in ALL)


def test_registering_a_taken_name_is_an_error_and_keeps_the_original():
    original = get_sample_model("digits_mlp")

    def digits_mlp() -> SampleModel:  # same name as the built-in
        raise AssertionError("must never be called")

    with pytest.raises(ValueError, match="'digits_mlp' is already registered"):
        register_sample_model(digits_mlp)
    assert get_sample_model("digits_mlp").description == original.description


@pytest.mark.parametrize("name", ALL)
def test_prunable_weights_are_parameters_and_layers_are_their_modules(name):
    spec = get_sample_model(name)
    model = spec.build()
    params = dict(model.named_parameters())
    modules = dict(model.named_modules())
    assert spec.prunable_weights and len(set(spec.prunable_weights)) == len(spec.prunable_weights)
    for weight, layer in zip(spec.prunable_weights, spec.prunable_layers, strict=True):
        assert weight in params and params[weight].dim() >= 2, weight
        assert modules[layer].weight is params[weight]  # the derived module name owns the weight


def test_prunable_weights_of_the_vit_cover_every_matrix_but_embeddings():
    spec = get_sample_model("shapes_vit")
    model = spec.build()
    matrices = {n for n, p in model.named_parameters() if p.dim() >= 2}
    assert matrices - set(spec.prunable_weights) == {"cls_token", "pos_embed"}
    assert sum(".attn.qkv." in n for n in spec.prunable_weights) == len(model.blocks)


@pytest.mark.parametrize("name", ALL)
def test_data_metadata_matches_the_data_and_the_model(name):
    spec = get_sample_model(name)
    x, y = spec.data("test")
    assert x.dtype == torch.float32 and y.dtype == torch.int64
    assert x[0].numel() == torch.Size(spec.image_shape).numel()
    assert x.reshape(len(x), *spec.image_shape).shape[1:] == spec.image_shape
    assert len(spec.class_names) == int(y.max()) + 1 == spec.build()(x[:2]).shape[1]
    xt, yt = spec.train_data()
    assert torch.equal(xt, spec.data("train")[0]) and torch.equal(yt, spec.data("train")[1])
    with pytest.raises(ValueError, match="split must be 'train' or 'test', got 'val'"):
        spec.data("val")


@pytest.mark.parametrize("name", ALL)
def test_build_is_seeded_and_leaves_the_global_rng_alone(name):
    spec = get_sample_model(name)
    torch.manual_seed(7)
    expected = torch.rand(3)  # what the global RNG gives next without a build in between
    torch.manual_seed(7)
    a = spec.build().state_dict()
    assert torch.equal(torch.rand(3), expected)
    b = spec.build().state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_digits_split_is_fixed_and_disjoint():
    spec = get_sample_model("digits_mlp")
    (xtr, ytr), (xte, yte) = spec.data("train"), spec.data("test")
    assert len(yte) == 539 and len(ytr) == 1797 - 539
    assert torch.equal(spec.data("test")[0], xte)
    flat_tr = {tuple(r) for r in xtr.reshape(len(xtr), -1).tolist()}
    overlap = sum(tuple(r) in flat_tr for r in xte.reshape(len(xte), -1).tolist())
    assert overlap < 10  # the digits set has a few exact duplicate images, nothing more
    # the CNN sees the same images, as (1, 8, 8)
    assert torch.equal(get_sample_model("digits_cnn").data("test")[0].reshape(len(xte), -1), xte)
