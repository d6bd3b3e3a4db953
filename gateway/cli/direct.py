"""`--direct`: the same flags as through the gateway, straight to Slurm from this machine, through the launchers.

The launchers' submission machinery (submitit, job scripts, sbatch) is imported inside the functions: a login
node that only talks to the gateway loads none of it, and `hpcgw --help` stays fast.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import typer
from pydantic import ValidationError

from gateway.cli.options import bad_parameters, problems
from gateway.cli.views import err, exit_code
from launchers.errors import SpecError, SubmitError
from launchers.resources import Resources
from launchers.slurm.ids import master_id
from launchers.space import ListSpace, Scalar
from launchers.spec import Framework, JobSpec


def direct_spec(
    command: list[str] | None,
    partition: str | None,
    folder: Path | None,
    name: str,
    account: str | None,
    resources: Resources,
    params: dict[str, str],
    framework: Framework = "horovod",
) -> JobSpec:
    """Without a gateway there is no team to pick the partition, and no algorithm to say what runs."""
    if not command or not partition:
        raise typer.BadParameter("--direct needs -p/--partition and the trainer command after --")
    with bad_parameters():
        return JobSpec(
            **resources.model_dump(),
            name=name,
            partition=partition,
            account=account,
            command=tuple(command),
            env=params,
            framework=framework,
            folder=folder or Path("hpcgw-jobs") / time.strftime("%Y%m%d-%H%M%S"),
        )


def submit_direct(spec: JobSpec, *, wait: bool, json_out: bool) -> int:
    """Submit, and with ``wait`` print each new state until the job ends; returns the exit code for `hpcgw`."""
    from launchers.submission import submit

    try:
        job = submit(spec)
    except SpecError as exc:
        err.print(f"hpcgw: error: {exc}", style="red", highlight=False, markup=False)
        return 2
    except SubmitError as exc:
        err.print(f"hpcgw: error: {exc}", style="red", highlight=False, markup=False)
        return 1
    if not wait:
        typer.echo(
            json.dumps({"job_id": job.job_id, "folder": str(spec.folder)})
            if json_out
            else f"Submitted job {job.job_id}"
        )
        return 0
    if not json_out:
        err.print(f"Submitted job {job.job_id}")
    last = None
    while not (state := job.state).is_terminal:
        if state is not last and not json_out:
            err.print(f"{job.job_id}: {state.value}")
        last = state
        time.sleep(1)
    state = job.wait(timeout_s=120)
    code = job.exit_code
    if json_out:
        typer.echo(json.dumps({"job_id": job.job_id, "state": state.value, "exit_code": code}))
    else:
        err.print(f"{job.job_id}: {state.value} (exit code {code})")
    return exit_code(state, code)


def sweep_direct(
    command: list[str] | None,
    partition: str | None,
    folder: Path | None,
    points: list[dict[str, Scalar]],
    parallel: int,
    base_env: dict[str, str],
    account: str | None,
    resources: Resources,
    job_name: str,
    json_out: bool,
) -> None:
    """A sweep's job arrays from this machine; a sweep's logs need a folder that outlives the command."""
    if not command or not partition or folder is None:
        raise typer.BadParameter("--direct needs -p/--partition, --folder and the trainer command after --")
    from launchers.sweeps import sweep

    try:
        space = ListSpace(points=points)
        spec = JobSpec(
            **resources.model_dump(),
            name=job_name,
            partition=partition,
            account=account,
            command=tuple(command),
            env=base_env,
            folder=folder,
        )
        jobs = sweep(spec, space, parallel)
    except ValidationError as exc:
        typer.echo(f"hpcgw sweep: error: {problems(exc)}", err=True)
        raise typer.Exit(2) from None
    except (SpecError, ValueError) as exc:
        typer.echo(f"hpcgw sweep: error: {exc}", err=True)
        raise typer.Exit(2) from None
    except SubmitError as exc:
        typer.echo(f"hpcgw sweep: error: {exc}", err=True)
        raise typer.Exit(1) from None
    arrays = list(dict.fromkeys(master_id(j.job_id) for j in jobs))
    if json_out:
        tasks = [
            {"index": i, "job_id": j.job_id, "parameters": p}
            for i, (j, p) in enumerate(zip(jobs, space.points(), strict=True))
        ]
        typer.echo(json.dumps({"arrays": arrays, "max_parallel": parallel, "tasks": tasks}))
    else:
        typer.echo(f"Submitted {len(jobs)} tasks as job array {', '.join(arrays)} (at most {parallel} at once)")
