"""On Slurm: the launcher runs the example trainer as a 2-node x 2-task Horovod job, and fails and requeues well
(a DDP job too: tests/slurm/test_ddp.py has the rest of DDP's)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from devcluster.spec import ClusterSpec
from examples.intent_classifier import intent_classifier_spec
from launchers import JobFailedError, JobSpec, JobState, SpecError, submit
from launchers.spec import Framework
from tests.slurm.support import dataset, in_runtime, metrics  # noqa: F401  (dataset: the fixture)

pytestmark = pytest.mark.slurm
DATA = Path(__file__).parent.parent / "data"


def run_classifier(workdir: Path, dataset: Path, *, epochs: int, seed: int = 7, partition: str = "team-b") -> list[Any]:
    spec = intent_classifier_spec(
        workdir, dataset_dir=dataset, partition=partition, account=partition, epochs=epochs, seed=seed
    )
    job = submit(in_runtime(spec, workdir, dataset))
    assert job.wait(timeout_s=600) is JobState.SUCCEEDED, job.stderr(0).read_text()[-3000:]
    return [job, metrics(workdir / "metrics.jsonl")]


def test_classifier_trains_on_two_nodes(cluster: ClusterSpec, dataset: Path, tmp_path: Path) -> None:
    job, lines = run_classifier(tmp_path, dataset, epochs=4)
    row = job.info()
    assert (row.slurm_state, row.nodes, row.partition, row.exit_code) == ("COMPLETED", 2, "team-b", 0)
    reports = []
    for rank in range(4):
        for line in job.stdout(rank).read_text().splitlines():
            if line.startswith("HPCGW_RANK_REPORT "):
                reports.append(json.loads(line.split(" ", 1)[1]))
    assert sorted(r["rank"] for r in reports) == [0, 1, 2, 3]
    assert {r["size"] for r in reports} == {4}
    assert [m["epoch"] for m in lines] == [1, 2, 3, 4]
    accuracies = [m["accuracy"] for m in lines]
    assert accuracies[-1] > accuracies[0] and accuracies[-1] > 0.8  # 10 intents: chance is 0.1
    assert lines[-1]["loss"] < lines[0]["loss"]
    assert (tmp_path / "model" / "model.pt").stat().st_size > 0
    assert job.markers.started() is not None and job.restarts == 0
    assert job.result()["size"] == 4


def test_same_seed_gives_same_final_metrics(cluster: ClusterSpec, dataset: Path, tmp_path: Path) -> None:
    _, first = run_classifier(tmp_path / "a", dataset, epochs=2, seed=11)
    _, second = run_classifier(tmp_path / "b", dataset, epochs=2, seed=11)
    strip = [{k: v for k, v in m.items() if k != "samples_per_s"} for m in first]
    assert strip == [{k: v for k, v in m.items() if k != "samples_per_s"} for m in second]


@pytest.mark.parametrize(("framework", "script"), [("horovod", "fail_on_rank.py"), ("ddp", "ddp_allreduce.py")])
def test_failing_rank_fails_the_job_promptly_with_its_exit_code(
    cluster: ClusterSpec, tmp_path: Path, framework: Framework, script: str
) -> None:
    spec = JobSpec(
        partition="team-a",
        nodes=2,
        tasks_per_node=2,
        time_limit_min=30,
        framework=framework,
        command=(sys.executable, str(DATA / script)),
        env={"FAIL_RANK": "2", "FAIL_CODE": "3"},
        folder=tmp_path,
    )
    job = submit(spec)
    started = time.monotonic()
    assert job.wait(timeout_s=300) is JobState.FAILED
    assert time.monotonic() - started < 120  # the other ranks sleep 600 s: they were killed, not waited for
    row = job.info()
    assert row is not None
    assert (row.slurm_state, row.exit_code) == ("FAILED", 3)
    assert job.exit_code == 3
    assert "rank 2 failing on purpose" in job.stdout(2).read_text()
    with pytest.raises(JobFailedError, match="exit code 3"):
        job.result()


@pytest.mark.parametrize("framework", ["horovod", "ddp"])
def test_requeue_resumes_from_checkpoint(
    cluster: ClusterSpec, dataset: Path, tmp_path: Path, framework: Framework
) -> None:
    # The first run holds after epoch 2's checkpoint (PAUSE_AFTER_EPOCH), so the signal always finds it there: a
    # trainer free to run on can finish all six epochs before the signal arrives.
    spec = intent_classifier_spec(
        tmp_path,
        dataset_dir=dataset,
        partition="team-a",
        epochs=6,
        framework=framework,
        extra_env={"PAUSE_AFTER_EPOCH": "2", "PAUSE_S": "300"},
    )
    job = submit(spec)
    metrics_file = tmp_path / "metrics.jsonl"
    deadline = time.monotonic() + 300
    while not (metrics_file.exists() and len(metrics_file.read_text().splitlines()) >= 2):
        assert time.monotonic() < deadline and not job.state.is_terminal
        time.sleep(0.5)
    # What Slurm sends before a preemption or time-out (`--signal=USR2@…`): submitit checkpoints and requeues.
    subprocess.run(["scancel", "--signal=USR2", job.job_id], check=True, timeout=30)
    state = job.wait(timeout_s=600)
    assert state is JobState.SUCCEEDED, "\n".join(job.stderr(rank).read_text()[-1500:] for rank in range(4))
    lines = metrics(metrics_file)
    assert [m["epoch"] for m in lines] == [1, 2, 3, 4, 5, 6]
    assert job.restarts == 1
    assert lines[0]["restart"] == 0 and lines[-1]["restart"] == 1
    assert "resuming after epoch" in job.stdout(0).read_text()
    requeued = subprocess.run(
        ["sacct", "-D", "-X", "-n", "-P", "-o", "State", "-j", job.job_id], capture_output=True, text=True, check=True
    ).stdout.split()
    assert requeued == ["REQUEUED", "COMPLETED"]


def test_shell_syntax_reaches_the_trainer_literally(cluster: ClusterSpec, tmp_path: Path) -> None:
    values = {
        "P_SUBST": f"$(touch {tmp_path}/pwned1)",
        "P_BACKTICK": f"`touch {tmp_path}/pwned2`",
        "P_SEMI": f"x; touch {tmp_path}/pwned3",
        "P_SBATCH": "a\n#SBATCH --nodes=99\nb",
        "REPORT_FILE": str(tmp_path / "env.json"),
    }
    spec = JobSpec(
        partition="team-a",
        nodes=1,
        tasks_per_node=1,
        time_limit_min=5,
        command=(sys.executable, str(DATA / "print_env.py"), ",".join(values)),
        env=values,
        folder=tmp_path / "job",
    )
    job = submit(spec)
    assert job.wait(timeout_s=120) is JobState.SUCCEEDED
    assert json.loads((tmp_path / "env.json.0").read_text()) == values
    assert not list(tmp_path.glob("pwned*"))
    row = job.info()
    assert row is not None and row.nodes == 1


def test_unreachable_rendezvous_fails_within_the_timeout(
    cluster: ClusterSpec, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import socket

    # Hold the rendezvous port (bound, never listening): rank 0 cannot host, the others cannot connect.
    blocker = socket.socket()
    blocker.bind(("0.0.0.0", 0))
    monkeypatch.setenv("HPCGW_RENDEZVOUS_PORT", str(blocker.getsockname()[1]))
    try:
        spec = JobSpec(
            partition="team-a",
            nodes=2,
            tasks_per_node=2,
            time_limit_min=30,
            rendezvous_timeout_s=5,
            command=(sys.executable, "-m", "examples.smoke"),
            folder=tmp_path,
        )
        job = submit(spec)
        started = time.monotonic()
        assert job.wait(timeout_s=180) is JobState.FAILED
        assert time.monotonic() - started < 90
    finally:
        blocker.close()
    assert job.exit_code == 75
    logs = "".join(job.stderr(r).read_text() for r in range(4))
    assert "cannot host the rendezvous" in logs or "not reachable after 5 s" in logs


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"nodes": 3}, "nodes"),
        ({"tasks_per_node": 3}, "tasks_per_node"),
        ({"mem_gb": 64}, "mem_gb"),
        ({"partition": "nope"}, "partition"),
    ],
)
def test_beyond_the_partition_is_refused_before_slurm(
    cluster: ClusterSpec, tmp_path: Path, kwargs: dict[str, Any], field: str
) -> None:
    fields: dict[str, Any] = {"partition": "team-a", "command": ("true",), "folder": tmp_path / "job"}
    spec = JobSpec(**(fields | kwargs))
    with pytest.raises(SpecError) as info:
        submit(spec)
    assert info.value.field == field
    assert not (tmp_path / "job").exists()  # nothing was written, nothing submitted


def test_local_backend_runs_the_same_flow(tmp_path: Path) -> None:
    spec = JobSpec(
        partition="local", nodes=1, tasks_per_node=2, command=(sys.executable, "-m", "examples.smoke"), folder=tmp_path
    )
    job = submit(spec, backend="local")
    assert job.wait(timeout_s=120) is JobState.SUCCEEDED
    out = "".join(job.stdout(r).read_text() for r in range(2))
    assert out.count('"ok": true') == 2 and '"size": 2' in out
