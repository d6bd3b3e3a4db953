"""The job scripts `submit` hands to sbatch, pinned in golden files."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from launchers import ContainerSpec, JobSpec, render_script
from tests.unit.golden import assert_golden
from tests.unit.support import ODD_DIR, image  # noqa: F401  (fixture)


def normalised(script: str) -> str:
    return script.replace(sys.executable, "{python}")


def test_cpu_job_script() -> None:
    spec = JobSpec(
        name="intent-classifier",
        partition="team-a",
        account="team-a",
        qos="normal",
        nodes=2,
        tasks_per_node=2,
        cpus_per_task=1,
        mem_gb=1.5,
        time_limit_min=30,
        command=("python", "train.py"),
        env={"LR": "$(reboot)"},
        folder=ODD_DIR / "jobs",
        extra_sbatch=("--exclusive", "--constraint=fast"),
        setup=("module load cuda",),
    )
    script = render_script(spec)
    assert "$(reboot)" not in script  # the trainer's environment travels in the pickle, not in the script
    assert "#SBATCH --nodes=2" in script and "#SBATCH --ntasks-per-node=2" in script
    assert "--kill-on-bad-exit=1" in script
    assert_golden("script_cpu.sh", normalised(script))


def test_gpu_apptainer_job_script(image: str) -> None:
    spec = JobSpec(
        partition="team-b",
        nodes=2,
        tasks_per_node=4,
        gpus_per_node=4,
        cpus_per_task=8,
        time_limit_min=240,
        command=("python", "/opt/intent-classifier/train.py"),
        folder=Path("/shared/jobs/gpu run"),
        container=ContainerSpec(runtime="apptainer", image=image),
        signal_delay_s=120,
    )
    script = render_script(spec)
    assert "#SBATCH --gpus-per-node=4" in script
    assert "#SBATCH --signal=USR2@120" in script
    assert_golden("script_gpu_apptainer.sh", normalised(script))


def test_mpi_controller_uses_pmix() -> None:
    spec = JobSpec(partition="p", command=("t",), folder=Path("/tmp/j"), controller="mpi")
    assert "--mpi=pmix" in render_script(spec)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"nodes": -1}, "nodes"),
        ({"tasks_per_node": 0}, "tasks_per_node"),
        ({"gpus_per_node": -2}, "gpus_per_node"),
        ({"cpus_per_task": -1}, "cpus_per_task"),
        ({"mem_gb": -4}, "mem_gb"),
        ({"time_limit_min": 0}, "time_limit_min"),
        ({"nodes": 10**9}, "nodes"),
        ({"env": {"1BAD": "x"}}, "env"),
        ({"env": {"MY-VAR": "x"}}, "env"),
        ({"env": {"SLURM_NTASKS": "9"}}, "env"),
        ({"env": {"HOROVOD_RANK": "0"}}, "env"),
        ({"partition": "team-a\n#SBATCH --nodes=99"}, "partition"),
        ({"name": "x; rm -rf /"}, "name"),
        ({"extra_sbatch": ("--comment=a\n#SBATCH --nodes=9",)}, "extra_sbatch"),
        ({"extra_sbatch": ("nodes=3",)}, "extra_sbatch"),
        ({"folder": "/tmp/a%jb"}, "folder"),
        ({"unknown_field": 1}, "unknown_field"),
    ],
)
def test_bad_specs_name_the_field(kwargs: dict[str, object], field: str) -> None:
    base: dict[str, object] = {"partition": "team-a", "command": ("t",), "folder": "/tmp/j"}
    with pytest.raises(ValueError) as info:
        JobSpec(**(base | kwargs))  # type: ignore[arg-type]
    assert field in str(info.value)


def test_shell_syntax_in_values_is_accepted_as_data(tmp_path: Path) -> None:
    values = {"A": "$(touch x)", "B": "`id`", "C": "a; b", "D": "line1\n#SBATCH --nodes=9"}
    spec = JobSpec(partition="team-a", command=("t",), folder=tmp_path, env=values)
    assert spec.env == values


def test_local_backend_shows_the_requested_gpus(tmp_path: Path) -> None:
    from launchers.submission import make_executor

    spec = JobSpec(partition="local", tasks_per_node=2, gpus_per_node=2, command=("t",), folder=tmp_path)
    assert make_executor(spec, "local").parameters["gpus_per_node"] == 2


def test_a_ddp_job_script_says_so_and_differs_only_there(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from gateway.cli.main import app

    common = ["render", "--direct", "-p", "team-a", "-N", "2", "--folder", str(tmp_path)]
    runner = CliRunner()
    horovod = runner.invoke(app, [*common, "--", "python", "train.py"])
    ddp = runner.invoke(app, [*common, "--framework", "ddp", "--", "python", "train_ddp.py"])
    assert horovod.exit_code == 0 and ddp.exit_code == 0, (horovod.output, ddp.output)
    added = [line for line in ddp.output.splitlines() if line not in horovod.output.splitlines()]
    assert "export HPCGW_FRAMEWORK=ddp" in added and "HPCGW_FRAMEWORK" not in horovod.output
    assert all(line.startswith(("#", "export")) or "train_ddp.py" in line for line in added), added
    bad = runner.invoke(app, [*common, "--framework", "mpi", "--", "python", "t.py"])
    assert bad.exit_code == 2
    with pytest.raises(ValueError, match="controller 'mpi' is Horovod's"):
        JobSpec(partition="p", command=("x",), folder=tmp_path, framework="ddp", controller="mpi")
