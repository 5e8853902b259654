"""``prunescope serve``: its help, its options, and the ``panel serve`` command line it runs."""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys

import pytest

from prunescope.explorer import serve
from prunescope.explorer.serve import (
    AppConfig,
    add_serve_parser,
    app_directory,
    panel_serve_argv,
    panel_serve_parser,
    parse_app_args,
    serve_main,
)


def prunescope_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="prunescope")
    add_serve_parser(parser.add_subparsers(dest="command", required=True))
    return parser


def test_help_explains_every_option(capsys):
    with pytest.raises(SystemExit) as exit_:
        prunescope_parser().parse_args(["serve", "--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    assert text.startswith("usage: prunescope serve")
    for option in ("--model SPEC", "--port PORT", "--address ADDRESS", "--show", "--no-plugins", "--max-upload-mib MIB"):
        assert option in text
    assert "module.path:function" in text and "(model, data)" in text and "prunescope.models" in text


def test_help_in_a_real_process():
    done = subprocess.run([sys.executable, "-m", "prunescope.explorer.serve", "--help"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "usage: prunescope serve" in done.stdout and "--model SPEC" in done.stdout


@pytest.mark.skipif(importlib.util.find_spec("prunescope.explorer.cli") is None, reason="the prunescope CLI is not there yet")
def test_console_script_serve_help():
    done = subprocess.run([sys.executable, "-c", "import sys; from prunescope.explorer.cli import main; sys.exit(main())",
                           "serve", "--help"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "--model SPEC" in done.stdout


def test_defaults_and_bad_values(capsys):
    args = prunescope_parser().parse_args(["serve"])
    assert (args.model, args.port, args.address, args.show, args.no_plugins) == ([], 5006, "127.0.0.1", False, False)
    assert args.func is serve_main
    for bad, message in ((["--port", "0"], "must lie in [1, 65535], got 0"), (["--port", "http"], "integer port"),
                         (["--max-upload-mib", "0"], "must lie in [1, 4096] MiB")):
        with pytest.raises(SystemExit):
            prunescope_parser().parse_args(["serve", *bad])
        assert message in capsys.readouterr().err


def test_panel_accepts_the_command_line_and_the_app_gets_the_models():
    args = prunescope_parser().parse_args(
        ["serve", "--model", "my_pkg.models:make_explorer", "--model", "mine=./m.py:build", "--port", "5123",
         "--show", "--no-plugins", "--max-upload-mib", "10"])
    parsed = panel_serve_parser().parse_args(panel_serve_argv(args))  # Panel's own parser
    assert parsed.files == [str(app_directory())] and (app_directory() / "main.py").is_file()
    assert (app_directory() / "app_hooks.py").is_file()
    assert parsed.port == 5123 and parsed.address == "127.0.0.1" and parsed.show
    assert set(parsed.allow_websocket_origin) == {"localhost:5123", "127.0.0.1:5123"}
    assert parsed.websocket_max_message_size >= 10 * 2**20 * 4 // 3  # a 10 MiB upload, base64-encoded, fits
    config = parse_app_args(parsed.args)  # what main.py sees as sys.argv[1:]
    assert config == AppConfig(model_specs=("my_pkg.models:make_explorer", "mine=./m.py:build"), plugins=False,
                               max_upload_bytes=10 * 2**20)


def test_parse_app_args_as_panel_serve_explorer_args():
    assert parse_app_args([]) == AppConfig()
    assert parse_app_args(["--model", "a.b:c", "--model=d=e.f:g"]).model_specs == ("a.b:c", "d=e.f:g")
    with pytest.raises(ValueError, match=r"unknown app options \['--colour', 'red'\]"):
        parse_app_args(["--colour", "red"])
    with pytest.raises(ValueError, match="bad app options"):
        parse_app_args(["--max-upload-mib", "lots"])


def test_bad_model_fails_before_the_server_starts(capsys, monkeypatch):
    def no_server():
        raise AssertionError("the server must not start")

    monkeypatch.setattr(serve, "panel_serve_parser", no_server)
    args = prunescope_parser().parse_args(["serve", "--model", "no_such_pkg_xyz:make", "--no-plugins"])
    assert serve_main(args) == 2
    assert "module 'no_such_pkg_xyz' not found" in capsys.readouterr().err


def test_serve_main_runs_panel_serve_with_that_command_line(monkeypatch):
    calls = []

    class FakeParser:
        def parse_args(self, argv):
            calls.append(argv)
            return argparse.Namespace(invoke=lambda ns: True)

    monkeypatch.setattr(serve, "panel_serve_parser", FakeParser)
    args = prunescope_parser().parse_args(["serve", "--no-plugins", "--port", "5200"])
    assert serve_main(args) == 0
    assert calls == [panel_serve_argv(args)]
