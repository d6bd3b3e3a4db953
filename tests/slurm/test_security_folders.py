"""On Slurm, with real Unix users: the files and folders the gateway makes for a job are changed only by the gateway
and that job's user (issue 29, holes 2 and 5).

Hole 2: a job's pickles, script and array manifest were ``0660 hpcgw:<team>`` in folders the team could write, so
dave (alice's team-mate) or admin (in every team's group) could replace alice's pickle and run code as alice when
her job started. Hole 5: the team folder was group-writable, so while alice's job waited ``accepted`` she could
make its folder a link to bob's, which the gateway then followed and served as hers.
"""

from __future__ import annotations

import hashlib
import os
import pwd
import shlex
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest

from tests.slurm.tenants import Gateway, as_user, owner, run_gateway

pytestmark = [pytest.mark.slurm, pytest.mark.security]
GATEWAY_UID = pwd.getpwnam("hpcgw").pw_uid
WHO = "import os, pwd, time; print('ran-as', pwd.getpwuid(os.getuid()).pw_name, flush=True); time.sleep({})"
BOB_ACCURACY = 0.123456


@pytest.fixture
def gw(cluster: object, tmp_path: Path) -> Iterator[Gateway]:
    with run_gateway(tmp_path) as gateway:
        yield gateway


def wait_state(gw: Gateway, job_id: str, states: tuple[str, ...], timeout_s: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while (job := gw.get(f"/v1/jobs/{job_id}", "alice"))["state"] not in states:
        assert time.monotonic() < deadline, job
        time.sleep(0.3)
    return cast(dict[str, Any], job)


def snapshot(folder: Path) -> dict[str, tuple[int, int, int, str]]:
    """The gateway's entries in ``folder``: inode, owner, mode and content digest (a link's target)."""
    seen = {}
    for entry in sorted(folder.iterdir()):
        info = entry.lstat()
        if info.st_uid != GATEWAY_UID:
            continue
        body = os.readlink(entry).encode() if entry.is_symlink() else entry.read_bytes() if entry.is_file() else b""
        seen[entry.name] = (info.st_ino, info.st_uid, info.st_mode, hashlib.sha256(body).hexdigest())
    return seen


def attack(user: str, files: list[Path], folders: list[Path]) -> list[str]:
    """Every way ``user`` might change ``files`` or add to ``folders``, through their own account; what worked."""
    scratch = as_user(user, ["mktemp"]).stdout.strip()
    assert scratch, "mktemp failed"
    as_user(user, ["sh", "-c", f"echo 'import os; os.system(\"id\")' > {shlex.quote(scratch)}"])
    worked = []
    for path in files:
        quoted = shlex.quote(str(path))
        attempts = {
            "overwrite": ["sh", "-c", f"printf evil > {quoted}"],
            "append": ["sh", "-c", f"printf evil >> {quoted}"],
            "truncate": ["truncate", "-s", "0", str(path)],
            "chmod": ["chmod", "666", str(path)],
            "rename over": ["mv", "-f", "-T", scratch, str(path)],
            "link over": ["ln", "-sfT", scratch, str(path)],
            "delete": ["rm", "-f", str(path)],
            "rename away": ["mv", "-f", "-T", str(path), str(path) + ".moved"],
        }
        worked += [f"{user}: {what} {path}" for what, argv in attempts.items() if as_user(user, argv).returncode == 0]
    for folder in folders:
        planted = str(folder / f"planted-by-{user}")
        attempts = {
            "create": ["touch", planted],
            "mkdir": ["mkdir", planted + "-dir"],
            "symlink": ["ln", "-s", "/etc/passwd", planted + "-link"],
            "chmod": ["chmod", "777", str(folder)],
        }
        worked += [
            f"{user}: {what} in {folder}" for what, argv in attempts.items() if as_user(user, argv).returncode == 0
        ]
    as_user(user, ["rm", "-f", scratch])
    return worked


def sacct_user(slurm_job_id: str) -> set[str]:
    out = subprocess.run(
        ["sacct", "-X", "-n", "-P", "-j", slurm_job_id, "-o", "User"], capture_output=True, text=True, check=True
    ).stdout
    return {line for line in out.split() if line}


def ran_as_alice(gw: Gateway, job_id: str) -> None:
    job = gw.wait(job_id, "alice")
    assert job["state"] == "succeeded", job
    assert sacct_user(job["slurm_job_id"]) == {"alice"}
    logs = gw.request("GET", f"/v1/jobs/{job_id}/logs", "alice").text
    assert "ran-as alice" in logs and "uid=" not in logs, logs


def test_team_mates_and_admin_cannot_change_a_jobs_files_nor_add_to_its_folders(gw: Gateway) -> None:
    gw.algorithm("who", "team-a", WHO.format(12))
    team = gw.root / "jobs" / "team-a"

    single = gw.job("alice", "who")["id"]
    wait_state(gw, single, ("queued", "running"))
    folder = team / single
    submit = folder / "job"
    before = snapshot(submit)
    assert any(name.endswith("_submitted.pkl") for name in before) and any(n.endswith(".sh") for n in before), before
    for name, (_, _, mode, _) in before.items():
        assert mode & 0o022 == 0 or (submit / name).is_symlink(), f"{name} is writable by the group: {oct(mode)}"
    files = [submit / name for name in before]
    folders = [team, folder, folder / "model", submit]
    worked = attack("dave", files, folders) + attack("admin", files, folders)
    assert worked == []
    assert snapshot(submit) == before
    ran_as_alice(gw, single)

    batch = gw.post("/v1/jobs/batch", {"jobs": [job_body("who"), job_body("who")]}, "alice")
    ids = [item["job"]["id"] for item in batch["items"]]
    for job_id in ids:
        wait_state(gw, job_id, ("queued", "running"))
    (shared,) = list((team / "batches").iterdir())
    before = snapshot(shared)
    names = list(before)
    assert any(n.startswith("elements-") and n.endswith(".json") for n in names), names
    assert sum(n.endswith("_submitted.pkl") for n in names) == 2, names
    files = [shared / name for name in names]
    folders = [team / "batches", shared, *(team / job_id for job_id in ids)]
    worked = attack("dave", files, folders) + attack("admin", files, folders)
    assert worked == []
    assert snapshot(shared) == before
    for job_id in ids:
        ran_as_alice(gw, job_id)


def job_body(algorithm: str) -> dict[str, Any]:
    return {"algorithm": algorithm, "dataset_id": "d", "train_data_version_hash": "v1", "time_limit_min": 10}


def folder_state(folder: Path) -> tuple[int, int, bytes, list[str]]:
    info = folder.lstat()
    try:
        access = os.getxattr(folder, "system.posix_acl_access", follow_symlinks=False)
    except OSError:
        access = b""
    return info.st_mode, info.st_uid, access, sorted(p.name for p in folder.iterdir())


def test_a_waiting_jobs_folder_cannot_be_made_in_advance_and_a_squat_is_refused(gw: Gateway) -> None:
    code = (
        "import json, os; from pathlib import Path\n"
        f"Path(os.environ['METRICS_FILE']).write_text(json.dumps({{'epoch': 1, 'accuracy': {BOB_ACCURACY}}}) + '\\n')\n"
    )
    gw.algorithm("metrics", "team-b", code)
    bob = gw.wait(gw.job("bob", "metrics")["id"], "bob")
    assert bob["state"] == "succeeded", bob
    bob_folder = gw.root / "jobs" / "team-b" / bob["id"]
    bob_before = folder_state(bob_folder), folder_state(bob_folder / "model")

    gw.algorithm("sleep", "team-a", WHO.format(600))
    gw.algorithm("quick", "team-a", "print('quick')")
    sleepers = [gw.job("alice", "sleep")["id"] for _ in range(2)]  # team-a's quota (max_running_jobs 2) is full
    for job_id in sleepers:
        wait_state(gw, job_id, ("queued", "running"))
    linked, premade = gw.job("alice", "quick")["id"], gw.job("alice", "quick")["id"]
    team = gw.root / "jobs" / "team-a"
    time.sleep(2)
    for job_id in (linked, premade):
        assert gw.get(f"/v1/jobs/{job_id}", "alice")["state"] == "accepted"
        assert not (team / job_id).exists()

    for argv in (["ln", "-s", str(bob_folder), str(team / linked)], ["mkdir", str(team / premade)]):
        done = as_user("alice", argv)
        assert done.returncode != 0 and "Permission denied" in done.stderr, (argv, done)
    assert not os.path.lexists(team / linked) and not os.path.lexists(team / premade)

    # as if the team folder had been writable: a link to bob's folder, and a folder alice made
    (team / linked).symlink_to(bob_folder)
    (team / premade).mkdir()
    alice = pwd.getpwnam("alice")
    os.chown(team / premade, alice.pw_uid, alice.pw_gid)
    for job_id in sleepers:
        gw.post(f"/v1/jobs/{job_id}/cancel", {}, "alice")

    for job_id in (linked, premade):
        job = gw.wait(job_id, "alice")
        assert job["state"] == "failed" and job["slurm_job_id"] is None, job
        assert str(team / job_id) in (job["reason"] or ""), job
        metrics = gw.request("GET", f"/v1/jobs/{job_id}/metrics", "alice").text
        assert str(BOB_ACCURACY) not in metrics and str(BOB_ACCURACY) not in str(job)
    assert (folder_state(bob_folder), folder_state(bob_folder / "model")) == bob_before
    assert owner((team / premade).lstat().st_uid) == "alice" and list((team / premade).iterdir()) == []
    assert os.readlink(team / linked) == str(bob_folder)
