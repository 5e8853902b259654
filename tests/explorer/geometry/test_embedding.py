"""Embeddings: dense points land on their fitted positions, the disk cache is keyed by content
(another process hits it, a changed weight misses, a corrupt file is refitted), bad input."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from prunescope.explorer.core.forward import masked_params
from prunescope.explorer.geometry import embedding_key, features, fit_embedding, place_neighbors, warmup_umap

#: Small and quick fits: a subset of the test split, few epochs.
SAMPLES, EPOCHS = 200, 30
FIT = {"n_neighbors": 10, "n_epochs": EPOCHS, "seed": 0}


@pytest.fixture(scope="module")
def dense_feats(mlp, digits):
    return features(mlp, {}, digits[0][:SAMPLES])


@pytest.fixture(scope="module")
def fitted(dense_feats, tmp_path_factory):
    """One UMAP fit (keeping the reducer) in its own cache directory."""
    directory = tmp_path_factory.mktemp("umap-cache")
    return fit_embedding(dense_feats, directory=directory, keep_reducer=True, **FIT), directory


def test_dense_features_land_on_their_positions(fitted, dense_feats, mlp, digits, random_masks):
    emb, _ = fitted
    assert emb.positions.shape == (SAMPLES, 2) and np.isfinite(emb.positions).all()
    assert np.array_equal(emb.place(dense_feats), emb.positions)
    # sparsity 0: every mask keeps everything, so no point moves
    dense = {n: p.detach() for n, p in mlp.named_parameters()}
    keep_all = masked_params(dense, {n: torch.ones_like(m) for n, m in random_masks.items()})
    assert np.array_equal(emb.place(features(mlp, keep_all, digits[0][:SAMPLES])), emb.positions)
    # umap's own transform lands on the fitted positions too, within a small tolerance
    spread = emb.positions.std()
    assert np.abs(emb.place(dense_feats, placement="transform") - emb.positions).max() < 1e-3 * spread


def test_neighbour_placement_equals_independent_idw(fitted, mlp, digits, pruned_params):
    emb, _ = fitted
    moved = features(mlp, pruned_params, digits[0][:SAMPLES]).numpy().astype(np.float64)
    ref = emb.reference.numpy().astype(np.float64)
    for k in (1, 4):
        placed = emb.place(torch.from_numpy(moved).float(), k=k)
        for i in range(0, SAMPLES, 17):
            dist = np.sqrt(((ref - moved[i]) ** 2).sum(1))
            nearest = np.argsort(dist)[:k]
            w = 1.0 / dist[nearest]
            expected = (w[:, None] * emb.positions[nearest]).sum(0) / w.sum()
            np.testing.assert_allclose(placed[i], expected, rtol=1e-4, atol=1e-4)
    assert not np.allclose(emb.place(torch.from_numpy(moved).float()), emb.positions)


def test_pca_is_exact_projection(dense_feats, mlp, digits, pruned_params):
    emb = fit_embedding(dense_feats, "pca")
    x = dense_feats.double().numpy()
    xc = x - x.mean(0)
    _, _, vt = np.linalg.svd(xc, full_matrices=False)
    # the same principal plane as numpy's SVD (signs may differ per axis)
    np.testing.assert_allclose(np.abs(emb.positions), np.abs(xc @ vt[:2].T), rtol=1e-3, atol=1e-3)
    assert np.allclose(emb.place(dense_feats), emb.positions)
    moved = features(mlp, pruned_params, digits[0][:SAMPLES])
    np.testing.assert_allclose(emb.place(moved), (moved.double().numpy() - x.mean(0)) @ emb.pca_components.numpy(),
                               rtol=1e-4, atol=1e-4)


def test_cache_hit_in_another_process_and_keyed_by_weights(fitted, dense_feats, mlp, digits):
    emb, directory = fitted
    again = fit_embedding(dense_feats, directory=directory, **FIT)
    assert again.cache_hit and np.array_equal(again.positions, emb.positions)
    script = textwrap.dedent(f"""
        import json, sys
        from prunescope.explorer.geometry import features, fit_embedding
        from prunescope.sample_models import get_sample_model
        spec = get_sample_model("digits_mlp")
        feats = features(spec.load(), {{}}, spec.data("test")[0][:{SAMPLES}])
        emb = fit_embedding(feats, directory={str(directory)!r}, **{FIT!r})
        print(json.dumps({{"hit": emb.cache_hit, "key": emb.key, "umap_imported": "umap" in sys.modules,
                          "positions": emb.positions.tolist()}}))
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True)
    child = json.loads(out.stdout.strip().splitlines()[-1])
    assert child["hit"] and child["key"] == emb.key and not child["umap_imported"]
    assert np.array_equal(np.array(child["positions"], dtype=np.float32), emb.positions)
    # one changed weight: an active fc1 -> fc2 connection
    x = digits[0][:SAMPLES]
    j = int(torch.relu(mlp.fc1(x)).mean(0).argmax())
    k = int(torch.relu(mlp.fc2(torch.relu(mlp.fc1(x)))).mean(0).argmax())
    weight = mlp.fc2.weight.detach().clone()
    weight[k, j] += 0.05
    changed = features(mlp, {"fc2.weight": weight}, x)
    assert not torch.equal(changed, dense_feats)
    assert embedding_key(changed, "umap", emb.options) != emb.key
    assert embedding_key(dense_feats, "umap", {**emb.options, "n_neighbors": 11}) != emb.key
    refit = fit_embedding(changed, directory=directory, **FIT)
    assert not refit.cache_hit and refit.key != emb.key and refit.path.is_file()


@pytest.mark.parametrize("damage", ["garbage", "truncated", "wrong_shape"])
def test_corrupt_cache_file_is_refitted(fitted, dense_feats, tmp_path, damage):
    emb, _ = fitted
    first = fit_embedding(dense_feats, directory=tmp_path, **FIT)
    path = first.path
    if damage == "garbage":
        path.write_bytes(b"not an npz file")
    elif damage == "truncated":
        path.write_bytes(path.read_bytes()[:100])
    else:
        with open(path, "wb") as f:
            np.savez(f, positions=np.zeros((3, 2), np.float32), meta=np.array(json.dumps({"key": first.key})))
    refit = fit_embedding(dense_feats, directory=tmp_path, **FIT)
    assert not refit.cache_hit and "refitted" in refit.note
    assert np.array_equal(refit.positions, first.positions)  # deterministic for the seed
    assert fit_embedding(dense_feats, directory=tmp_path, **FIT).cache_hit  # the file was rewritten
    assert not list(tmp_path.rglob("*.tmp"))


def test_env_cache_dir_progress_and_no_global_rng(cache_env, dense_feats):
    calls: list[tuple[int, int]] = []
    torch_state, np_state = torch.get_rng_state(), np.random.get_state()
    emb = fit_embedding(dense_feats[:60], n_neighbors=5, n_epochs=EPOCHS, progress=lambda d, t: calls.append((d, t)))
    assert emb.path.parent.parent == cache_env and emb.path.is_file()
    assert calls[0] == (0, 3) and calls[-1] == (3, 3)
    assert torch.equal(torch.get_rng_state(), torch_state)
    assert np.array_equal(np.random.get_state()[1], np_state[1])


def test_cancel_before_the_fit(dense_feats, tmp_path):
    import threading

    from prunescope.explorer.core.jobs import Cancelled

    event = threading.Event()
    event.set()
    with pytest.raises(Cancelled):
        fit_embedding(dense_feats, directory=tmp_path, cancel=event, **FIT)
    assert not list(tmp_path.rglob("*.npz"))


def test_bad_input(dense_feats, tmp_path):
    with pytest.raises(ValueError, match="n_neighbors=15 needs 2 <= n_neighbors < samples, got 10 samples"):
        fit_embedding(dense_feats[:10], directory=tmp_path)
    with pytest.raises(ValueError, match="unknown embedding method 'tsne'"):
        fit_embedding(dense_feats, "tsne")
    emb = fit_embedding(dense_feats[:10], "pca")  # PCA works on few samples
    with pytest.raises(ValueError, match="features have 3 dims, the embedding was fitted on 100"):
        emb.place(torch.zeros(2, 3))
    with pytest.raises(ValueError, match="k must be in 1..10"):
        place_neighbors(dense_feats[:10], emb.positions, dense_feats[:2], k=11)
    cached = fit_embedding(dense_feats, directory=tmp_path, **FIT)
    with pytest.raises(ValueError, match="keep_reducer=True"):
        cached.place(dense_feats, placement="transform")


def test_warmup_returns_a_future():
    future = warmup_umap()
    seconds = future.result(timeout=300)
    assert isinstance(seconds, float) and seconds > 0 and "umap" in sys.modules
