"""`hpcgw sweep`: a parameter sweep as Slurm job arrays, straight from a login node.

Two forms an sbatch user already knows:
  hpcgw sweep --array 0-99%10 --params-file points.json -p team-a --folder runs/s1 -- python train.py
      (array index i runs with the i-th parameter dict of the file; %10 runs at most 10 at once)
  hpcgw sweep --grid LR=0.1,0.01 --grid BATCH_SIZE=32,64 --max-parallel 2 -p team-a --folder runs/s2 -- python train.py
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError

from launchers.space import GridSpace, ListSpace, parse_array
from launchers.spec import JobSpec
from launchers.submit import SpecError, SubmitError
from launchers.sweep import sweep as submit_sweep


def _key_values(items: list[str], flag: str) -> dict[str, list[str]]:
    result: dict[str, list[str]] = {}
    for item in items:
        name, sep, values = item.partition("=")
        if not sep or not name:
            raise typer.BadParameter(f"expected NAME=VALUE[,VALUE...], got {item!r}", param_hint=flag)
        result[name] = values.split(",") if flag == "--grid" else [values]
    return result


def _points_file(path: Path) -> list[dict[str, object]]:
    """A JSON list of objects, or JSON lines, one object per point."""
    text = path.read_text()
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        data = [json.loads(line) for line in text.splitlines() if line.strip()]
    if not isinstance(data, list) or not all(isinstance(p, dict) for p in data):
        raise typer.BadParameter(
            "must hold a JSON list of objects (or one object per line)", param_hint="--params-file"
        )
    return data


def sweep(
    command: Annotated[list[str], typer.Argument(help="The trainer command, after --")],
    partition: Annotated[str, typer.Option("--partition", "-p", help="Slurm partition")],
    folder: Annotated[Path, typer.Option("--folder", help="Job folder on a shared filesystem (logs: %A_%a_%t)")],
    array: Annotated[
        str | None, typer.Option("--array", "-a", help="sbatch-style indices into --params-file, e.g. 0-99%10")
    ] = None,
    params_file: Annotated[
        Path | None, typer.Option("--params-file", exists=True, dir_okay=False, help="JSON list of parameter dicts")
    ] = None,
    grid: Annotated[
        list[str] | None, typer.Option("--grid", help="NAME=V1,V2,... (repeat for a cartesian product)")
    ] = None,
    max_parallel: Annotated[int | None, typer.Option("--max-parallel", help="At most K tasks at once (the %K)")] = None,
    param: Annotated[list[str] | None, typer.Option("--param", help="NAME=VALUE for every task (repeatable)")] = None,
    account: Annotated[str | None, typer.Option("--account", "-A")] = None,
    nodes: Annotated[int, typer.Option("--nodes", "-N")] = 1,
    ntasks_per_node: Annotated[int, typer.Option("--ntasks-per-node")] = 1,
    cpus_per_task: Annotated[int, typer.Option("--cpus-per-task", "-c")] = 1,
    time_min: Annotated[int, typer.Option("--time", "-t", help="Time limit per task, minutes")] = 60,
    job_name: Annotated[str, typer.Option("--job-name", "-J")] = "hpcgw-sweep",
    json_out: Annotated[bool, typer.Option("--json", help="Print the submitted tasks as JSON")] = False,
) -> None:
    """Submit a sweep as one Slurm job array (split past MaxArraySize), like sbatch --array=0-N%K."""
    if (array is None) == (grid is None):
        raise typer.BadParameter("give either --array with --params-file, or --grid", param_hint="--array/--grid")
    if array is not None:
        if params_file is None:
            raise typer.BadParameter("--array needs --params-file", param_hint="--params-file")
        try:
            indices, throttle = parse_array(array)
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint="--array") from None
        points = _points_file(params_file)
        if indices and indices[-1] >= len(points):
            raise typer.BadParameter(f"index {indices[-1]} but the file has {len(points)} points", param_hint="--array")
        space_points = [points[i] for i in indices]
        parallel = max_parallel if max_parallel is not None else throttle or len(space_points)
    base_env = {k: v[0] for k, v in _key_values(param or [], "--param").items()}
    try:
        if array is None:
            space_points = GridSpace(grid=_key_values(grid or [], "--grid")).points()  # type: ignore[arg-type]
            parallel = max_parallel if max_parallel is not None else len(space_points)
        space = ListSpace(points=space_points)
        spec = JobSpec(
            name=job_name,
            partition=partition,
            account=account,
            nodes=nodes,
            tasks_per_node=ntasks_per_node,
            cpus_per_task=cpus_per_task,
            time_limit_min=time_min,
            command=tuple(command),
            env=base_env,
            folder=folder,
        )
        jobs = submit_sweep(spec, space, parallel)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'value'}: {e['msg']}" for e in exc.errors())
        typer.echo(f"hpcgw sweep: error: {problems}", err=True)
        raise typer.Exit(2) from None
    except (SpecError, ValueError) as exc:
        typer.echo(f"hpcgw sweep: error: {exc}", err=True)
        raise typer.Exit(2) from None
    except SubmitError as exc:
        typer.echo(f"hpcgw sweep: error: {exc}", err=True)
        raise typer.Exit(1) from None
    arrays = list(dict.fromkeys(j.job_id.split("_", 1)[0] for j in jobs))
    if json_out:
        typer.echo(
            json.dumps(
                {
                    "arrays": arrays,
                    "max_parallel": parallel,
                    "tasks": [
                        {"index": i, "job_id": j.job_id, "parameters": p}
                        for i, (j, p) in enumerate(zip(jobs, space.points(), strict=True))
                    ],
                }
            )
        )
    else:
        typer.echo(f"Submitted {len(jobs)} tasks as job array {', '.join(arrays)} (at most {parallel} at once)")
