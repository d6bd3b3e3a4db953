"""`hpcgw submit|status|jobs|logs|cancel|metrics|algorithms|render`: the gateway from a terminal.

Flags mirror sbatch where they mean the same thing. Exit codes: 0 success; for `submit --wait` the trainer's
exit code when the job failed (1 if it had none), 124 when it hit its time limit, 130 when it was cancelled;
1 when the gateway refused or could not be reached; 2 for bad usage.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.live import Live
from rich.table import Table

from gateway.client import Client, ClientError
from gateway.schemas import JobCreate, JobPublic
from launchers.spec import JobSpec
from launchers.states import JobState
from launchers.submission import SpecError, SubmitError
from launchers.submission import submit as launch

console = Console()
err = Console(stderr=True)

UrlOpt = Annotated[str | None, typer.Option("--url", envvar="HPCGW_URL", help="Gateway URL")]
TokenOpt = Annotated[str | None, typer.Option("--token", envvar="HPCGW_TOKEN", help="API token", show_default=False)]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output")]


def parse_time_min(value: str) -> int:
    """Slurm's time formats: M, M:S, H:M:S, D-H, D-H:M, D-H:M:S -> whole minutes (rounded up)."""
    m = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", value.strip())
    if m is None:
        raise typer.BadParameter(f"{value!r} is not a Slurm time (M, M:S, H:M:S, D-H, D-H:M, D-H:M:S)")
    days, a, b, c = (int(x) if x else None for x in m.groups())
    if days is not None:  # D-H[:M[:S]]
        seconds = days * 86400 + (a or 0) * 3600 + (b or 0) * 60 + (c or 0)
    elif c is not None:  # H:M:S
        seconds = (a or 0) * 3600 + (b or 0) * 60 + c
    elif b is not None:  # M:S
        seconds = (a or 0) * 60 + b
    else:  # M
        seconds = (a or 0) * 60
    if seconds <= 0:
        raise typer.BadParameter(f"{value!r} is not a positive time limit")
    return -(-seconds // 60)


def parse_mem_gb(value: str) -> float:
    """sbatch's --mem: a number with an optional K/M/G/T suffix (default megabytes)."""
    m = re.fullmatch(r"(\d+(?:\.\d+)?)([KMGT]?)B?", value.strip().upper())
    if m is None:
        raise typer.BadParameter(f"{value!r} is not a memory size like 4G or 4000M")
    factor = {"K": 1 / 1024**2, "M": 1 / 1024, "": 1 / 1024, "G": 1, "T": 1024}[m.group(2)]
    return float(m.group(1)) * factor


def parse_params(items: list[str] | None) -> dict[str, str]:
    params: dict[str, str] = {}
    for item in items or []:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise typer.BadParameter(f"expected NAME=VALUE, got {item!r}", param_hint="--param")
        params[name] = value
    return params


def client(url: str | None, token: str | None) -> Client:
    try:
        return Client(url, token)
    except ClientError as exc:
        err.print(f"hpcgw: error: {exc}", style="red", highlight=False, markup=False)
        raise typer.Exit(2) from None


def fail(exc: ClientError) -> typer.Exit:
    err.print(f"hpcgw: error: {exc}", style="red", highlight=False, markup=False)
    return typer.Exit(1)


def exit_code_for(job: JobPublic) -> int:
    if job.state is JobState.SUCCEEDED:
        return 0
    if job.state is JobState.CANCELLED:
        return 130
    if job.state is JobState.TIMEOUT:
        return 124
    return job.exit_code or 1


def elapsed(job: JobPublic) -> str:
    if job.start_time is None:
        return "-"
    end = job.end_time or time.time()
    seconds = int((end if isinstance(end, float) else end.timestamp()) - job.start_time.timestamp())
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def jobs_table(items: list[JobPublic], title: str | None = None) -> Table:
    """A better squeue: team, state, Slurm's reason and queue position, nodes, elapsed."""
    table = Table(
        "JOBID",
        "NAME",
        "TEAM",
        "USER",
        "STATE",
        "SLURM",
        "REASON",
        "POS",
        "NODES",
        "ELAPSED",
        title=title,
        title_justify="left",
    )
    for j in items:
        table.add_row(
            j.id,
            j.name,
            j.team,
            j.user,
            j.state.value,
            j.slurm_job_id or "-",
            j.reason or "-",
            str(j.position_in_queue or "-"),
            str(j.resources.nodes),
            elapsed(j),
        )
    return table


def submit(
    command: Annotated[list[str] | None, typer.Argument(help="With --direct: the trainer command, after --")] = None,
    algorithm: Annotated[str | None, typer.Option("--algorithm", help="Registered algorithm name")] = None,
    dataset: Annotated[str | None, typer.Option("--dataset", help="Dataset id")] = None,
    data_version: Annotated[str | None, typer.Option("--data-version", help="Dataset version hash")] = None,
    direct: Annotated[bool, typer.Option("--direct", help="Submit through the launchers here, no gateway")] = False,
    folder: Annotated[
        Path | None, typer.Option("--folder", help="--direct: the job folder (shared filesystem)")
    ] = None,
    account: Annotated[str | None, typer.Option("--account", "-A", help="--direct: Slurm account")] = None,
    job_name: Annotated[str, typer.Option("--job-name", "-J")] = "train",
    algorithm_version: Annotated[str | None, typer.Option("--algorithm-version")] = None,
    nodes: Annotated[int, typer.Option("--nodes", "-N")] = 1,
    ntasks_per_node: Annotated[int, typer.Option("--ntasks-per-node")] = 1,
    gpus_per_node: Annotated[int, typer.Option("--gpus-per-node")] = 0,
    cpus_per_task: Annotated[int, typer.Option("--cpus-per-task", "-c")] = 1,
    mem: Annotated[str | None, typer.Option("--mem", help="Memory per node, e.g. 16G")] = None,
    time_limit: Annotated[str, typer.Option("--time", "-t", help="Slurm time format, e.g. 2:00:00")] = "60",
    partition: Annotated[str | None, typer.Option("--partition", "-p")] = None,
    param: Annotated[list[str] | None, typer.Option("--param", help="NAME=VALUE (repeatable)")] = None,
    idempotency_key: Annotated[str | None, typer.Option("--idempotency-key")] = None,
    wait: Annotated[bool, typer.Option("--wait", help="Follow the job live; exit with its outcome")] = False,
    url: UrlOpt = None,
    token: TokenOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Submit a training job through the gateway (like sbatch, with the team's partition and quota)."""
    params = parse_params(param)
    mem_gb = parse_mem_gb(mem) if mem else None
    minutes = parse_time_min(time_limit)
    if direct:
        spec = direct_spec(
            command,
            partition,
            folder,
            job_name,
            account,
            nodes,
            ntasks_per_node,
            gpus_per_node,
            cpus_per_task,
            mem_gb,
            minutes,
            params,
        )
        raise typer.Exit(submit_direct(spec, wait=wait, json_out=json_out))
    if not (algorithm and dataset and data_version):
        raise typer.BadParameter("needs --algorithm, --dataset and --data-version (or --direct with a command)")
    request = JobCreate(
        name=job_name,
        algorithm=algorithm,
        algorithm_version=algorithm_version,
        dataset_id=dataset,
        train_data_version_hash=data_version,
        nodes=nodes,
        tasks_per_node=ntasks_per_node,
        gpus_per_node=gpus_per_node,
        cpus_per_task=cpus_per_task,
        mem_gb=mem_gb,
        time_limit_min=minutes,
        partition=partition,
        parameters=params,
        idempotency_key=idempotency_key,
    )
    with client(url, token) as c:
        try:
            job = c.submit(request)
        except ClientError as exc:
            raise fail(exc) from None
        if not wait:
            typer.echo(job.model_dump_json() if json_out else f"Submitted job {job.id} ({job.state.value})")
            return
        if not json_out:
            err.print(f"Submitted job {job.id}")
        final = follow(c, job.id, quiet=json_out)
    if json_out:
        typer.echo(final.model_dump_json())
    raise typer.Exit(exit_code_for(final))


def direct_spec(
    command: list[str] | None,
    partition: str | None,
    folder: Path | None,
    name: str,
    account: str | None,
    nodes: int,
    tasks: int,
    gpus: int,
    cpus: int,
    mem_gb: float | None,
    minutes: int,
    params: dict[str, str],
) -> JobSpec:
    if not command or not partition:
        raise typer.BadParameter("--direct needs -p/--partition and the trainer command after --")
    try:
        return JobSpec(
            name=name,
            partition=partition,
            account=account,
            nodes=nodes,
            tasks_per_node=tasks,
            gpus_per_node=gpus,
            cpus_per_task=cpus,
            mem_gb=mem_gb,
            time_limit_min=minutes,
            command=tuple(command),
            env=params,
            folder=folder or Path("hpcgw-jobs") / time.strftime("%Y%m%d-%H%M%S"),
        )
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise typer.BadParameter(problems) from None


def submit_direct(spec: JobSpec, *, wait: bool, json_out: bool) -> int:
    """The launcher path: the same flags, straight to Slurm from this machine."""
    try:
        job = launch(spec)
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
    if state is JobState.SUCCEEDED:
        return 0
    return {JobState.CANCELLED: 130, JobState.TIMEOUT: 124}.get(state, code or 1)


def follow(c: Client, job_id: str, *, quiet: bool = False) -> JobPublic:
    """A live view of the job's state and epochs done, until it ends; survives a gateway restart."""
    if quiet:
        return c.wait(job_id, timeout_s=10**7)

    def view(job: JobPublic, epochs: int) -> Table:
        table = jobs_table([job])
        table.caption = f"epochs done: {epochs}"
        return table

    with Live(console=err, refresh_per_second=4, transient=False) as live:
        while True:
            try:
                job = c.job(job_id)
                epochs = len(c.metrics(job_id).epochs) if job.state is not JobState.ACCEPTED else 0
            except ClientError as exc:
                live.console.print(f"gateway: {exc}")
                time.sleep(2)
                continue
            live.update(view(job, epochs))
            if job.state.is_terminal:
                return job
            time.sleep(1)


def status(job_id: str, url: UrlOpt = None, token: TokenOpt = None, json_out: JsonOpt = False) -> None:
    """One job, in full."""
    with client(url, token) as c:
        try:
            job = c.job(job_id)
        except ClientError as exc:
            raise fail(exc) from None
    if json_out:
        typer.echo(job.model_dump_json())
        return
    console.print(jobs_table([job]))
    for key in (
        "algorithm",
        "algorithm_version",
        "image",
        "dataset_id",
        "train_data_version_hash",
        "partition",
        "account",
        "exit_code",
        "restarts",
        "submit_time",
        "start_time",
        "end_time",
    ):
        console.print(f"{key:>24}: {getattr(job, key)}", highlight=False)
    console.print(f"{'parameters':>24}: {json.dumps(job.parameters)}", highlight=False, markup=False)


def jobs(
    team: Annotated[str | None, typer.Option("--team")] = None,
    state: Annotated[JobState | None, typer.Option("--state", "-t")] = None,
    limit: Annotated[int, typer.Option("--limit", "-n")] = 50,
    url: UrlOpt = None,
    token: TokenOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """List jobs, newest first: a better squeue (team, state, reason, queue position, nodes, elapsed)."""
    with client(url, token) as c:
        try:
            page = c.jobs(team=team, state=state, limit=limit)
        except ClientError as exc:
            raise fail(exc) from None
    if json_out:
        typer.echo(page.model_dump_json())
        return
    console.print(jobs_table(page.items, title=f"{len(page.items)} of {page.total} jobs"))


def logs(
    job_id: str,
    rank: Annotated[int | None, typer.Option("--rank", "-r", help="One rank (default: all)")] = None,
    lines: Annotated[int, typer.Option("--lines", "-n")] = 50,
    follow_: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing new lines until the job ends")] = False,
    url: UrlOpt = None,
    token: TokenOpt = None,
) -> None:
    """The tail of each rank's output."""
    with client(url, token) as c:
        seen: dict[int, int] = {}
        while True:
            try:
                tails = c.logs(job_id, rank=rank, lines=lines if not follow_ else 10_000)
                job = c.job(job_id) if follow_ else None
            except ClientError as exc:
                raise fail(exc) from None
            for tail in tails:
                new = tail.lines[seen.get(tail.rank, 0) :] if follow_ else tail.lines[-lines:]
                for line in new:
                    typer.echo(f"[{tail.rank}] {line}" if rank is None else line)
                seen[tail.rank] = len(tail.lines)
            if not follow_ or (job is not None and job.state.is_terminal):
                return
            time.sleep(1)


def cancel(job_ids: list[str], url: UrlOpt = None, token: TokenOpt = None) -> None:
    """Cancel jobs (like scancel): waiting ones at once, running ones through Slurm."""
    code = 0
    with client(url, token) as c:
        for job_id in job_ids:
            try:
                job = c.cancel(job_id)
                typer.echo(f"{job.id}: cancel requested ({job.state.value})")
            except ClientError as exc:
                err.print(f"hpcgw cancel: {job_id}: {exc}", style="red", markup=False)
                code = 1
    raise typer.Exit(code)


def metrics(job_id: str, url: UrlOpt = None, token: TokenOpt = None, json_out: JsonOpt = False) -> None:
    """Per-epoch training metrics."""
    with client(url, token) as c:
        try:
            epochs = c.metrics(job_id).epochs
        except ClientError as exc:
            raise fail(exc) from None
    if json_out:
        typer.echo(json.dumps(epochs))
        return
    keys: list[str] = []
    for epoch in epochs:
        keys += [k for k in epoch if k not in keys]
    table = Table(*keys)
    for epoch in epochs:
        table.add_row(*(str(epoch.get(k, "")) for k in keys))
    console.print(table)


def algorithms(url: UrlOpt = None, token: TokenOpt = None, json_out: JsonOpt = False) -> None:
    """Registered algorithms and their versions."""
    with client(url, token) as c:
        try:
            items = c.algorithms()
        except ClientError as exc:
            raise fail(exc) from None
    if json_out:
        typer.echo(json.dumps([a.model_dump(mode="json") for a in items]))
        return
    table = Table("NAME", "TEAM", "CURRENT", "VERSIONS", "IMAGE")
    for a in items:
        current = next((v for v in a.versions if v.version == a.current_version), None)
        table.add_row(
            a.name,
            a.team,
            a.current_version,
            ",".join(v.version for v in a.versions),
            current.image if current else "-",
        )
    console.print(table)


def render(
    algorithm: Annotated[str, typer.Option("--algorithm")],
    dataset: Annotated[str, typer.Option("--dataset")],
    data_version: Annotated[str, typer.Option("--data-version")],
    nodes: Annotated[int, typer.Option("--nodes", "-N")] = 1,
    ntasks_per_node: Annotated[int, typer.Option("--ntasks-per-node")] = 1,
    gpus_per_node: Annotated[int, typer.Option("--gpus-per-node")] = 0,
    cpus_per_task: Annotated[int, typer.Option("--cpus-per-task", "-c")] = 1,
    mem: Annotated[str | None, typer.Option("--mem")] = None,
    time_limit: Annotated[str, typer.Option("--time", "-t")] = "60",
    partition: Annotated[str | None, typer.Option("--partition", "-p")] = None,
    param: Annotated[list[str] | None, typer.Option("--param")] = None,
    url: UrlOpt = None,
    token: TokenOpt = None,
) -> None:
    """Print the exact job script a request would produce, without submitting it (a dry run)."""
    request = JobCreate(
        algorithm=algorithm,
        dataset_id=dataset,
        train_data_version_hash=data_version,
        nodes=nodes,
        tasks_per_node=ntasks_per_node,
        gpus_per_node=gpus_per_node,
        cpus_per_task=cpus_per_task,
        mem_gb=parse_mem_gb(mem) if mem else None,
        time_limit_min=parse_time_min(time_limit),
        partition=partition,
        parameters=parse_params(param),
    )
    with client(url, token) as c:
        try:
            typer.echo(c.render(request), nl=False)
        except ClientError as exc:
            raise fail(exc) from None


def register(app: typer.Typer) -> None:
    app.command(context_settings={"allow_interspersed_args": False})(submit)
    for command in (status, jobs, logs, cancel, metrics, algorithms, render):
        app.command()(command)
