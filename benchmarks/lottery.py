"""Lottery tickets on digits_mlp: timing of IMP, Dask vs serial, and the LTH miniature.

    .venv/bin/python benchmarks/lottery.py timing            # 5 IMP rounds; 3 seeds serial vs LocalCluster
    .venv/bin/python benchmarks/lottery.py miniature [--out docs/figures]   # LTH + Jackpots tables, figure

``timing`` prints a markdown table of wall times and the Dask/serial ratio, with the load
average before and after (the machine is shared). ``miniature`` runs IMP with rewinding to
theta_0 over 3 seeds with both controls, prints accuracy against sparsity and the Jackpots
overlap table, and writes ``lth_miniature.png`` / ``.pdf``.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import pandas as pd
import torch

from prunescope.explorer.lottery.imp import find_ticket
from prunescope.explorer.lottery.overlap import mask_overlap
from prunescope.explorer.lottery.prune import prune_step
from prunescope.explorer.lottery.sample import sample_ticket_inputs
from prunescope.explorer.lottery.trainer import loss_gradients

#: Okabe-Ito colours, one per series everywhere.
COLOURS = {"ticket": "#0072B2", "reinit": "#D55E00", "random": "#009E73"}
LABELS = {"ticket": "ticket (rewound to $\\theta_0$)", "reinit": "same mask, random re-init", "random": "random mask, same densities"}


def _load() -> str:
    return "/".join(f"{v:.1f}" for v in os.getloadavg())


def _equal(a, b) -> bool:
    return all(
        all(torch.equal(rec.masks[n], b.levels[k].masks[n]) for n in rec.masks)
        and all(torch.equal(rec.state[n], b.levels[k].state[n]) for n in rec.state)
        for k, rec in a.levels.items()
    ) and all(m["accuracy"] == b.controls[k]["accuracy"] for k, m in a.controls.items())


def timing(epochs: int) -> None:
    inputs = sample_ticket_inputs("digits_mlp")
    base = {**inputs, "epochs": epochs, "rounds": 5, "prune_per_round": 0.2}
    rows = []
    for controls in (False, True):
        load0 = _load()
        t = time.perf_counter()
        find_ticket(**base, seeds=[0], controls=controls)
        rows.append((f"5 IMP rounds, 1 seed, controls {'on' if controls else 'off'}", "serial", time.perf_counter() - t, load0, _load(), ""))
    load0 = _load()
    t = time.perf_counter()
    serial = find_ticket(**base, seeds=[0, 1, 2])
    t_serial = time.perf_counter() - t
    rows.append(("5 rounds, 3 seeds, controls on", "serial", t_serial, load0, _load(), "1.00"))
    from prunescope.explorer.lottery.distributed import local_client

    load0 = _load()
    t = time.perf_counter()
    with local_client() as client:
        t_start = time.perf_counter() - t
        t2 = time.perf_counter()
        dask_run = find_ticket(**base, seeds=[0, 1, 2], client=client)
        t_warm = time.perf_counter() - t2
    t_cold = time.perf_counter() - t
    same = _equal(serial, dask_run)
    rows.append(("5 rounds, 3 seeds, controls on", "LocalCluster(2), incl. start-up", t_cold, load0, _load(), f"{t_cold / t_serial:.2f}"))
    rows.append(("", f"LocalCluster(2), started ({t_start:.1f} s start-up)", t_warm, "", "", f"{t_warm / t_serial:.2f}"))
    print(f"torch {torch.__version__}, {os.cpu_count()} cores, {epochs} epochs per training, p = 0.2\n")
    print("| run | where | wall s | load before | load after | ratio to serial |")
    print("|---|---|---:|---|---|---:|")
    for r in rows:
        print(f"| {r[0]} | {r[1]} | {r[2]:.1f} | {r[3]} | {r[4]} | {r[5]} |")
    print(f"\nDask result identical to serial (every mask, weight and control accuracy): {same}")


def one_shot_masks(inputs: dict, trained: dict, ticket: dict, seed: int) -> dict[str, dict]:
    """One-shot masks at the ticket's sparsity: magnitude, global magnitude, LAMP (trained weights),
    SNIP (at theta_0, its paper's setting) and random."""
    ones = {n: torch.ones(m.shape, dtype=torch.bool) for n, m in ticket.items()}
    total = sum(m.numel() for m in ticket.values())
    s = 1 - sum(int(m.sum()) for m in ticket.values()) / total
    w_trained = {n: trained[n] for n in ticket}
    theta0 = inputs["theta0_state"]
    calib = (inputs["train_data"][0][:256], inputs["train_data"][1][:256])
    grads = lambda: loss_gradients(inputs["model"], theta0, ones, calib, list(ones))  # noqa: E731
    return {
        "magnitude (layer-wise)": prune_step("magnitude", w_trained, ones, s, seed),
        "global magnitude": prune_step("global_magnitude", w_trained, ones, s, seed),
        "LAMP": prune_step("lamp", w_trained, ones, s, seed),
        "SNIP (at theta_0)": prune_step("snip", {n: theta0[n] for n in ticket}, ones, s, seed, gradients=grads),
        "random": prune_step("random", w_trained, ones, s, 10_000 + seed),
    }


def miniature(out: Path, epochs: int, rounds: int, p: float, client, run_dir: str | None) -> None:
    inputs = sample_ticket_inputs("digits_mlp")
    seeds = [0, 1, 2]
    t = time.perf_counter()
    # with --run-dir a finished run is reloaded (resume trains only what is missing)
    run = find_ticket(**inputs, epochs=epochs, rounds=rounds, prune_per_round=p, seeds=seeds, rewind="init",
                      client=client, run_dir=run_dir, resume=run_dir is not None)
    wall = time.perf_counter() - t
    df = run.metrics()
    summary = df.groupby(["level", "kind"]).agg(sparsity=("sparsity", "mean"), mean=("accuracy", "mean"),
                                                std=("accuracy", "std")).reset_index()
    print(f"IMP on digits_mlp: {rounds} rounds of p = {p}, rewind to theta_0, {epochs} epochs per training, "
          f"seeds {seeds} ({wall:.0f} s, load {_load()})\n")
    table = summary.pivot(index="level", columns="kind", values="mean")
    table.insert(0, "sparsity", summary.groupby("level")["sparsity"].first())
    print("| level | sparsity | ticket | random re-init | random mask |")
    print("|---:|---:|---:|---:|---:|")
    std = summary.pivot(index="level", columns="kind", values="std")
    for lv, r in table.iterrows():
        cells = [f"{100 * r[k]:.1f} ± {100 * std.loc[lv, k]:.1f}" if not pd.isna(r.get(k)) else "" for k in ("ticket", "reinit", "random")]
        print(f"| {lv} | {100 * r['sparsity']:.1f}% | " + " | ".join(cells) + " |")
    # Jackpots: which one-shot mask overlaps the ticket most, at the last level
    rows = []
    for seed in seeds:
        ticket = run.masks(-1, seed=seed)
        for name, masks in one_shot_masks(inputs, run.state(0, seed=seed), ticket, seed).items():
            o = mask_overlap(ticket, masks).set_index("layer").loc["overall"]
            rows.append({"seed": seed, "mask": name, "jaccard": o["jaccard"], "random_jaccard": o["random_jaccard"]})
        for other in seeds:
            if other != seed:
                o = mask_overlap(ticket, run.masks(-1, seed=other)).set_index("layer").loc["overall"]
                rows.append({"seed": seed, "mask": "ticket of another seed", "jaccard": o["jaccard"], "random_jaccard": o["random_jaccard"]})
    jack = pd.DataFrame(rows).groupby("mask", sort=False).agg(jaccard=("jaccard", "mean"), jstd=("jaccard", "std"),
                                                             random=("random_jaccard", "mean")).sort_values("jaccard", ascending=False)
    sp = 100 * df.query("kind == 'ticket' and level == @rounds")["sparsity"].mean()
    print(f"\nJackpots check at the last level ({sp:.1f}% sparsity): overall Jaccard with the ticket (mean ± std over seeds)\n")
    print("| one-shot mask | Jaccard with ticket | random expectation |")
    print("|---|---:|---:|")
    for name, r in jack.iterrows():
        print(f"| {name} | {r['jaccard']:.3f} ± {r['jstd']:.3f} | {r['random']:.3f} |")
    _figure(summary, jack, out)


def _figure(summary: pd.DataFrame, jack: pd.DataFrame, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, bx) = plt.subplots(1, 2, figsize=(10, 3.8), gridspec_kw={"width_ratios": [1.4, 1]})
    for kind in ("ticket", "reinit", "random"):
        d = summary[summary["kind"] == kind].sort_values("sparsity")
        if kind != "ticket":  # the dense level belongs to every curve
            d = pd.concat([summary[(summary["kind"] == "ticket") & (summary["level"] == 0)], d])
        ax.errorbar(100 * d["sparsity"], 100 * d["mean"], yerr=100 * d["std"].fillna(0), marker="o", ms=3,
                    capsize=2, color=COLOURS[kind], label=LABELS[kind])
    ax.set_xlabel("sparsity of the prunable weights (%)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("digits_mlp: IMP ticket vs controls (3 seeds)")
    ax.legend(fontsize=8, loc="lower left")
    ax.grid(alpha=0.3)
    names = list(jack.index)
    y = range(len(names))
    bx.barh(y, jack["jaccard"], xerr=jack["jstd"].fillna(0), color="#56B4E9", error_kw={"ecolor": "#555555"},
            label="Jaccard with the ticket (± std over seeds)")
    bx.scatter(jack["random"], y, marker="D", s=22, color="black", zorder=3, label="two random masks at these densities")
    bx.set_yticks(list(y), names, fontsize=8)
    bx.invert_yaxis()
    bx.set_xlabel("Jaccard with the ticket (IoU of kept weights)")
    bx.set_title("Jackpots check at the last level")
    bx.legend(fontsize=8, loc="lower right", framealpha=0.9)
    fig.tight_layout()
    out.mkdir(parents=True, exist_ok=True)
    for ext in ("png", "pdf"):
        fig.savefig(out / f"lth_miniature.{ext}", dpi=150)
    print(f"\nfigure: {out / 'lth_miniature.png'} (+ .pdf)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="what", required=True)
    t = sub.add_parser("timing")
    t.add_argument("--epochs", type=int, default=60)
    m = sub.add_parser("miniature")
    m.add_argument("--out", type=Path, default=Path("docs/figures"))
    m.add_argument("--epochs", type=int, default=30)
    m.add_argument("--rounds", type=int, default=10)
    m.add_argument("--p", type=float, default=0.3)
    m.add_argument("--scheduler", default=None, help="None (serial), 'local' or a scheduler address")
    m.add_argument("--run-dir", default=None, help="keep the run here (and reload it instead of re-running)")
    args = parser.parse_args()
    if args.what == "timing":
        timing(args.epochs)
    else:
        miniature(args.out, args.epochs, args.rounds, args.p, args.scheduler, args.run_dir)


if __name__ == "__main__":
    main()
