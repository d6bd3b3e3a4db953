"""On Slurm: the gateway, with its real worker, in front of the real local cluster: a job's life, cancel,
quoting, and quotas."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.gateway.conftest import auth
from tests.slurm.support import classifier_job, history, reached_at, sacct_row, sleeper_job, wait_for

pytestmark = pytest.mark.slurm


def test_a_job_goes_through_every_state_and_reports_metrics(gateway: TestClient, dataset_hash: str) -> None:
    job = gateway.post("/v1/jobs", json=classifier_job(dataset_hash), headers=auth("alice")).json()
    done = wait_for(gateway, job["id"], {"succeeded", "failed", "cancelled", "timeout"})
    assert done["state"] == "succeeded", done
    states = [e.state for e in history(gateway, job["id"])]
    assert states == ["accepted", "queued", "launching", "running", "succeeded"]
    assert done["exit_code"] == 0 and done["restarts"] == 0 and done["slurm_state"] == "COMPLETED"
    assert done["start_time"] and done["end_time"]
    assert sacct_row(done["slurm_job_id"]) == ["COMPLETED", "team-a", "2", "0:0"]
    epochs = gateway.get(f"/v1/jobs/{job['id']}/metrics", headers=auth("alice")).json()["epochs"]
    assert [e["epoch"] for e in epochs] == [1, 2, 3] and epochs[-1]["accuracy"] > epochs[0]["accuracy"]
    logs = gateway.get(f"/v1/jobs/{job['id']}/logs?rank=0&lines=50", headers=auth("alice")).json()
    assert any("epoch 3/3" in line for line in logs[0]["lines"])
    # rerun: the same recorded inputs give the same metrics (the trainer is deterministic)
    again = gateway.post(f"/v1/jobs/{job['id']}/rerun", headers=auth("alice")).json()
    assert wait_for(gateway, again["id"], {"succeeded", "failed"})["state"] == "succeeded"
    rerun_epochs = gateway.get(f"/v1/jobs/{again['id']}/metrics", headers=auth("alice")).json()["epochs"]

    def strip(ms: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [{k: v for k, v in m.items() if k != "samples_per_s"} for m in ms]

    assert strip(rerun_epochs) == strip(epochs)


def test_cancel_reaches_slurm(gateway: TestClient, dataset_hash: str) -> None:
    job = gateway.post("/v1/jobs", json=sleeper_job(dataset_hash), headers=auth("alice")).json()
    # The sleeper never initialises Horovod, so it stays `launching` (no start marker): Slurm runs it all the same.
    wait_for(gateway, job["id"], {"launching", "running"})
    assert gateway.post(f"/v1/jobs/{job['id']}/cancel", headers=auth("alice")).status_code == 200
    done = wait_for(gateway, job["id"], {"cancelled", "failed", "succeeded"})
    assert done["state"] == "cancelled"
    assert sacct_row(done["slurm_job_id"], "State")[0].startswith("CANCELLED")


def test_parameters_with_shell_syntax_reach_the_trainer_literally(
    gateway: TestClient, dataset_hash: str, tmp_path: Path
) -> None:
    out = tmp_path / "out"  # the job runs as alice: a folder she may write in
    out.mkdir(mode=0o1777)
    out.chmod(0o1777)
    values = {
        "A": f"$(touch {out}/pwned)",
        "B": f"`touch {out}/pwned`",
        "C": "x; touch pwned",
        "D": "a\n#SBATCH --nodes=99\nb",
        "REPORT_FILE": str(out / "env.json"),
        "SEED": "5",
    }
    body = sleeper_job(dataset_hash, algorithm="env-printer", parameters=values)
    job = gateway.post("/v1/jobs", json=body, headers=auth("alice")).json()
    done = wait_for(gateway, job["id"], {"succeeded", "failed"})
    assert done["state"] == "succeeded", done
    seen = json.loads((out / "env.json.0").read_text())
    assert seen == {
        "A": values["A"],
        "B": values["B"],
        "C": values["C"],
        "D": values["D"],
        "JOB_ID": job["id"],
        "SEED": "5",
    }
    assert not list(out.glob("pwned*"))  # alice could write there: a shell would have
    assert sacct_row(done["slurm_job_id"], "NNodes") == ["1"]


@pytest.mark.parametrize("gateway", [{"team-b": {"max_running_jobs": 1}}], indirect=True)
def test_over_quota_waits_in_accepted_then_runs(gateway: TestClient, dataset_hash: str) -> None:
    first = gateway.post(
        "/v1/jobs", json=classifier_job(dataset_hash, nodes=1, tasks_per_node=1), headers=auth("bob")
    ).json()
    second = gateway.post(
        "/v1/jobs", json=classifier_job(dataset_hash, nodes=1, tasks_per_node=1), headers=auth("bob")
    ).json()
    done_first = wait_for(gateway, first["id"], {"succeeded", "failed"}, user="bob")
    done_second = wait_for(gateway, second["id"], {"succeeded", "failed"}, user="bob")
    assert done_first["state"] == done_second["state"] == "succeeded", (done_first, done_second)
    # The evidence, recorded: the second job stayed in the gateway (accepted) until the first one had ended.
    assert [e.state for e in history(gateway, second["id"])][:2] == ["accepted", "queued"]
    assert reached_at(gateway, second["id"], "queued")[:19] >= done_first["end_time"].replace("Z", "")[:19]
    assert done_second["start_time"] >= done_first["end_time"]
    assert reached_at(gateway, second["id"], "queued") > reached_at(gateway, first["id"], "running")


@pytest.mark.parametrize("gateway", [{"team-a": {"max_running_jobs": 1}}], indirect=True)
def test_a_teams_backlog_does_not_delay_another_team(gateway: TestClient, dataset_hash: str) -> None:
    long_run = {"SEED": 7, "EPOCHS": 6, "LR": 0.3, "BATCH_SIZE": 32, "FC_SIZE": 64}
    # team-a's first job holds 30 s after its first epoch: team-b's job, sent once that one runs, has that long to
    # start beside it (it needs about a poll interval), however fast the trainer is on the day.
    held = {**long_run, "PAUSE_AFTER_EPOCH": 1, "PAUSE_S": 30}
    backlog = [
        gateway.post(
            "/v1/jobs",
            json=classifier_job(dataset_hash, nodes=1, tasks_per_node=2, parameters=held if i == 0 else long_run),
            headers=auth("alice"),
        ).json()
        for i in range(3)
    ]
    wait_for(gateway, backlog[0]["id"], {"launching", "running"})
    other = gateway.post(
        "/v1/jobs", json=classifier_job(dataset_hash, nodes=1, tasks_per_node=2), headers=auth("bob")
    ).json()
    done_b = wait_for(gateway, other["id"], {"succeeded", "failed"}, user="bob")
    done_a = [wait_for(gateway, job["id"], {"succeeded", "failed"}) for job in backlog]
    assert [d["state"] for d in (done_b, *done_a)] == ["succeeded"] * 4, (done_b, done_a)
    # team-a's backlog waited in the gateway, not in Slurm: each of its jobs was queued only after the one
    # before it had ended (the history records it, whenever the test happened to look).
    for earlier, later in zip(done_a, backlog[1:], strict=False):
        assert reached_at(gateway, later["id"], "queued")[:19] >= earlier["end_time"].replace("Z", "")[:19]
    # team-b's job ran beside team-a's first job, before team-a's queued ones started
    assert done_b["start_time"] < done_a[1]["start_time"] < done_a[2]["start_time"]
    assert done_b["start_time"] <= done_a[0]["end_time"]
