"""The Tickets tab: a search job finds the engine's run, drawn overlaps equal Jaccard indices
computed here, using a ticket makes it the setting of every tab, bad runs show the app's alert."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from prunescope.explorer import Explorer
from prunescope.explorer.app import ExplorerApp
from prunescope.explorer.app.plots import mask_as_matrix
from prunescope.explorer.figures import figure_data
from prunescope.explorer.lottery import load_run, mask_overlap, mask_overlay
from prunescope.explorer.lottery.figures import criterion_label, ticket_label

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("prunescope-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PRUNESCOPE_CACHE_DIR", str(root))
        yield root


@pytest.fixture(scope="module")
def run(cache_dir, one_torch_thread):
    """Two seeds, two rounds of 50%, one epoch, with controls (about 2 s)."""
    ex = Explorer.from_sample("digits_mlp")
    return ex.find_ticket(rounds=2, prune_per_round=0.5, epochs=1, seeds=[0, 1], run_dir=cache_dir / "run")


@pytest.fixture(scope="module")
def app(cache_dir, close_app, one_torch_thread):
    app = ExplorerApp(model="digits_mlp")
    app.tabs.active = app.tabs._names.index("Tickets")
    assert app.wait_idle()
    yield app
    assert app.tickets.wait_idle(120)
    close_app(app)


def settle(app: ExplorerApp) -> None:
    assert app.tickets.wait_idle(120) and app.wait_idle(60)


def loaded(app: ExplorerApp, run) -> None:
    view = app.tickets
    if view.run is None or view.run.path != run.path:
        view.load(str(run.path))
        settle(app)
    assert view.run is not None and view.run.path == run.path, app.alert.object


def jaccard(a: dict, b: dict, layer: str | None = None) -> tuple[float, float]:
    """Jaccard and its random expectation, computed here from the masks."""
    names = [layer] if layer else list(a)
    inter = sum(int((a[n] & b[n]).sum()) for n in names)
    union = sum(int((a[n] | b[n]).sum()) for n in names)
    e_inter = e_union = 0.0
    for n in names:
        da, db = int(a[n].sum()) / a[n].numel(), int(b[n].sum()) / b[n].numel()
        e_inter += da * db * a[n].numel()
        e_union += (da + db - da * db) * a[n].numel()
    return inter / union, e_inter / e_union


def tree_digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_the_tab_is_registered(app):
    assert ("Tickets", app.tickets) in app.extra_tabs and "Tickets" in app.tabs._names
    assert app.tickets.explorer is app.explorer


def test_search_job_finds_the_engines_run(app, cache_dir):
    view, search = app.tickets, app.tickets.search
    search.rounds.value, search.prune_per_round.value, search.epochs.value = 1, 0.5, 1
    search.seeds.value, search.controls.value = "3", False
    search.run()
    settle(app)
    assert not app.alert.visible, app.alert.object
    found = view.run
    assert found is not None and found.complete and Path(found.path).parent == cache_dir / "tickets"
    assert "seed 3: 2 of 2 levels trained" in search.seed_lines.object
    assert not search.round_progress.visible and not search.job.running
    masks = found.masks(1, 3)
    kept = {n: int(m.sum()) for n, m in masks.items()}
    total = sum(m.numel() for m in masks.values())
    assert abs(sum(kept.values()) - round(0.5 * total)) <= 1
    # the same search through the engine gives the same masks; the directory reloads to them
    ref = Explorer.from_sample("digits_mlp").find_ticket(rounds=1, prune_per_round=0.5, epochs=1, seeds=[3],
                                                         controls=False, run_dir=cache_dir / "ref")
    again = load_run(found.path)
    for n in masks:
        assert torch.equal(masks[n], ref.masks(1, 3)[n]) and torch.equal(masks[n], again.masks(1, 3)[n])
    assert view.run_path.value == str(found.path)


def test_cancel_stops_the_search_and_keeps_the_last_run(app, run):
    loaded(app, run)
    view, search = app.tickets, app.tickets.search
    search.rounds.value, search.epochs.value, search.seeds.value, search.controls.value = 3, 500, "0", False
    search.run()
    assert search.job.running
    search.job.cancel_button.clicks += 1
    settle(app)
    assert search.job.status.object.startswith("Cancelled") and not search.round_progress.visible
    assert view.run.path == run.path and not app.alert.visible
    assert str(search.run_dir) in search.seed_lines.object  # the partial run can be loaded


def test_bad_seeds_show_the_alert(app):
    app.tickets.search.seeds.value = "0, x"
    app.tickets.search.run()
    assert app.alert.visible and "'0, x'" in app.alert.object and not app.tickets.search.job.running
    app.tickets.search.seeds.value = "0"


def test_overlap_heatmap_equals_jaccard_of_the_masks(app, run):
    loaded(app, run)
    view, ex = app.tickets, app.explorer
    labels = [ticket_label(0, 2), ticket_label(1, 2), ticket_label(0, 1), criterion_label("magnitude"),
              criterion_label("random"), "current setting"]
    view.masks.value = labels
    settle(app)
    data = view.heatmap.sources["cells"].data
    sparsity = 1 - sum(int(m.sum()) for m in run.masks(2, 0).values()) / sum(m.numel() for m in run.masks(2, 0).values())
    reference = {ticket_label(0, 2): run.masks(2, 0), ticket_label(1, 2): run.masks(2, 1),
                 ticket_label(0, 1): run.masks(1, 0),
                 criterion_label("magnitude"): ex.masks_for(ex.weight_setting("magnitude", sparsity)),
                 criterion_label("random"): ex.masks_for(ex.weight_setting("random", sparsity)),
                 "current setting": ex.masks}
    assert len(data["a"]) == len(labels) ** 2
    for a, b, j, r in zip(data["a"], data["b"], data["jaccard"], data["random_jaccard"]):
        want_j, want_r = jaccard(reference[a], reference[b])
        assert j == pytest.approx(want_j, abs=1e-12) and r == pytest.approx(want_r, rel=1e-9)
    # a mask with itself is 1; the random mask sits at its random expectation (within 0.02)
    diag = [j for a, b, j in zip(data["a"], data["b"], data["jaccard"]) if a == b]
    assert diag == [1.0] * len(labels)
    rand = [(j, r) for a, b, j, r in zip(data["a"], data["b"], data["jaccard"], data["random_jaccard"])
            if a == ticket_label(0, 2) and b == criterion_label("random")]
    assert abs(rand[0][0] - rand[0][1]) < 0.02
    # one layer only
    view.layer.value = "fc2.weight"
    settle(app)
    data = view.heatmap.sources["cells"].data
    for a, b, j in zip(data["a"], data["b"], data["jaccard"]):
        assert j == pytest.approx(jaccard(reference[a], reference[b], "fc2.weight")[0], abs=1e-12)
    # the Export menu hands out the table drawn, which is the CLI figure's
    name, csv = view.heatmap.export.payload("csv")
    cli = figure_data("mask_overlap_matrix", ex, run=str(run.path), level=2, masks=labels, layer="fc2.weight")
    assert name.endswith("mask_overlap_matrix.csv") and csv == cli.to_csv(index=False).encode()
    assert "Jackpots check" in view.jackpots_note.object
    view.layer.value = "overall"


def test_overlay_counts_equal_mask_overlay(app, run):
    loaded(app, run)
    view, ex = app.tickets, app.explorer
    view.overlay_a.value, view.overlay_b.value, view.overlay_layer.value = ticket_label(0, 2), ticket_label(1, 2), "fc1.weight"
    settle(app)
    a, b = run.masks(2, 0), run.masks(2, 1)
    codes = np.bincount(mask_overlay(a, b, "fc1.weight").reshape(-1), minlength=4)
    assert list(view.overlay.counts.values()) == codes.tolist()
    assert view.overlay.counts["both"] == int((a["fc1.weight"] & b["fc1.weight"]).sum())
    assert view.overlay.counts["A only"] == int((a["fc1.weight"] & ~b["fc1.weight"]).sum())
    image = view.overlay.sources["image"].data["image"][0]
    assert np.array_equal(image, a["fc1.weight"].numpy().astype(int) + 2 * b["fc1.weight"].numpy().astype(int))
    assert f'data-count="{codes[3]}"' in view.overlay.legend.object
    assert view.overlay.export.payload("csv")[1] == view.overlay.table.to_csv(index=False).encode()


def test_overlap_by_layer_equals_mask_overlap(app, run):
    loaded(app, run)
    view = app.tickets
    view.versus.value = "seeds"
    settle(app)
    sources = view.by_layer.sources
    assert set(sources) == {"fc1.weight", "fc2.weight", "fc3.weight", "overall"}
    for layer, source in sources.items():
        for level, j, r in zip(source.data["level"], source.data["jaccard"], source.data["random_jaccard"]):
            want_j, want_r = jaccard(run.masks(level, 0), run.masks(level, 1), None if layer == "overall" else layer)
            assert j == pytest.approx(want_j, abs=1e-12) and r == pytest.approx(want_r, rel=1e-9)
        assert list(source.data["level"]) == [1, 2]
    view.versus.value = "lamp"
    settle(app)
    ex = app.explorer
    lamp = ex.masks_for(ex.weight_setting("lamp", 0.75))
    overall = view.by_layer.sources["overall"].data
    assert overall["jaccard"][1] == pytest.approx(mask_overlap(run.masks(2, 0), lamp).iloc[-1]["jaccard"], abs=1e-12)


def test_accuracy_chart_equals_the_run_metrics(app, run):
    loaded(app, run)
    sources = app.tickets.accuracy.sources
    assert set(sources) == {"ticket", "reinit", "random"}
    metrics = run.metrics()
    for kind, source in sources.items():
        rows = metrics[metrics["kind"] == kind]
        for level, acc, lo, hi in zip(source.data["level"], source.data["accuracy_pct"],
                                      source.data["accuracy_min_pct"], source.data["accuracy_max_pct"]):
            values = rows[rows["level"] == level]["accuracy"]
            assert len(values) == 2
            assert acc == pytest.approx(100 * values.mean()) and lo == pytest.approx(100 * values.min())
            assert hi == pytest.approx(100 * values.max())


def test_use_this_ticket_sets_every_tab(app, run):
    loaded(app, run)
    view, ex = app.tickets, app.explorer
    view.seed.value = 1
    settle(app)
    assert sorted(view.use_buttons) == [0, 1, 2]
    view.use_buttons[2].clicks += 1
    settle(app)
    w = ex.setting.weights
    assert (w.method, w.option("level"), w.option("run_seed"), w.option("run")) == ("ticket", 2, 1, str(run.path))
    for name, mask in run.masks(2, 1).items():
        assert torch.equal(ex.masks[name].cpu(), mask)
    assert view.use_buttons[2].button_type == "primary" and view.use_buttons[1].button_type == "default"
    layer = app.mask_view.layer_select.value
    assert np.array_equal(app.mask_view.source.data["image"][0], mask_as_matrix(run.masks(2, 1)[layer]))
    assert ex.cost().sparsity == pytest.approx(0.75, abs=1e-4)
    # the current setting is that ticket: its overlap with the ticket is 1
    view.masks.value = [ticket_label(1, 2), "current setting"]
    settle(app)
    data = view.heatmap.sources["cells"].data
    assert data["jaccard"] == [1.0, 1.0, 1.0, 1.0]
    ex.prune("magnitude", sparsity=0.5)
    settle(app)
    assert view.use_buttons[2].button_type == "default"


def test_bad_runs_show_the_alert_and_nothing_changes(app, run, tmp_path):
    loaded(app, run)
    view = app.tickets
    before = tree_digest(Path(run.path))
    empty = tmp_path / "empty"
    empty.mkdir()
    corrupt = tmp_path / "corrupt"
    shutil.copytree(run.path, corrupt)
    mask_file = corrupt / "seed_0" / "level_001.safetensors"
    mask_file.write_bytes(mask_file.read_bytes()[:-40])
    other = tmp_path / "other"
    shutil.copytree(run.path, other)
    config = json.loads((other / "run.json").read_text())
    config["model"]["name"] = "shapes_cnn"
    (other / "run.json").write_text(json.dumps(config))
    for path, message in ((tmp_path / "missing", "not a directory"), (empty, "no run.json"),
                          (corrupt, "corrupt or truncated"), (other, "of model 'shapes_cnn'")):
        app.alert.visible = False
        view.load(str(path))
        settle(app)
        assert app.alert.visible and message in app.alert.object, (path, app.alert.object)
        assert view.run.path == run.path  # the loaded run stays
    app.alert.visible = False
    view.load("  ")
    assert app.alert.visible and "type the directory" in app.alert.object
    assert tree_digest(Path(run.path)) == before
    # a run damaged after loading: using its ticket is refused, the setting stays
    damaged = tmp_path / "damaged"
    shutil.copytree(run.path, damaged)
    view.load(str(damaged))
    settle(app)
    assert view.run.path == damaged
    (damaged / "seed_0" / "level_002.safetensors").write_bytes(b"\0" * 10)
    setting = app.explorer.setting
    assert not view.use_ticket(2, seed=0)
    assert app.alert.visible and "corrupt or truncated" in app.alert.object
    assert app.explorer.setting == setting
    # the session keeps working
    app.explorer.prune("lamp", sparsity=0.6)
    settle(app)
    assert app.explorer.evaluate().sparsity == pytest.approx(0.6, abs=1e-3)


def test_search_settings_and_progress_lines(app):
    from prunescope.explorer.app.tickets_view.search import SearchProgress, parse_seeds

    search = app.tickets.search
    search.seeds.value, search.variant.value, search.dask.value = "2 5", "colt", True
    kwargs = search.settings()
    assert kwargs["seeds"] == [2, 5] and kwargs["variant"] == "colt" and kwargs["client"] == "local"
    search.dask.value, search.variant.value = False, "imp"
    assert search.settings()["client"] is None
    with pytest.raises(ValueError, match="'-1'"):
        parse_seeds("-1")
    # COLT trains the full data and 2 splits per level: a level is done after its third training
    state = SearchProgress([2], rounds=2, jobs_per_level=3, controls=True)
    for kind in ("ticket", "ticket", "reinit", "ticket"):
        state.record({"seed": 2, "kind": kind})
    assert state.levels_done(2) == 1 and state.fraction_of_levels == pytest.approx(1 / 3)
    assert "seed 2: 1 of 3 levels trained (round 1 of 2), controls 1 of 4" in state.lines()
