"""JIT warm-up compiles (or cache-loads) every CPU kernel, in the background if asked."""

from __future__ import annotations

import subprocess
import sys
from concurrent.futures import Future

from prunescope.kernels import is_warm, warmup

FRESH_PROCESS = """
from prunescope.kernels import is_warm, warmup
before = is_warm()
future = warmup(background=True)
future.result(timeout=600)
print(before, future.done(), is_warm())
"""


def test_background_warmup_returns_a_future_and_warms():
    future = warmup(background=True)
    assert isinstance(future, Future)
    assert future.result(timeout=600) is None
    assert is_warm()


def test_foreground_warmup_is_done_on_return():
    future = warmup(background=False)
    assert future.done() and future.exception() is None


def test_fresh_process_starts_cold_and_ends_warm():
    done = subprocess.run([sys.executable, "-c", FRESH_PROCESS], capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["False", "True", "True"]
