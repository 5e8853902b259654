"""``prunescope serve``: the Panel app on your own models, through the same path as ``panel serve explorer``.

Mechanism: ``prunescope serve --model SPEC ...`` runs Panel's own ``serve`` command in-process on
the ``explorer/`` directory app (so ``app_hooks.py`` warms the server up exactly as for
``panel serve explorer``) and hands the app options after ``--args``:

    prunescope serve --model my_pkg.models:make_explorer --port 5006
    == panel serve <prunescope>/explorer --port 5006 --address 127.0.0.1 ... --args --model my_pkg.models:make_explorer

Bokeh runs ``explorer/main.py`` once per session with ``sys.argv = ['main.py', *args]``; main.py
reads them with :func:`parse_app_args` and builds the app on ``config.entries()`` (samples,
plug-ins and the specs). So ``panel serve explorer --args --model SPEC`` works the same way.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from prunescope.explorer.models import ModelEntry, model_entries

DEFAULT_PORT = 5006
DEFAULT_ADDRESS = "127.0.0.1"
DEFAULT_MAX_UPLOAD_MIB = 64

_MODEL_HELP = ("a model factory as module.path:function, path/to/file.py:function, or NAME=... to name its "
               "entry in the model picker (default name: the spec); the function returns an Explorer or a "
               "(model, data) pair; repeat for several models")
_PLUGINS_HELP = "do not list models registered by installed packages (entry points 'prunescope.models')"
_UPLOAD_HELP = f"largest weight upload accepted, in MiB (default {DEFAULT_MAX_UPLOAD_MIB})"


@dataclass(frozen=True)
class AppConfig:
    """What the served app was asked for: extra model specs, plug-ins on/off, the upload limit."""

    model_specs: tuple[str, ...] = ()
    plugins: bool = True
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_MIB * 2**20

    def entries(self) -> dict[str, ModelEntry]:
        """The model entries of this configuration (samples + plug-ins + specs), unique names."""
        return model_entries(self.model_specs, plugins=self.plugins)


def _positive_mib(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number of MiB, got {text!r}") from None
    if not 1 <= value <= 4096:
        raise argparse.ArgumentTypeError(f"must lie in [1, 4096] MiB, got {value}")
    return value


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer port, got {text!r}") from None
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must lie in [1, 65535], got {value}")
    return value


def _add_app_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", action="append", default=[], metavar="SPEC", help=_MODEL_HELP)
    parser.add_argument("--no-plugins", action="store_true", help=_PLUGINS_HELP)
    parser.add_argument("--max-upload-mib", type=_positive_mib, default=DEFAULT_MAX_UPLOAD_MIB,
                        metavar="MIB", help=_UPLOAD_HELP)


def app_args_parser() -> argparse.ArgumentParser:
    """The parser of the app's own options (what follows ``--args`` of ``panel serve explorer``)."""
    parser = argparse.ArgumentParser(prog="panel serve explorer --args", add_help=False,
                                     description="Options of the Prunescope app.")
    _add_app_options(parser)
    return parser


def parse_app_args(argv: Sequence[str]) -> AppConfig:
    """An :class:`AppConfig` from main.py's ``sys.argv[1:]``; bad options raise ``ValueError`` saying which."""
    parser = app_args_parser()
    try:
        ns, unknown = parser.parse_known_args(list(argv))
    except SystemExit:
        raise ValueError(f"bad app options {list(argv)}; allowed: {parser.format_usage().strip()}") from None
    if unknown:
        raise ValueError(f"unknown app options {unknown}; allowed: --model SPEC, --no-plugins, --max-upload-mib MIB")
    return AppConfig(model_specs=tuple(ns.model), plugins=not ns.no_plugins,
                     max_upload_bytes=ns.max_upload_mib * 2**20)


def add_serve_parser(subparsers) -> argparse.ArgumentParser:
    """Add ``serve`` to the ``prunescope`` command's subparsers; its ``func`` default is :func:`serve_main`."""
    parser = subparsers.add_parser(
        "serve", help="serve the explorer app in a browser (samples, plug-ins and your --model factories)",
        description="Serve the Prunescope app with Panel. Models: the built-in samples, models of installed "
                    "plug-in packages (entry points 'prunescope.models') and each --model factory. Same as "
                    "`panel serve explorer --args --model SPEC ...`.",
        epilog="example: prunescope serve --model my_pkg.models:make_explorer --model mine=./models.py:build",
    )
    _add_app_options(parser)
    parser.add_argument("--port", type=_port, default=DEFAULT_PORT, help=f"port to listen on (default {DEFAULT_PORT})")
    parser.add_argument("--address", default=DEFAULT_ADDRESS,
                        help=f"address to listen on (default {DEFAULT_ADDRESS}: this machine only; 0.0.0.0 for all)")
    parser.add_argument("--show", action="store_true", help="open the app in a browser tab")
    parser.add_argument("--allow-websocket-origin", action="append", default=[], metavar="HOST[:PORT]",
                        help="extra host allowed to connect (needed when browsing by another name than the address)")
    parser.set_defaults(func=serve_main)
    return parser


def app_directory() -> Path:
    """The ``explorer/`` directory app (``main.py`` + ``app_hooks.py``) of the installed package."""
    import prunescope.explorer

    return Path(prunescope.explorer.__file__).resolve().parent


def panel_serve_argv(args: argparse.Namespace) -> list[str]:
    """The ``panel serve`` arguments for parsed ``prunescope serve`` options."""
    origins = list(args.allow_websocket_origin) or [f"localhost:{args.port}", f"127.0.0.1:{args.port}"]
    if args.address not in ("localhost", "127.0.0.1", "0.0.0.0", "::") and not args.allow_websocket_origin:
        origins.append(f"{args.address}:{args.port}")
    # Uploads travel base64-encoded over the websocket: room for the largest one plus the rest.
    ws_bytes = int(args.max_upload_mib * 2**20 * 4 / 3) + 16 * 2**20
    argv = [str(app_directory()), "--port", str(args.port), "--address", args.address,
            "--websocket-max-message-size", str(ws_bytes)]
    for origin in origins:
        argv += ["--allow-websocket-origin", origin]
    if args.show:
        argv.append("--show")
    app_args = [f"--model={spec}" for spec in args.model]
    if args.no_plugins:
        app_args.append("--no-plugins")
    app_args.append(f"--max-upload-mib={args.max_upload_mib}")
    return argv + ["--args", *app_args]


def panel_serve_parser() -> argparse.ArgumentParser:
    """Panel's own ``serve`` parser (what ``panel serve`` parses its command line with)."""
    from panel.command.serve import Serve

    parser = argparse.ArgumentParser(prog="panel serve")
    command = Serve(parser=parser)
    parser.set_defaults(invoke=command.invoke)
    return parser


def serve_main(args: argparse.Namespace) -> int:
    """Check the models (a bad ``--model`` fails here, before the server starts), then run ``panel serve``."""
    try:
        entries = model_entries(args.model, plugins=not args.no_plugins)
    except ValueError as err:
        print(f"prunescope serve: {err}", file=sys.stderr)
        return 2
    print(f"prunescope serve: models {', '.join(entries)} on http://{args.address}:{args.port}/", file=sys.stderr)
    parsed = panel_serve_parser().parse_args(panel_serve_argv(args))
    result = parsed.invoke(parsed)
    return 1 if result is False else 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m prunescope.explorer.serve [options]``: the ``serve`` command on its own."""
    parser = argparse.ArgumentParser(prog="prunescope")
    add_serve_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["serve", *(sys.argv[1:] if argv is None else argv)])
    return args.func(args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
