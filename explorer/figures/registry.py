"""The figure registry: each figure is a name, a description, declared options, a DATA function
(explorer + options -> tidy DataFrame) and a DRAW function (DataFrame -> matplotlib figure).

The interactive Bokeh views and the paper renderer both draw the table the data function returns,
so an exported figure can never show other numbers than the app.

Adding a figure (any area: tokens, geometry, lottery, ...)::

    from prunescope.explorer.figures.registry import Option, register_figure

    def draw_budgets(data: pd.DataFrame, fig: matplotlib.figure.Figure) -> None:
        ax = fig.add_subplot()           # import matplotlib inside the function, never at module level
        ...

    @register_figure("token_budget", "Kept tokens per block (Rao et al. 2021)",
                     draw=draw_budgets, height=2.2,
                     options=(Option("block", "int", 0, "Transformer block shown", bounds=(0, None)),))
    def token_budget_data(explorer, *, block: int) -> pd.DataFrame:
        ...                              # one row per plotted value, columns named with units

Put it in ``<area>/figures.py`` (``prunescope.explorer.tokens.figures``, ``...geometry.figures``,
``...lottery.figures``): the registry imports those modules on first use (see
:data:`FIGURE_MODULES`), skipping the ones that do not exist yet. A data function declared with
``long=True`` receives ``progress(done, total)``; the CLI shows it as a progress bar.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Mapping

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

#: Modules that register figures, imported on first lookup (missing ones are skipped).
FIGURE_MODULES = (
    "prunescope.explorer.figures.data",
    "prunescope.explorer.tokens.figures",
    "prunescope.explorer.geometry.figures",
    "prunescope.explorer.lottery.figures",
)
_KINDS = ("str", "int", "float", "bool", "strs", "floats")


@dataclass(frozen=True)
class Option:
    """One declared option of a figure: ``kind`` is one of str, int, float, bool, strs (a list of
    names) or floats (a list of numbers); ``choices`` and ``bounds`` (inclusive, None = open)
    restrict its values. A default of ``None`` means "decided from the explorer" (e.g. a layer)."""

    name: str
    kind: str
    default: Any
    doc: str
    choices: tuple[Any, ...] | None = None
    bounds: tuple[float | None, float | None] | None = None

    def __post_init__(self) -> None:
        if self.kind not in _KINDS:
            raise ValueError(f"option kind must be one of {_KINDS}, got {self.kind!r}")

    def parse(self, text: str) -> Any:
        """The option's value from command-line text (lists are comma-separated)."""
        if self.kind in ("strs", "floats"):
            return self.check([t.strip() for t in text.split(",") if t.strip()])
        if self.kind == "bool":
            low = text.strip().lower()
            if low not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError(f"option {self.name!r} takes true or false, got {text!r}")
            return low in ("true", "1", "yes")
        return self.check(text)

    def check(self, value: Any) -> Any:
        """``value`` converted to the option's kind; a ValueError names what is allowed."""
        try:
            if self.kind in ("strs", "floats"):
                items = [value] if isinstance(value, (str, int, float)) else list(value)
                if not items:
                    raise ValueError("empty list")
                out = tuple(self._one(v, str if self.kind == "strs" else float) for v in items)
            elif self.kind == "bool":
                if not isinstance(value, bool):
                    raise ValueError("not a bool")
                out = value
            else:
                out = self._one(value, {"str": str, "int": int, "float": float}[self.kind])
        except (TypeError, ValueError) as err:
            raise ValueError(f"option {self.name!r} must be {self.describe()}, got {value!r} ({err})") from None
        return out

    def _one(self, value: Any, kind: type) -> Any:
        if kind is int and (isinstance(value, bool) or (isinstance(value, float) and not value.is_integer())):
            raise ValueError("not an integer")
        out = kind(value)
        if self.choices is not None and out not in self.choices:
            raise ValueError(f"allowed: {', '.join(map(str, self.choices))}")
        if self.bounds is not None:
            lo, hi = self.bounds
            if (lo is not None and out < lo) or (hi is not None and out > hi):
                raise ValueError("out of range")
        return out

    def describe(self) -> str:
        """What values the option takes, in words."""
        what = {"str": "a string", "int": "an integer", "float": "a number", "bool": "true or false",
                "strs": "a comma-separated list of names", "floats": "a comma-separated list of numbers"}[self.kind]
        if self.choices is not None:
            what += f" from {{{', '.join(map(str, self.choices))}}}"
        if self.bounds is not None:
            lo, hi = self.bounds
            what += f" in [{'-inf' if lo is None else lo}, {'inf' if hi is None else hi}]"
        return what


@dataclass(frozen=True)
class FigureSpec:
    """A registered figure. ``height`` is in inches per width (``{'single': h, 'double': h}``), or
    a function ``(data, width) -> inches`` for figures that grow with their data (one bar per
    layer); ``shows_setting`` says whether the figure depends on the explorer's current pruning
    setting (a sweep does not)."""

    name: str
    description: str
    data: Callable[..., "pd.DataFrame"]
    draw: Callable[["pd.DataFrame", Any], None]
    options: tuple[Option, ...] = ()
    height: Mapping[str, float] | Callable[["pd.DataFrame", str], float] = field(
        default_factory=lambda: {"single": 2.3, "double": 2.6})
    long: bool = False
    shows_setting: bool = True

    def height_for(self, data: "pd.DataFrame", width: str) -> float:
        """The figure's height in inches for ``data`` at ``width``."""
        if callable(self.height):
            return float(self.height(data, width))
        return float(self.height.get(width, 2.4))

    def option(self, name: str) -> Option | None:
        """The declared option ``name``, or None."""
        return next((o for o in self.options if o.name == name), None)

    def resolve(self, options: Mapping[str, Any]) -> dict[str, Any]:
        """All options, defaults filled in and values checked; unknown names raise a ValueError."""
        allowed = [o.name for o in self.options]
        bad = sorted(set(options) - set(allowed))
        if bad:
            raise ValueError(
                f"figure {self.name!r} takes no option(s) {bad}; "
                f"its options: {', '.join(allowed) if allowed else '(none)'}"
            )
        return {o.name: (o.check(options[o.name]) if options.get(o.name) is not None else o.default)
                for o in self.options}


FIGURES: dict[str, FigureSpec] = {}
_loaded = False


def register_figure(name: str, description: str, *, draw: Callable[["pd.DataFrame", Any], None],
                    options: tuple[Option, ...] = (),
                    height: Mapping[str, float] | Callable[["pd.DataFrame", str], float] | None = None,
                    long: bool = False, shows_setting: bool = True) -> Callable:
    """Decorator registering a data function as figure ``name`` (see the module docstring)."""
    if not name.isidentifier():
        raise ValueError(f"figure names are identifiers (letters, digits, _), got {name!r}")

    def decorate(data: Callable[..., "pd.DataFrame"]) -> Callable[..., "pd.DataFrame"]:
        FIGURES[name] = FigureSpec(
            name=name, description=description, data=data, draw=draw, options=tuple(options),
            height=height if callable(height) else dict(height) if height else {"single": 2.3, "double": 2.6},
            long=long, shows_setting=shows_setting,
        )
        return data

    return decorate


def _load() -> None:
    global _loaded
    if _loaded:
        return
    for module in FIGURE_MODULES:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as err:
            if err.name is None or not module.startswith(err.name):
                raise  # the module exists but one of its own imports is missing: a real error
    _loaded = True


def list_figures() -> list[str]:
    """Names of the registered figures."""
    _load()
    return list(FIGURES)


def get_figure(name: str) -> FigureSpec:
    """The figure registered as ``name``; an unknown name raises a ValueError listing the known ones."""
    _load()
    if name not in FIGURES:
        raise ValueError(f"unknown figure {name!r}; known figures: {', '.join(FIGURES)}")
    return FIGURES[name]
