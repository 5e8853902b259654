"""The model registry for serving: samples, --model factories and entry-point plug-ins, unique names."""

from __future__ import annotations

import importlib
import textwrap
from pathlib import Path

import pytest
import torch

from prunescope.explorer import Explorer
from prunescope.explorer.models import (
    PLUGIN_GROUP,
    build_explorer,
    discover_plugins,
    model_entries,
    parse_spec,
    resolve_factory,
)
from prunescope.sample_models import list_sample_models

PLUGIN_DIR = Path(__file__).parent / "plugin_pkg"

FACTORIES = '''
import torch
from torch import nn
from prunescope.explorer import Explorer
from prunescope.sample_models import get_sample_model

def make_explorer():
    """The MLP sample as an Explorer."""
    return Explorer.from_sample("digits_mlp")

def make_pair():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 10)), get_sample_model("digits_mlp").data("test")

def make_wrong():
    return 42

def make_bad_pair():
    return nn.Linear(3, 2), get_sample_model("digits_mlp").data("test")

def broken():
    raise RuntimeError("no GPU here")

class Factories:
    @staticmethod
    def nested():
        return make_pair()

NOT_CALLABLE = 3
'''


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    name = f"user_models_{tmp_path.name.replace('-', '_')}"
    (tmp_path / f"{name}.py").write_text(FACTORIES)
    monkeypatch.syspath_prepend(str(tmp_path))
    return name


def test_parse_spec():
    assert parse_spec("a.b:make") == (None, "a.b", "make")
    assert parse_spec("mine=a.b:C.make") == ("mine", "a.b", "C.make")
    assert parse_spec("x=./models.py:build") == ("x", "./models.py", "build")
    for bad in ("a.b", "a.b:", ":make", "a.b:1x", "a:b:c", ""):
        with pytest.raises(ValueError, match="not of the form"):
            parse_spec(bad)


def test_factories_returning_explorers_and_pairs(user_module):
    entries = model_entries([f"{user_module}:make_explorer", f"pair={user_module}:make_pair",
                             f"{user_module}:Factories.nested"], plugins=False)
    assert list(entries) == list_sample_models() + [f"{user_module}:make_explorer", "pair", f"{user_module}:Factories.nested"]
    first = entries[f"{user_module}:make_explorer"]
    assert first.description == "The MLP sample as an Explorer." and first.source.startswith("spec ")
    ex = first.build()
    assert isinstance(ex, Explorer) and ex.name == "digits_mlp"
    pair = entries["pair"].build()
    assert isinstance(pair, Explorer) and pair.name == "pair" and [n.removesuffix(".weight") for n in pair.layers] == ["0", "2"]
    assert pair is not entries["pair"].build()  # a fresh explorer per call (per session)
    x, y = pair.eval_data
    with torch.no_grad():
        assert abs(pair.evaluate().accuracy - float((pair.model(x).argmax(1) == y).float().mean())) < 1e-9


def test_sample_entries_build_sample_explorers():
    entries = model_entries(plugins=False)
    assert list(entries) == list_sample_models()
    ex = entries["digits_cnn"].build()
    assert ex.name == "digits_cnn" and ex.sample.name == "digits_cnn" and entries["digits_cnn"].source == "sample"


def test_file_path_specs(tmp_path):
    path = tmp_path / "my_models.py"
    path.write_text(FACTORIES)
    factory = resolve_factory(f"{path}:make_pair")
    assert factory.__name__ == "make_pair" and resolve_factory(f"{path}:make_pair") is factory  # imported once
    with pytest.raises(ValueError, match="no file"):
        resolve_factory(f"{tmp_path}/missing.py:make")


@pytest.mark.parametrize("attr, message", [
    ("nope", "has no attribute 'nope'"),
    ("NOT_CALLABLE", "'NOT_CALLABLE' is a int, not a callable factory"),
])
def test_resolve_errors_name_the_spec(user_module, attr, message):
    with pytest.raises(ValueError) as err:
        resolve_factory(f"{user_module}:{attr}")
    assert message in str(err.value) and f"{user_module}:{attr}" in str(err.value)


def test_missing_module_and_failing_import(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match=r"module 'no_such_pkg_xyz.models' not found .* installed or on PYTHONPATH"):
        resolve_factory("no_such_pkg_xyz.models:make")
    (tmp_path / "raises_on_import.py").write_text("raise ImportError('needs cuda')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ValueError, match="importing 'raises_on_import' raised ImportError: needs cuda"):
        resolve_factory("raises_on_import:make")


@pytest.mark.parametrize("attr, message", [
    ("broken", "the factory of model 'm' (spec SPEC) raised RuntimeError: no GPU here"),
    ("make_wrong", "returned a int; it must return an Explorer or a (model, data) pair"),
    ("make_bad_pair", "the (model, data) pair of model 'm' (spec SPEC) was not accepted"),
])
def test_factory_failures_are_clear(user_module, attr, message):
    with pytest.raises(ValueError) as err:
        build_explorer(resolve_factory(f"{user_module}:{attr}"), "m", where="spec SPEC")
    assert message in str(err.value)


def test_duplicate_names_are_an_error_naming_both(user_module):
    with pytest.raises(ValueError) as err:
        model_entries([f"digits_mlp={user_module}:make_pair"], plugins=False)
    text = str(err.value)
    assert "two models are named 'digits_mlp': from sample and from spec digits_mlp=" in text and "NAME=" in text
    with pytest.raises(ValueError, match="two models are named 'x'"):
        model_entries([f"x={user_module}:make_pair", f"x={user_module}:make_explorer"], plugins=False)


def _fake_distribution(root: Path, dist: str, entry_points: str) -> None:
    """A ``*.dist-info`` folder on sys.path: what ``pip install`` leaves, found by importlib.metadata."""
    info = root / f"{dist.replace('-', '_')}-0.1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1.0\n")
    (info / "entry_points.txt").write_text(textwrap.dedent(entry_points))


def test_entry_point_plugins_are_discovered_and_built(tmp_path, monkeypatch):
    _fake_distribution(tmp_path, "prunescope-test-tmp-plugin", f"""
        [{PLUGIN_GROUP}]
        tiny_tmp = prunescope_tiny_plugin:make_explorer
        broken_tmp = prunescope_no_such_module_xyz:make
        """)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.syspath_prepend(str(PLUGIN_DIR))  # the real plug-in package's module
    importlib.invalidate_caches()
    plugins = discover_plugins()
    assert {"tiny_tmp", "broken_tmp"} <= set(plugins)
    entry = plugins["tiny_tmp"]
    assert entry.source == "plugin prunescope-test-tmp-plugin" and "prunescope_tiny_plugin:make_explorer" in entry.description
    entries = model_entries()
    assert list(entries)[: len(list_sample_models())] == list_sample_models() and "tiny_tmp" in entries
    ex = entries["tiny_tmp"].build()
    assert isinstance(ex, Explorer) and ex.name == "tiny_tmp" and [n.removesuffix(".weight") for n in ex.layers] == ["0", "2"]
    assert ex.evaluate().accuracy > 0.8  # the plug-in's model really is its trained MLP
    with pytest.raises(ValueError, match=r"plug-in 'broken_tmp' \(prunescope_no_such_module_xyz:make from "
                                         r"prunescope-test-tmp-plugin\) failed to load: ModuleNotFoundError"):
        entries["broken_tmp"].build()
    assert discover_plugins(group="prunescope.no_such_group") == {}


def test_plugin_discovery_does_not_import_the_plugin(tmp_path, monkeypatch):
    import sys

    _fake_distribution(tmp_path, "prunescope-test-lazy-plugin", f"""
        [{PLUGIN_GROUP}]
        lazy_tmp = prunescope_lazy_plugin_xyz:make
        """)
    (tmp_path / "prunescope_lazy_plugin_xyz.py").write_text("raise SystemExit('imported at discovery')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    assert "lazy_tmp" in discover_plugins()
    assert "prunescope_lazy_plugin_xyz" not in sys.modules
