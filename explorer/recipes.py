"""Recipes: the whole setting as a small, human-readable, versioned file (JSON; YAML if PyYAML is there).

A recipe holds a :class:`~prunescope.explorer.core.setting.Setting` (method, sparsity, per-weight
overrides, the method's options, seed; the token strategy and per-block budgets) together with
the model's identity (its name, the sample model and checkpoint it came from) and a hash of the
dense prunable weights, so loading it on other weights can say what differs (cf. Sparsify's
recipes, which held the pruning schedule only). ``parse_recipe(dump_recipe(...)).setting`` is the
setting it was made from, exactly: floats are written with ``repr`` (shortest exact form) and
lists come back as the tuples the frozen setting holds.

>>> text = dump_recipe(Setting(WeightSetting("magnitude", 0.9)), "digits_mlp", weights_hash(w))
>>> parse_recipe(text).setting.weights.sparsity
0.9
"""

from __future__ import annotations

import hashlib
import json
import numbers
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Collection, Mapping

import torch

from prunescope.explorer.core.setting import Setting, TokenSetting, WeightSetting, freeze_options

#: The recipe format this version of Prunescope writes and reads.
RECIPE_VERSION = 1
#: The value of the ``format`` key that marks a document as a Prunescope recipe.
RECIPE_FORMAT = "prunescope-recipe"

#: Longest recipe text accepted (a recipe is a few hundred bytes; this bounds what an upload can cost).
MAX_RECIPE_CHARS = 262_144
#: Deepest nesting accepted (a recipe nests 4 deep; PyYAML's pure-Python parser is quadratic in it).
MAX_RECIPE_DEPTH = 32

_TOP_KEYS = {"format", "version", "model", "weights", "tokens"}
_MODEL_KEYS = {"name", "sample", "weights_sha256"}
_SAMPLE_KEYS = {"name", "checkpoint"}
_WEIGHT_KEYS = {"method", "sparsity", "overrides", "options", "seed"}
_TOKEN_KEYS = {"strategy", "keep", "options", "seed"}


@dataclass(frozen=True)
class SampleRef:
    """The built-in sample model (and its shipped checkpoint) an explorer was built from."""

    name: str
    checkpoint: str = "trained"


@dataclass(frozen=True)
class Recipe:
    """A parsed recipe: the setting, the model it was made for and that model's weight hash."""

    version: int
    setting: Setting
    model_name: str
    weights_hash: str
    sample: SampleRef | None = None


def weights_hash(state: Mapping[str, torch.Tensor]) -> str:
    """SHA-256 (hex) over the weights in name order: each name, dtype, shape and raw bytes.

    Pass the dense prunable weights (``{parameter name: tensor}``); equal weights give equal
    hashes on any machine of the same byte order, any change of a value, shape or dtype changes it.
    """
    digest = hashlib.sha256()
    for name in sorted(state):
        tensor = state[name].detach().cpu().contiguous()
        digest.update(f"{name}\0{tensor.dtype}\0{tuple(tensor.shape)}\0".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


# ------------------------------------------------------------------------------------ writing
def _plain(value: Any, where: str) -> Any:
    """``value`` as JSON data (tuples -> lists); anything else than None/bool/number/str/tuple is refused."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        value = float(value)
        if value != value or value in (float("inf"), float("-inf")):
            raise ValueError(f"{where} is {value}; a recipe holds finite numbers only")
        return value
    if isinstance(value, (tuple, list)):
        return [_plain(v, f"{where}[{i}]") for i, v in enumerate(value)]
    raise ValueError(
        f"{where} is a {type(value).__name__} ({value!r}); a recipe holds None, bool, int, float, str "
        "or tuples of these"
    )


def recipe_dict(setting: Setting, model_name: str, weights_hash: str,
                sample: SampleRef | None = None) -> dict[str, Any]:
    """The recipe of ``setting`` for model ``model_name`` (weights hashing to ``weights_hash``) as plain data."""
    if not isinstance(setting, Setting):
        raise ValueError(f"setting must be a Setting, got {type(setting).__name__}")
    w = setting.weights
    names = [n for n, _ in w.overrides]
    if len(set(names)) != len(names):
        raise ValueError(f"overrides name a weight twice: {names}")
    doc: dict[str, Any] = {
        "format": RECIPE_FORMAT,
        "version": RECIPE_VERSION,
        "model": {
            "name": str(model_name),
            "sample": None if sample is None else {"name": sample.name, "checkpoint": sample.checkpoint},
            "weights_sha256": str(weights_hash),
        },
        "weights": {
            "method": w.method,
            "sparsity": _plain(w.sparsity, "weights.sparsity"),
            "overrides": {n: _plain(s, f"weights.overrides[{n!r}]") for n, s in w.overrides},
            "options": {k: _plain(v, f"weights.options[{k!r}]") for k, v in w.options},
            "seed": _plain(w.seed, "weights.seed"),
        },
        "tokens": None,
    }
    t = setting.tokens
    if t is not None:
        doc["tokens"] = {
            "strategy": t.strategy,
            "keep": _plain(t.keep, "tokens.keep"),
            "options": {k: _plain(v, f"tokens.options[{k!r}]") for k, v in t.options},
            "seed": _plain(t.seed, "tokens.seed"),
        }
    return doc


def dump_recipe(setting: Setting, model_name: str, weights_hash: str, sample: SampleRef | None = None,
                *, format: str = "json") -> str:
    """The recipe as text: ``format`` 'json' (always available) or 'yaml' (needs PyYAML)."""
    doc = recipe_dict(setting, model_name, weights_hash, sample)
    if format == "json":
        return json.dumps(doc, indent=2, allow_nan=False) + "\n"
    if format == "yaml":
        yaml = _yaml()
        return yaml.safe_dump(doc, sort_keys=False, default_flow_style=None)
    raise ValueError(f"recipe format must be 'json' or 'yaml', got {format!r}")


def _yaml():
    try:
        import yaml
    except ImportError:  # pragma: no cover - PyYAML is usually installed
        raise ValueError("YAML recipes need PyYAML (pip install pyyaml); JSON recipes always work") from None
    return yaml


# ------------------------------------------------------------------------------------ reading
def _read_text(text_or_path: str | os.PathLike) -> tuple[str, str]:
    """``(text, kind)`` of a recipe given as text or as a path; kind is 'json', 'yaml' or 'auto'."""
    if isinstance(text_or_path, os.PathLike) or (
        isinstance(text_or_path, str) and "\n" not in text_or_path and not text_or_path.lstrip().startswith("{")
    ):
        path = Path(text_or_path)
        if not path.is_file():
            raise ValueError(f"no recipe file at {str(path)!r} (pass the recipe text or the path of a .json/.yaml file)")
        suffix = path.suffix.lower()
        kind = "yaml" if suffix in (".yaml", ".yml") else "json" if suffix == ".json" else "auto"
        return path.read_text(encoding="utf-8"), kind
    if not isinstance(text_or_path, str):
        raise ValueError(f"a recipe is text or a path, got {type(text_or_path).__name__}")
    return text_or_path, "auto"


def _check_depth(text: str) -> None:
    """Refuse brackets nested (or lines indented) deeper than a recipe ever is, before parsing."""
    depth = deepest = 0
    for char in text:
        if char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth -= 1
    indent = max((len(line) - len(line.lstrip(" ")) for line in text.splitlines()), default=0)
    if deepest > MAX_RECIPE_DEPTH or indent > 4 * MAX_RECIPE_DEPTH:
        raise ValueError(f"the recipe is nested too deeply (at most {MAX_RECIPE_DEPTH} levels)")


def _load_document(text: str, kind: str) -> Any:
    if len(text) > MAX_RECIPE_CHARS:
        raise ValueError(f"the recipe is {len(text)} characters; at most {MAX_RECIPE_CHARS} are read")
    _check_depth(text)
    try:
        if kind == "json" or (kind == "auto" and text.lstrip().startswith("{")):
            try:
                return json.loads(text)
            except json.JSONDecodeError as err:
                raise ValueError(f"the recipe is not valid JSON: {err.msg} (line {err.lineno}, column {err.colno})") from None
        yaml = _yaml()
        try:
            # Aliases could make a small text a huge structure: recipes never need them.
            loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when there
            if any(isinstance(event, yaml.AliasEvent) for event in yaml.parse(text, Loader=loader)):
                raise ValueError("the recipe uses YAML aliases (*name); write the values out")
            return yaml.load(text, Loader=loader)  # noqa: S506 - a safe loader
        except yaml.YAMLError as err:
            where = getattr(err, "problem_mark", None)
            at = f" (line {where.line + 1}, column {where.column + 1})" if where is not None else ""
            raise ValueError(f"the recipe is neither JSON nor valid YAML: {getattr(err, 'problem', None) or 'syntax error'}{at}") from None
    except RecursionError:
        raise ValueError("the recipe is nested too deeply") from None


def _section(doc: Any, where: str, required: set[str], optional: Collection[str] = ()) -> dict[str, Any]:
    if not isinstance(doc, dict):
        raise ValueError(f"recipe {where} must be a mapping, got {type(doc).__name__}")
    missing = sorted(required - doc.keys())
    unknown = sorted(doc.keys() - required - set(optional))
    if missing or unknown:
        problems = ([f"missing {missing}"] if missing else []) + ([f"unknown {unknown}"] if unknown else [])
        allowed = sorted(required | set(optional))
        raise ValueError(f"recipe {where}: {', '.join(problems)} keys; allowed: {allowed}")
    return doc


def _typed(value: Any, where: str, kind: str) -> Any:
    ok = {
        "str": isinstance(value, str),
        "int": isinstance(value, int) and not isinstance(value, bool),
        "number": isinstance(value, (int, float)) and not isinstance(value, bool),
    }[kind]
    if not ok:
        article = "an" if kind == "int" else "a"
        raise ValueError(f"recipe {where} must be {article} {kind}, got {type(value).__name__} {value!r}")
    return value


def _frozen(value: Any, where: str) -> Any:
    """JSON data back to setting values: lists -> tuples; mappings are refused (settings are hashable)."""
    if isinstance(value, list):
        return tuple(_frozen(v, f"{where}[{i}]") for i, v in enumerate(value))
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise ValueError(f"recipe {where} must be None, bool, number, str or a list of these, got {type(value).__name__}")


def _options(doc: Any, where: str) -> tuple[tuple[str, Any], ...]:
    if not isinstance(doc, dict):
        raise ValueError(f"recipe {where} must be a mapping of option name to value, got {type(doc).__name__}")
    return freeze_options({str(k): _frozen(v, f"{where}[{k!r}]") for k, v in doc.items()})


def recipe_from_dict(doc: Any) -> Recipe:
    """A :class:`Recipe` from parsed data; wrong, missing or unknown keys raise ``ValueError`` saying which."""
    doc = _section(doc, "document", _TOP_KEYS)
    if doc["format"] != RECIPE_FORMAT:
        raise ValueError(f"recipe format must be {RECIPE_FORMAT!r}, got {doc['format']!r}")
    version = doc["version"]
    if version != RECIPE_VERSION or isinstance(version, bool):
        raise ValueError(f"recipe version {version!r} is not supported; this Prunescope reads version {RECIPE_VERSION}")
    model = _section(doc["model"], "model", _MODEL_KEYS)
    sample = None
    if model["sample"] is not None:
        s = _section(model["sample"], "model.sample", _SAMPLE_KEYS)
        sample = SampleRef(_typed(s["name"], "model.sample.name", "str"),
                           _typed(s["checkpoint"], "model.sample.checkpoint", "str"))
    w = _section(doc["weights"], "weights", _WEIGHT_KEYS)
    overrides = w["overrides"]
    if not isinstance(overrides, dict):
        raise ValueError(f"recipe weights.overrides must be a mapping of weight name to sparsity, got {type(overrides).__name__}")
    weights = WeightSetting(
        method=_typed(w["method"], "weights.method", "str"),
        sparsity=_typed(w["sparsity"], "weights.sparsity", "number"),
        overrides=tuple((str(n), _typed(s, f"weights.overrides[{n!r}]", "number")) for n, s in overrides.items()),
        options=_options(w["options"], "weights.options"),
        seed=_typed(w["seed"], "weights.seed", "int"),
    )
    tokens = None
    if doc["tokens"] is not None:
        t = _section(doc["tokens"], "tokens", _TOKEN_KEYS)
        if not isinstance(t["keep"], list):
            raise ValueError(f"recipe tokens.keep must be a list of fractions, got {type(t['keep']).__name__}")
        tokens = TokenSetting(
            strategy=_typed(t["strategy"], "tokens.strategy", "str"),
            keep=tuple(_typed(k, f"tokens.keep[{i}]", "number") for i, k in enumerate(t["keep"])),
            options=_options(t["options"], "tokens.options"),
            seed=_typed(t["seed"], "tokens.seed", "int"),
        )
    return Recipe(
        version=version,
        setting=Setting(weights=weights, tokens=tokens),
        model_name=_typed(model["name"], "model.name", "str"),
        weights_hash=_typed(model["weights_sha256"], "model.weights_sha256", "str"),
        sample=sample,
    )


def parse_recipe(text_or_path: str | os.PathLike) -> Recipe:
    """A :class:`Recipe` from its text (JSON or YAML) or from a ``.json``/``.yaml`` file's path.

    A one-line string that is not JSON is taken as a path: for text from a browser use
    :func:`parse_recipe_text`, which never touches the file system.
    """
    text, kind = _read_text(text_or_path)
    return _parse(text, kind)


def parse_recipe_text(text: str | bytes) -> Recipe:
    """A :class:`Recipe` from its text only (uploads: never read as a path); bytes are UTF-8."""
    if isinstance(text, (bytes, bytearray)):
        try:
            text = bytes(text).decode("utf-8")
        except UnicodeDecodeError as err:
            raise ValueError(f"the recipe is not UTF-8 text: {err.reason} at byte {err.start}") from None
    if not isinstance(text, str):
        raise ValueError(f"recipe text must be str or bytes, got {type(text).__name__}")
    return _parse(text, "auto")


def _parse(text: str, kind: str) -> Recipe:
    try:
        return recipe_from_dict(_load_document(text, kind))
    except RecursionError:
        raise ValueError("the recipe is nested too deeply") from None


def check_recipe(recipe: Recipe, model_name: str, weights_hash: str,
                 weight_names: Collection[str] | None = None) -> list[str]:
    """What differs between the model ``recipe`` was made for and this one (empty: the same).

    ``weight_names`` (the prunable weights here), when given, also reports overrides naming a
    weight this model does not have. The facade warns with these lines and applies the setting.
    """
    differences = []
    if recipe.model_name != model_name:
        differences.append(f"the recipe was made for model {recipe.model_name!r}, this is {model_name!r}")
    if recipe.weights_hash != weights_hash:
        differences.append(
            f"the recipe was made for other weights (sha256 {recipe.weights_hash[:12]}..., these are "
            f"{weights_hash[:12]}...): masks and metrics can differ"
        )
    if weight_names is not None:
        unknown = [n for n, _ in recipe.setting.weights.overrides if n not in set(weight_names)]
        if unknown:
            differences.append(f"overrides name weights this model does not have: {unknown}")
    return differences
