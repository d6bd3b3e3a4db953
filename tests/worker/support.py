"""What the worker's tests share beyond conftest.py: a crash between sbatch and the database update, and the
restart after it."""

from __future__ import annotations

import pytest

from gateway.worker.loop import Worker
from gateway.worker.reconcile import reconcile
from tests.worker.conftest import Gateway
from tests.worker.fakeslurm import Crash, FakeSlurm


def crash_in_sbatch(gw: Gateway, fake: FakeSlurm) -> str:
    """One cycle whose sbatch reaches Slurm, then the gateway dies; returns the Slurm id it never recorded."""
    fake.crash_after_sbatch = True
    with pytest.raises(Crash) as crash:
        gw.cycle()
    fake.crash_after_sbatch = False
    return str(crash.value)


def restart(gw: Gateway) -> Gateway:
    """A new worker on the same database, as a restarted gateway has (``Worker.start`` runs reconcile)."""
    gw.worker = Worker(gw.engine, gw.config)
    gw.worker._partitions_at = float("-inf")
    reconcile(gw.engine)
    return gw
