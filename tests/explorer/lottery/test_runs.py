"""Run directories: reload, resume after an exception or a SIGKILL, and refusing bad directories."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from prunescope.explorer.lottery.imp import find_ticket
from prunescope.explorer.lottery.runs import load_run

SETTINGS = {"rounds": 2, "prune_per_round": 0.25, "seeds": [0, 1], "rewind": "early"}


def _search(inputs, **kw):
    return find_ticket(**{**inputs, **SETTINGS, **kw})


def _assert_runs_equal(a, b):
    assert sorted(a.levels) == sorted(b.levels) and sorted(a.controls) == sorted(b.controls)
    for key, rec in a.levels.items():
        other = b.levels[key]
        assert all(torch.equal(rec.masks[n], other.masks[n]) for n in rec.masks), key
        assert all(torch.equal(rec.state[n], other.state[n]) for n in rec.state), key
        assert rec.metrics["accuracy"] == other.metrics["accuracy"] and rec.metrics["loss"] == other.metrics["loss"]
    for key, m in a.controls.items():
        assert m["accuracy"] == b.controls[key]["accuracy"] and m["loss"] == b.controls[key]["loss"], key
    for key, masks in a.control_masks.items():
        assert all(torch.equal(masks[n], b.control_masks[key][n]) for n in masks)


def _snapshot(path: Path) -> dict[str, str]:
    return {str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(path.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def reference(tmp_path_factory, mlp_inputs):
    """An uninterrupted run, in memory and on disk."""
    path = tmp_path_factory.mktemp("ref") / "run"
    run = _search({**mlp_inputs, "epochs": 1}, run_dir=str(path))
    return run, path


def test_reload_equals_the_run_in_memory(reference):
    run, path = reference
    loaded = load_run(path)
    _assert_runs_equal(run, loaded)
    assert loaded.complete and loaded.config["model"]["name"] == "digits_mlp"
    cfg = json.loads((path / "run.json").read_text())
    assert cfg["format_version"] == 1 and cfg["code_version"] and len(cfg["model"]["theta0_sha256"]) == 64
    assert (path / "seed_1" / "level_002.safetensors").is_file()
    assert torch.equal(loaded.masks(level=2, seed=1)["fc2.weight"], run.masks(-1, seed=1)["fc2.weight"])
    assert list(loaded.metrics().columns) == ["seed", "level", "kind", "sparsity", "accuracy", "loss"]


def test_resume_after_exception_equals_uninterrupted(reference, mlp_inputs, tmp_path):
    run, _ = reference
    path = tmp_path / "run"

    def stop_at(done, total):
        if done == 5:
            raise KeyboardInterrupt("stop")

    with pytest.raises(KeyboardInterrupt):
        _search({**mlp_inputs, "epochs": 1}, run_dir=str(path), progress=stop_at)
    partial = load_run(path)
    assert not partial.complete and partial.levels
    seen = []
    resumed = _search({**mlp_inputs, "epochs": 1}, run_dir=str(path), resume=True,
                      progress=lambda d, t: seen.append((d, t)))
    assert seen[0][0] > 1 and seen[-1][0] == seen[-1][1]  # only the missing trainings ran
    _assert_runs_equal(run, resumed)
    _assert_runs_equal(run, load_run(path))


@pytest.mark.slow  # a fresh interpreter importing torch: > 20 s on a loaded 2-core machine
def test_resume_after_sigkill_equals_uninterrupted(reference, tmp_path):
    run, _ = reference
    path = tmp_path / "run"
    script = textwrap.dedent(f"""
        import os, signal
        from prunescope.explorer.lottery.sample import find_sample_ticket
        def die(done, total):
            if done == 6:
                os.kill(os.getpid(), signal.SIGKILL)
        find_sample_ticket("digits_mlp", epochs=1, run_dir={str(path)!r}, progress=die, **{SETTINGS!r})
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=300)
    assert proc.returncode == -9, proc.stderr.decode()[-2000:]
    assert not load_run(path).complete
    from prunescope.explorer.lottery.sample import find_sample_ticket

    resumed = find_sample_ticket("digits_mlp", epochs=1, run_dir=str(path), resume=True, **SETTINGS)
    _assert_runs_equal(run, resumed)


def test_existing_run_is_never_overwritten(reference, mlp_inputs, tmp_path):
    _, path = reference
    before = _snapshot(path)
    with pytest.raises(ValueError, match="already holds a run"):
        _search({**mlp_inputs, "epochs": 1}, run_dir=str(path))
    with pytest.raises(ValueError, match="different settings"):
        _search({**mlp_inputs, "epochs": 2}, run_dir=str(path), resume=True)
    other = {k: v.clone() for k, v in mlp_inputs["theta0_state"].items()}
    other["fc1.weight"][0, 0] += 1.0
    with pytest.raises(ValueError, match="is of model"):
        _search({**mlp_inputs, "epochs": 1, "theta0_state": other}, run_dir=str(path), resume=True)
    with pytest.raises(ValueError, match="is of model 'digits_mlp'"):
        load_run(path).check_model(other, "digits_cnn")
    load_run(path).check_model(mlp_inputs["theta0_state"], "digits_mlp")
    assert _snapshot(path) == before


def test_not_a_run_and_corrupt_files(reference, mlp_inputs, tmp_path):
    _, path = reference
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "a.txt").write_text("mine")
    with pytest.raises(ValueError, match="not a ticket run directory"):
        load_run(tmp_path / "notes")
    with pytest.raises(ValueError, match="not empty and is not a run directory"):
        _search({**mlp_inputs, "epochs": 1}, run_dir=str(tmp_path / "notes"))
    assert [p.name for p in (tmp_path / "notes").iterdir()] == ["a.txt"]
    with pytest.raises(ValueError, match="is not a directory"):
        load_run(tmp_path / "missing")
    broken = tmp_path / "broken"
    broken.mkdir()
    for p in path.rglob("*"):
        if p.is_file():
            dest = broken / p.relative_to(path)
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(p.read_bytes())
    mask_file = broken / "seed_0" / "level_001.safetensors"
    mask_file.write_bytes(mask_file.read_bytes()[:100])  # truncated
    with pytest.raises(ValueError, match="level_001.safetensors is corrupt or truncated"):
        load_run(broken)
    before = _snapshot(broken)
    with pytest.raises(ValueError, match="corrupt or truncated"):
        _search({**mlp_inputs, "epochs": 1}, run_dir=str(broken), resume=True)
    assert _snapshot(broken) == before
    (broken / "run.json").write_text("{not json")
    with pytest.raises(ValueError, match="cannot read run file"):
        load_run(broken)
