"""Token figures: each table equals what the token engine computes for the setting (recomputed
here through the facade and the core forward), and the vector outputs keep their text."""

from __future__ import annotations

import math
import re
import shutil
import subprocess
import xml.etree.ElementTree as ET
from dataclasses import replace

import numpy as np
import pytest
import torch

from prunescope.explorer.core.setting import Setting
from prunescope.explorer.engine import Explorer
from prunescope.explorer.figures import figure_bytes, figure_data, render_data
from prunescope.explorer.tokens import KEPT, find_adapter, kept_count, make_token_setting
from prunescope.explorer.tokens.analysis import record_forward
from prunescope.explorer.tokens.figures import ACCURACY_LABEL, KEEP_LABEL, with_token_budget

IMAGE = 3


@pytest.fixture(scope="module")
def vit() -> Explorer:
    """The shapes ViT, magnitude-pruned at 30%, EViT keeping half the patches after block 0."""
    ex = Explorer.from_sample("shapes_vit").prune("magnitude", sparsity=0.3)
    return with_token_budget(ex, "cls_attention", 0.5)


@pytest.fixture(scope="module")
def adapter(vit):
    return find_adapter(vit.model, example=vit.eval_data[0][:1])


def _record(vit, adapter, inputs, attention=False):
    _, record = record_forward(vit.model, vit.params_for(vit.setting), adapter, vit.setting.tokens, inputs,
                               attention=attention)
    return record


def _grid(frame, block, column):
    part = frame[frame["block"] == block].sort_values(["patch_row", "patch_col"])
    return part[column].to_numpy().reshape(8, 8)


def test_token_map_is_the_recorded_status_of_the_image(vit, adapter):
    data = figure_data("token_map", vit, image=IMAGE)
    record = _record(vit, adapter, vit.eval_data[0][IMAGE:IMAGE + 1])
    assert sorted(data["block"].unique()) == [0, 1, 2, 3]
    for b in range(4):
        expected = record.status(b)[0].reshape(8, 8).numpy()
        np.testing.assert_array_equal(_grid(data, b, "status_code"), expected)
        # EViT keeps ceil(keep * 64) patches after the first block, all 64 at block 0
        assert (_grid(data, b, "status_code") == KEPT).sum() == (64 if b == 0 else kept_count(0.5, 64))
    assert kept_count(0.5, 64) == 32
    assert set(data["status"]) <= {"kept", "merged", "recycled", "dropped"}
    assert data.attrs["image_index"] == IMAGE and data.attrs["label"] == int(vit.eval_data[1][IMAGE])


def test_attention_map_is_the_cls_row_averaged_over_heads(vit, adapter):
    data = figure_data("attention_map", vit, image=IMAGE, blocks=[1, 3])
    assert sorted(data["block"].unique()) == [1, 3]
    record = _record(vit, adapter, vit.eval_data[0][IMAGE:IMAGE + 1], attention=True)
    for b in (1, 3):
        (attn, pos), = record.attention(b)
        cls_row = attn[0].double().mean(0)[0]  # CLS is token 0 in the timm layout
        expected = np.full(64, np.nan)
        real = (pos[0] >= 0).numpy()
        expected[pos[0].numpy()[real]] = cls_row.numpy()[real]
        np.testing.assert_allclose(_grid(data, b, "attention").ravel(), expected, rtol=1e-6, equal_nan=True)
        assert np.isnan(expected).sum() == 64 - 32  # the dropped patches have no attention
    with pytest.raises(ValueError, match=r"blocks must be integers in \[0, 3\]"):
        figure_data("attention_map", vit, blocks=[7])


def test_retention_map_is_the_kept_share_over_the_test_set(vit, adapter):
    data = figure_data("retention_map", vit)
    inputs = vit.eval_data[0]
    record = _record(vit, adapter, inputs)
    for b in range(4):
        expected = 100 * (record.status(b) == KEPT).double().mean(0).reshape(8, 8).numpy()
        np.testing.assert_allclose(_grid(data, b, "retention_pct"), expected, atol=1e-9)
    # each image keeps 32 of 64 patches after block 0: the map's mean is 50% there
    assert _grid(data, 2, "retention_pct").mean() == pytest.approx(50.0)
    assert data.attrs["images"] == len(inputs)


def test_token_accuracy_is_the_measured_accuracy_per_strategy(vit):
    calls = []
    data = figure_data("token_accuracy", vit, strategies=["cls_attention", "random"], keeps=[0.5],
                       progress=lambda d, t: calls.append((d, t)))
    assert calls[-1] == (2, 2)
    inputs, labels = vit.eval_data
    for row in data.itertuples():
        tokens = make_token_setting(row.strategy, row.keep_pct / 100, 4, start_block=1, seed=0)
        logits = vit.run(inputs, replace(vit.setting, tokens=tokens)).logits  # the facade's own forward
        assert row.accuracy_pct == pytest.approx(100 * float((logits.argmax(1) == labels).double().mean()), abs=1e-9)
        assert row.loss_nats == pytest.approx(float(torch.nn.functional.cross_entropy(logits, labels)), rel=1e-5)
    assert list(data["strategy"]) == ["cls_attention", "random"] and (data["keep_pct"] == 50).all()
    assert (data["flops_reduction"] > 1.0).all()  # half the patches in 3 of 4 blocks costs fewer FLOPs
    # EViT keeps the attended patches: on the shapes it beats a random half (the figure's point)
    assert data["accuracy_pct"].iloc[0] > data["accuracy_pct"].iloc[1]
    with pytest.raises(ValueError, match="allowed"):
        figure_data("token_accuracy", vit, strategies=["nope"], keeps=[0.5])


def test_models_without_blocks_or_budget_are_refused(vit):
    mlp = Explorer.from_sample("digits_mlp")
    with pytest.raises(ValueError, match="transformer blocks"):
        figure_data("token_map", mlp)
    dense = Explorer.from_sample("shapes_vit")
    dense.set_setting(Setting(weights=vit.setting.weights, tokens=None))
    for name in ("token_map", "retention_map"):
        with pytest.raises(ValueError, match="needs a token budget below 1"):
            figure_data(name, dense)


@pytest.mark.parametrize("name, options, words", [
    ("token_map", {"image": IMAGE}, ["Block 1", "dropped"]),
    ("attention_map", {"image": IMAGE}, ["Block 3", "CLS attention weight (mean of 4 heads)"]),
    ("token_accuracy", {"strategies": ["random"], "keeps": [0.5]}, [KEEP_LABEL, ACCURACY_LABEL, "Random"]),
])
def test_pdf_and_svg_keep_text(vit, name, options, words, tmp_path):
    data = figure_data(name, vit, **options)
    for width in ("single", "double"):
        svg = figure_bytes(render_data(name, data, width), "svg")
        texts = ["".join(t.itertext()) for t in ET.fromstring(svg).iter("{http://www.w3.org/2000/svg}text")]
        for word in words:
            assert word in texts, (name, width, word, texts)
        pdf = figure_bytes(render_data(name, data, width), "pdf")
        assert pdf.startswith(b"%PDF-") and b"/FontFile2" in pdf
        if shutil.which("pdftotext"):
            path = tmp_path / f"{name}_{width}.pdf"
            path.write_bytes(pdf)
            text = subprocess.run(["pdftotext", str(path), "-"], capture_output=True, text=True, check=True).stdout
            for word in words:
                assert word in " ".join(text.split()), (name, width, word)
        assert math.isfinite(render_data(name, data, width).get_figheight())


def test_gallery_entries_name_registered_figures_and_their_options():
    from pathlib import Path

    from prunescope.explorer.figures import get_figure
    from prunescope.explorer.figures.gallery import GALLERY, TOKEN_KEEP, TOKEN_RECIPE, TOKEN_STRATEGY
    from prunescope.explorer.recipes import parse_recipe

    for entry in GALLERY:
        spec = get_figure(entry.args[0])
        options = [a.split("=")[0] for i, a in enumerate(entry.args) if i and entry.args[i - 1] == "--option"]
        assert all(spec.option(name) is not None for name in options), (entry.stem, options)
    recipe = Path(__file__).resolve().parents[3] / "docs" / "figures" / TOKEN_RECIPE
    tokens = parse_recipe(recipe).setting.tokens
    assert tokens.strategy == TOKEN_STRATEGY and tokens.keep == (1.0, TOKEN_KEEP, TOKEN_KEEP, TOKEN_KEEP)
