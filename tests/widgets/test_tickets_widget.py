"""TicketsBox: the overlap matrix equals Jaccard indices computed here; using a ticket sets the
explorer's masks; bad run directories show the error and keep the shown run."""

from __future__ import annotations

import re
import shutil

import pytest
import torch

from prunescope.explorer import Explorer
from prunescope.explorer.lottery import overlap_matrix
from prunescope.explorer.lottery.figures import criterion_label, ticket_label
from prunescope.widgets.tickets_widget import TicketsBox


@pytest.fixture(scope="module")
def ex():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield Explorer.from_sample("digits_mlp")
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def run(ex, tmp_path_factory):
    """Two seeds, two rounds of 50%, one epoch, no controls."""
    root = tmp_path_factory.mktemp("tickets")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PRUNESCOPE_CACHE_DIR", str(root))
        return ex.find_ticket(rounds=2, prune_per_round=0.5, epochs=1, seeds=[0, 1], controls=False,
                              run_dir=root / "run")


def cells(box: TicketsBox) -> dict[tuple[str, str], tuple[float, float]]:
    found = re.findall(r'data-a="([^"]*)" data-b="([^"]*)" data-jaccard="([^"]*)" data-random="([^"]*)"',
                       box.matrix.value)
    return {(a, b): (float(j), float(r)) for a, b, j, r in found}


def test_matrix_equals_jaccard_of_the_masks(ex, run):
    ex.prune("magnitude", sparsity=0.3)
    box = TicketsBox(ex, str(run.path))
    assert box.error is None and box.level.value == 2
    shown = cells(box)
    sparsity = 0.75
    masks = {ticket_label(0, 2): run.masks(2, 0), ticket_label(1, 2): run.masks(2, 1),
             criterion_label("lamp"): ex.masks_for(ex.weight_setting("lamp", sparsity)), "current setting": ex.masks}
    for a in masks:
        for b in masks:
            inter = sum(int((masks[a][n] & masks[b][n]).sum()) for n in masks[a])
            union = sum(int((masks[a][n] | masks[b][n]).sum()) for n in masks[a])
            assert shown[(a, b)][0] == pytest.approx(inter / union, abs=1e-12)
    reference = overlap_matrix(masks)
    assert shown[(ticket_label(0, 2), ticket_label(1, 2))][0] == reference.loc[ticket_label(0, 2), ticket_label(1, 2)]
    assert re.search(r'data-closest="[a-z_]+"', box.note.value)
    box.level.value = 1  # the criteria follow the level's sparsity
    lamp = ex.masks_for(ex.weight_setting("lamp", 0.5))
    got = cells(box)[(ticket_label(0, 1), criterion_label("lamp"))][0]
    assert got == pytest.approx(overlap_matrix({"t": run.masks(1, 0), "l": lamp}).loc["t", "l"], abs=1e-12)


def test_use_this_ticket_sets_the_masks(ex, run):
    box = TicketsBox(ex, run)
    box.level.value = 1
    box.use_button.click()
    assert box.error is None and ex.setting.weights.method == "ticket"
    for name, mask in run.masks(1, 0).items():
        assert torch.equal(ex.masks[name].cpu(), mask)
    assert cells(box)[(ticket_label(0, 1), "current setting")][0] == 1.0
    ex.prune("magnitude", sparsity=0.5)


def test_bad_runs_show_the_error(ex, run, tmp_path):
    box = TicketsBox(ex, run)
    corrupt = tmp_path / "corrupt"
    shutil.copytree(run.path, corrupt)
    (corrupt / "seed_1" / "level_002.safetensors").write_bytes(b"not safetensors")
    for path, message in ((tmp_path, "no run.json"), (corrupt, "corrupt or truncated"), ("", "type the directory")):
        box.path.value = str(path)
        box.load_button.click()
        assert box.error is not None and message in box.error
        assert message.split()[0] in box.error_html.value
        assert box.run.path == run.path
