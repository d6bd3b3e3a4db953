"""``submit(spec) -> Job``: one flow for Slurm and for a local stand-in, both through submitit.

The Slurm path uses submitit's ``SlurmExecutor`` for the job script (sorted, quoted ``#SBATCH`` lines) and its
pickling, with two changes: ``sbatch`` runs through :func:`launchers.slurm.shell.run`, and the script ends with lines
that exit with the first failing trainer's code (see :mod:`launchers.runtime.markers`).
"""

from __future__ import annotations

import logging
import os
import pickle
import re
import shutil
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import cloudpickle
import submitit
from submitit.core import utils as submitit_utils

from launchers.container import python_command
from launchers.errors import SpecError, SubmitError
from launchers.job import Job
from launchers.resources import check_fit
from launchers.runtime.element import ELEMENTS_PREFIX, ArrayElement, manifest_size, write_new_file
from launchers.runtime.function import FunctionTask
from launchers.runtime.markers import exit_code_teardown
from launchers.runtime.task import TrainerTask
from launchers.slurm import commands
from launchers.slurm.shell import CommandError, run
from launchers.slurm.sinfo import partition_sizes
from launchers.spec import JobSpec

log = logging.getLogger(__name__)

Backend = Literal["auto", "slurm", "local"]


class HpcgwSlurmExecutor(submitit.SlurmExecutor):
    """submitit's Slurm executor, with sbatch called through the project's one subprocess function, as
    ``run_as`` when that is set."""

    run_as: str | None = None

    def _submit_command(self, command: str) -> submitit.Job[Any]:
        tmp_uuid = uuid.uuid4().hex
        folder = submitit_utils.JobPaths.get_first_id_independent_folder(self.folder)
        folder.mkdir(parents=True, exist_ok=True)
        submission_file = folder / f".submission_file_{tmp_uuid}.sh"
        write_new_file(submission_file, self._make_submission_file_text(command, tmp_uuid).encode())
        try:
            output = run(self._make_submission_command(submission_file), timeout_s=120, as_user=self.run_as).stdout
        except CommandError as exc:
            raise SubmitError(f"sbatch failed: {exc}") from exc
        job_id = self._get_job_id_from_submission_command(output)
        job: submitit.Job[Any] = self.job_class(folder=self.folder, job_id=job_id, tasks=list(range(self._num_tasks())))
        job.paths.move_temporary_file(submission_file, "submission_file", keep_as_symlink=True)
        self._write_job_id(job.job_id, tmp_uuid)
        self._set_job_permissions(job.paths.folder)
        return job

    def _internal_process_submissions(
        self, delayed_submissions: list[submitit_utils.DelayedSubmission]
    ) -> list[submitit.Job[Any]]:
        """submitit's paths, but with this class for an array's sbatch (submitit uses a plain executor), and the
        pickle written 0640 whatever the umask: the job's team reads it, only the gateway and the job's user
        (who may rename over it, through the folder) change it."""
        if len(delayed_submissions) > 1:
            return self.submit_as_array(delayed_submissions)
        (delayed,) = delayed_submissions
        folder = submitit_utils.JobPaths.get_first_id_independent_folder(self.folder)
        folder.mkdir(parents=True, exist_ok=True)
        pickle_path = folder / f"{uuid.uuid4().hex}.pkl"  # submitit's temporary name (finish_interrupted_submission)
        delayed.set_timeout(self.parameters.get("time", 5), self.max_num_timeout)
        dump_new(delayed, pickle_path)
        job = self._submit_command(self._submitit_command_str)
        job.paths.move_temporary_file(pickle_path, "submitted_pickle")
        return [job]

    def submit_as_array(self, delayed_submissions: list[submitit_utils.DelayedSubmission]) -> list[submitit.Job[Any]]:
        """One Slurm job array (``--array=0-N%K``), even for a single task: a sweep is always an array. Each
        element has its own pickle (submitit's batches of arbitrary callables); ``submit_elements`` shares one."""
        folder = submitit_utils.JobPaths.get_first_id_independent_folder(self.folder)
        folder.mkdir(parents=True, exist_ok=True)
        pickles = []
        for index, delayed in enumerate(delayed_submissions):
            path = folder / f"{ARRAY_PICKLE_PREFIX}{index}-{uuid.uuid4().hex}.pkl"  # its task, should we crash
            delayed.set_timeout(self.parameters.get("time", 5), self.max_num_timeout)
            dump_new(delayed, path)
            pickles.append(path)
        jobs = self._submit_array_script(len(delayed_submissions))
        for job, path in zip(jobs, pickles, strict=True):
            job.paths.folder.mkdir(parents=True, exist_ok=True)
            os.rename(path, job.paths.submitted_pickle)
        return jobs

    def submit_elements(self, element: ArrayElement, count: int) -> list[submitit.Job[Any]]:
        """One Slurm job array of ``count`` elements that share one pickle (launchers.runtime.element), written
        before sbatch beside the element's manifest and hard-linked under each element's name once Slurm gave
        the array its id."""
        shared = Path(element.manifest).with_suffix(".pkl")
        delayed = submitit_utils.DelayedSubmission(element)
        delayed.set_timeout(self.parameters.get("time", 5), self.max_num_timeout)
        dump_new(delayed, shared)
        jobs = self._submit_array_script(count)
        folder_text = str(jobs[0].paths.folder) if jobs else ""
        if any(tag in folder_text for tag in ("%j", "%t", "%A", "%a")):
            link_elements(shared, [job.paths.submitted_pickle for job in jobs])
        else:  # submitit's names, without a Path per element (arrays of 1,000)
            link_elements(shared, [os.path.join(folder_text, f"{job.job_id}_submitted.pkl") for job in jobs])
        return jobs

    def _submit_array_script(self, count: int) -> list[submitit.Job[Any]]:
        """sbatch of the array's script (``--array=0-<count-1>``): one handle per element."""
        array_ex = HpcgwSlurmExecutor(self.folder, max_num_timeout=self.max_num_timeout, python=self.python)
        array_ex.run_as = self.run_as
        array_ex.update_parameters(**self.parameters)
        array_ex.parameters["map_count"] = count
        first = array_ex._submit_command(self._submitit_command_str)
        tasks = list(range(first.num_tasks))
        return [submitit.SlurmJob(folder=self.folder, job_id=f"{first.job_id}_{i}", tasks=tasks) for i in range(count)]


def dump_new(delayed: submitit_utils.DelayedSubmission, path: Path) -> None:
    """submitit's ``DelayedSubmission.dump``, into a new file of mode 0640."""
    write_new_file(path, cloudpickle.dumps(delayed, pickle.HIGHEST_PROTOCOL))


def manifest_path(folder: Path) -> Path:
    """A new array's manifest, in the folder's part that does not depend on the job id (like submitit's pickles)."""
    return submitit_utils.JobPaths.get_first_id_independent_folder(folder) / f"{ELEMENTS_PREFIX}{uuid.uuid4().hex}.json"


def link_elements(shared: Path, targets: Sequence[Path | str]) -> int:
    """Hard links of ``shared`` under the names still missing; returns how many were made."""
    made = 0
    for target in targets:
        try:
            os.link(shared, target)
        except FileNotFoundError:  # a folder with %j-style tags: each element's own
            os.makedirs(os.path.dirname(target), exist_ok=True)
            os.link(shared, target)
        except FileExistsError:
            continue
        made += 1
    return made


ARRAY_PICKLE_PREFIX = "task"
_SINGLE_PICKLE = re.compile(r"^[0-9a-f]{32}\.pkl$")  # submitit's temporary name of a job's pickle
_TASK_PICKLE = re.compile(rf"^{ARRAY_PICKLE_PREFIX}(\d+)-[0-9a-f]{{32}}\.pkl$")


def finish_interrupted_submission(folder: Path, slurm_job_id: str) -> bool:
    """submitit renames a job's pickle to ``<id>_submitted.pkl`` right after sbatch answers. A submitter killed
    between the two leaves it under its temporary name; the job, when it starts, waits 60 s for the pickle and
    fails. This finishes that step in a single job's own folder; returns whether there was one to finish."""
    if (folder / f"{slurm_job_id}_submitted.pkl").exists():
        return False
    temporary = [p for p in folder.glob("*.pkl") if _SINGLE_PICKLE.match(p.name)]
    if not temporary:
        return False
    # Several: earlier attempts died before their sbatch. Each holds the same job; the newest went with it.
    max(temporary, key=lambda p: p.stat().st_mtime_ns).rename(folder / f"{slurm_job_id}_submitted.pkl")
    return True


def finish_interrupted_array(folder: Path, master_id: str) -> int:
    """The same for an array's folder. A shared pickle (``elements-<uuid>.pkl``, its manifest beside it) gets its
    missing links ``<master>_<i>_submitted.pkl``: the one already linked under the array's names, else the newest
    never linked (older ones are from attempts whose sbatch failed). A per-element pickle (``task<i>-<uuid>.pkl``)
    becomes ``<master>_<i>_submitted.pkl``. Returns how many were finished."""
    finished = 0
    for path in folder.glob(f"{ARRAY_PICKLE_PREFIX}*.pkl"):
        match = _TASK_PICKLE.match(path.name)
        target = folder / f"{master_id}_{match.group(1)}_submitted.pkl" if match else None
        if target is not None and not target.exists():
            path.rename(target)
            finished += 1
    shared = _shared_pickle(folder, master_id)
    if shared is not None:
        count = manifest_size(shared.with_suffix(".json"))
        finished += link_elements(shared, [folder / f"{master_id}_{i}_submitted.pkl" for i in range(count)])
    return finished


def _shared_pickle(folder: Path, master_id: str) -> Path | None:
    candidates = [p for p in folder.glob(f"{ELEMENTS_PREFIX}*.pkl") if p.with_suffix(".json").exists()]
    linked = [p for p in folder.glob(f"{master_id}_*_submitted.pkl")]
    if linked:
        inodes = {p.stat().st_ino for p in linked}
        return next((p for p in candidates if p.stat().st_ino in inodes), None)
    fresh = [p for p in candidates if p.stat().st_nlink == 1]
    return max(fresh, key=lambda p: p.stat().st_mtime_ns) if fresh else None


def slurm_parameters(spec: JobSpec) -> dict[str, Any]:
    """submitit's ``update_parameters`` for ``spec``: the resources, and the srun line's flags."""
    srun_args = ["--kill-on-bad-exit=1", "--distribution=block"]
    if spec.controller == "mpi":
        srun_args.append("--mpi=pmix")
    params: dict[str, Any] = {
        "job_name": spec.name,
        "partition": spec.partition,
        "nodes": spec.nodes,
        "ntasks_per_node": spec.tasks_per_node,
        "cpus_per_task": spec.cpus_per_task,
        "time": spec.time_limit_min,
        "signal_delay_s": spec.signal_delay_s,
        "srun_args": srun_args,
        "setup": [*RENDEZVOUS_LINES, *_framework_lines(spec), *spec.setup],
        "teardown": exit_code_teardown(spec.folder),
        "additional_parameters": {
            "requeue" if spec.requeue else "no_requeue": True,
            **_extra_sbatch(spec.extra_sbatch),
        },
    }
    if spec.comment:
        params["additional_parameters"]["comment"] = spec.comment
    if spec.account:
        params["account"] = spec.account
    if spec.qos:
        params["qos"] = spec.qos
    if spec.gpus_per_node:
        params["gpus_per_node"] = spec.gpus_per_node
    if spec.mem_gb is not None:
        params["mem"] = f"{round(spec.mem_gb * 1024)}M"
    return params


# Rank 0's node address, resolved once by the batch script on the host: DNS, else Slurm's NodeAddr (the
# development cluster's nodes have no DNS name). The ranks read HPCGW_RENDEZVOUS_ADDR, so a rank inside an image,
# which has none of Slurm's tools, never needs scontrol; and a job costs two Slurm calls, not one per rank. Constant
# text: the node's name comes from Slurm's variable at run time and is only ever quoted.
RENDEZVOUS_LINES = [
    "# rank 0's node address for the ranks' rendezvous (DNS, else Slurm's NodeAddr), resolved here on the host",
    '_hpcgw_node=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)',
    "_hpcgw_addr=$(getent ahostsv4 \"$_hpcgw_node\" | awk '{print $1; exit}')",
    "[[ -n $_hpcgw_addr ]] || "
    "_hpcgw_addr=$(scontrol -o show node \"$_hpcgw_node\" | grep -o 'NodeAddr=[^ ]*' | cut -d= -f2)",
    'export HPCGW_RENDEZVOUS_ADDR="${HPCGW_RENDEZVOUS_ADDR:-$_hpcgw_addr}"',
]


def _framework_lines(spec: JobSpec) -> list[str]:
    """What the job script says of a DDP job (the framework itself travels in the task's pickle): the rendezvous
    the ranks will use, for people reading the script (``hpcgw render``) and for the trainer's own checks."""
    if spec.framework != "ddp":
        return []
    return [
        "# torch.distributed: RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT are set per rank from Slurm's",
        "# variables by launchers.runtime.ddp; rank 0's task hosts the TCPStore (no torchrun, no ssh)",
        "export HPCGW_FRAMEWORK=ddp",
    ]


def _extra_sbatch(lines: tuple[str, ...]) -> dict[str, Any]:
    extra: dict[str, Any] = {}
    for line in lines:
        key, sep, value = line[2:].partition("=")
        extra[key.replace("-", "_")] = value if sep else True
    return extra


def slurm_executor(spec: JobSpec, parameters: dict[str, Any] | None = None) -> HpcgwSlurmExecutor:
    """The Slurm executor of ``spec``: its resources (or ``parameters``), submitting as ``spec.run_as``."""
    executor = HpcgwSlurmExecutor(folder=spec.folder, python=python_command(spec), max_num_timeout=spec.max_requeues)
    executor.run_as = spec.run_as
    executor.update_parameters(**(parameters if parameters is not None else slurm_parameters(spec)))
    return executor


def make_executor(spec: JobSpec, backend: Literal["slurm", "local"]) -> submitit.Executor:
    if backend == "slurm":
        return slurm_executor(spec)
    executor = submitit.LocalExecutor(folder=spec.folder, python=python_command(spec, under_srun=False))
    # gpus_per_node: submitit's local executor hides every GPU (CUDA_VISIBLE_DEVICES="") unless told how many
    # the job has; it then shows them all to every rank, and each rank picks its own by local rank.
    executor.update_parameters(
        nodes=1,
        tasks_per_node=spec.num_tasks,
        gpus_per_node=spec.gpus_per_node,
        timeout_min=spec.time_limit_min,
        signal_delay_s=spec.signal_delay_s,
    )
    return executor


def render_script(spec: JobSpec) -> str:
    """The exact job script ``submit`` would hand to sbatch, without submitting anything."""
    executor = make_executor(spec, "slurm")
    text: str = executor._make_submission_file_text(executor._submitit_command_str, "render")  # type: ignore[attr-defined]
    return text


def choose_backend(backend: Backend) -> Literal["slurm", "local"]:
    if backend != "auto":
        return backend
    return "slurm" if shutil.which("sbatch") else "local"


def check_partition(spec: JobSpec) -> None:
    """Refuse what the partition cannot hold, before sbatch would queue it forever or reject it obscurely."""
    size = partition_sizes(commands.sinfo(spec.partition)).get(spec.partition)
    if size is None:
        raise SpecError("partition", f"partition {spec.partition!r} does not exist or has no nodes")
    check_fit(spec, spec.partition, size)


def make_task(
    spec: JobSpec,
    command: Sequence[str] | None = None,
    env: Mapping[str, str] | None = None,
    function: Path | None = None,
) -> TrainerTask:
    """What every rank of ``spec``'s job runs: its trainer command, or its Python function (an array element
    may bring its own command, environment or function)."""
    payload = function or spec.function
    if payload is not None:
        return FunctionTask(str(payload), str(spec.folder), spec.rendezvous_timeout_s, spec.framework)
    return TrainerTask(
        list(spec.command if command is None else command),
        dict(spec.env if env is None else env),
        str(spec.folder),
        spec.rendezvous_timeout_s,
        spec.controller,
        spec.framework,
    )


def submit(spec: JobSpec, backend: Backend = "auto", *, check: bool = True) -> Job:
    """Submit ``spec`` as one multi-node Horovod job; returns at once with the job's handle.

    ``check=False`` skips the partition check (one sinfo call) for callers that checked already, like the
    gateway, which validates against its cached view of the partitions when the request arrives.
    """
    chosen = choose_backend(backend)
    if chosen == "slurm":
        if check:
            check_partition(spec)
    elif spec.nodes > 1:
        raise SpecError("nodes", "the local backend runs on this machine only; ask for 1 node")
    spec.folder.mkdir(parents=True, exist_ok=True)
    submitted = make_executor(spec, chosen).submit(make_task(spec))
    job = Job(submitted, Path(spec.folder), chosen, spec.num_tasks)
    log.info("submitted %s job %s (%d nodes x %d tasks)", chosen, job.job_id, spec.nodes, spec.tasks_per_node)
    return job
