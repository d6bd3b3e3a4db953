"""Shared fixtures. Tests marked `slurm` run on the real local cluster that `hpcgw cluster up` brings up, and
each of them ends with the Slurm jobs it submitted cancelled, pass or fail, so one failure cannot cascade."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from devcluster import ClusterSpec, cluster_up
from devcluster import users as unix
from gateway.config import load_config
from gateway.site import accounts
from launchers.slurm.ids import master_id

EXAMPLE_CONFIG = Path(__file__).resolve().parents[1] / "config" / "example.toml"


def set_up_tenancy(spec: ClusterSpec) -> None:
    """What `make cluster-up` does after `hpcgw cluster up`: the example configuration's Unix users and groups
    (idempotent), and its teams' accounts, limits and users in this cluster's Slurm accounting."""
    settings = load_config(EXAMPLE_CONFIG)
    unix.ensure(unix.plan_from_config(settings))
    accounts.sync(settings.model_copy(update={"slurm_conf": spec.paths.slurm_conf}))  # this cluster's accounting


@pytest.fixture(scope="session")
def cluster() -> Iterator[ClusterSpec]:
    """The project's default development cluster, brought up (idempotently) once per session."""
    spec = ClusterSpec.load() or ClusterSpec()
    status = cluster_up(spec)
    assert status.healthy, status.as_dict()
    set_up_tenancy(spec)
    previous = os.environ.get("SLURM_CONF")
    os.environ.update(spec.slurm_env)
    yield spec
    if previous is None:
        os.environ.pop("SLURM_CONF", None)
    else:
        os.environ["SLURM_CONF"] = previous


def _queued(env: dict[str, str]) -> set[str]:
    """The jobs the default cluster holds that have not ended, one id per array."""
    out = subprocess.run(
        ["squeue", "-h", "-o", "%i"], capture_output=True, text=True, env={**os.environ, **env}, check=False
    )
    return {master_id(line.strip()) for line in out.stdout.split()} if out.returncode == 0 else set()


@pytest.fixture(autouse=True)
def _cancel_what_the_test_submitted(request: pytest.FixtureRequest) -> Iterator[None]:
    """Around every `slurm` test: whatever it left queued or running is cancelled, and the nodes are free
    before the next test starts."""
    spec = ClusterSpec.load() if request.node.get_closest_marker("slurm") else None
    if spec is None:
        yield
        return
    before = _queued(spec.slurm_env)
    yield
    leftover = sorted(_queued(spec.slurm_env) - before)
    if not leftover:
        return
    subprocess.run(["scancel", *leftover], env={**os.environ, **spec.slurm_env}, check=False)
    deadline = time.monotonic() + 60
    while _queued(spec.slurm_env) & set(leftover) and time.monotonic() < deadline:
        time.sleep(0.5)
