"""Shared fixtures. Tests marked `slurm` run on the real local cluster that `hpcgw cluster up` brings up."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from devcluster import ClusterSpec, cluster_up


@pytest.fixture(scope="session")
def cluster() -> Iterator[ClusterSpec]:
    """The project's default development cluster, brought up (idempotently) once per session."""
    spec = ClusterSpec.load() or ClusterSpec()
    status = cluster_up(spec)
    assert status.healthy, status.as_dict()
    previous = os.environ.get("SLURM_CONF")
    os.environ.update(spec.slurm_env)
    yield spec
    if previous is None:
        os.environ.pop("SLURM_CONF", None)
    else:
        os.environ["SLURM_CONF"] = previous
