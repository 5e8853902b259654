"""features(): activations at named points equal an explicit forward with the same weights."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from prunescope.explorer.geometry import (
    capture, classifier_layer, classifier_weight, default_layer, features, known_layers, prunable_layers,
)
from prunescope.sample_models import get_sample_model


def manual_mlp(params, model, x):
    """fc1 -> relu -> fc2 -> relu -> fc3 written out with F.linear."""
    p = {name: params.get(name, t.detach()) for name, t in model.named_parameters()}
    h1 = F.linear(x, p["fc1.weight"], p["fc1.bias"])
    h2 = F.linear(torch.relu(h1), p["fc2.weight"], p["fc2.bias"])
    return h1, h2, torch.relu(h2), F.linear(torch.relu(h2), p["fc3.weight"], p["fc3.bias"])


def test_default_is_classifier_input_and_matches_manual_forward(mlp, digits, pruned_params):
    x, _ = digits
    assert default_layer(mlp, x) == "fc3:input"
    before = {k: v.clone() for k, v in mlp.state_dict().items()}
    for params in ({}, pruned_params):
        h1, h2, feats, logits = (t.detach() for t in manual_mlp(params, mlp, x))
        assert torch.allclose(features(mlp, params, x), feats, atol=1e-5)
        result = capture(mlp, params, x, ["fc1", "fc2", "fc3:input"], batch_size=37)
        assert torch.allclose(result.features["fc1"], h1, atol=1e-5)
        assert torch.allclose(result.features["fc2"], h2, atol=1e-5)
        assert torch.allclose(result.features["fc3:input"], feats, atol=1e-5)
        assert torch.allclose(result.logits, logits, atol=1e-5)
    assert not torch.allclose(features(mlp, pruned_params, x), features(mlp, {}, x))
    assert all(torch.equal(before[k], v) for k, v in mlp.state_dict().items())  # module untouched


def test_classifier_and_prunable_layers_of_the_cnn():
    spec = get_sample_model("digits_cnn")
    model, (x, _) = spec.load(), spec.data("test")
    assert classifier_layer(model, x) == "fc2"
    assert prunable_layers(model, x) == ["conv1", "conv2", "fc1", "fc2"]
    feats = features(model, {}, x[:10])
    expected = torch.relu(model.fc1(torch.max_pool2d(torch.relu(model.conv2(torch.relu(model.conv1(x[:10])))), 2).flatten(1)))
    assert torch.allclose(feats, expected.detach(), atol=1e-5)
    conv = features(model, {}, x[:10], "conv1")
    assert conv.shape == (10, 16 * 8 * 8)


def test_vit_default_is_the_pre_logits_cls_token():
    spec = get_sample_model("shapes_vit")
    model, (x, _) = spec.build().eval(), spec.data("test")  # architecture only: random init suffices
    assert default_layer(model, x) == "head:input"
    with torch.no_grad():
        expected = model.forward_head(model.forward_features(x[:16]), pre_logits=True)
    assert torch.allclose(features(model, {}, x[:16], batch_size=5), expected, atol=1e-5)


def test_classifier_weight_prefers_swapped_in_params(mlp, pruned_params):
    assert torch.equal(classifier_weight(mlp, pruned_params, "fc3:input"), pruned_params["fc3.weight"])
    assert torch.equal(classifier_weight(mlp, {}, "fc3"), mlp.fc3.weight.detach())


def test_bad_input_lists_known_layers_and_bounds_memory(mlp, digits):
    x, _ = digits
    assert known_layers(mlp) == ["fc1", "fc2", "fc3"]
    for bad in ("fc4", "fc4:input", ":input", ""):
        with pytest.raises(ValueError, match="known modules: fc1, fc2, fc3"):
            features(mlp, {}, x, bad)
    with pytest.raises(ValueError, match="over max_bytes"):
        capture(mlp, {}, x, ["fc1", "fc2"], max_bytes=4 * len(x) * 350)  # needs 4 * n * 400 bytes
    assert capture(mlp, {}, x, ["fc1", "fc2"], max_bytes=4 * len(x) * 400).features["fc1"].shape == (len(x), 300)
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        features(mlp, {}, x, batch_size=0)
