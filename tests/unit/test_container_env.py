"""What crosses into the container: the shim's escaping, its pass-through list and its checks before apptainer.

No container is needed: a fake ``apptainer`` on PATH does to ``APPTAINERENV_*`` what Apptainer does (it writes
each value into a double-quoted ``export`` line, its own double quotes escaped, and a shell evaluates it), then
prints the environment the container would see. tests/slurm/test_apptainer_env.py checks the real one.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from gateway.store.models import Job
from gateway.submit.specs import job_spec
from launchers.container import ENV_PASSTHROUGH_SHIM, apptainer_argv, env_patterns, python_argv
from launchers.spec import DEFAULT_ENV_PASSTHROUGH, REQUIRED_ENV_PASSTHROUGH, ContainerSpec, JobSpec
from tests.gateway.conftest import make_config

# Apptainer's handling of APPTAINERENV_*, as seen on 1.4.5 (../shared/notes/apptainer-build.md): the value goes
# between double quotes, evaluated, so '$(…)', backticks and '$VAR' run unless escaped before.
FAKE_APPTAINER = r"""#!/bin/bash
inside=()
for name in $(compgen -e); do
  case $name in APPTAINERENV_*)
    value=${!name}; value=${value//"\""/"\\\""}
    eval "value=\"$value\""
    inside+=("${name#APPTAINERENV_}=$value");;
  esac
done
exec env -i "${inside[@]}" env -0
"""

HOSTILE = {
    "SLURM_JOB_NAME": "$(touch {marker}) `touch {marker}` $HOME ${{PATH}} \\ \\\\ \" ' ; a\tb\nc & end\\",
    "HPCGW_PARAM": "'\"$(touch {marker})\"' \\$ \\` \n#SBATCH --nodes=99\n",
    "NCCL_SOCKET_IFNAME": "eth0;$(touch {marker})",
}


@pytest.fixture
def fake_bin(tmp_path: Path) -> Path:
    folder = tmp_path / "bin"
    folder.mkdir()
    (folder / "apptainer").write_text(FAKE_APPTAINER)
    (folder / "apptainer").chmod(0o755)
    return folder


@pytest.fixture
def image(tmp_path: Path) -> str:
    path = tmp_path / "trainer.sif"
    path.write_bytes(b"not really an image")
    return str(path)


def spec(image: str, folder: Path, gpus_per_node: int = 0, **container: object) -> JobSpec:
    return JobSpec(
        partition="team-a",
        command=("python", "train.py"),
        folder=folder,
        gpus_per_node=gpus_per_node,
        container=ContainerSpec(runtime="apptainer", image=image, **container),  # type: ignore[arg-type]
    )


def run_shim(argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[bytes]:
    # the apptainer argv's own arguments are not the fake's business: only the environment it was given
    return subprocess.run(argv, env=env, capture_output=True, timeout=30, check=False)


def seen(out: bytes) -> dict[str, str]:
    return dict(item.split("=", 1) for item in out.decode().split("\0") if "=" in item)


def test_values_arrive_byte_for_byte_and_nothing_runs(tmp_path: Path, fake_bin: Path, image: str) -> None:
    marker = tmp_path / "pwned"
    values = {name: value.format(marker=marker) for name, value in HOSTILE.items()}
    env = {"PATH": f"{fake_bin}:/usr/bin:/bin", "HOME": str(tmp_path), **values}
    out = run_shim(python_argv(spec(image, tmp_path)), env)
    assert out.returncode == 0, out.stderr.decode()
    inside = seen(out.stdout)
    for name, value in values.items():
        assert inside[name] == value
    assert not marker.exists()


def test_only_listed_variables_cross(tmp_path: Path, fake_bin: Path, image: str) -> None:
    env = {
        "PATH": f"{fake_bin}:/usr/bin:/bin",
        "SLURM_PROCID": "3",
        "SLURMD_NODENAME": "node1",
        "SUBMITIT_EXECUTOR": "slurm",
        "HPCGW_RESTART_COUNT": "1",
        "CUDA_VISIBLE_DEVICES": "0,1",
        "UCX_TLS": "tcp",
        "FI_PROVIDER": "tcp",
        "SECRET_TOKEN_X": "s3cret",
        "APPTAINERENV_SMUGGLED": "in",  # the node's own: would cross past the list, and unescaped
        "APPTAINER_BIND": "/etc:/hostetc",
        "APPTAINER_CACHEDIR": str(tmp_path / "cache"),
    }
    out = run_shim(python_argv(spec(image, tmp_path)), env)
    inside = seen(out.stdout)
    for name in ("SLURM_PROCID", "SLURMD_NODENAME", "SUBMITIT_EXECUTOR", "HPCGW_RESTART_COUNT"):
        assert inside[name] == env[name]
    assert inside["CUDA_VISIBLE_DEVICES"] == "0,1" and inside["UCX_TLS"] == "tcp"
    for name in ("FI_PROVIDER", "SECRET_TOKEN_X", "SMUGGLED", "APPTAINER_BIND", "PATH"):
        assert name not in inside
    # what apptainer itself is given: the node's Apptainer settings dropped, but for where images are cached
    host = seen(run_shim(["bash", "-c", ENV_PASSTHROUGH_SHIM, "shim", "", "--", "env", "-0"], env).stdout)
    assert host["APPTAINER_CACHEDIR"] == env["APPTAINER_CACHEDIR"]
    assert "APPTAINER_BIND" not in host and "APPTAINERENV_SMUGGLED" not in host

    # a site's list replaces the default; the required patterns stay
    out = run_shim(python_argv(spec(image, tmp_path, env_passthrough=("FI_PROVIDER",))), env)
    inside = seen(out.stdout)
    assert inside["FI_PROVIDER"] == "tcp" and inside["SLURM_PROCID"] == "3"
    assert "CUDA_VISIBLE_DEVICES" not in inside and "UCX_TLS" not in inside


def test_the_shim_is_constant_and_takes_everything_as_arguments(tmp_path: Path, image: str) -> None:
    s = spec(image, tmp_path, gpus_per_node=1)
    argv = python_argv(s)
    assert argv[:4] == ["bash", "-c", ENV_PASSTHROUGH_SHIM, "hpcgw-apptainer"]
    patterns = [*REQUIRED_ENV_PASSTHROUGH, *DEFAULT_ENV_PASSTHROUGH]
    assert argv[4:] == [image, *patterns, "--", *apptainer_argv(s)]
    assert env_patterns(s) == patterns
    assert image not in ENV_PASSTHROUGH_SHIM and str(tmp_path) not in ENV_PASSTHROUGH_SHIM
    uri = spec(image, tmp_path).model_copy(
        update={"container": ContainerSpec(runtime="apptainer", image="oras://registry.example/t.sif")}
    )
    assert python_argv(uri)[4] == ""  # a URI is apptainer's to fetch: no local check


def test_apptainer_missing_on_the_node_fails_at_once(tmp_path: Path, image: str) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    bash = "/bin/bash"
    started = time.monotonic()
    out = run_shim([bash, *python_argv(spec(image, tmp_path))[1:]], {"PATH": str(empty)})
    assert time.monotonic() - started < 5
    assert out.returncode == 127
    lines = out.stderr.decode().splitlines()
    assert len(lines) == 1 and "apptainer is not on PATH on node " + os.uname().nodename in lines[0]


def test_an_unreadable_image_fails_at_once(tmp_path: Path, fake_bin: Path, image: str) -> None:
    s = spec(image, tmp_path)
    Path(image).unlink()  # gone from this node after the spec was made (on the login node)
    out = run_shim(python_argv(s), {"PATH": f"{fake_bin}:/usr/bin:/bin"})
    assert out.returncode == 127 and out.stdout == b""
    assert out.stderr.decode() == f"hpcgw: image {image} is not a readable file on node {os.uname().nodename}\n"
    Path(image).mkdir()  # a directory is no image file either
    assert run_shim(python_argv(s), {"PATH": f"{fake_bin}:/usr/bin:/bin"}).returncode == 127


def test_gpu_jobs_get_nv_and_nothing_of_the_host_but_the_job_folder(tmp_path: Path, image: str) -> None:
    cpu, gpu = spec(image, tmp_path), spec(image, tmp_path).model_copy(update={"gpus_per_node": 2})
    assert "--nv" not in apptainer_argv(cpu) and "--nv" in apptainer_argv(gpu)
    for argv in (apptainer_argv(cpu), apptainer_argv(gpu)):
        assert "--cleanenv" in argv and "--no-home" in argv
        assert [argv[i + 1] for i, a in enumerate(argv) if a == "--bind"] == [f"{tmp_path}:{tmp_path}"]


@pytest.mark.parametrize("pattern", ["*", "A**", "A*B", "1X", "_hpcgw_v", "X-Y", "X Y", "X[ab]", "X?", "", "$(x)"])
def test_bad_patterns_are_refused(tmp_path: Path, pattern: str) -> None:
    with pytest.raises(ValueError, match="pass-through pattern"):
        ContainerSpec(runtime="none", env_passthrough=(pattern,))
    with pytest.raises(ValueError, match="pass-through pattern"):
        make_config(tmp_path, "sqlite://", container_env_passthrough=[pattern])


def test_the_gateway_binds_its_job_root_and_the_dataset_and_passes_its_list(tmp_path: Path) -> None:
    sif = tmp_path / "t.sif"
    sif.write_bytes(b"x")
    config = make_config(
        tmp_path, "sqlite://", container_runtime="apptainer", container_env_passthrough=["NCCL_*", "FI_PROVIDER"]
    )
    assert make_config(tmp_path, "sqlite://").container_env_passthrough == list(DEFAULT_ENV_PASSTHROUGH)
    folder = config.job_root / "team-a" / "j1"
    job = Job(  # type: ignore[call-arg]  # SQLModel table models do not validate at init: "name" stays unset
        id="j1",
        team="team-a",
        user="alice",
        partition="team-a",
        account="team-a",
        algorithm="a",
        algorithm_version="1",
        image=str(sif),
        command=["python", "/opt/train.py"],
        dataset_id="ds",
        train_data_version_hash="h" * 8,
        parameters={},
        folder=str(folder),
        submit_folder=str(folder / "job"),
        nodes=1,
        tasks_per_node=1,
        gpus_per_node=0,
        cpus_per_task=1,
        time_limit_min=10,
    )
    s = job_spec(config, job)
    assert s.container.env_passthrough == ("NCCL_*", "FI_PROVIDER")
    dataset = config.dataset_root / "ds" / ("h" * 8)
    binds = [argv for i, argv in enumerate(apptainer_argv(s)) if apptainer_argv(s)[i - 1] == "--bind"]
    # the job folder (MODEL_OUTPUT_DIR, METRICS_FILE, submitit's) through the job root; the dataset read-only
    assert binds == [f"{config.job_root}:{config.job_root}", f"{dataset}:{dataset}:ro"]
    assert s.env["MODEL_OUTPUT_DIR"].startswith(f"{config.job_root}/")


ARGV_PRINTER = '#!/bin/bash\nprintf "%s\\0" "$@"\n'


@pytest.mark.parametrize("lock", ["absent", "mine", "another-users", "a-link"])
def test_a_squatted_sharens_lock_means_a_mount_of_its_own_not_a_failure(tmp_path: Path, image: str, lock: str) -> None:
    """Apptainer names the lock of a node's shared container after the ranks' parent, in /dev/shm: another user
    who creates that name first must cost this rank its sharing, never its start (nor a wait on their lock)."""
    folder = tmp_path / "bin"
    folder.mkdir()
    (folder / "apptainer").write_text(ARGV_PRINTER)
    (folder / "apptainer").chmod(0o755)
    path = Path(f"/dev/shm/sharens_instance_{os.getpid()}")  # the shim's parent is this process
    if lock == "another-users" and os.geteuid() != 0:
        pytest.skip("giving a file to another user needs root")
    try:
        if lock in ("mine", "another-users"):
            path.write_bytes(b"")
            if lock == "another-users":
                os.chown(path, 65534, 65534)
        elif lock == "a-link":
            path.symlink_to(tmp_path / "elsewhere")
        out = run_shim(python_argv(spec(image, tmp_path, share_per_node=True)), {"PATH": f"{folder}:/usr/bin:/bin"})
    finally:
        path.unlink(missing_ok=True)
    assert out.returncode == 0, out.stderr
    argv = out.stdout.decode().split("\0")[:-1]
    shared = lock in ("absent", "mine")
    assert argv[:2] == ["exec", "--sharens"] if shared else argv[:2] == ["exec", "--cleanenv"]
    assert argv[-2:] == [image, "python"]
    assert (out.stderr == b"") == shared and (shared or f"{path} is not this user's" in out.stderr.decode())
