"""Each figure's table equals what the engine computes for the setting, and an independent reference."""

from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import pytest
import torch

from prunescope.explorer.figures import FIGURES, Option, figure_data, get_figure, list_figures, register_figure, render_data

METHODS = ["magnitude", "random"]
SPARSITIES = [0.0, 0.5, 0.9]


def test_builtin_figures_are_registered():
    assert {"sensitivity", "layer_sensitivity", "allocation", "mask", "speed"} <= set(list_figures())


def test_sensitivity_equals_the_engine_sweep(mlp):
    data = figure_data("sensitivity", mlp, methods=METHODS, sparsities=SPARSITIES)
    engine = mlp.sensitivity(methods=METHODS, sparsities=SPARSITIES, per_layer=False).by_method
    assert len(data) == len(METHODS) * len(SPARSITIES)
    assert list(data["method"]) == list(engine["method"])
    np.testing.assert_array_equal(data["target_sparsity_pct"], 100 * engine["sparsity"])
    np.testing.assert_array_equal(data["weight_sparsity_pct"], 100 * engine["weight_sparsity"])
    np.testing.assert_array_equal(data["accuracy_pct"], 100 * engine["accuracy"])
    np.testing.assert_array_equal(data["loss_nats"], engine["loss"])


def test_sensitivity_point_matches_a_forward_pass_written_here(mlp):
    """Layer-wise magnitude at 50%: keep each layer's larger half by |w|, run the module, count hits."""
    data = figure_data("sensitivity", mlp, methods=["magnitude"], sparsities=[0.5])
    model = copy.deepcopy(mlp.model).eval()
    with torch.no_grad():
        for name, weight in mlp.dense_weights.items():
            flat = weight.abs().flatten()
            keep = torch.zeros_like(flat, dtype=torch.bool)
            keep[flat.topk(len(flat) // 2).indices] = True
            model.get_parameter(name).copy_(weight * keep.view_as(weight))
        inputs, labels = mlp.eval_data
        accuracy = (model(inputs).argmax(1) == labels).double().mean().item()
    assert data["weight_sparsity_pct"].iloc[0] == pytest.approx(50.0)
    assert data["accuracy_pct"].iloc[0] == pytest.approx(100 * accuracy, abs=1e-9)


def test_layer_sensitivity_equals_the_engine_sweep(mlp):
    data = figure_data("layer_sensitivity", mlp, sparsities=SPARSITIES)
    engine = mlp.sensitivity(methods=[], sparsities=SPARSITIES, per_layer=True).by_layer
    assert list(data["layer"]) == list(engine["layer"]) and set(data["layer"]) == set(mlp.weights)
    np.testing.assert_array_equal(data["layer_sparsity_pct"], 100 * engine["sparsity"])
    np.testing.assert_array_equal(data["accuracy_pct"], 100 * engine["accuracy"])


def test_allocation_equals_cost_and_masks(mlp):
    data = figure_data("allocation", mlp)
    cost = mlp.cost().per_layer
    assert list(data["layer"]) == list(cost["layer"])
    np.testing.assert_array_equal(data["kept_weights"], cost["kept"])
    np.testing.assert_array_equal(data["sparsity_pct"], 100 * cost["sparsity"])
    np.testing.assert_array_equal(data["flops_effective"], cost["flops_effective"])
    masks = mlp.masks
    for row in data.itertuples():
        assert row.kept_weights == int(masks[row.layer].sum())
        assert row.params == masks[row.layer].numel()
        assert row.sparsity_pct == pytest.approx(100 * (1 - masks[row.layer].float().mean().item()))


def test_mask_of_a_linear_layer_is_the_mask(mlp):
    name = mlp.weights[1]
    data = figure_data("mask", mlp, layer=name)
    mask = mlp.masks[name]
    image = np.zeros(tuple(mask.shape), dtype=bool)
    image[data["row"], data["column"]] = data["kept"].astype(bool)
    assert len(data) == mask.numel()
    np.testing.assert_array_equal(image, mask.numpy())
    assert figure_data("mask", mlp)["layer"].iloc[0] == mlp.weights[0]  # default: the first weight


def test_mask_of_a_conv_layer_is_out_by_in_times_kernel(cnn):
    name = next(n for n in cnn.weights if cnn.masks[n].dim() == 4)
    mask = cnn.masks[name]
    out, inp, kh, kw = mask.shape
    data = figure_data("mask", cnn, layer=name)
    assert data["row"].max() + 1 == out and data["column"].max() + 1 == inp * kh * kw
    lookup = data.set_index(["row", "column"])["kept"]
    rng = np.random.default_rng(0)
    for o, i, y, x in zip(*(rng.integers(0, n, 50) for n in (out, inp, kh, kw))):
        assert lookup[(o, (i * kh + y) * kw + x)] == int(mask[o, i, y, x])


def test_mask_rejects_an_unknown_layer_naming_the_known(mlp):
    with pytest.raises(ValueError, match="fc1.weight"):
        figure_data("mask", mlp, layer="nope")


def test_speed_theoretical_speedup_is_the_flops_reduction(mlp):
    import numba

    threads = torch.get_num_threads(), numba.get_num_threads()
    data = figure_data("speed", mlp, quantity="speedup", repeats=1, batch_size=8, threads=1)
    assert (torch.get_num_threads(), numba.get_num_threads()) == threads  # restored
    cost = mlp.cost()
    theory = data[data["estimate"] == "theoretical"].set_index("layer")["speedup_x"]
    expected = {r.layer: r.flops_dense / r.flops_effective for r in cost.per_layer.itertuples()}
    expected["whole model"] = cost.flops_dense / cost.flops_effective
    assert list(theory.index) == [*mlp.weights, "whole model"]
    for layer, value in expected.items():
        assert theory[layer] == pytest.approx(value)
    measured = data[data["estimate"] == "measured"]["speedup_x"]
    assert len(measured) == len(expected) and (measured > 0).all()


def test_options_are_checked(mlp):
    with pytest.raises(ValueError, match="takes no option.*quantity"):
        figure_data("allocation", mlp, colour="red")
    with pytest.raises(ValueError, match="sparsity, kept"):
        figure_data("allocation", mlp, quantity="flops")
    with pytest.raises(ValueError, match=r"in \[0.0, 0.999\]"):
        figure_data("sensitivity", mlp, sparsities=[1.5])
    with pytest.raises(ValueError, match="known figures: .*sensitivity"):
        get_figure("nope")
    spec = get_figure("speed")
    assert spec.resolve({})["repeats"] == 20 and spec.option("batch_size").parse("16") == 16
    with pytest.raises(ValueError, match="integer"):
        spec.option("batch_size").parse("1.5")


def test_a_new_figure_registers_with_the_decorator(mlp):
    def draw(data, fig):
        fig.add_subplot().plot(data["x_pct"], data["y_pct"])

    @register_figure("test_line", "A test figure", draw=draw, options=(Option("slope", "float", 1.0, "Slope"),))
    def line_data(explorer, *, slope: float) -> pd.DataFrame:
        return pd.DataFrame({"x_pct": [0.0, 50.0], "y_pct": [0.0, 50.0 * slope]})

    try:
        assert "test_line" in list_figures()
        data = figure_data("test_line", mlp, slope=2.0)
        assert list(data["y_pct"]) == [0.0, 100.0]
        assert render_data("test_line", data).get_figwidth() == pytest.approx(3.25)
    finally:
        FIGURES.pop("test_line", None)
