"""On Slurm: `cluster up` / `down` on a second, private cluster, so the shared one keeps running.

Each test uses its own state directory and ports; every daemon here is real, and "stopped" is checked in /proc.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.support import HPCGW
from devcluster import ClusterError, ClusterSpec, cluster_down, cluster_status, cluster_up
from devcluster.cluster import daemons

pytestmark = pytest.mark.slurm


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state not in ("Z", "X")


def _pids(spec: ClusterSpec) -> dict[str, int | None]:
    return {d.name: d.pid() for d in daemons(spec)}


@pytest.fixture
def state_root() -> Iterator[Path]:
    """munged wants every directory above its socket traversable by all, which pytest's tmp_path is not."""
    root = Path(tempfile.mkdtemp(prefix="hpcgw-lc-", dir="/tmp"))
    root.chmod(0o755)
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def private_spec(state_root: Path) -> Iterator[ClusterSpec]:
    spec = ClusterSpec(state_dir=state_root / "cluster", port_base=18800, cluster_name="hpcgwlife")
    yield spec
    cluster_down(spec.state_dir)


def test_up_is_idempotent_and_restarts_only_dead_daemons(private_spec: ClusterSpec) -> None:
    assert cluster_up(private_spec).healthy
    first = _pids(private_spec)
    assert all(first.values())
    assert cluster_up(private_spec).healthy
    assert _pids(private_spec) == first  # a healthy cluster is left alone

    victim = first["slurmd-n2"]
    assert victim is not None
    os.kill(victim, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while _alive(victim) and time.monotonic() < deadline:
        time.sleep(0.1)
    status = cluster_up(private_spec)
    assert status.healthy
    after = _pids(private_spec)
    assert after["slurmd-n2"] not in (None, victim)
    assert {k: v for k, v in after.items() if k != "slurmd-n2"} == {k: v for k, v in first.items() if k != "slurmd-n2"}


def test_down_stops_exactly_its_daemons_and_up_works_again(private_spec: ClusterSpec) -> None:
    cluster_up(private_spec)
    pids = _pids(private_spec)
    bystander = subprocess.Popen(["sleep", "60"])  # not ours: must survive `down`
    try:
        stopped = cluster_down(private_spec.state_dir)
        assert set(stopped) == set(pids)
        assert not any(_alive(pid) for pid in pids.values() if pid)
        assert _alive(bystander.pid)
        assert not list(private_spec.paths.run.glob("*.hpcgw.pid"))
        assert cluster_down(private_spec.state_dir) == []  # nothing running: safe

        status = cluster_up(private_spec)
        assert status.healthy
        env = {**os.environ, **private_spec.slurm_env}
        job = subprocess.run(
            ["srun", "-N2", "-p", "team-a", "hostname"], env=env, capture_output=True, text=True, timeout=60
        )
        assert job.returncode == 0 and job.stdout.count("\n") == 2, job.stderr
    finally:
        bystander.kill()
        bystander.wait()


def test_port_in_use_names_the_daemon_and_stops_what_it_started(private_spec: ClusterSpec) -> None:
    squatter = socket.socket()
    squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # the port may be in TIME_WAIT from a test before
    squatter.bind(("127.0.0.1", private_spec.ports.slurmctld))
    squatter.listen()
    try:
        private_spec.state_dir.mkdir(parents=True, exist_ok=True)
        private_spec.save()
        proc = subprocess.run(
            [HPCGW, "cluster", "up", "--state-dir", str(private_spec.state_dir)],
            capture_output=True,
            text=True,
            timeout=180,
        )
    finally:
        squatter.close()
    assert proc.returncode == 1
    assert f"slurmctld: port {private_spec.ports.slurmctld} on 127.0.0.1 is already in use" in proc.stderr
    assert "stopped what it had started: munged, mariadbd, slurmdbd" in proc.stderr
    assert not any(_pids(private_spec).values())
    assert not list(private_spec.paths.run.glob("*.hpcgw.pid"))


def test_daemon_that_dies_at_start_shows_its_log(private_spec: ClusterSpec) -> None:
    # A munge key that is too short: munged starts, then exits with an error of its own.
    private_spec.paths.munge.mkdir(parents=True)
    private_spec.paths.munge_key.write_text("abcd")
    with pytest.raises(ClusterError) as info:
        cluster_up(private_spec)
    message = str(info.value)
    assert message.startswith("munged: exited during start-up")
    assert "last lines of munged's log" in message and "Keyfile must be at least 32 bytes" in message
    assert "stopped what it had started: munged" in message
    status = cluster_status(private_spec.state_dir)
    assert not any(d.running for d in status.daemons)


def test_state_dir_below_a_private_directory_is_refused_before_anything_starts(tmp_path: Path) -> None:
    spec = ClusterSpec(state_dir=tmp_path / "c", port_base=23800, cluster_name="hpcgwpriv")
    tmp_path.chmod(0o700)
    with pytest.raises(ClusterError, match="not everyone may traverse"):
        cluster_up(spec)
    assert not (tmp_path / "c" / "run").exists()
