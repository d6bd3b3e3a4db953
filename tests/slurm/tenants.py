"""The multi-tenant stage the tests on Slurm attack: a gateway run as its own unprivileged user (``hpcgw``), as a
deployment runs it, in front of the local cluster, and the example configuration's real Unix users acting
through their own accounts, as a login node allows (``runuser``).

alice and dave are team-a, bob team-b, carol team-c; admin is in every team's group (`hpcgw cluster users`).
"""

from __future__ import annotations

import grp
import pwd
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, cast

import httpx

from bench.support import DEV_USERS, HPCGW, team, toml_text
from gateway.client import wait_healthy
from tests.slurm.support import python_algorithm, serve, serve_settings

TOKENS = {user: values["token"] for user, values in DEV_USERS.items()}
DEFAULT_PORT = 18941


def tenant_settings(root: Path) -> dict[str, Any]:
    """The tenants' gateway configuration (:func:`tests.slurm.support.serve_settings`), its files under ``root``:
    team-a, team-b and team-c with 2 nodes and 2 running jobs each (team-a 200 queued), and every development
    user's token."""
    teams = {name: team(name, max_nodes=2, max_running_jobs=2) for name in ("team-a", "team-b", "team-c")}
    teams["team-a"]["max_queued_jobs"] = 200
    return serve_settings(root, teams=teams, users=tuple(DEV_USERS))


def tenant_config(root: Path) -> str:
    """:func:`tenant_settings` as the TOML file ``hpcgw serve`` reads."""
    return toml_text(tenant_settings(root))


def auth(user: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKENS[user]}"}


class Gateway:
    """The running gateway, as its users reach it over HTTP."""

    def __init__(self, base: str, root: Path, log: Path | None = None) -> None:
        self.base, self.root, self.log = base, root, log

    def request(self, method: str, path: str, user: str | None = None, **kwargs: Any) -> httpx.Response:
        headers = {**(auth(user) if user else {}), **kwargs.pop("headers", {})}
        return httpx.request(method, f"{self.base}{path}", headers=headers, timeout=30, **kwargs)

    def post(self, path: str, body: dict[str, Any], user: str) -> dict[str, Any]:
        response = httpx.post(f"{self.base}{path}", json=body, headers=auth(user), timeout=30)
        assert response.status_code in (200, 201), response.text
        created: dict[str, Any] = response.json()
        return created

    def get(self, path: str, user: str) -> Any:
        return httpx.get(f"{self.base}{path}", headers=auth(user), timeout=30).json()

    def algorithm(self, name: str, team: str, code: str) -> None:
        """An algorithm of ``team`` whose trainer is ``code``, run by the image's Python (runtime apptainer) or this
        one (runtime none), registered by the admin."""
        self.post("/v1/algorithms", python_algorithm(name, "-c", code) | {"team": team}, "admin")

    def script_algorithm(self, name: str, team: str, script: Path) -> None:
        """An algorithm of ``team`` whose trainer is a tests/data ``script`` (its source travels in the image's
        command, :func:`tests.slurm.support.in_image`), registered by the admin."""
        self.post("/v1/algorithms", python_algorithm(name, script) | {"team": team}, "admin")

    def job(self, user: str, algorithm: str, **fields: object) -> dict[str, Any]:
        body = {"algorithm": algorithm, "dataset_id": "d", "train_data_version_hash": "v1", "time_limit_min": 10}
        return self.post("/v1/jobs", body | fields, user)

    def wait(self, job_id: str, user: str, timeout_s: float = 180) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while (job := self.get(f"/v1/jobs/{job_id}", user))["state"] not in ("succeeded", "failed", "cancelled"):
            assert time.monotonic() < deadline, job
            time.sleep(0.5)
        return cast(dict[str, Any], job)


@contextmanager
def run_gateway(tmp_path: Path, *, port: int = DEFAULT_PORT, path_prefix: Path | None = None) -> Iterator[Gateway]:
    """``hpcgw serve`` as ``hpcgw`` with :func:`tenant_config`, stopped at the end; ``path_prefix``: a folder
    ahead of the others on its PATH."""
    (tmp_path / "datasets" / "d" / "v1").mkdir(parents=True, exist_ok=True)
    config = tmp_path / "gw.toml"
    config.write_text(tenant_config(tmp_path))
    log_path = tmp_path / "gateway.log"
    log = open(log_path, "ab")
    proc = serve([HPCGW, "serve", "--config", str(config), "--port", str(port)], log, path_prefix=path_prefix)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(base, alive=lambda: proc.poll() is None)
        yield Gateway(base, tmp_path, log_path)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


def as_user(user: str, argv: Sequence[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    """``argv`` run as ``user`` through their own Unix account, as on a login node (never as root)."""
    kwargs.setdefault("capture_output", True)
    kwargs.setdefault("text", True)
    kwargs.setdefault("cwd", "/tmp")
    return subprocess.run(["runuser", "-u", user, "--", *argv], check=False, **kwargs)


def gateway_memory_kib(field: str = "VmRSS") -> int:
    """The summed ``field`` of /proc/<pid>/status (VmRSS now, VmHWM the peak: a body held a moment shows there even
    once freed) over every process of the gateway's user: the API and its worker."""
    pids = subprocess.run(["pgrep", "-u", "hpcgw"], capture_output=True, text=True, check=False).stdout.split()
    assert pids, "no process of hpcgw"
    total = 0
    for pid in pids:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue  # ended meanwhile
        total += next((int(line.split()[1]) for line in status.splitlines() if line.startswith(f"{field}:")), 0)
    return total


def owner(uid: int) -> str:
    return pwd.getpwuid(uid).pw_name


def group(gid: int) -> str:
    return grp.getgrgid(gid).gr_name
