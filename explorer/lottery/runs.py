"""Ticket runs in memory and in a run directory (safetensors masks, JSON metrics, atomic writes).

Layout of a run directory::

    run.json                          format version, hyper-parameters, model identity, code version
    seed_0/level_000.safetensors      masks of level 0 (dense) ... level_R
    seed_0/level_000.state.safetensors  weights after training at that level
    seed_0/level_000.json             metrics; written last: a level is complete iff it exists
    seed_0/level_001.reinit.json      control: same mask, random re-initialisation
    seed_0/level_001.random.json      control: random mask at the same layer densities
    seed_0/level_001.random.safetensors

Every file is written to a temporary name and renamed, and each JSON records the SHA-256 of the
tensor files it commits, so a truncated or altered file is detected on load.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

State = dict[str, torch.Tensor]
Masks = dict[str, torch.Tensor]

FORMAT_VERSION = 1
CONTROL_KINDS = ("reinit", "random")


def state_hash(state: State) -> str:
    """SHA-256 over the names, dtypes, shapes and bytes of ``state``'s tensors (sorted by name)."""
    h = hashlib.sha256()
    for key in sorted(state):
        t = state[key].detach().cpu().contiguous().reshape(-1)
        h.update(f"{key}|{t.dtype}|{tuple(state[key].shape)}|".encode())
        h.update(t.view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def code_version() -> str:
    """The installed prunescope version (no git call)."""
    try:
        return metadata.version("prunescope")
    except metadata.PackageNotFoundError:  # pragma: no cover - running from an uninstalled tree
        return "unknown"


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and an atomic rename."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _json_bytes(obj: Any) -> bytes:
    return json.dumps(obj, indent=1, sort_keys=True).encode()


@dataclass
class LevelRecord:
    """One level of one seed: its masks, metrics and (lazily loaded) trained weights."""

    seed: int
    level: int
    masks: Masks
    metrics: dict[str, Any]
    _state: State | None = None
    _state_path: Path | None = None
    _state_sha: str | None = None

    @property
    def state(self) -> State:
        if self._state is None:
            if self._state_path is None:
                raise ValueError(f"level {self.level} of seed {self.seed} has no stored weights")
            self._state = read_tensors(self._state_path, self._state_sha)
        return self._state


@dataclass
class TicketRun:
    """A ticket search: per seed, one :class:`LevelRecord` per level, and the controls' metrics.

    ``pending`` holds masks already chosen for levels not trained yet (for resuming).
    """

    config: dict[str, Any]
    levels: dict[tuple[int, int], LevelRecord] = field(default_factory=dict)
    controls: dict[tuple[int, int, str], dict[str, Any]] = field(default_factory=dict)
    control_masks: dict[tuple[int, int], Masks] = field(default_factory=dict)
    pending: dict[tuple[int, int], Masks] = field(default_factory=dict)
    path: Path | None = None

    @property
    def seeds(self) -> list[int]:
        return list(self.config["seeds"])

    @property
    def rounds(self) -> int:
        return int(self.config["rounds"])

    @property
    def complete(self) -> bool:
        """Whether every seed reached its last level and every control is recorded."""
        for s in self.seeds:
            if (s, self.rounds) not in self.levels:
                return False
            if self.config.get("controls", True):
                if any((s, lv, k) not in self.controls for lv in range(1, self.rounds + 1) for k in CONTROL_KINDS):
                    return False
        return True

    def completed_levels(self, seed: int) -> list[int]:
        """Levels of ``seed`` that finished training, ascending."""
        return sorted(lv for (s, lv) in self.levels if s == seed)

    def record(self, level: int = -1, seed: int | None = None) -> LevelRecord:
        """The record of ``level`` (negative counts from the last completed) of ``seed`` (default first)."""
        seed = self.seeds[0] if seed is None else int(seed)
        if seed not in self.seeds:
            raise ValueError(f"seed {seed} is not in this run; seeds: {self.seeds}")
        done = self.completed_levels(seed)
        if not done:
            raise ValueError(f"seed {seed} has no completed level yet")
        if level < 0:
            if -level > len(done):
                raise ValueError(f"level {level} out of range: seed {seed} has {len(done)} completed levels")
            level = done[level]
        if (seed, level) not in self.levels:
            raise ValueError(f"level {level} of seed {seed} is not completed; completed: {done}")
        return self.levels[(seed, level)]

    def masks(self, level: int = -1, seed: int | None = None) -> Masks:
        """The ticket's masks at ``level`` (-1: the last completed) for ``seed`` (default: the first)."""
        return {n: m.clone() for n, m in self.record(level, seed).masks.items()}

    def state(self, level: int = -1, seed: int | None = None) -> State:
        """Weights after training at ``level`` for ``seed``."""
        return self.record(level, seed).state

    def metrics(self) -> pd.DataFrame:
        """Tidy table: seed, level, kind ('ticket', 'reinit', 'random'), sparsity, accuracy, loss."""
        rows = []
        for (s, lv), rec in sorted(self.levels.items()):
            rows.append({"seed": s, "level": lv, "kind": "ticket", **_metric_cols(rec.metrics)})
        for (s, lv, kind), m in sorted(self.controls.items()):
            rows.append({"seed": s, "level": lv, "kind": kind, **_metric_cols(m)})
        cols = ["seed", "level", "kind", "sparsity", "accuracy", "loss"]
        return pd.DataFrame(rows, columns=cols).sort_values(["kind", "seed", "level"], ignore_index=True)

    def layer_densities(self) -> pd.DataFrame:
        """Tidy table: seed, level, layer, numel, kept, density of the ticket's masks."""
        rows = [
            {"seed": s, "level": lv, "layer": n, "numel": m.numel(), "kept": int(m.sum()),
             "density": int(m.sum()) / m.numel()}
            for (s, lv), rec in sorted(self.levels.items()) for n, m in rec.masks.items()
        ]
        return pd.DataFrame(rows, columns=["seed", "level", "layer", "numel", "kept", "density"])

    def check_model(self, theta0_state: State, name: str | None = None) -> None:
        """ValueError unless ``theta0_state`` (and ``name`` if given) is the model this run was found on."""
        ident = self.config["model"]
        got = state_hash(theta0_state)
        if got != ident["theta0_sha256"] or (name is not None and name != ident["name"]):
            raise ValueError(
                f"the run at {self.path or '(memory)'} is of model {ident['name']!r} "
                f"(theta_0 {ident['theta0_sha256'][:12]}), not {name or 'this model'!r} (theta_0 {got[:12]})"
            )


def _metric_cols(m: dict[str, Any]) -> dict[str, Any]:
    return {"sparsity": m["sparsity"], "accuracy": m["accuracy"], "loss": m["loss"]}


def write_tensors(path: Path, tensors: State) -> str:
    """Write ``tensors`` as safetensors atomically; return the file's SHA-256."""
    data = st_save({k: v.detach().contiguous() for k, v in tensors.items()})
    atomic_write(path, data)
    return hashlib.sha256(data).hexdigest()


def read_tensors(path: Path, sha256: str | None = None) -> State:
    """Read a safetensors file, checking its SHA-256; a ValueError names a missing or corrupt file."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ValueError(f"cannot read tensor file {path}: {exc}") from None
    if sha256 is not None and hashlib.sha256(data).hexdigest() != sha256:
        raise ValueError(f"tensor file {path} is corrupt or truncated (its SHA-256 does not match the run's record)")
    try:
        return st_load(data)
    except Exception as exc:  # safetensors raises its own error types
        raise ValueError(f"tensor file {path} is not a valid safetensors file: {exc}") from None


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot read run file {path}: {exc}") from None


class RunDirectory:
    """Writer of one run directory; refuses to touch a directory that holds something else."""

    def __init__(self, path: str | os.PathLike, config: dict[str, Any], resume: bool) -> None:
        self.path = Path(path)
        run_json = self.path / "run.json"
        if self.path.exists() and not self.path.is_dir():
            raise ValueError(f"run directory {self.path} exists and is not a directory")
        if run_json.exists():
            existing = _read_json(run_json)
            if not resume:
                raise ValueError(f"{self.path} already holds a run; pass resume=True to continue it or use another directory")
            _check_same_run(self.path, existing, config)
        else:
            if self.path.exists() and any(self.path.iterdir()):
                raise ValueError(f"{self.path} is not empty and is not a run directory (no run.json); refusing to write there")
            self.path.mkdir(parents=True, exist_ok=True)
            atomic_write(run_json, _json_bytes(config))

    def _seed_dir(self, seed: int) -> Path:
        d = self.path / f"seed_{seed}"
        d.mkdir(exist_ok=True)
        return d

    def write_level(self, rec: LevelRecord, next_masks: Masks | None) -> None:
        """Masks, weights and the next level's masks first, then the committing JSON."""
        d = self._seed_dir(rec.seed)
        files = {"masks": write_tensors(d / f"level_{rec.level:03d}.safetensors", rec.masks),
                 "state": write_tensors(d / f"level_{rec.level:03d}.state.safetensors", rec.state)}
        if next_masks is not None:
            files["next_masks"] = write_tensors(d / f"level_{rec.level + 1:03d}.safetensors", next_masks)
        atomic_write(d / f"level_{rec.level:03d}.json", _json_bytes({**rec.metrics, "files": files}))

    def write_control(self, seed: int, level: int, kind: str, metrics: dict[str, Any], masks: Masks | None) -> None:
        d = self._seed_dir(seed)
        files = {}
        if masks is not None:
            files["masks"] = write_tensors(d / f"level_{level:03d}.{kind}.safetensors", masks)
        atomic_write(d / f"level_{level:03d}.{kind}.json", _json_bytes({**metrics, "files": files}))


def _check_same_run(path: Path, existing: dict[str, Any], config: dict[str, Any]) -> None:
    if existing.get("model") != config.get("model"):
        old, new = existing.get("model", {}), config.get("model", {})
        raise ValueError(
            f"the run at {path} is of model {old.get('name')!r} (theta_0 {str(old.get('theta0_sha256'))[:12]}), "
            f"not {new.get('name')!r} (theta_0 {str(new.get('theta0_sha256'))[:12]}); nothing was written"
        )
    skip = {"code_version"}
    diff = sorted(k for k in set(existing) | set(config) if k not in skip and existing.get(k) != config.get(k))
    if diff:
        details = ", ".join(f"{k}: {existing.get(k)!r} -> {config.get(k)!r}" for k in diff)
        raise ValueError(f"cannot resume the run at {path} with different settings ({details}); nothing was written")


def load_run(path: str | os.PathLike) -> TicketRun:
    """Reload a (complete or partial) run directory; a ValueError says what is wrong with it."""
    root = Path(path)
    if not root.is_dir():
        raise ValueError(f"{root} is not a directory, so not a ticket run")
    if not (root / "run.json").is_file():
        raise ValueError(f"{root} is not a ticket run directory (no run.json)")
    config = _read_json(root / "run.json")
    if config.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{root}: unknown run format version {config.get('format_version')!r}; this code reads {FORMAT_VERSION}")
    for key in ("seeds", "rounds", "model"):
        if key not in config:
            raise ValueError(f"{root}/run.json lacks {key!r}: not a ticket run")
    run = TicketRun(config=config, path=root)
    order = list(config.get("prunable", []))

    def as_masks(tensors: State, where: Path) -> Masks:
        # safetensors returns tensors in file-offset order; searches depend on the prunable order
        if order and set(tensors) != set(order):
            raise ValueError(f"{where} holds masks {sorted(tensors)}, not the run's prunable weights {order}")
        return {n: tensors[n].bool() for n in (order or tensors)}

    for seed in config["seeds"]:
        d = root / f"seed_{seed}"
        for level in range(config["rounds"] + 1):
            stem = d / f"level_{level:03d}"
            meta_path = Path(f"{stem}.json")
            if meta_path.is_file():
                meta = _read_json(meta_path)
                files = meta.pop("files", {})
                masks = read_tensors(Path(f"{stem}.safetensors"), files.get("masks"))
                run.levels[(seed, level)] = LevelRecord(
                    seed, level, as_masks(masks, Path(f"{stem}.safetensors")), meta,
                    _state_path=Path(f"{stem}.state.safetensors"), _state_sha=files.get("state"),
                )
                if "next_masks" in files and level < config["rounds"]:
                    nxt = read_tensors(d / f"level_{level + 1:03d}.safetensors", files["next_masks"])
                    run.pending[(seed, level + 1)] = as_masks(nxt, d / f"level_{level + 1:03d}.safetensors")
            for kind in CONTROL_KINDS:
                cpath = Path(f"{stem}.{kind}.json")
                if cpath.is_file():
                    meta = _read_json(cpath)
                    files = meta.pop("files", {})
                    run.controls[(seed, level, kind)] = meta
                    if "masks" in files:
                        cm = read_tensors(Path(f"{stem}.{kind}.safetensors"), files["masks"])
                        run.control_masks[(seed, level)] = as_masks(cm, Path(f"{stem}.{kind}.safetensors"))
    for key in list(run.pending):
        if key in run.levels:
            del run.pending[key]
    return run
