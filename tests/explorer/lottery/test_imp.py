"""find_ticket: schedule, rewinding, zeros through training, controls, variants and stability."""

from __future__ import annotations

import pytest
import torch

from prunescope.explorer.lottery.imp import find_ticket
from prunescope.explorer.lottery.prune import intersect, prune_step
from prunescope.explorer.lottery.trainer import average_states, evaluate_state, train_masked
from prunescope.explorer.lottery.variants import data_splits, get_variant, interpolate, seed_mix, stability


def _search(inputs, **kw):
    args = {**inputs, "rounds": 2, "prune_per_round": 0.2, "seeds": [0]}
    args.update(kw)
    return find_ticket(**args)


@pytest.mark.parametrize("criterion", ["global_magnitude", "magnitude"])
def test_levels_follow_schedule_and_masks_nest(fast, criterion):
    p, rounds = 0.3, 3
    run = _search(fast, criterion=criterion, prune_per_round=p, rounds=rounds, controls=False)
    assert run.complete and run.completed_levels(0) == [0, 1, 2, 3]
    target = (1 - p) ** rounds
    last = run.masks(-1)
    if criterion == "global_magnitude":
        assert abs(sum(int(m.sum()) for m in last.values()) - 50200 * target) <= 1
    else:
        assert all(abs(int(m.sum()) - m.numel() * target) <= 1 for m in last.values())
    for lv in range(1, rounds + 1):
        prev, cur = run.masks(lv - 1), run.masks(lv)
        assert all(not (cur[n] & ~prev[n]).any() for n in cur)
        state = run.state(lv)
        assert all((state[n][~cur[n]] == 0).all() for n in cur)  # pruned weights zero after training
    df = run.metrics()
    assert list(df.query("kind == 'ticket'")["level"]) == [0, 1, 2, 3]


def test_level_mask_is_the_criterion_on_the_previous_weights(fast):
    run = _search(fast, rounds=1, controls=False)
    trained0 = run.state(0)
    ones = run.masks(0)
    expect = prune_step("global_magnitude", {n: trained0[n] for n in ones}, ones, 0.2, 0)
    assert all(torch.equal(expect[n], run.masks(1)[n]) for n in ones)


@pytest.mark.parametrize("rewind", ["init", "early", "none"])
def test_rewinding_restores_the_rewind_point_on_kept_weights(mlp_inputs, rewind):
    # zero epochs: each level's weights are exactly its rewound starting point
    run = _search({**mlp_inputs, "epochs": 0}, rewind=rewind, controls=False)
    point = {"init": mlp_inputs["theta0_state"], "early": mlp_inputs["theta_k_state"]}.get(rewind)
    for lv in (1, 2):
        masks, state = run.masks(lv), run.state(lv)
        ref = point if point is not None else run.state(lv - 1)
        for n, m in masks.items():
            assert torch.equal(state[n][m], ref[n][m]) and (state[n][~m] == 0).all()
        assert torch.equal(state["fc1.bias"], (point or mlp_inputs["theta0_state"])["fc1.bias"])
    assert not torch.equal(mlp_inputs["theta0_state"]["fc1.weight"], mlp_inputs["theta_k_state"]["fc1.weight"])


def test_controls_use_the_ticket_densities(fast):
    run = _search(fast, rounds=1)
    ticket, rmask = run.masks(1), run.control_masks[(0, 1)]
    assert all(int(rmask[n].sum()) == int(ticket[n].sum()) for n in ticket)
    assert not torch.equal(rmask["fc1.weight"], ticket["fc1.weight"])
    df = run.metrics().set_index(["kind", "level"])
    assert df.loc[("reinit", 1), "sparsity"] == pytest.approx(df.loc[("ticket", 1), "sparsity"])
    assert set(df.index.get_level_values("kind")) == {"ticket", "reinit", "random"}


def test_colt_mask_is_the_intersection_of_split_masks(fast):
    run = _search(fast, variant="colt", rounds=1, controls=False)
    var = get_variant("colt")
    ones = run.masks(0)
    splits = data_splits(fast["train_data"], 2, 0)
    per_split = []
    for i, job in enumerate(var.jobs(0, 0)[1:]):
        st = train_masked(fast["model"], fast["theta0_state"], ones, splits[job.data], epochs=1, lr=fast["lr"], seed=job.seed)
        per_split.append(prune_step("global_magnitude", {n: st[n] for n in ones}, ones, 0.2, seed_mix(0, 1, "prune", i)))
    expect = intersect(per_split)
    assert all(torch.equal(expect[n], run.masks(1)[n]) for n in ones)
    assert run.metrics().query("level == 1")["sparsity"].item() > 0.2
    assert sum(len(s[1]) for s in splits.values()) == len(fast["train_data"][1])


def test_swamp_level_weights_are_the_particle_average(fast):
    run = _search(fast, variant="swamp", particles=2, rounds=1, controls=False)
    masks = run.masks(1)
    jobs = get_variant("swamp", particles=2).jobs(0, 1)
    parts = [train_masked(fast["model"], fast["theta0_state"], masks, fast["train_data"], epochs=1, lr=fast["lr"], seed=j.seed)
             for j in jobs]
    avg = average_states(parts)
    assert all(torch.equal(avg[k], run.state(1)[k]) for k in avg)
    assert run.record(1).metrics["particles"] == 2


def test_stability_path_and_distance(fast):
    masks = {n: torch.ones(fast["theta0_state"][n].shape, dtype=torch.bool) for n in fast["prunable"]}
    res = stability(fast["model"], fast["theta_k_state"], masks, fast["train_data"], fast["eval_data"],
                    epochs=1, lr=fast["lr"], seeds=(3, 4), points=5)
    a = train_masked(fast["model"], fast["theta_k_state"], masks, fast["train_data"], epochs=1, lr=fast["lr"], seed=3)
    b = train_masked(fast["model"], fast["theta_k_state"], masks, fast["train_data"], epochs=1, lr=fast["lr"], seed=4)
    dist = torch.sqrt(sum(((a[n] - b[n]).double() ** 2).sum() for n in a)).item()
    assert res.l2_distance == pytest.approx(dist) and dist > 0
    assert list(res.path["alpha"]) == pytest.approx([0, 0.25, 0.5, 0.75, 1])
    assert res.path["error"].iloc[0] == pytest.approx(1 - evaluate_state(fast["model"], a, fast["eval_data"])[0])
    mid = 1 - evaluate_state(fast["model"], interpolate(a, b, 0.5), fast["eval_data"])[0]
    assert res.path["error"].iloc[2] == pytest.approx(mid)
    assert res.instability == pytest.approx(res.path["error"].max() - (res.path["error"].iloc[0] + res.path["error"].iloc[-1]) / 2)


def test_bad_search_inputs(fast):
    for p in (0, 1, -0.2, 1.5):
        with pytest.raises(ValueError, match=r"prune_per_round must be in \(0, 1\)"):
            _search(fast, prune_per_round=p)
    for r in (0, -1, 1.5):
        with pytest.raises(ValueError, match="rounds must be an integer >= 1"):
            _search(fast, rounds=r)
    with pytest.raises(ValueError, match="rewind must be one of"):
        _search(fast, rewind="late")
    with pytest.raises(ValueError, match="needs theta_k_state"):
        _search({**fast, "theta_k_state": None}, rewind="early")
    with pytest.raises(ValueError, match="unknown"):
        _search(fast, prunable=["fc9.weight"])
    with pytest.raises(ValueError, match="seeds must be distinct"):
        _search(fast, seeds=[1, 1])
    with pytest.raises(ValueError, match="unknown variant"):
        _search(fast, variant="lth2")


def test_tables_for_the_tickets_views(fast):
    from prunescope.explorer.lottery.overlap import mask_overlap
    from prunescope.explorer.lottery.tables import (
        accuracy_vs_sparsity, labelled_masks, seed_overlap_by_level, ticket_masks,
    )

    run = _search(fast, seeds=[0, 1], rounds=1)
    curve = accuracy_vs_sparsity(run).set_index(["kind", "level"])
    m = run.metrics()
    assert curve.loc[("ticket", 1), "accuracy_mean"] == pytest.approx(m.query("kind == 'ticket' and level == 1")["accuracy"].mean())
    assert curve.loc[("random", 1), "n"] == 2
    labels = labelled_masks(run)
    assert list(labels) == ["seed 0, level 0", "seed 0, level 1", "seed 1, level 0", "seed 1, level 1"]
    ov = seed_overlap_by_level(run).query("level == 1 and layer == 'overall'")
    assert ov["jaccard"].item() == pytest.approx(
        mask_overlap(run.masks(1, 0), run.masks(1, 1)).set_index("layer").loc["overall", "jaccard"])
    params = dict(fast["model"].named_parameters())
    assert torch.equal(ticket_masks(run, 1, 1, params)["fc2.weight"], run.masks(1, 1)["fc2.weight"])
    with pytest.raises(ValueError, match="does not fit this model"):
        ticket_masks(run, -1, 0, {"fc1.weight": torch.zeros(3, 3)})
    with pytest.raises(ValueError, match="not completed"):
        run.masks(level=5)


def test_cancel_stops_the_search(fast, tmp_path):
    import threading

    from prunescope.explorer.core.jobs import Cancelled
    from prunescope.explorer.lottery.runs import load_run

    stop = threading.Event()
    records = []

    def on_record(info):
        records.append(info)
        if info["done"] == 2:
            stop.set()

    with pytest.raises(Cancelled):
        _search(fast, rounds=3, run_dir=str(tmp_path / "r"), cancel=stop, on_record=on_record)
    assert [r["done"] for r in records] == [1, 2] and records[0]["total"] == 1 * (4 + 6)
    assert records[0] == {"seed": 0, "level": 0, "kind": "ticket", "rounds": 3, "done": 1, "total": 10}
    assert not load_run(tmp_path / "r").complete
