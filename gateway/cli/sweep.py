"""`hpcgw sweep`: a parameter sweep as one Slurm job array, through the gateway or (`--direct`) from here.

Two forms an sbatch user already knows:
  hpcgw sweep --array 0-99%10 --params-file points.json --algorithm A --dataset D --data-version H
      (array index i runs with the i-th parameter dict of the file; %10 runs at most 10 at once)
  hpcgw sweep --grid LR=0.1,0.01 --grid BATCH_SIZE=32,64 --max-parallel 2 --algorithm A --dataset D --data-version H
With --direct the same flags submit through the launchers on this machine, with `-p`, `--folder` and the
trainer command after `--` instead of the algorithm and dataset.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError

from gateway.cli.direct import sweep_direct
from gateway.cli.options import (
    AccountOpt,
    AlgorithmOpt,
    CommandArg,
    CpusPerTaskOpt,
    DirectOpt,
    NodesOpt,
    NtasksPerNodeOpt,
    PartitionOpt,
    TokenFileOpt,
    TokenOpt,
    UrlOpt,
    bad_parameters,
    client,
    fail,
    problems,
    resources_from_flags,
    time_option,
)
from gateway.cli.views import follow_sweep
from gateway.client import ClientError
from gateway.schemas import JobCreate
from launchers.space import GridSpace, Scalar, parse_array


def _key_values(items: list[str], flag: str) -> dict[str, list[str]]:
    """--grid NAME=V1,V2 (a list per name) and --param NAME=VALUE (one value, commas and all)."""
    result: dict[str, list[str]] = {}
    for item in items:
        name, sep, values = item.partition("=")
        if not sep or not name:
            raise typer.BadParameter(f"expected NAME=VALUE[,VALUE...], got {item!r}", param_hint=flag)
        result[name] = values.split(",") if flag == "--grid" else [values]
    return result


def _points_file(path: Path) -> list[dict[str, Scalar]]:
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


def _points(
    array: str | None, params_file: Path | None, grid: list[str] | None
) -> tuple[list[dict[str, Scalar]], int | None]:
    """The sweep's points, in task order, and the %K of --array if given."""
    if (array is None) == (grid is None):
        raise typer.BadParameter("give either --array with --params-file, or --grid", param_hint="--array/--grid")
    if array is None:
        try:
            return GridSpace(grid=_key_values(grid or [], "--grid")).points(), None  # type: ignore[arg-type]
        except ValidationError as exc:
            raise typer.BadParameter(problems(exc), param_hint="--grid") from None
    if params_file is None:
        raise typer.BadParameter("--array needs --params-file", param_hint="--params-file")
    try:
        indices, throttle = parse_array(array)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--array") from None
    points = _points_file(params_file)
    if indices and indices[-1] >= len(points):
        raise typer.BadParameter(f"index {indices[-1]} but the file has {len(points)} points", param_hint="--array")
    return [points[i] for i in indices], throttle


def sweep(
    command: CommandArg = None,
    algorithm: AlgorithmOpt = None,
    dataset: Annotated[str | None, typer.Option("--dataset", help="Dataset id (gateway)")] = None,
    data_version: Annotated[str | None, typer.Option("--data-version", help="Dataset version hash (gateway)")] = None,
    direct: DirectOpt = False,
    partition: PartitionOpt = None,
    folder: Annotated[Path | None, typer.Option("--folder", help="--direct: job folder (logs: %A_%a_%t)")] = None,
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
    account: AccountOpt = None,
    nodes: NodesOpt = 1,
    ntasks_per_node: NtasksPerNodeOpt = 1,
    cpus_per_task: CpusPerTaskOpt = 1,
    time_limit: Annotated[str, time_option("Per task, in Slurm's time format")] = "60",
    job_name: Annotated[str, typer.Option("--job-name", "-J")] = "hpcgw-sweep",
    wait: Annotated[bool, typer.Option("--wait", help="Follow the sweep until every task ended")] = False,
    url: UrlOpt = None,
    token: TokenOpt = None,
    token_file: TokenFileOpt = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the submitted tasks as JSON")] = False,
) -> None:
    """Submit a sweep as one Slurm job array (split past MaxArraySize), like sbatch --array=0-N%K."""
    points, throttle = _points(array, params_file, grid)
    parallel = max_parallel if max_parallel is not None else throttle or len(points)
    base_env = {k: v[0] for k, v in _key_values(param or [], "--param").items()}
    resources = resources_from_flags(
        nodes=nodes, ntasks_per_node=ntasks_per_node, cpus_per_task=cpus_per_task, time_limit=time_limit
    )
    if direct:
        sweep_direct(command, partition, folder, points, parallel, base_env, account, resources, job_name, json_out)
        return
    if not (algorithm and dataset and data_version):
        raise typer.BadParameter("needs --algorithm, --dataset and --data-version (or --direct)")
    with bad_parameters():
        base = JobCreate(
            **resources.model_dump(),
            name=job_name,
            algorithm=algorithm,
            dataset_id=dataset,
            train_data_version_hash=data_version,
            partition=partition,
            parameters=dict(base_env),
        )
    with client(url, token, token_file) as c:
        try:
            created = c.submit_sweep(
                {
                    "name": job_name,
                    "base": base.model_dump(mode="json", exclude_none=True),
                    "space": {"kind": "list", "points": points},
                    "max_parallel": parallel,
                }
            )
            if wait:
                created = follow_sweep(c, created.id, quiet=json_out)
        except ClientError as exc:
            raise fail(exc) from None
    if json_out:
        typer.echo(created.model_dump_json())
    else:
        typer.echo(f"Submitted sweep {created.id}: {created.task_count} tasks, at most {parallel} at once")
        if wait:
            typer.echo(" ".join(f"{k}={v}" for k, v in sorted(created.counts.items())))
    if wait and set(created.counts) != {"succeeded"}:
        raise typer.Exit(1)
