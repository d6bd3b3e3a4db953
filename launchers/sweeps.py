"""``sweep(spec, space, max_parallel)``: one parameter sweep as Slurm job arrays, like ``sbatch --array=0-N%K``.

Each point of the space becomes one array element, with its parameters in its environment and its own
``SLURM_ARRAY_TASK_ID``; Slurm runs at most K at once. A sweep larger than the site's ``MaxArraySize`` is split
into consecutive arrays (task i lives in array i // MaxArraySize, at index i % MaxArraySize), each depending on
the one before (``--dependency=afterany``), so that at most K tasks run at any moment across the whole sweep:
the throttle stays exact, at the cost of a short dip in parallelism at each boundary.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

from launchers.errors import SpecError
from launchers.job import Job
from launchers.runtime.element import ArrayElement, element_entry, write_manifest
from launchers.slurm.commands import max_array_size
from launchers.slurm.ids import master_id
from launchers.space import GridSpace, ListSpace, RandomSpace, Scalar
from launchers.spec import JobSpec
from launchers.submission import check_partition, manifest_path, slurm_executor, slurm_parameters

log = logging.getLogger(__name__)


def chunks(n: int, size: int) -> list[range]:
    """The consecutive task ranges, one per array."""
    return [range(start, min(start + size, n)) for start in range(0, n, size)]


def as_env(point: Mapping[str, Scalar]) -> dict[str, str]:
    return {name: str(value).lower() if isinstance(value, bool) else str(value) for name, value in point.items()}


def sweep(
    spec: JobSpec,
    space: GridSpace | ListSpace | RandomSpace | Sequence[Mapping[str, Scalar]],
    max_parallel: int,
    *,
    check: bool = True,
    array_size: int | None = None,
) -> list[Job]:
    """Submit every point of ``space`` as an element of a job array; returns one Job per point, in order."""
    if max_parallel < 1:
        raise SpecError("max_parallel", f"must be at least 1, got {max_parallel}")
    points = space.points() if isinstance(space, GridSpace | ListSpace | RandomSpace) else [dict(p) for p in space]
    if not points:
        raise SpecError("space", "the parameter space is empty")
    return submit_array(
        spec, [{**spec.env, **as_env(point)} for point in points], max_parallel, check=check, array_size=array_size
    )


def submit_array(
    spec: JobSpec,
    envs: Sequence[Mapping[str, str]],
    max_parallel: int,
    *,
    check: bool = True,
    array_size: int | None = None,
    commands: Sequence[Sequence[str]] | None = None,
    chain: bool = True,
    functions: Sequence[Path] | None = None,
    checked: bool = False,
) -> list[Job]:
    """One array element per environment in ``envs``, all else from ``spec``; split past MaxArraySize.

    ``commands`` gives each element its own command line (the gateway's coalesced dispatch: unrelated jobs of one
    shape in one array), ``functions`` its own Python function (``Executor.map_array``); ``chain=False`` lets
    the split arrays run side by side, since there is no sweep-wide throttle to keep. ``checked``: each element's
    environment and command were validated already, in a JobSpec of their own (the gateway's jobs)."""
    if commands is not None and len(commands) != len(envs):
        raise SpecError("commands", f"{len(commands)} commands for {len(envs)} array elements")
    if functions is not None and len(functions) != len(envs):
        raise SpecError("functions", f"{len(functions)} functions for {len(envs)} array elements")
    for i, env in enumerate([] if checked else envs):  # a single job's rules, before anything reaches Slurm
        command = spec.command if commands is None else tuple(commands[i])
        JobSpec.model_validate({**spec.model_dump(), "env": dict(env), "command": command})
    if check:
        check_partition(spec)
    size = array_size or max_array_size()
    spec.folder.mkdir(parents=True, exist_ok=True)
    jobs: list[Job] = []
    previous: str | None = None
    for part in chunks(len(envs), size):
        params = slurm_parameters(spec) | {"array_parallelism": max_parallel}
        if previous is not None and chain:
            params["additional_parameters"] = {**params["additional_parameters"], "dependency": f"afterany:{previous}"}
        executor = slurm_executor(spec, params)
        manifest = manifest_path(spec.folder)
        write_manifest(
            manifest,
            [
                element_entry(
                    spec.command if commands is None else commands[i],
                    envs[i],
                    spec.function if functions is None else functions[i],
                )
                for i in part
            ],
        )
        element = ArrayElement(
            str(manifest), str(spec.folder), spec.rendezvous_timeout_s, spec.controller, spec.framework
        )
        submitted = executor.submit_elements(element, len(part))
        previous = master_id(str(submitted[0].job_id))
        folder = Path(spec.folder)
        jobs += [Job(s, folder, "slurm", spec.num_tasks) for s in submitted]
        log.info(
            "submitted array %s: tasks %d-%d of %d, at most %d at once",
            previous,
            part.start,
            part.stop - 1,
            len(envs),
            max_parallel,
        )
    return jobs
