"""On Slurm, with real Unix users: an algorithm version one team adds never runs as another team's users, and a
token that is not an admin's registers no command of its own (issue 29, hole 6).

The gateway runs as ``hpcgw``; alice is team-a, bob team-b. Each trainer writes, in its job's model folder, which
version ran and as whom: what bob's jobs wrote is the evidence of what ran as bob.
"""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from devcluster.spec import ClusterSpec
from tests.slurm.support import IMAGE, in_image
from tests.slurm.tenants import Gateway, run_gateway

pytestmark = [pytest.mark.slurm, pytest.mark.security]


def writer(tag: str) -> str:
    """A trainer that records ``tag`` and the user it ran as in ``$MODEL_OUTPUT_DIR/ran``."""
    return (
        "import getpass, os, pathlib; d = pathlib.Path(os.environ['MODEL_OUTPUT_DIR']); "
        f"d.mkdir(parents=True, exist_ok=True); (d / 'ran').write_text({tag!r} + ':' + getpass.getuser())"
    )


def version_body(number: str, tag: str) -> dict[str, object]:
    return {
        "version": number,
        "image": IMAGE,
        "command": in_image([sys.executable, "-c", writer(tag)]),
        "local_command": [sys.executable, "-c", writer(tag)],
    }


def ran(gw: Gateway, job: dict[str, Any]) -> str:
    text: str = (gw.root / "jobs" / job["team"] / job["id"] / "model" / "ran").read_text()
    return text


def slurm_jobs_of(user: str, since: datetime) -> list[str]:
    out = subprocess.run(
        ["sacct", "-X", "-n", "-P", "-u", user, "-S", since.strftime("%Y-%m-%dT%H:%M:%S"), "-o", "JobID,JobName"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [line for line in out.splitlines() if line]


@pytest.fixture
def gw(cluster: ClusterSpec, tmp_path: Path) -> Iterator[Gateway]:
    with run_gateway(tmp_path) as gateway:
        yield gateway


def test_a_teams_new_version_never_runs_as_another_teams_user(gw: Gateway) -> None:
    since = datetime.now()
    pwned = Path(f"/tmp/pwned-{uuid.uuid4().hex}")
    # a command of one's own, from a token that is not an admin's: refused, nothing stored, nothing in Slurm
    own = {"name": "mine", **version_body("1", "pwned"), "local_command": ["bash", "-c", f"id > {pwned}"]}
    refused = gw.request("POST", "/v1/algorithms", "alice", json=own)
    assert refused.status_code == 403, refused.text
    assert gw.request("POST", "/v1/jobs", "alice", json=job_body("mine")).status_code == 422
    assert "mine" not in [a["name"] for a in gw.get("/v1/algorithms", "alice")]

    gw.post("/v1/algorithms", {"name": "shared", "shared": True, **version_body("1", "published-1")}, "admin")
    gw.algorithm("b-train", "team-b", writer("b-1"))
    gw.algorithm("a-train", "team-a", writer("a-1"))
    # team-a's new version of its own algorithm, and its try at the published one
    gw.post("/v1/algorithms/a-train/versions", version_body("2", "a-2"), "admin")
    pushed = gw.request("POST", "/v1/algorithms/shared/versions", "alice", json=version_body("2", "a-2"))
    assert pushed.status_code == 403, pushed.text

    # bob cannot name team-a's algorithm, pinned or not, nor see it
    for pinned in (None, "1", "2"):
        named = gw.request("POST", "/v1/jobs", "bob", json=job_body("a-train", pinned))
        assert named.status_code == 422 and named.json()["field"] == "algorithm", named.text
    assert sorted(a["name"] for a in gw.get("/v1/algorithms", "bob")) == ["b-train", "shared"]

    # bob's unpinned jobs run bob's own and the published version, as bob; alice's runs team-a's new one as alice
    jobs = {name: gw.job("bob", name) for name in ("shared", "b-train")} | {"a-train": gw.job("alice", "a-train")}
    done = {name: gw.wait(job["id"], job["user"]) for name, job in jobs.items()}
    assert all(job["state"] == "succeeded" for job in done.values()), done
    assert (done["shared"]["algorithm_version"], ran(gw, done["shared"])) == ("1", "published-1:bob")
    assert (done["b-train"]["algorithm_version"], ran(gw, done["b-train"])) == ("1", "b-1:bob")
    assert (done["a-train"]["algorithm_version"], ran(gw, done["a-train"])) == ("2", "a-2:alice")
    bob_rows = slurm_jobs_of("bob", since)
    assert len(bob_rows) == 2, bob_rows
    alice_rows = slurm_jobs_of("alice", since)
    assert len(alice_rows) == 1 and not pwned.exists(), alice_rows


def job_body(algorithm: str, version: str | None = None) -> dict[str, object]:
    body: dict[str, object] = {"algorithm": algorithm, "dataset_id": "d", "train_data_version_hash": "v1"}
    return body | ({"algorithm_version": version} if version else {})
