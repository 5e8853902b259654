"""The geometry facade over an Explorer: every value against an independent computation in the
test (plain torch on a copy of the model with the masks applied, numpy PCA and CKA)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from prunescope.explorer import Explorer
from prunescope.explorer.core.setting import DENSE, Setting
from prunescope.explorer.geometry import corrupt, facade
from prunescope.explorer.geometry.embedding import Embedding, fit_embedding
from prunescope.explorer.geometry.facade import (
    embedding_ready,
    explorer_cka,
    explorer_compare,
    explorer_embedding,
    explorer_features,
    explorer_fragile,
    explorer_geometry,
    layer_activations,
    method_settings,
)
from prunescope.sample_models import get_sample_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def ex() -> Explorer:
    return Explorer.from_sample("digits_mlp")


@pytest.fixture(scope="module")
def pruned(ex) -> Setting:
    return Setting(weights=ex.weight_setting("magnitude", 0.8))


def pruned_copy(ex: Explorer, setting: Setting) -> torch.nn.Module:
    """An independent pruned model: a deep copy with the masked weights loaded."""
    model = copy.deepcopy(ex.model).eval()
    masks = ex.masks_for(setting)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name in masks:
                param.mul_(masks[name].to(param.dtype))
    return model


def mlp_parts(model: torch.nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """fc1, fc2, fc3 outputs and the classifier's input of DigitsMLP, written out."""
    with torch.no_grad():
        h1 = model.fc1(x.flatten(1))
        h2 = model.fc2(torch.relu(h1))
        feats = torch.relu(h2)
        return {"fc1": h1, "fc2": h2, "fc3": model.fc3(feats), "fc3:input": feats}


def test_features_dense_and_pruned_equal_torch(ex, pruned):
    x, _ = ex.eval_data
    dense = mlp_parts(ex.model, x)
    sparse = mlp_parts(pruned_copy(ex, pruned), x)
    torch.testing.assert_close(explorer_features(ex, setting=DENSE), dense["fc3:input"])
    torch.testing.assert_close(explorer_features(ex, setting=pruned), sparse["fc3:input"])
    torch.testing.assert_close(explorer_features(ex, "fc1", pruned), sparse["fc1"])
    assert not torch.allclose(sparse["fc3:input"], dense["fc3:input"])


def test_results_are_memoised_under_geometry_keys(ex, pruned):
    first = explorer_features(ex, "fc2", pruned)
    assert explorer_features(ex, "fc2", pruned) is first
    assert explorer_geometry(ex, pruned) is explorer_geometry(ex, pruned)
    keys = [k for k in ex.cache._items if k[0] == "geometry"]
    assert any(k[1] == "run" and k[2] == pruned and k[3] == "fc2" for k in keys)


def test_unknown_layer_lists_the_known_ones(ex):
    with pytest.raises(ValueError, match=r"unknown layer 'nope'; known modules: fc1, fc2, fc3"):
        explorer_features(ex, "nope")
    with pytest.raises(ValueError, match="fc1, fc2, fc3"):
        explorer_embedding(ex, "fc9:input", "pca")


def test_pca_embedding_equals_numpy_and_nothing_moves_at_sparsity_zero(ex, pruned):
    x, _ = ex.eval_data
    dense = mlp_parts(ex.model, x)["fc3:input"].double().numpy()
    mean = dense.mean(0)
    _, _, vt = np.linalg.svd(dense - mean, full_matrices=False)
    emb = explorer_embedding(ex, method="pca", setting=pruned)
    sparse = mlp_parts(pruned_copy(ex, pruned), x)["fc3:input"].double().numpy()
    for axis in range(2):  # principal directions are defined up to sign
        sign = np.sign(np.dot(emb.dense[:, axis], (dense - mean) @ vt[axis]))
        np.testing.assert_allclose(emb.dense[:, axis], sign * (dense - mean) @ vt[axis], atol=1e-3)
        np.testing.assert_allclose(emb.pruned[:, axis], sign * (sparse - mean) @ vt[axis], atol=1e-3)
    assert emb.displacement.mean() > 0
    zero = Setting(weights=ex.weight_setting("lamp", 0.0))
    assert explorer_embedding(ex, method="pca", setting=zero).displacement.max() == 0.0


def _fake_umap(calls: list):
    """A stand-in for the (minute-long, JIT-compiling) UMAP fit: PCA positions labelled as UMAP,
    so the facade's neighbour placement and memo run on them."""
    def fit(features, method="umap", **kwargs):
        if method == "pca":
            return fit_embedding(features, "pca")
        calls.append(method)
        pca = fit_embedding(features, "pca")
        return Embedding("umap", pca.positions, pca.reference, "fake", False, {"fake": True})
    return fit


def test_umap_frame_is_fitted_once_and_dense_points_stay_put(ex, pruned, monkeypatch):
    calls: list = []
    monkeypatch.setattr(facade, "fit_embedding", _fake_umap(calls))
    assert not embedding_ready(ex, "fc2", "umap")
    zero = Setting(weights=ex.weight_setting("magnitude", 0.0))
    at_zero = explorer_embedding(ex, "fc2", "umap", zero)
    assert embedding_ready(ex, "fc2", "umap")
    np.testing.assert_array_equal(at_zero.pruned, at_zero.dense)  # identical features land on their own points
    moved = explorer_embedding(ex, "fc2", "umap", pruned)
    assert calls == ["umap"] and moved.displacement.mean() > 0
    assert explorer_embedding(ex, "fc2", "umap", pruned).pruned is moved.pruned


def independent_geometry(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, np.ndarray]:
    parts = mlp_parts(model, x)
    f, z = parts["fc3:input"].double(), parts["fc3"].double()
    w = model.fc3.weight.detach().double()[y]
    cos = (f * w).sum(1) / (f.norm(dim=1) * w.norm(dim=1))
    others = z.clone()
    others[torch.arange(len(y)), y] = -torch.inf
    return {"angle": torch.rad2deg(torch.arccos(cos.clamp(-1, 1))).numpy(), "norm": f.norm(dim=1).numpy(),
            "margin": (z[torch.arange(len(y)), y] - others.max(1).values).numpy(),
            "correct": (z.argmax(1) == y).numpy()}


def test_geometry_and_flips_equal_an_independent_computation(ex, pruned):
    x, y = ex.eval_data
    table = explorer_geometry(ex, pruned)
    for which, model in (("dense", ex.model), ("pruned", pruned_copy(ex, pruned))):
        ref = independent_geometry(model, x, y)
        for col in ("angle", "norm", "margin"):
            np.testing.assert_allclose(table[f"{which}_{col}"], ref[col], rtol=1e-5, atol=1e-4)
        np.testing.assert_array_equal(table[f"{which}_correct"], ref["correct"])
    d, p = table["dense_correct"].to_numpy(), table["pruned_correct"].to_numpy()
    assert (table["flip"] == "became_wrong").sum() == (d & ~p).sum() > 0
    assert (table["flip"] == "became_right").sum() == (~d & p).sum()
    assert float(p.mean()) == pytest.approx(ex.evaluate(setting=pruned).accuracy)


def test_corrupted_geometry_runs_on_the_seeded_corruption(ex, pruned):
    x, y = ex.eval_data
    noisy = corrupt(x, "blur", 2, seed=0, image_shape=(1, 8, 8))
    ref = independent_geometry(pruned_copy(ex, pruned), noisy, y)
    table = explorer_geometry(ex, pruned, "blur", 2)
    np.testing.assert_allclose(table["pruned_margin"], ref["margin"], rtol=1e-5, atol=1e-4)
    assert not np.allclose(table["pruned_margin"], explorer_geometry(ex, pruned)["pruned_margin"])
    with pytest.raises(ValueError, match="unknown corruption 'fog'; known: clean, gaussian_noise"):
        explorer_geometry(ex, pruned, "fog", 2)
    with pytest.raises(ValueError, match="severity of 'blur' must be an integer in 1..5, got 7"):
        explorer_geometry(ex, pruned, "blur", 7)


def numpy_cka(a: np.ndarray, b: np.ndarray) -> float:
    """Linear CKA from centred Gram matrices (Kornblith et al. 2019, eq. 4 with HSIC = tr(KHLH))."""
    n = len(a)
    h = np.eye(n) - 1.0 / n
    k, l_ = h @ (a @ a.T) @ h, h @ (b @ b.T) @ h
    return float((k * l_).sum() / np.sqrt((k * k).sum() * (l_ * l_).sum()))


def test_cka_by_layer_and_matrix_equal_numpy(ex, pruned):
    x, _ = ex.eval_data
    dense = {k: v.double().numpy() for k, v in mlp_parts(ex.model, x).items()}
    sparse = {k: v.double().numpy() for k, v in mlp_parts(pruned_copy(ex, pruned), x).items()}
    result = explorer_cka(ex, pruned)
    assert list(result.by_layer["layer"]) == ["fc1", "fc2", "fc3"]
    for row in result.by_layer.itertuples():
        assert row.cka == pytest.approx(numpy_cka(dense[row.layer], sparse[row.layer]), rel=1e-6)
    assert result.matrix.loc["fc1", "fc3"] == pytest.approx(numpy_cka(dense["fc1"], sparse["fc3"]), rel=1e-6)
    np.testing.assert_allclose(np.diag(result.matrix.to_numpy()), result.by_layer["cka"])
    assert explorer_cka(ex, DENSE, matrix=False).by_layer["cka"].to_numpy() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="known modules: fc1, fc2, fc3"):
        explorer_cka(ex, pruned, layers=["fc1", "conv9"])


def test_compare_settings_side_by_side(ex, pruned):
    settings, skipped = method_settings(ex, ["magnitude", "random"], 0.8)
    assert skipped == [] and settings["magnitude"] == pruned
    summary, per_sample = explorer_compare(ex, settings, corruptions=["gaussian_noise"], severities=[2])
    assert list(zip(summary["setting"], summary["corruption"], summary["severity"])) == [
        ("magnitude", "clean", 0), ("magnitude", "gaussian_noise", 2), ("random", "clean", 0),
        ("random", "gaussian_noise", 2)]
    x, y = ex.eval_data
    noisy = corrupt(x, "gaussian_noise", 2, seed=0, image_shape=(1, 8, 8))
    for label, setting in settings.items():
        clean = summary[(summary["setting"] == label) & (summary["corruption"] == "clean")]
        assert float(clean["accuracy"].iloc[0]) == pytest.approx(ex.evaluate(setting=setting).accuracy)
        ref = independent_geometry(pruned_copy(ex, setting), noisy, y)
        row = summary[(summary["setting"] == label) & (summary["corruption"] == "gaussian_noise")]
        assert float(row["accuracy"].iloc[0]) == pytest.approx(ref["correct"].mean())
        assert float(row["mean_margin"].iloc[0]) == pytest.approx(ref["margin"].mean(), rel=1e-5)
    assert len(per_sample) == 4 * len(y)
    with pytest.raises(ValueError, match="compare 1 to 4 settings"):
        explorer_compare(ex, {str(i): pruned for i in range(5)})


def test_fragile_samples_broken_first(ex, pruned):
    table = explorer_geometry(ex, pruned)
    broken = int((table["flip"] == "became_wrong").sum())
    top = explorer_fragile(ex, pruned, k=8)
    assert len(top) == 8 and (top["flip"] == "became_wrong").sum() == min(8, broken)
    expected = table[table["flip"] == "became_wrong"].sort_values(["margin_drop", "sample"],
                                                                 ascending=[False, True])["sample"].head(8)
    assert list(top["sample"]) == list(expected)


def test_token_budget_applies_with_the_weights():
    """shapes_vit on 48 images: a token budget changes features and logits like ex.logits does;
    CKA averages token sequences over tokens."""
    spec = get_sample_model("shapes_vit")
    model = spec.load() if spec.checkpoint_path("trained").is_file() else spec.build().eval()
    x, y = spec.data("test")
    vit = Explorer(model, data=(x[:48], y[:48]), weights=list(spec.prunable_weights), name="shapes_vit")
    vit.sample = spec
    vit.prune("magnitude", sparsity=0.3).set_token_budget(0.5, strategy="cls_attention")
    both = vit.setting
    weights_only = Setting(weights=both.weights)
    assert not torch.allclose(explorer_features(vit, setting=both), explorer_features(vit, setting=weights_only))
    logits = facade._run(vit, both, facade.feature_layer(vit))[1]
    torch.testing.assert_close(logits, vit.logits(both).float().cpu())
    acts = layer_activations(vit, both)
    qkv = []
    handle = model.blocks[0].attn.qkv.register_forward_hook(lambda m, a, out: qkv.append(out.detach()))
    try:
        vit.run(setting=DENSE)
    finally:
        handle.remove()
    torch.testing.assert_close(layer_activations(vit, DENSE)["blocks.0.attn.qkv"], torch.cat(qkv).mean(1))
    assert acts["blocks.3.mlp.fc1"].shape == (48, model.blocks[3].mlp.fc1.out_features)
    assert explorer_cka(vit, both, matrix=False).by_layer["cka"].between(-1e-9, 1 + 1e-9).all()


def test_other_threads_forwards_are_not_captured(ex, monkeypatch):
    """Code elsewhere may run the shared module without the forward lock (a FLOP count on one
    sample): while the facade's hooks are on it, such a call must not add rows."""
    import threading

    real = facade.forward

    def forward_with_a_stranger(model, params, inputs, **kwargs):
        stranger = threading.Thread(target=lambda: model(inputs[:1]))
        stranger.start()
        stranger.join()
        return real(model, params, inputs, **kwargs)

    monkeypatch.setattr(facade, "forward", forward_with_a_stranger)
    setting = Setting(weights=ex.weight_setting("magnitude", 0.33))
    assert explorer_features(ex, setting=setting).shape == (539, 100)
    assert all(len(v) == 539 for v in layer_activations(ex, setting).values())
