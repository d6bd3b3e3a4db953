"""On Slurm, with the real Apptainer: what crosses into a rank's container arrives byte for byte and runs nothing,
a site's pass-through variable arrives and an unlisted one does not, and a missing Apptainer, image or Python
fails the job at once with its reason.

The ranks run the launcher's own command line (``launchers.container.python_argv``), with ``-c`` and a tiny
program in place of submitit's, so that the test needs nothing in the image but Python. The image is the one
``make image`` builds; without it (or without Apptainer) these tests are skipped, saying which is missing.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from devcluster.spec import ClusterSpec
from launchers.container import python_argv
from launchers.slurm.commands import wait_until_done
from launchers.spec import ContainerSpec, JobSpec

pytestmark = pytest.mark.slurm

REPO = Path(__file__).resolve().parents[2]
IMAGE = REPO / ".hpcgw" / "images" / "intent-classifier.sif"
APPTAINER_BIN = Path("/root/.cache/hpcgw/apptainer/1.4.5-2/bin")
DUMP = "import json, os, sys; open(sys.argv[1], 'w').write(json.dumps(dict(os.environ)))"


def apptainer_path() -> str:
    """PATH for the jobs: the project's Apptainer first when it is not on PATH already."""
    path = os.environ.get("PATH", "/usr/bin:/bin")
    if shutil.which("apptainer") is None and (APPTAINER_BIN / "apptainer").exists():
        path = f"{APPTAINER_BIN}:{path}"
    return path


@pytest.fixture
def apptainer() -> str:
    path = apptainer_path()
    if shutil.which("apptainer", path=path) is None:
        pytest.skip(f"no apptainer on PATH nor in {APPTAINER_BIN} (scripts/build-apptainer.sh makes it)")
    return path


@pytest.fixture
def image() -> str:
    if not IMAGE.is_file():
        pytest.skip(f"no image at {IMAGE} (`make image` builds it)")
    return str(IMAGE)


@pytest.fixture
def submitted() -> Iterator[list[str]]:
    """The Slurm ids a test submits, cancelled when it ends, pass or fail."""
    ids: list[str] = []
    yield ids
    if ids:
        subprocess.run(["scancel", *ids], capture_output=True, check=False, timeout=60)


def spec(image: str, folder: Path) -> JobSpec:
    return JobSpec(
        partition="team-a",
        command=("python",),
        folder=folder,
        container=ContainerSpec(runtime="apptainer", image=image),
    )


def sbatch(
    folder: Path,
    rank_argv: list[str],
    env: dict[str, str],
    ids: list[str],
    name: str = "hpcgw-env",
    nodes: int = 1,
    tasks_per_node: int = 1,
) -> str:
    """``nodes`` x ``tasks_per_node`` ranks running ``rank_argv`` the way submitit's script does (srun, then the
    command)."""
    script = folder / "job.sh"
    script.write_text(
        "#!/bin/bash\n"
        f"printf '%s' \"$SLURM_JOB_NAME\" > {shlex.quote(str(folder / 'host_name'))}\n"
        f"srun --kill-on-bad-exit=1 -N{nodes} --ntasks-per-node={tasks_per_node} {shlex.join(rank_argv)}\n"
    )
    out = subprocess.run(
        [
            "sbatch",
            "--parsable",
            f"-N{nodes}",
            f"--ntasks-per-node={tasks_per_node}",
            "-p",
            "team-a",
            "-t",
            "5",
            "-J",
            name,
            "-o",
            str(folder / "out.txt"),
            str(script),
        ],
        capture_output=True,
        text=True,
        env=env,
        check=True,
        timeout=60,
    )
    job_id = out.stdout.strip().split(";")[0]
    ids.append(job_id)
    return job_id


def test_values_cross_byte_for_byte_and_only_listed_ones(
    cluster: ClusterSpec, apptainer: str, image: str, tmp_path: Path, submitted: list[str]
) -> None:
    marker = tmp_path / "pwned"
    home_marker = Path.home() / "pwned-by-hpcgw-test"
    name = f"n$(touch {marker})`touch {marker}`$HOME'\"; x"
    value = f"$(touch {marker}) `touch {marker}` $HOME ${{PATH}} \\ \\\\ \" ' ; a\tb\nc\n#SBATCH -N 9 $(touch ~/x)\\"
    env = {
        **os.environ,
        "PATH": apptainer,
        "HPCGW_TEST_VALUE": value,
        "NCCL_SOCKET_IFNAME": "lo",
        "SECRET_TOKEN_X": "s3cret",
    }
    dump = tmp_path / "inside.json"
    started = time.monotonic()
    job_id = sbatch(tmp_path, [*python_argv(spec(image, tmp_path)), "-c", DUMP, str(dump)], env, submitted, name)
    row = wait_until_done(job_id, timeout_s=180)
    output = (tmp_path / "out.txt").read_text() if (tmp_path / "out.txt").exists() else ""
    assert row.slurm_state == "COMPLETED", output
    inside = json.loads(dump.read_text())
    assert inside["HPCGW_TEST_VALUE"] == value
    host_name = (tmp_path / "host_name").read_text()
    assert inside["SLURM_JOB_NAME"] == host_name == name
    assert inside["NCCL_SOCKET_IFNAME"] == "lo"
    assert "SECRET_TOKEN_X" not in inside
    assert inside.get("APPTAINER_CONTAINER") or inside.get("APPTAINER_NAME")  # it did run in the container
    assert not marker.exists() and not home_marker.exists()
    assert time.monotonic() - started < 180


# Each rank records its node and mount namespace, then waits for all four records: ranks that rendezvous at start,
# as Horovod's and DDP's do (the only ones a site should share a container between: see ContainerSpec).
WHERE = """
import json, os, sys, time
from pathlib import Path
folder, rank = Path(sys.argv[1]), os.environ["SLURM_PROCID"]
here = {"node": os.environ["SLURMD_NODENAME"], "mounts": os.readlink("/proc/self/ns/mnt")}
(folder / f"rank-{rank}.json").write_text(json.dumps(here))
deadline = time.monotonic() + 60
while len(list(folder.glob("rank-*.json"))) < 4 and time.monotonic() < deadline:
    time.sleep(0.1)
"""


@pytest.mark.parametrize("shared", [True, False], ids=["shared", "a-mount-per-rank"])
def test_the_ranks_of_a_node_share_one_container_when_the_site_says_so(
    cluster: ClusterSpec, apptainer: str, image: str, tmp_path: Path, submitted: list[str], shared: bool
) -> None:
    """2 nodes x 2 tasks: with sharing, the two ranks of a node are in one container (one mount namespace, so
    one mount of the image) and the nodes' containers differ; without it (the default), every rank has its own."""
    env = {**os.environ, "PATH": apptainer}
    container = ContainerSpec(runtime="apptainer", image=image, share_per_node=shared)
    one = JobSpec(partition="team-a", command=("python",), folder=tmp_path, container=container)
    argv = [*python_argv(one), "-c", WHERE, str(tmp_path)]
    job_id = sbatch(tmp_path, argv, env, submitted, nodes=2, tasks_per_node=2)
    row = wait_until_done(job_id, timeout_s=180)
    assert row.slurm_state == "COMPLETED", (tmp_path / "out.txt").read_text()
    ranks = [json.loads((tmp_path / f"rank-{r}.json").read_text()) for r in range(4)]
    by_node: dict[str, set[str]] = {}
    for rank in ranks:
        by_node.setdefault(rank["node"], set()).add(rank["mounts"])
    assert len(by_node) == 2  # the ranks ran on both nodes
    if shared:
        assert all(len(mounts) == 1 for mounts in by_node.values()), by_node
        assert len({r["mounts"] for r in ranks}) == 2, by_node
    else:
        assert len({r["mounts"] for r in ranks}) == 4, by_node


def test_an_image_without_python_fails_at_once(
    cluster: ClusterSpec, apptainer: str, tmp_path: Path, submitted: list[str]
) -> None:
    sandbox = tmp_path / "rootfs"
    for sub in ("bin", "etc", "tmp", "dev", "proc", "sys"):
        (sandbox / sub).mkdir(parents=True)
    sif = tmp_path / "nopython.sif"
    env = {**os.environ, "PATH": apptainer}
    built = subprocess.run(
        ["apptainer", "build", "--force", str(sif), str(sandbox)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    if built.returncode != 0:
        pytest.skip(f"cannot build an image without Python here: {built.stderr.strip()[-300:]}")
    started = time.monotonic()
    job_id = sbatch(tmp_path, [*python_argv(spec(str(sif), tmp_path)), "-c", "pass"], env, submitted)
    row = wait_until_done(job_id, timeout_s=120)
    assert row.slurm_state == "FAILED" and time.monotonic() - started < 60
    assert "python" in (tmp_path / "out.txt").read_text()


def test_apptainer_missing_on_the_node_fails_at_once_naming_it(
    cluster: ClusterSpec, tmp_path: Path, submitted: list[str]
) -> None:
    image = tmp_path / "trainer.sif"
    image.write_bytes(b"not used")
    env = {**os.environ, "PATH": "/usr/bin:/bin"}  # no apptainer there, whatever the nodes have elsewhere
    if shutil.which("apptainer", path=env["PATH"]):
        pytest.skip("apptainer is installed in /usr/bin or /bin")
    started = time.monotonic()
    job_id = sbatch(tmp_path, [*python_argv(spec(str(image), tmp_path)), "-c", "pass"], env, submitted)
    row = wait_until_done(job_id, timeout_s=120)
    output = (tmp_path / "out.txt").read_text()
    assert row.slurm_state == "FAILED" and row.exit_code == 127, output
    assert time.monotonic() - started < 60
    assert "hpcgw: apptainer is not on PATH on node " in output
