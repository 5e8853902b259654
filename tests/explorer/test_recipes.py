"""Recipes: exact round trips of the whole setting, strict parsing, weight hashes and differences."""

from __future__ import annotations

import json

import pytest
import torch

from prunescope.explorer.core.setting import Setting, TokenSetting, WeightSetting, freeze_options
from prunescope.explorer.recipes import (
    RECIPE_VERSION,
    SampleRef,
    check_recipe,
    dump_recipe,
    parse_recipe,
    recipe_dict,
    weights_hash,
)

SETTINGS = [
    Setting(),
    Setting(WeightSetting("magnitude", 0.9)),
    Setting(WeightSetting(
        method="lamp", sparsity=0.1 + 0.2,  # 0.30000000000000004: must come back bit-exact
        overrides=(("fc2.weight", 1 / 3), ("fc1.weight", 0.5)),  # order kept
        options=freeze_options({"skip_first_last": True, "n": 2, "m": 4, "norm": "l2", "layers": ("a", "b"),
                                "temperature": 1e-20, "none": None}),
        seed=7,
    )),
    Setting(WeightSetting("random", 0.5, seed=3),
            TokenSetting("cls_attention", keep=(1.0, 0.7, 0.49999999999999994), options=freeze_options({"fuse": False}), seed=11)),
]


@pytest.mark.parametrize("setting", SETTINGS)
@pytest.mark.parametrize("fmt", ["json", "yaml"])
def test_round_trip_is_exact(setting, fmt):
    text = dump_recipe(setting, "digits_mlp", "ab" * 32, SampleRef("digits_mlp", "early"), format=fmt)
    recipe = parse_recipe(text)
    assert recipe.setting == setting
    assert hash(recipe.setting) == hash(setting)  # hashable again: lists came back as tuples
    assert recipe.setting.weights.overrides == setting.weights.overrides  # same order
    for a, b in zip(recipe.setting.weights.overrides, setting.weights.overrides):
        assert a[1].hex() == float(b[1]).hex()
    assert (recipe.model_name, recipe.weights_hash, recipe.sample) == ("digits_mlp", "ab" * 32, SampleRef("digits_mlp", "early"))
    assert recipe.version == RECIPE_VERSION


def test_recipe_is_readable_json_and_file_paths_work(tmp_path):
    setting = SETTINGS[2]
    text = dump_recipe(setting, "digits_mlp", "0" * 64)
    doc = json.loads(text)
    assert doc["weights"]["overrides"] == {"fc2.weight": 1 / 3, "fc1.weight": 0.5}
    assert doc["weights"]["options"]["layers"] == ["a", "b"]
    assert doc["model"] == {"name": "digits_mlp", "sample": None, "weights_sha256": "0" * 64}
    path = tmp_path / "r.json"
    path.write_text(text)
    assert parse_recipe(path).setting == setting
    assert parse_recipe(str(path)).setting == setting
    yaml_path = tmp_path / "r.yaml"
    yaml_path.write_text(dump_recipe(setting, "digits_mlp", "0" * 64, format="yaml"))
    assert parse_recipe(yaml_path).setting == setting


def _doc(**changes):
    doc = recipe_dict(SETTINGS[3], "m", "h" * 64)
    for path, value in changes.items():
        keys = path.split("__")
        target = doc
        for k in keys[:-1]:
            target = target[k]
        if value is KeyError:
            del target[keys[-1]]
        else:
            target[keys[-1]] = value
    return json.dumps(doc)


@pytest.mark.parametrize("changes, message", [
    ({"version": 2}, "version 2 is not supported; this Prunescope reads version 1"),
    ({"format": "other"}, "format must be 'prunescope-recipe'"),
    ({"weights__method": KeyError}, "missing ['method']"),
    ({"weights__colour": "red"}, "unknown ['colour']"),
    ({"weights__sparsity": "0.9"}, "weights.sparsity must be a number, got str"),
    ({"weights__sparsity": True}, "weights.sparsity must be a number, got bool"),
    ({"weights__seed": 1.5}, "weights.seed must be an int, got float 1.5"),
    ({"weights__overrides": [["fc1.weight", 0.5]]}, "weights.overrides must be a mapping"),
    ({"tokens__keep": 0.5}, "tokens.keep must be a list"),
    ({"tokens__options": {"x": {"a": 1}}}, "tokens.options['x'] must be None, bool, number, str or a list"),
    ({"model": KeyError}, "missing ['model']"),
    ({"model__sample": {"name": "digits_mlp"}}, "model.sample: missing ['checkpoint']"),
])
def test_bad_recipes_say_what_is_wrong(changes, message):
    with pytest.raises(ValueError) as err:
        parse_recipe(_doc(**changes))
    assert message in str(err.value)


def test_unparseable_and_missing_inputs():
    with pytest.raises(ValueError, match="not valid JSON"):
        parse_recipe('{"format": ')
    with pytest.raises(ValueError, match="no recipe file"):
        parse_recipe("does/not/exist.json")
    with pytest.raises(ValueError, match="must be a mapping"):
        parse_recipe("- a\n- b\n")  # YAML, but a list


def test_unwritable_values_are_refused():
    bad = Setting(WeightSetting("magnitude", 0.5, options=(("f", object()),)))
    with pytest.raises(ValueError, match=r"weights.options\['f'\] is a object"):
        dump_recipe(bad, "m", "h")
    with pytest.raises(ValueError, match="finite"):
        dump_recipe(Setting(WeightSetting("magnitude", float("nan"))), "m", "h")


def test_weights_hash_tracks_values_names_shapes_and_dtypes():
    torch.manual_seed(0)
    state = {"fc1.weight": torch.randn(4, 3), "fc2.weight": torch.randn(2, 4)}
    h = weights_hash(state)
    assert len(h) == 64 and h == weights_hash(dict(reversed(list(state.items()))))  # order-free
    assert h == weights_hash({k: v.clone() for k, v in state.items()})
    bumped = {**state, "fc1.weight": state["fc1.weight"].clone()}
    bumped["fc1.weight"][0, 0] = torch.nextafter(bumped["fc1.weight"][0, 0], torch.tensor(10.0))
    assert weights_hash(bumped) != h
    assert weights_hash({**state, "fc1.weight": state["fc1.weight"].reshape(3, 4)}) != h
    assert weights_hash({**state, "fc1.weight": state["fc1.weight"].double()}) != h
    assert weights_hash({"x.weight": state["fc1.weight"], "fc2.weight": state["fc2.weight"]}) != h
    assert weights_hash({"b": torch.zeros(2, dtype=torch.bfloat16)})  # dtypes numpy lacks work too


def test_check_recipe_lists_differences():
    state = {"fc1.weight": torch.ones(2, 2)}
    h = weights_hash(state)
    recipe = parse_recipe(dump_recipe(Setting(WeightSetting("magnitude", 0.5, overrides=(("fc9.weight", 0.1),))), "digits_mlp", h))
    assert check_recipe(recipe, "digits_mlp", h) == []
    other = weights_hash({"fc1.weight": torch.zeros(2, 2)})
    diffs = check_recipe(recipe, "digits_cnn", other, weight_names=["fc1.weight"])
    assert len(diffs) == 3
    assert "made for model 'digits_mlp', this is 'digits_cnn'" in diffs[0]
    assert h[:12] in diffs[1] and other[:12] in diffs[1]
    assert "fc9.weight" in diffs[2]


def test_recipe_round_trip_through_the_explorer():
    """Save a setting from one explorer, load it in a fresh one: same setting, same metrics."""
    from prunescope.explorer import Explorer
    from prunescope.sample_models import get_sample_model

    ex = Explorer.from_sample("digits_mlp")
    fresh = Explorer.from_sample("digits_mlp")
    own_hash = weights_hash(ex.dense_weights)
    for change in (lambda e: e.prune("lamp", sparsity=0.8).set_layer_sparsity("fc1.weight", 0.5),
                   lambda e: e.prune("nm", n=2, m=4),
                   lambda e: e.prune("random", sparsity=0.6, seed=5)):
        change(ex)
        recipe = parse_recipe(dump_recipe(ex.setting, ex.name, own_hash, SampleRef("digits_mlp", "trained")))
        assert check_recipe(recipe, fresh.name, weights_hash(fresh.dense_weights), fresh.weights) == []
        fresh.set_setting(recipe.setting)
        assert fresh.setting == ex.setting
        a, b = ex.evaluate(), fresh.evaluate()
        assert (a.accuracy, a.loss, a.params_nonzero) == (b.accuracy, b.loss, b.params_nonzero)
        assert all(torch.equal(ex.masks[k], fresh.masks[k]) for k in ex.masks)
    early = get_sample_model("digits_mlp").state_dict("early")
    diffs = check_recipe(recipe, "digits_mlp", weights_hash({k: early[k] for k in fresh.weights}))
    assert len(diffs) == 1 and "other weights" in diffs[0]


def test_recipe_text_from_a_browser_never_reads_files(tmp_path):
    from prunescope.explorer.recipes import MAX_RECIPE_CHARS, parse_recipe_text

    secret = tmp_path / "secret.json"
    secret.write_text(dump_recipe(Setting(), "digits_mlp", "s3cr3t" * 10))
    with pytest.raises(ValueError) as err:
        parse_recipe_text(str(secret))  # a path given as text is just (invalid) text here
    assert "s3cr3t" not in str(err.value) and "not a mapping" not in str(err.value)
    assert parse_recipe(str(secret)).weights_hash == "s3cr3t" * 10  # parse_recipe (Python API) reads paths
    text = dump_recipe(SETTINGS[2], "m", "h" * 64)
    assert parse_recipe_text(text.encode()).setting == SETTINGS[2]
    with pytest.raises(ValueError, match="not UTF-8"):
        parse_recipe_text(b"\xff\xfe{")
    with pytest.raises(ValueError, match="YAML aliases"):
        parse_recipe_text("a: &x [1, 2]\nb: *x\n")
    with pytest.raises(ValueError, match=f"at most {MAX_RECIPE_CHARS}"):
        parse_recipe_text("{" + " " * MAX_RECIPE_CHARS + "}")
    with pytest.raises(ValueError, match="nested too deeply"):
        parse_recipe_text("[" * 100_000)  # YAML: PyYAML's Python parser is quadratic in nesting
    with pytest.raises(ValueError, match="nested too deeply"):
        parse_recipe_text("{" * 100_000)
    with pytest.raises(ValueError, match="nested too deeply"):
        parse_recipe_text("".join(" " * i + "a:\n" for i in range(0, 400, 2)))
