"""One import root: the folders are subpackages of prunescope, never bare top-level packages."""

from __future__ import annotations

import subprocess
import sys


def test_only_the_prunescope_import_root_is_installed(tmp_path):
    code = (
        "import importlib.util as u, prunescope.kernels, prunescope.widgets, prunescope.explorer, prunescope.sample_models\n"
        "print([n for n in ('kernels', 'widgets', 'explorer', 'sample_models') if u.find_spec(n) is not None])"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_explorer_package_import_is_light(tmp_path):
    code = "import sys, prunescope.explorer; print('torch' in sys.modules, 'panel' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False False"
