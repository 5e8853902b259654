"""A search on a 2-worker LocalCluster equals the serial search tensor for tensor."""

from __future__ import annotations

import pytest
import torch

from prunescope.explorer.lottery.imp import find_ticket


@pytest.mark.slow
def test_local_cluster_equals_serial(mlp_inputs):
    settings = {**mlp_inputs, "epochs": 1, "rounds": 1, "prune_per_round": 0.3, "seeds": [0, 1],
                "variant": "swamp", "particles": 2}
    serial = find_ticket(**settings)
    on_dask = find_ticket(**settings, client="local")
    assert sorted(serial.levels) == sorted(on_dask.levels) and sorted(serial.controls) == sorted(on_dask.controls)
    for key, rec in serial.levels.items():
        other = on_dask.levels[key]
        assert all(torch.equal(rec.masks[n], other.masks[n]) for n in rec.masks), key
        assert all(torch.equal(rec.state[n], other.state[n]) for n in rec.state), key
    for key, m in serial.controls.items():
        assert m["accuracy"] == on_dask.controls[key]["accuracy"] and m["loss"] == on_dask.controls[key]["loss"]


@pytest.mark.slow
def test_workers_start_single_threaded():
    from prunescope.explorer.lottery.distributed import local_client

    def probe():
        import os

        import torch as t

        return t.get_num_threads(), os.environ.get("NUMBA_THREADING_LAYER"), os.environ.get("NUMBA_NUM_THREADS")

    with local_client() as client:
        results = client.run(probe)
    assert len(results) == 2 and all(r == (1, "workqueue", "1") for r in results.values())


def test_bad_client(mlp_inputs):
    with pytest.raises(ValueError, match="client must be None, 'local'"):
        find_ticket(**mlp_inputs, epochs=1, rounds=1, prune_per_round=0.2, client=42)
