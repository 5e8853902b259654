"""The models a server offers: built-in samples, entry-point plug-ins and ``--model`` factories.

Each entry has a unique name (the key of the app's model picker; never a class name), a one-line
description and a zero-argument factory that builds a fresh
:class:`~prunescope.explorer.Explorer` (one per session: sessions never share an explorer).

- Samples: ``prunescope.sample_models.list_sample_models()``, built with ``Explorer.from_sample``.
- Plug-ins: installed packages declare entry points in the group ``prunescope.models``, e.g.
  ``[project.entry-points."prunescope.models"] tiny = "my_pkg.models:make_explorer"``; the entry
  point's name is the model's name. Loaded lazily: a broken plug-in fails when picked, with a
  clear error, and does not stop the server.
- Specs: ``module.path:factory`` (or ``path/to/file.py:factory``), optionally named
  ``NAME=module.path:factory``; unnamed, the spec itself is the name. Resolved eagerly, so a bad
  ``--model`` fails before the server starts.

A factory returns an Explorer, or a ``(model, data)`` pair wrapped as ``Explorer(model, data,
name=<entry name>)``. Names are unique: a second entry with a taken name is an error naming
both sources (rename a spec with ``NAME=SPEC``); we never rename silently, so a name in a recipe
or a URL always means the same model.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import re
import sys
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable

if TYPE_CHECKING:  # pragma: no cover
    from prunescope.explorer.engine import Explorer

#: Entry-point group under which packages register models.
PLUGIN_GROUP = "prunescope.models"
_SPEC = re.compile(r"^(?:(?P<name>[^=:]+)=)?(?P<module>[^:]+):(?P<attr>[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*)$")


@dataclass(frozen=True)
class ModelEntry:
    """A model the app offers: ``name`` (unique key), ``description``, a factory and where it came from."""

    name: str
    description: str
    factory: Callable[[], Any]
    source: str  # 'sample', 'plugin <distribution>' or 'spec <spec>'

    def build(self) -> "Explorer":
        """A fresh Explorer of this model; any failure is a ``ValueError`` naming the entry."""
        return build_explorer(self.factory, self.name, where=self.source)


def build_explorer(factory: Callable[[], Any], name: str, where: str = "") -> "Explorer":
    """Call ``factory`` and return its Explorer (a ``(model, data)`` pair is wrapped as one)."""
    from prunescope.explorer.engine import Explorer

    label = f"model {name!r}" + (f" ({where})" if where else "")
    try:
        result = factory()
    except Exception as err:  # noqa: BLE001 - user code: report anything it raises
        raise ValueError(f"the factory of {label} raised {type(err).__name__}: {err}") from err
    if isinstance(result, Explorer):
        return result
    if isinstance(result, tuple) and len(result) == 2:
        try:
            return Explorer(result[0], result[1], name=name)
        except ValueError as err:
            raise ValueError(f"the (model, data) pair of {label} was not accepted: {err}") from err
    raise ValueError(f"the factory of {label} returned a {type(result).__name__}; "
                     "it must return an Explorer or a (model, data) pair")


def parse_spec(spec: str) -> tuple[str | None, str, str]:
    """``(name or None, module, attribute path)`` of ``[NAME=]module.path:factory``."""
    found = _SPEC.match(spec.strip()) if isinstance(spec, str) else None
    if not found:
        raise ValueError(f"model spec {spec!r} is not of the form [NAME=]module.path:factory "
                         "(or [NAME=]path/to/file.py:factory)")
    name = found.group("name")
    return (name.strip() if name else None), found.group("module").strip(), found.group("attr")


def _import(module: str, spec: str):
    if module.endswith(".py"):
        path = Path(module).expanduser().resolve()
        if not path.is_file():
            raise ValueError(f"model spec {spec!r}: no file {str(path)!r}")
        mod_name = "prunescope_user_models_" + hashlib.sha1(str(path).encode()).hexdigest()[:12]
        if mod_name in sys.modules:
            return sys.modules[mod_name]
        loader_spec = importlib.util.spec_from_file_location(mod_name, path)
        mod = importlib.util.module_from_spec(loader_spec)
        try:
            loader_spec.loader.exec_module(mod)
        except Exception as err:  # noqa: BLE001
            raise ValueError(f"model spec {spec!r}: running {str(path)!r} raised {type(err).__name__}: {err}") from err
        sys.modules[mod_name] = mod
        return mod
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as err:
        raise ValueError(f"model spec {spec!r}: module {module!r} not found ({err}); "
                         "is its package installed or on PYTHONPATH?") from err
    except Exception as err:  # noqa: BLE001 - importing user code can raise anything
        raise ValueError(f"model spec {spec!r}: importing {module!r} raised {type(err).__name__}: {err}") from err


def resolve_factory(spec: str) -> Callable[[], Any]:
    """The callable named by ``[NAME=]module.path:factory`` (imports the module; attributes may be dotted)."""
    _, module, attr = parse_spec(spec)
    obj = _import(module, spec)
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ValueError(f"model spec {spec!r}: {module!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise ValueError(f"model spec {spec!r}: {attr!r} is a {type(obj).__name__}, not a callable factory")
    return obj


def _first_line(obj: Any) -> str:
    doc = (getattr(obj, "__doc__", None) or "").strip()
    return doc.splitlines()[0] if doc else ""


def spec_entry(spec: str) -> ModelEntry:
    """The entry of one ``--model`` spec (its factory resolved now)."""
    name, _, _ = parse_spec(spec)
    factory = resolve_factory(spec)
    bare = spec.split("=", 1)[1] if name else spec
    return ModelEntry(name=name or bare.strip(), description=_first_line(factory) or f"factory {bare}",
                      factory=factory, source=f"spec {spec}")


def _plugin_entry(ep: EntryPoint) -> ModelEntry:
    dist = getattr(getattr(ep, "dist", None), "name", None) or "unknown distribution"

    def factory() -> Any:
        try:
            fn = ep.load()
        except Exception as err:  # noqa: BLE001 - a broken plug-in must not break the server
            raise ValueError(f"plug-in {ep.name!r} ({ep.value} from {dist}) failed to load: "
                             f"{type(err).__name__}: {err}") from err
        if not callable(fn):
            raise ValueError(f"plug-in {ep.name!r} ({ep.value}) is a {type(fn).__name__}, not a callable factory")
        return fn()

    return ModelEntry(name=ep.name, description=f"plug-in {ep.value} ({dist})", factory=factory,
                      source=f"plugin {dist}")


def discover_plugins(group: str = PLUGIN_GROUP) -> dict[str, ModelEntry]:
    """Entries of the installed packages' entry points in ``group`` (nothing is imported yet)."""
    entries: dict[str, ModelEntry] = {}
    for ep in sorted(entry_points(group=group), key=lambda e: e.name):
        entry = _plugin_entry(ep)
        _add(entries, entry)
    return entries


def sample_entries() -> dict[str, ModelEntry]:
    """Entries of the built-in sample models (``Explorer.from_sample``)."""
    from prunescope.sample_models import get_sample_model, list_sample_models

    def make(name: str) -> Callable[[], "Explorer"]:
        def factory() -> "Explorer":
            from prunescope.explorer.engine import Explorer

            return Explorer.from_sample(name)
        return factory

    return {name: ModelEntry(name, get_sample_model(name).description, make(name), "sample")
            for name in list_sample_models()}


def _add(entries: dict[str, ModelEntry], entry: ModelEntry) -> None:
    if entry.name in entries:
        other = entries[entry.name]
        raise ValueError(f"two models are named {entry.name!r}: from {other.source} and from {entry.source}; "
                         "names must be unique (give a --model spec another name with NAME=module:factory)")
    entries[entry.name] = entry


def model_entries(extra_specs: Iterable[str] = (), *, plugins: bool = True,
                  group: str = PLUGIN_GROUP) -> dict[str, ModelEntry]:
    """Samples, then plug-ins (if ``plugins``), then ``extra_specs``, keyed by their unique names."""
    entries = sample_entries()
    if plugins:
        for entry in discover_plugins(group).values():
            _add(entries, entry)
    for spec in extra_specs:
        _add(entries, spec_entry(spec))
    return entries
