"""Issue 31, on Slurm: a state the gateway's table lacks marks that one job ``unknown``, with Slurm's own name for
it, and the job is polled again; every other team's jobs go on being tracked meanwhile.

Slurm's states here are all in the table, so the test takes one out (SUSPENDED) of the worker's table, in this
process, and ``scontrol suspend`` puts a real job in it."""

from __future__ import annotations

import subprocess
import time

import pytest
from fastapi.testclient import TestClient

from launchers.states import SLURM_STATE_MAP
from tests.gateway.conftest import auth
from tests.slurm.support import history, sleeper_job, wait_for

pytestmark = pytest.mark.slurm


def test_a_state_the_table_lacks_stops_no_other_teams_tracking(
    gateway: TestClient, dataset_hash: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delitem(SLURM_STATE_MAP, "SUSPENDED")
    alices = gateway.post("/v1/jobs", json=sleeper_job(dataset_hash), headers=auth("alice")).json()
    slurm_id = wait_for(gateway, alices["id"], {"launching", "running"})["slurm_job_id"]
    subprocess.run(["scontrol", "suspend", slurm_id], check=True, timeout=30, capture_output=True)
    try:
        shown = wait_for(gateway, alices["id"], {"unknown"})
        assert shown["slurm_state"] == "SUSPENDED", shown
        [event] = [e for e in history(gateway, alices["id"]) if e.state == "unknown"]
        assert event.slurm_state == "SUSPENDED" and "SUSPENDED" in (event.reason or ""), event
        # team-b's job, submitted and run to its end while alice's is unknown
        quick = sleeper_job(dataset_hash, algorithm="quick", name="meanwhile")
        bobs = gateway.post("/v1/jobs", json=quick, headers=auth("bob")).json()
        done = wait_for(gateway, bobs["id"], {"succeeded", "failed", "cancelled"}, user="bob")
        assert done["state"] == "succeeded", done
        ended = next(e.at for e in history(gateway, bobs["id"]) if e.state == "succeeded")
        before = [e.state for e in history(gateway, alices["id"]) if e.at <= ended]
        assert before[-1] == "unknown", before  # alice's was still unknown then
    finally:
        subprocess.run(["scontrol", "resume", slurm_id], check=False, timeout=30, capture_output=True)
    # polled again all along: resumed, Slurm's RUNNING is in the table, and the job leaves unknown
    deadline = time.monotonic() + 120
    while (after := [str(e.state) for e in history(gateway, alices["id"])])[-1] == "unknown":
        assert time.monotonic() < deadline, after
        time.sleep(0.5)
    assert after[after.index("unknown") + 1] in ("launching", "running"), after
