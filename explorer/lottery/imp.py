"""Iterative magnitude pruning with rewinding (Frankle & Carbin, 2019; Frankle et al., 2020).

For each seed: train the dense model from theta_0 (level 0); then for each round prune
``prune_per_round`` of the remaining weights of the last trained weights with the criterion,
rewind the survivors to theta_0 (``'init'``), theta_k (``'early'``) or keep the trained values
(``'none'``), and retrain (level r). Every level is recorded. Controls at each level >= 1: the
same mask from a fresh random initialisation (``'reinit'``) and a random mask with the same layer
densities from the ticket's starting point (``'random'``), trained with the ticket's batch order.
Independent trainings (seeds, controls, particles, splits) run on Dask when ``client`` is given.
"""

from __future__ import annotations

import threading
from typing import Any, Callable, Sequence

import torch
from torch import nn

from prunescope.explorer.lottery.distributed import executor_for
from prunescope.explorer.lottery.prune import check_criterion, check_fraction, random_mask_like, sparsity_of
from prunescope.explorer.lottery.runs import (
    FORMAT_VERSION, LevelRecord, RunDirectory, TicketRun, code_version, load_run, state_hash,
)
from prunescope.explorer.lottery.trainer import (
    Cancelled, Data, Masks, State, apply_masks, evaluate_state, is_cancelled, loss_gradients,
    reinit_state, train_masked,
)
from prunescope.explorer.lottery.variants import data_splits, get_variant, seed_mix

REWINDS = ("init", "early", "none")
#: Training samples whose loss gradient gradient-based criteria (SNIP) see.
CALIBRATION_SAMPLES = 256


def _check_rounds(rounds: int) -> int:
    if not isinstance(rounds, int) or isinstance(rounds, bool) or rounds < 1:
        raise ValueError(f"rounds must be an integer >= 1, got {rounds!r}")
    return rounds


def _check_seeds(seeds: Sequence[int]) -> list[int]:
    seeds = list(seeds)
    if not seeds or any(not isinstance(s, int) or isinstance(s, bool) or s < 0 for s in seeds):
        raise ValueError(f"seeds must be a non-empty list of integers >= 0, got {seeds!r}")
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds must be distinct, got {seeds!r}")
    return seeds


def _check_prunable(model: nn.Module, prunable: Sequence[str]) -> list[str]:
    params = dict(model.named_parameters())
    names = list(prunable)
    bad = [n for n in names if n not in params]
    if not names or bad:
        raise ValueError(f"prunable must name parameters of the model; unknown: {bad}; parameters: {', '.join(params)}")
    return names


def _data_hash(data: Data) -> str:
    return state_hash({"x": data[0], "y": data[1]})


def find_ticket(
    model: nn.Module,
    theta0_state: State,
    train_data: Data,
    eval_data: Data,
    *,
    rounds: int,
    prune_per_round: float,
    epochs: int,
    lr: float,
    prunable: Sequence[str],
    criterion: str = "global_magnitude",
    rewind: str = "init",
    theta_k_state: State | None = None,
    seeds: Sequence[int] = (0,),
    batch_size: int = 64,
    optimizer: str = "adam",
    variant: str = "imp",
    splits: int = 2,
    particles: int = 3,
    controls: bool = True,
    model_name: str | None = None,
    run_dir: str | None = None,
    resume: bool = False,
    progress: Callable[[int, int], None] | None = None,
    on_record: Callable[[dict], None] | None = None,
    cancel: threading.Event | Callable[[], bool] | None = None,
    client: Any = None,
) -> TicketRun:
    """Find lottery tickets by iterative pruning with rewinding; return the recorded run.

    ``prunable`` names the parameters pruned (``'fc1.weight'``); ``theta_k_state`` is the rewind
    point for ``rewind='early'``. With ``run_dir`` every level is written as it completes and
    ``resume=True`` continues an interrupted run (same arguments, same result). ``progress(done,
    total)`` is called after each training (the core job convention) and ``on_record(info)``
    with ``info`` = {seed, level, rounds, kind, done, total}; a set ``cancel`` (Event) raises
    ``core.jobs.Cancelled``. ``client``: None (serial), ``'local'``, a scheduler
    address or a ``distributed.Client``; the result is the same tensors either way.
    """
    rounds = _check_rounds(rounds)
    p = check_fraction(prune_per_round)
    check_criterion(criterion)
    if rewind not in REWINDS:
        raise ValueError(f"rewind must be one of {REWINDS}, got {rewind!r}")
    if rewind == "early" and theta_k_state is None:
        raise ValueError("rewind='early' needs theta_k_state (the weights after k training steps)")
    seeds = _check_seeds(seeds)
    names = _check_prunable(model, prunable)
    var = get_variant(variant, splits, particles)
    _check_state(model, theta0_state, "theta0_state")
    if theta_k_state is not None:
        _check_state(model, theta_k_state, "theta_k_state")
    config = {
        "format_version": FORMAT_VERSION,
        "code_version": code_version(),
        "model": {"name": model_name or type(model).__name__, "theta0_sha256": state_hash(theta0_state)},
        "theta_k_sha256": state_hash(theta_k_state) if rewind == "early" else None,
        "train_sha256": _data_hash(train_data), "eval_sha256": _data_hash(eval_data),
        "rounds": rounds, "prune_per_round": p, "criterion": criterion, "rewind": rewind,
        "seeds": seeds, "epochs": epochs, "lr": lr, "batch_size": batch_size, "optimizer": optimizer,
        "variant": variant, "splits": splits if variant == "colt" else None,
        "particles": particles if variant == "swamp" else None, "controls": bool(controls),
        "prunable": names,
    }
    store = RunDirectory(run_dir, config, resume) if run_dir is not None else None
    run = load_run(run_dir) if store is not None else TicketRun(config=config)
    run.config = config
    search = _Search(model, theta0_state, theta_k_state, train_data, eval_data, run, store, var, p,
                     names, progress, on_record, cancel)
    with executor_for(client) as ex:
        search.execute(ex)
    return run


def _check_state(model: nn.Module, state: State, what: str) -> None:
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    wrong = [k for k in expected if k in state and tuple(state[k].shape) != tuple(expected[k].shape)]
    if missing or wrong:
        raise ValueError(f"{what} does not fit the model: missing {missing}, wrong shape {wrong}")


def _train_task(model: nn.Module, start: State, masks: Masks, data: Data, hp: dict) -> State:
    """One training (module level so Dask can pickle it)."""
    return train_masked(model, start, masks, data, **hp)


class _Search:
    """Drives one search: submits the trainings each level needs, writes levels as they finish."""

    def __init__(self, model, theta0, thetak, train_data, eval_data, run, store, variant, p, names,
                 progress, on_record, cancel) -> None:
        self.model, self.theta0, self.thetak = model, theta0, thetak
        self.train_data, self.eval_data = train_data, eval_data
        self.run, self.store, self.var, self.p, self.names = run, store, variant, p, names
        self.progress, self.on_record, self.cancel = progress, on_record, cancel
        cfg = run.config
        self.cfg = cfg
        self.hp = dict(epochs=cfg["epochs"], lr=cfg["lr"], batch_size=cfg["batch_size"], optimizer=cfg["optimizer"])
        self.calib = (train_data[0][:CALIBRATION_SAMPLES], train_data[1][:CALIBRATION_SAMPLES])

    # -- what each level needs -------------------------------------------------------------
    def start_state(self, seed: int, level: int) -> State:
        if level == 0 or self.cfg["rewind"] == "init":
            return self.theta0
        if self.cfg["rewind"] == "early":
            return self.thetak
        return self.run.levels[(seed, level - 1)].state

    def mask_for(self, seed: int, level: int) -> Masks:
        if level == 0:
            return {n: torch.ones(self.theta0[n].shape, dtype=torch.bool) for n in self.names}
        return self.run.pending[(seed, level)]

    def gradients_for(self, masks: Masks):
        def make(src: State):
            return lambda: loss_gradients(self.model, src, masks, self.calib, list(masks))
        return make

    # -- the loop --------------------------------------------------------------------------
    def execute(self, ex) -> None:
        rounds, seeds = self.cfg["rounds"], self.cfg["seeds"]
        jobs_per_level = len(self.var.jobs(seeds[0], 0))
        per_seed = (rounds + 1) * jobs_per_level + (2 * rounds if self.cfg["controls"] else 0)
        self.total, self.done = per_seed * len(seeds), 0
        self.tasks: dict[int, tuple] = {}
        self.results: dict[tuple[int, int], dict[int, State]] = {}
        if ex.in_process and self.cancel is not None:
            self.hp["cancel"] = self.cancel  # stop inside a training, not only between them
        self.model_ref, self.data_ref = ex.put(self.model), {}
        for seed in seeds:
            self.data_ref[seed] = {"train": ex.put(self.train_data)}
            if self.var.name == "colt":
                for key, d in data_splits(self.train_data, self.var.splits, seed).items():
                    self.data_ref[seed][key] = ex.put(d)
        for seed in seeds:
            done = self.run.completed_levels(seed)
            self.done += len(done) * jobs_per_level + sum(
                1 for (s, _, _) in self.run.controls if s == seed)
            nxt = (max(done) + 1) if done else 0
            if nxt <= rounds:
                self.submit_level(ex, seed, nxt)
            for level in range(1, min(nxt, rounds) + 1):
                self.submit_controls(ex, seed, level)
        try:
            while ex.pending():
                if is_cancelled(self.cancel):
                    raise Cancelled(f"ticket search cancelled after {self.done} of {self.total} trainings")
                handle, result = ex.next_done(self.cancel)
                self.finish(ex, handle, result)
        except BaseException:
            ex.cancel_all()
            raise

    def submit_level(self, ex, seed: int, level: int) -> None:
        masks = self.mask_for(seed, level)
        start = apply_masks(self.start_state(seed, level), masks)
        self.results[(seed, level)] = {}
        for j, job in enumerate(self.var.jobs(seed, level)):
            h = ex.submit(_train_task, self.model_ref, start, masks, self.data_ref[seed][job.data],
                          {**self.hp, "seed": job.seed})
            self.tasks[h] = ("level", seed, level, j)

    def submit_controls(self, ex, seed: int, level: int) -> None:
        if not self.cfg["controls"]:
            return
        masks, train_seed = self.mask_for_control(seed, level), seed_mix(seed, level, "train")
        hp = {**self.hp, "seed": train_seed}
        if (seed, level, "reinit") not in self.run.controls:
            start = reinit_state(self.model, seed_mix(seed, level, "reinit"))
            h = ex.submit(_train_task, self.model_ref, start, masks, self.data_ref[seed]["train"], hp)
            self.tasks[h] = ("reinit", seed, level, masks)
        if (seed, level, "random") not in self.run.controls:
            rmask = random_mask_like(masks, seed_mix(seed, level, "random"))
            start = apply_masks(self.start_state(seed, level), rmask)
            h = ex.submit(_train_task, self.model_ref, start, rmask, self.data_ref[seed]["train"], hp)
            self.tasks[h] = ("random", seed, level, rmask)

    def mask_for_control(self, seed: int, level: int) -> Masks:
        rec = self.run.levels.get((seed, level))
        return rec.masks if rec is not None else self.run.pending[(seed, level)]

    def tick(self, info: dict) -> None:
        self.done += 1
        if self.on_record is not None:
            self.on_record({**info, "rounds": self.cfg["rounds"], "done": self.done, "total": self.total})
        if self.progress is not None:
            self.progress(self.done, self.total)

    def finish(self, ex, handle: int, result: State) -> None:
        kind, seed, level, extra = self.tasks.pop(handle)
        if kind != "level":
            acc, loss = evaluate_state(self.model, result, self.eval_data)
            metrics = {"seed": seed, "level": level, "kind": kind, "sparsity": sparsity_of(extra),
                       "accuracy": acc, "loss": loss}
            if self.store is not None:
                self.store.write_control(seed, level, kind, metrics, extra if kind == "random" else None)
            self.run.controls[(seed, level, kind)] = metrics
            if kind == "random":
                self.run.control_masks[(seed, level)] = extra
            self.tick({"seed": seed, "level": level, "kind": kind})
            return
        slots = self.results[(seed, level)]
        slots[extra] = result
        n_jobs = len(self.var.jobs(seed, level))
        if len(slots) < n_jobs:
            self.tick({"seed": seed, "level": level, "kind": "ticket"})
            return
        del self.results[(seed, level)]
        state, sources, extra_metrics = self.var.reduce([slots[j] for j in range(n_jobs)])
        masks = self.mask_for(seed, level)
        acc, loss = evaluate_state(self.model, state, self.eval_data)
        metrics = {
            "seed": seed, "level": level, "kind": "ticket", "sparsity": sparsity_of(masks),
            "accuracy": acc, "loss": loss, **extra_metrics,
            "densities": {n: int(m.sum()) / m.numel() for n, m in masks.items()},
        }
        next_masks = None
        if level < self.cfg["rounds"]:
            next_masks = self.var.next_masks(self.cfg["criterion"], sources, masks, self.p, level, seed,
                                             self.gradients_for(masks))
        rec = LevelRecord(seed, level, masks, metrics, _state=state)
        if self.store is not None:
            self.store.write_level(rec, next_masks)
        self.run.levels[(seed, level)] = rec
        self.run.pending.pop((seed, level), None)
        self.tick({"seed": seed, "level": level, "kind": "ticket"})
        if next_masks is not None:
            self.run.pending[(seed, level + 1)] = next_masks
            self.submit_level(ex, seed, level + 1)
            self.submit_controls(ex, seed, level + 1)
