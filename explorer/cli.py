"""The ``prunescope`` command: ``figure`` (paper figures, headless), and the ``serve`` and
``ticket`` commands of the areas that provide them.

Runs with no display and no browser: figures are drawn on matplotlib's Agg canvas. Bad input
(an unknown figure, model or option, an output path that cannot be written) prints a message on
stderr and exits with code 2.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

#: Commands other areas provide: (module, function adding the subparser, command name).
COMMAND_HOOKS = (
    ("prunescope.explorer.serve", "add_serve_parser", "serve"),
    ("prunescope.explorer.lottery.cli", "add_ticket_parser", "ticket"),
)
DEFAULT_MODEL = "digits_mlp"


class UsageError(ValueError):
    """Bad command-line input: reported on stderr with exit code 2."""


# ------------------------------------------------------------------------------ help texts
def figure_listing(indent: str = "  ") -> str:
    """Every registered figure with its description and options (for ``--list`` and ``--help``)."""
    from prunescope.explorer.figures import get_figure, list_figures

    lines = []
    for name in list_figures():
        spec = get_figure(name)
        lines.append(f"{indent}{name}: {spec.description}")
        for option in spec.options:
            default = "from the model" if option.default is None else _shown(option.default)
            lines.append(f"{indent}    {option.name}={_kind(option)} (default {default}): {option.doc}")
        if not spec.options:
            lines.append(f"{indent}    (no options)")
    return "\n".join(lines)


def _shown(value: Any) -> str:
    return ",".join(f"{v:g}" if isinstance(v, float) else str(v) for v in value) if isinstance(value, tuple) else str(value)


def _kind(option) -> str:
    if option.choices is not None:
        return "|".join(map(str, option.choices))
    return {"strs": "A,B,...", "floats": "X,Y,...", "bool": "true|false"}.get(option.kind, option.kind.upper())


# ------------------------------------------------------------------------------ the figure command
def add_figure_parser(subparsers) -> argparse.ArgumentParser:
    """Add ``figure`` to the ``prunescope`` command's subparsers."""
    parser = subparsers.add_parser(
        "figure", help="render a paper figure (PDF, SVG, PGF or PNG) and its data (CSV), headless",
        description="Render a figure of a model at a pruning setting, in a paper's column width, "
                    "and optionally write the data behind it as CSV.",
        epilog="figures and their options (--option NAME=VALUE):\n" + figure_listing() +
               "\n\nexamples:\n"
               "  prunescope figure --list\n"
               "  prunescope figure sensitivity --model digits_mlp --method magnitude lamp "
               "--sparsity 0 0.5 0.9 --out sens.pdf --csv sens.csv\n"
               "  prunescope figure mask --model digits_cnn --method lamp --sparsity 0.9 "
               "--option layer=conv2.weight --width double --out mask.svg",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("name", nargs="?", metavar="NAME", help="the figure (see --list)")
    parser.add_argument("--list", action="store_true", help="list the figures, their descriptions and options")
    parser.add_argument("--model", default=None,
                        help=f"built-in sample model (default {DEFAULT_MODEL}, or the recipe's model)")
    parser.add_argument("--checkpoint", default=None, help="checkpoint of the sample model (default trained)")
    parser.add_argument("--method", nargs="+", metavar="METHOD",
                        help="pruning method; for sweep figures the methods swept")
    parser.add_argument("--sparsity", nargs="+", metavar="S", type=_fraction,
                        help="sparsity (fraction removed); for sweep figures the sparsities swept")
    parser.add_argument("--recipe", metavar="FILE", help="apply a saved recipe (JSON/YAML) before --method/--sparsity")
    parser.add_argument("--width", choices=("single", "double"), default="single",
                        help="single column (3.25 in) or double column (6.75 in); default single")
    parser.add_argument("--height", type=float, default=None, metavar="INCHES", help="figure height (default per figure)")
    parser.add_argument("--option", "-o", action="append", default=[], metavar="NAME=VALUE",
                        help="a figure option (repeatable; lists comma-separated)")
    parser.add_argument("--out", metavar="PATH", help="output file: .pdf, .svg, .pgf or .png")
    parser.add_argument("--csv", metavar="PATH", help="also write the figure's data as CSV")
    parser.add_argument("--dpi", type=int, default=300, help="resolution of PNG output (default 300)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(func=lambda args: run_figure(args, parser))
    return parser


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"sparsity must be a number in [0, 1), got {text!r}") from None
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"sparsity must be a number in [0, 1), got {text!r}")
    return value


def check_writable(path: str | os.PathLike, what: str) -> Path:
    """``path`` if a file can be written there (tried, nothing left behind), else a UsageError."""
    path = Path(path)
    if path.is_dir():
        raise UsageError(f"{what} {str(path)!r} is a directory; give a file name")
    if not path.parent.is_dir():
        raise UsageError(f"cannot write {what} {str(path)!r}: directory {str(path.parent)!r} does not exist")
    existed = path.exists()
    try:
        with open(path, "ab"):
            pass
    except OSError as err:
        raise UsageError(f"cannot write {what} {str(path)!r}: {err.strerror or err}") from None
    if not existed:
        path.unlink()
    return path


def _figure_options(spec, args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(figure options, pruning setting)`` from ``--option``, ``--method`` and ``--sparsity``."""
    options: dict[str, Any] = {}
    for item in args.option:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise UsageError(f"--option takes NAME=VALUE, got {item!r}")
        option = spec.option(key)
        if option is None:
            spec.resolve({key: None})  # raises, naming the figure's options
        options[key] = option.parse(text)
    setting: dict[str, Any] = {}
    for flag, target, values in (("--method", "methods", args.method), ("--sparsity", "sparsities", args.sparsity)):
        if not values:
            continue
        if spec.option(target) is not None:
            if target in options:
                raise UsageError(f"give the {target} of figure {spec.name!r} once: {flag} or --option {target}=...")
            options[target] = values
        elif not spec.shows_setting:
            raise UsageError(f"figure {spec.name!r} does not depend on the pruning setting; {flag} is not used "
                             f"(its options: {', '.join(o.name for o in spec.options) or 'none'})")
        elif len(values) != 1:
            raise UsageError(f"figure {spec.name!r} shows one setting: give one {flag}, got {values}")
        else:
            setting[flag[2:]] = values[0]
    if "sparsity" in setting and "method" not in setting and not args.recipe:
        raise UsageError("--sparsity needs --method (or --recipe) to say how to prune")
    spec.resolve(options)  # checks every value before the model is loaded
    return options, setting


def _load_recipe(path: str):
    try:
        module = importlib.import_module("prunescope.explorer.recipes")
    except ModuleNotFoundError:
        raise UsageError("--recipe needs prunescope.explorer.recipes, which is not installed") from None
    load = getattr(module, "load_recipe", None) or getattr(module, "parse_recipe", None)
    if load is None:
        raise UsageError("prunescope.explorer.recipes has no load_recipe(path)")
    if not Path(path).is_file():
        raise UsageError(f"recipe file {path!r} does not exist")
    return load(path)


def _explorer(args: argparse.Namespace, setting: dict[str, Any]):
    """The explorer of ``--model`` (or the recipe's), at the recipe's and then the flags' setting."""
    from prunescope.explorer.engine import Explorer
    from prunescope.sample_models import list_sample_models

    recipe = _load_recipe(args.recipe) if args.recipe else None
    sample = getattr(recipe, "sample", None)
    model = args.model or (sample.name if sample is not None else DEFAULT_MODEL)
    if model not in list_sample_models():
        raise UsageError(f"unknown model {model!r}; built-in models: {', '.join(list_sample_models())}")
    checkpoint = args.checkpoint or (sample.checkpoint if sample is not None and model == sample.name else "trained")
    ex = Explorer.from_sample(model, checkpoint=checkpoint)
    if recipe is not None:
        ex.set_setting(recipe.setting)
    if "method" in setting:
        ex.prune(setting["method"], sparsity=setting.get("sparsity"))
    elif "sparsity" in setting:
        ex.prune(ex.setting.weights.method, sparsity=setting["sparsity"])
    return ex


def _progress_bar(name: str, quiet: bool) -> tuple[Callable[[int, int], None] | None, Callable[[], None]]:
    """A tqdm bar on stderr as a ``progress(done, total)`` callback, and its closer."""
    if quiet:
        return None, lambda: None
    from tqdm import tqdm

    bar = tqdm(desc=f"prunescope figure {name}", unit="step", file=sys.stderr, leave=False, dynamic_ncols=True)

    def progress(done: int, total: int) -> None:
        if bar.total != total:
            bar.total = total
        bar.n = done
        bar.refresh()

    return progress, bar.close


def run_figure(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """The ``figure`` command; bad input exits with code 2 through ``parser``."""
    from prunescope.explorer.figures import figure_data, format_of, get_figure, list_figures, render_data, save_data, save_figure
    from prunescope.explorer.figures.render import check_format_available

    if args.list:
        print(figure_listing(indent=""))
        return 0
    try:
        if not args.name:
            raise UsageError(f"give a figure NAME or --list; figures: {', '.join(list_figures())}")
        spec = get_figure(args.name)
        if not args.out:
            raise UsageError("--out PATH is required (.pdf, .svg, .pgf or .png)")
        check_format_available(format_of(args.out))
        options, setting = _figure_options(spec, args)
        out = check_writable(args.out, "figure")
        csv = check_writable(args.csv, "CSV file") if args.csv else None
        ex = _explorer(args, setting)
        progress, close = _progress_bar(spec.name, args.quiet or not spec.long)
        try:
            data = figure_data(spec.name, ex, progress=progress, **options)
        finally:
            close()
        save_figure(render_data(spec.name, data, args.width, args.height), out, dpi=args.dpi)
    except ValueError as err:  # UsageError and the engine's errors on bad values
        parser.error(str(err))
    except OSError as err:  # e.g. a sample model's checkpoint is missing: not bad input, but no traceback
        parser.exit(1, f"{parser.prog}: error: {err}\n")
    if csv is not None:
        save_data(data, csv)
    print(f"wrote {out}" + (f" and {csv}" if csv is not None else ""))
    return 0


# ------------------------------------------------------------------------------ the command
def build_parser() -> tuple[argparse.ArgumentParser, list[str]]:
    """The ``prunescope`` parser and notes on commands that are not available here."""
    parser = argparse.ArgumentParser(
        prog="prunescope",
        description="Prunescope: an interactive explorer for neural-network pruning. "
                    "`prunescope COMMAND --help` explains each command.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    add_figure_parser(subparsers)
    notes = []
    for module_name, function, command in COMMAND_HOOKS:
        try:
            getattr(importlib.import_module(module_name), function)(subparsers)
        except (ImportError, AttributeError) as err:
            notes.append(f"  {command}: not available in this installation ({module_name}.{function}: {err})")
    if notes:
        parser.epilog = "commands not available:\n" + "\n".join(notes)
    return parser, notes


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``prunescope`` console script; returns the exit code."""
    os.environ.setdefault("MPLBACKEND", "Agg")  # nothing here needs a display
    parser, _notes = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help(sys.stderr)
        return 2
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
