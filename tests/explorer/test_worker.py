"""The per-session worker: latest request wins, stale results are dropped, errors are reported."""

from __future__ import annotations

import threading

from prunescope.explorer.worker import LatestWorker


def test_latest_request_wins_and_stale_results_are_dropped():
    worker = LatestWorker()
    release = threading.Event()
    started = threading.Event()
    delivered, ran = [], []

    def slow():
        started.set()
        release.wait(5)
        ran.append("slow")
        return "slow"

    worker.submit(slow, delivered.append)
    assert started.wait(5)
    for i in range(5):  # queued while slow runs: only the last survives
        worker.submit(lambda i=i: ran.append(i) or i, delivered.append)
    release.set()
    assert worker.wait_idle(5)
    assert ran == ["slow", 4]
    assert delivered == [4]  # "slow" finished after newer requests: dropped
    worker.close()


def test_errors_go_to_on_error_and_the_worker_survives():
    worker = LatestWorker()
    errors, results = [], []
    worker.submit(lambda: 1 / 0, results.append, errors.append)
    assert worker.wait_idle(5)
    worker.submit(lambda: 42, results.append, errors.append)
    assert worker.wait_idle(5)
    assert isinstance(errors[0], ZeroDivisionError) and results == [42]
    worker.close()


def test_the_thread_starts_with_the_first_job_and_stops_on_close():
    before = {t.name for t in threading.enumerate()}
    worker = LatestWorker(name="prunescope-test-lazy")
    assert "prunescope-test-lazy" not in {t.name for t in threading.enumerate()} - before
    assert worker.idle and worker.wait_idle(0.1)  # an unused worker is idle
    done = []
    worker.submit(lambda: 7, done.append)
    assert worker.wait_idle(5) and done == [7]
    assert any(t.name == "prunescope-test-lazy" for t in threading.enumerate())
    worker.close()
    worker._thread.join(5)
    assert not worker._thread.is_alive()
    LatestWorker(name="prunescope-test-unused").close()  # closing one never started is fine
