"""On Slurm: the default development cluster answers like a real one (it is one)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from bench.support import HPCGW
from devcluster import ClusterSpec, cluster_status
from examples.smoke import allreduce_reports, submit_allreduce
from launchers.runtime.markers import JobMarkers
from launchers.slurm.commands import sacct, wait_until_done
from launchers.states import JobState

pytestmark = pytest.mark.slurm


def test_at_least_two_idle_nodes_and_both_team_partitions(cluster: ClusterSpec) -> None:
    status = cluster_status(cluster.state_dir)
    idle = [n.name for n in status.nodes if n.state == "idle"]
    assert len(idle) >= 2, status.as_dict()
    assert {"team-a", "team-b"} <= {p.name for p in status.partitions}
    assert all(p.available == "up" for p in status.partitions)
    assert status.accounting_ok, status.accounting_detail


def test_cli_status_reports_healthy_cluster(cluster: ClusterSpec) -> None:
    proc = subprocess.run(
        [HPCGW, "cluster", "status", "--json", "--state-dir", str(cluster.state_dir)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["healthy"] is True
    assert report["accounting"]["ok"] is True
    assert {d["name"] for d in report["daemons"]} >= {
        "munged",
        "mariadbd",
        "slurmdbd",
        "slurmctld",
        "slurmd-n1",
        "slurmd-n2",
    }


def _sbatch_wrap(*args: str) -> str:
    out = subprocess.run(["sbatch", "--parsable", *args], capture_output=True, text=True, check=True, timeout=60)
    return out.stdout.strip().split(";")[0]


def test_sacct_reports_final_state_exit_code_and_partition(cluster: ClusterSpec, tmp_path: Path) -> None:
    ok = _sbatch_wrap("-N2", "-n2", "-p", "team-b", "-o", str(tmp_path / "ok.out"), "--wrap", "srun hostname")
    bad = _sbatch_wrap("-N1", "-p", "team-a", "-o", str(tmp_path / "bad.out"), "--wrap", "exit 3")
    done, failed = wait_until_done(ok, timeout_s=120), wait_until_done(bad, timeout_s=120)
    assert (done.slurm_state, done.exit_code, done.partition, done.nodes) == ("COMPLETED", 0, "team-b", 2)
    assert done.state is JobState.SUCCEEDED
    assert (failed.slurm_state, failed.exit_code, failed.partition) == ("FAILED", 3, "team-a")
    assert failed.state is JobState.FAILED
    assert (tmp_path / "ok.out").read_text().count("\n") == 2  # srun hostname ran once on each node


def test_horovod_allreduce_two_nodes_two_tasks(cluster: ClusterSpec, tmp_path: Path) -> None:
    job_id, output = submit_allreduce(tmp_path, partition="team-a")
    final = wait_until_done(job_id, timeout_s=180)
    reports = allreduce_reports(output)
    assert final.slurm_state == "COMPLETED", output.read_text()
    assert final.nodes == 2 and final.partition == "team-a"
    assert [r["rank"] for r in reports] == [0, 1, 2, 3]
    assert all(r["size"] == 4 for r in reports)
    assert {r["sum"] for r in reports} == {10.0}  # 1 + 2 + 3 + 4, seen identically by every rank
    assert {r["cross_rank"] for r in reports} == {0, 1}
    assert {r["node"] for r in reports} == {"n1", "n2"}
    started = JobMarkers(tmp_path, job_id).started()  # the bootstrap saw every rank join the rendezvous
    assert started is not None and started["size"] == 4
    steps = [r for r in sacct([job_id], all_steps=True) if r.job_id == f"{job_id}.0"]
    assert steps and steps[0].slurm_state == "COMPLETED" and steps[0].nodes == 2
