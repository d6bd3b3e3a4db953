"""A requeue asked for inside an image, where there is no scontrol: rank 0 writes the request into the job's
markers, and the job script, on the host after srun, requeues the job and removes it."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from submitit.slurm.slurm import SlurmJobEnvironment

from launchers.runtime import requeue
from launchers.runtime.markers import exit_code_teardown

requeue.install()


def slurm_env(monkeypatch: pytest.MonkeyPatch, folder: Path, path: str) -> SlurmJobEnvironment:
    for name, value in {"SUBMITIT_FOLDER": str(folder), "SLURM_JOB_ID": "41", "SLURM_ARRAY_JOB_ID": "40",
                        "SLURM_ARRAY_TASK_ID": "1", "SLURM_PROCID": "0", "PATH": path}.items():  # fmt: skip
        monkeypatch.setenv(name, value)
    return SlurmJobEnvironment()


def test_without_scontrol_rank_0_writes_the_request(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    empty = tmp_path / "bin"
    empty.mkdir()
    env = slurm_env(monkeypatch, tmp_path, str(empty))
    env._requeue(2)
    assert requeue.request_path(tmp_path, "40_1").read_text() == "2\n"
    requeue.install()  # twice: still one wrapper
    assert getattr(SlurmJobEnvironment._requeue, "_hpcgw", False)


def test_with_scontrol_submitit_asks_slurm_itself(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "calls"
    (bin_dir / "scontrol").write_text(f'#!/bin/sh\necho "$@" >> {calls}\n')
    (bin_dir / "scontrol").chmod(0o755)
    env = slurm_env(monkeypatch, tmp_path, f"{bin_dir}:{os.environ['PATH']}")
    env._requeue(2)
    assert calls.read_text() == "requeue 40_1\n"
    assert not requeue.request_path(tmp_path, "40_1").exists()


@pytest.mark.parametrize("requested", [True, False])
def test_the_job_script_requeues_on_the_host_once(tmp_path: Path, requested: bool) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "calls"
    (bin_dir / "scontrol").write_text(f'#!/bin/sh\necho "$@" >> {calls}\n')
    (bin_dir / "scontrol").chmod(0o755)
    if requested:
        requeue.request_path(tmp_path, "40_1").parent.mkdir(parents=True)
        requeue.request_path(tmp_path, "40_1").write_text("2\n")
    script = "\n".join(["(exit 255)", *exit_code_teardown(tmp_path)])
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "SLURM_JOB_ID": "41", "SLURM_ARRAY_JOB_ID": "40",
           "SLURM_ARRAY_TASK_ID": "1"}  # fmt: skip
    done = subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True)
    assert done.returncode == 255, done.stderr
    assert (calls.read_text() if calls.exists() else "") == ("requeue 41\n" if requested else "")
    assert not requeue.request_path(tmp_path, "40_1").exists()
