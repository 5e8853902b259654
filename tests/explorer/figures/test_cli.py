"""The headless ``prunescope`` command: figures and data without a display, bad input -> exit 2."""

from __future__ import annotations

import os
import subprocess
import sys

import pandas as pd
import pytest

from prunescope.explorer.cli import main
from prunescope.explorer.engine import Explorer
from prunescope.explorer.figures import figure_data, list_figures


def _headless_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY", "MPLBACKEND")}
    env["BROWSER"] = "false"
    return env


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "prunescope.explorer.cli", *args], capture_output=True,
                          text=True, env=_headless_env(), timeout=300)


def _exit_code(capsys, *args: str) -> tuple[int, str]:
    with pytest.raises(SystemExit) as info:
        main(list(args))
    return info.value.code, capsys.readouterr().err


def test_sensitivity_csv_from_a_headless_process_equals_figure_data(tmp_path):
    out, csv = tmp_path / "sens.svg", tmp_path / "sens.csv"
    result = _cli("figure", "sensitivity", "--model", "digits_mlp", "--method", "magnitude", "lamp",
                  "--sparsity", "0", "0.5", "0.9", "--out", str(out), "--csv", str(csv), "--quiet")
    assert result.returncode == 0, result.stderr
    assert b"<text" in out.read_bytes()
    expected = figure_data("sensitivity", Explorer.from_sample("digits_mlp"),
                           methods=["magnitude", "lamp"], sparsities=[0.0, 0.5, 0.9])
    pd.testing.assert_frame_equal(pd.read_csv(csv), expected, check_exact=True)


def test_list_and_unknown_name_in_a_headless_process():
    listing = _cli("figure", "--list")
    assert listing.returncode == 0
    for name in list_figures():
        assert f"{name}:" in listing.stdout
    assert "quantity=sparsity|kept" in listing.stdout
    unknown = _cli("figure", "nope", "--out", "x.pdf")
    assert unknown.returncode == 2
    assert "unknown figure 'nope'" in unknown.stderr and "allocation" in unknown.stderr


def test_allocation_csv_equals_figure_data_for_the_same_setting(tmp_path, capsys):
    out, csv = tmp_path / "alloc.pdf", tmp_path / "alloc.csv"
    assert main(["figure", "allocation", "--model", "digits_mlp", "--method", "lamp", "--sparsity", "0.85",
                 "--width", "double", "--out", str(out), "--csv", str(csv)]) == 0
    expected = figure_data("allocation", Explorer.from_sample("digits_mlp").prune("lamp", sparsity=0.85))
    pd.testing.assert_frame_equal(pd.read_csv(csv), expected, check_exact=True)
    assert out.read_bytes().startswith(b"%PDF")


@pytest.mark.parametrize("args, message", [
    (("figure", "mask", "--option", "colour=red"), "takes no option(s) ['colour']"),
    (("figure", "mask", "--option", "layer"), "NAME=VALUE"),
    (("figure", "allocation", "--option", "quantity=flops"), "sparsity, kept"),
    (("figure", "sensitivity", "--option", "sparsities=0.5,2"), "sparsities"),
    (("figure", "mask", "--method", "lamp", "magnitude"), "give one --method"),
    (("figure", "layer_sensitivity", "--method", "lamp"), "does not depend on the pruning setting"),
    (("figure", "mask"), "--out PATH is required"),
    (("figure",), "give a figure NAME or --list"),
])
def test_bad_input_exits_2_with_a_clear_message(capsys, tmp_path, args, message):
    argv = [*args, "--out", str(tmp_path / "f.pdf")] if "required" not in message else list(args)
    code, err = _exit_code(capsys, *argv)
    assert code == 2 and message in err


def test_unwritable_outputs_exit_2(capsys, tmp_path):
    code, err = _exit_code(capsys, "figure", "allocation", "--out", str(tmp_path / "missing" / "f.pdf"))
    assert code == 2 and "does not exist" in err
    (tmp_path / "dir.pdf").mkdir()
    code, err = _exit_code(capsys, "figure", "allocation", "--out", str(tmp_path / "dir.pdf"))
    assert code == 2 and "is a directory" in err
    code, err = _exit_code(capsys, "figure", "allocation", "--out", str(tmp_path / "f.pdf"),
                           "--csv", str(tmp_path / "missing" / "d.csv"))
    assert code == 2 and "CSV file" in err
    code, err = _exit_code(capsys, "figure", "allocation", "--out", str(tmp_path / "f.jpeg"))
    assert code == 2 and ".pdf, .svg, .pgf, .png" in err
    assert [p.name for p in tmp_path.iterdir()] == ["dir.pdf"]  # the checks leave nothing behind


def test_unknown_model_and_bad_sparsity_exit_2(capsys, tmp_path):
    code, err = _exit_code(capsys, "figure", "allocation", "--model", "nope", "--out", str(tmp_path / "f.pdf"))
    assert code == 2 and "digits_mlp" in err
    code, err = _exit_code(capsys, "figure", "allocation", "--method", "lamp", "--sparsity", "1.5",
                           "--out", str(tmp_path / "f.pdf"))
    assert code == 2 and "[0, 1)" in err


def test_help_lists_figures_and_commands(capsys):
    with pytest.raises(SystemExit) as info:
        main(["figure", "--help"])
    out = capsys.readouterr().out
    assert info.value.code == 0
    assert all(f"{name}:" in out for name in list_figures()) and "batch_size=INT" in out
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "figure" in capsys.readouterr().out
    assert main([]) == 2


def test_recipe_sets_model_and_setting(tmp_path, capsys):
    recipes = pytest.importorskip("prunescope.explorer.recipes")
    ex = Explorer.from_sample("digits_cnn").prune("lamp", sparsity=0.9)
    recipe = tmp_path / "r.json"
    recipe.write_text(recipes.dump_recipe(ex.setting, "digits_cnn", recipes.weights_hash(ex.dense_weights),
                                          recipes.SampleRef("digits_cnn")))
    csv = tmp_path / "a.csv"
    assert main(["figure", "allocation", "--recipe", str(recipe), "--out", str(tmp_path / "a.png"),
                 "--csv", str(csv), "--dpi", "100"]) == 0
    pd.testing.assert_frame_equal(pd.read_csv(csv), figure_data("allocation", ex), check_exact=True)
    code, err = _exit_code(capsys, "figure", "allocation", "--recipe", str(tmp_path / "none.json"),
                           "--out", str(tmp_path / "b.pdf"))
    assert code == 2 and "does not exist" in err
