"""The exact Apptainer command lines, pinned in golden files (paths with spaces and quotes included)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from launchers.container import apptainer_argv, python_argv, python_command
from launchers.spec import Bind, ContainerSpec, JobSpec
from tests.unit.golden import assert_golden
from tests.unit.support import ODD_DIR, image  # noqa: F401  (fixture)


def spec(image: str, **overrides: object) -> JobSpec:
    base: dict[str, object] = {
        "partition": "team-a",
        "nodes": 2,
        "tasks_per_node": 2,
        "command": ("python", "/opt/intent-classifier/train.py"),
        "folder": "/shared/jobs/run 1",
        "container": ContainerSpec(runtime="apptainer", image=image),
    }
    return JobSpec(**(base | overrides))  # type: ignore[arg-type]


def test_cpu_job_has_no_nv(image: str) -> None:
    argv = apptainer_argv(spec(image))
    assert "--nv" not in argv
    assert_golden("apptainer_cpu.json", json.dumps(argv, indent=1) + "\n")


def test_gpu_job_with_binds(image: str) -> None:
    binds = (
        Bind(source=Path("/data/intents v1"), target=Path("/data"), read_only=True),
        Bind(source=ODD_DIR / "models", target=Path("/models")),
    )
    s = spec(image, gpus_per_node=4, container=ContainerSpec(runtime="apptainer", image=image, binds=binds))
    argv = apptainer_argv(s)
    assert argv[:5] == ["apptainer", "exec", "--nv", "--cleanenv", "--no-home"]
    assert argv[-2:] == [image, "python"]
    assert_golden("apptainer_gpu_binds.json", json.dumps(argv, indent=1) + "\n")
    assert_golden("apptainer_gpu_binds.cmd", python_command(s) + "\n")


def test_ranks_share_one_container_per_node_only_under_srun(image: str) -> None:
    """--sharens keys the shared container on the parent process: srun's slurmstepd runs one step's ranks only,
    a local run's parent starts other jobs too; and only a site that turns it on gets it."""
    assert "--sharens" not in apptainer_argv(spec(image))
    shared = spec(image, container=ContainerSpec(runtime="apptainer", image=image, share_per_node=True))
    assert "--sharens" in apptainer_argv(shared)
    assert "--sharens" not in apptainer_argv(shared, under_srun=False)
    assert "--sharens" not in python_argv(shared, under_srun=False)  # an argument, not the shim's text


def test_runtime_none_is_this_python() -> None:
    s = JobSpec(partition="team-a", command=("python", "t.py"), folder=Path("/tmp/x"))
    assert python_argv(s) == [sys.executable]


def test_python_command_round_trips_through_a_shell(image: str) -> None:
    """submitit splices the command into the job script unquoted: the shell must get the argv back."""
    s = spec(image, gpus_per_node=1)
    out = subprocess.run(["bash", "-c", f"printf '%s\\0' {python_command(s)}"], capture_output=True, check=True)
    assert out.stdout.decode().split("\0")[:-1] == python_argv(s)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"runtime": "apptainer"}, "container.image is required"),
        ({"runtime": "apptainer", "image": "/nonexistent/trainer.sif"}, "does not exist"),
        ({"runtime": "none", "image": "/x.sif"}, "only used with runtime 'apptainer'"),
    ],
)
def test_bad_containers(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ContainerSpec(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("path", ["/data/a,b", "/data/a:b", "relative/dir"])
def test_unbindable_paths(path: str) -> None:
    with pytest.raises(ValueError, match="bind"):
        Bind(source=Path(path), target=Path("/data"))
