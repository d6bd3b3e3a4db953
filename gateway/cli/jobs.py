"""`hpcgw submit|status|jobs|logs|cancel|metrics|algorithms|render`: the gateway from a terminal.

Flags mirror sbatch where they mean the same thing. Exit codes: 0 success; for `submit --wait` the trainer's
exit code when the job failed (1 if it had none), 124 when it hit its time limit, 130 when it was cancelled;
1 when the gateway refused or could not be reached; 2 for bad usage.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated

import typer

from gateway.cli import lines
from gateway.cli.algorithms import algorithms, reregister
from gateway.cli.direct import direct_spec, submit_direct
from gateway.cli.helptext import epilog
from gateway.cli.options import (
    AccountOpt,
    AlgorithmOpt,
    CommandArg,
    CpusPerTaskOpt,
    DirectOpt,
    FrameworkChoice,
    FrameworkOpt,
    GpusPerNodeOpt,
    JobIdArg,
    JobIdsArg,
    JsonOpt,
    NodesOpt,
    NtasksPerNodeOpt,
    PartitionOpt,
    TokenFileOpt,
    TokenOpt,
    UrlOpt,
    bad_parameters,
    client,
    fail,
    mem_option,
    parse_params,
    resources_from_flags,
    time_option,
)
from gateway.cli.views import (
    console,
    err,
    exit_code_for,
    follow,
    metrics_table,
    print_job,
)
from gateway.cli.watch import watch
from gateway.client import ClientError
from gateway.schemas import JobCreate, RerunRequest
from launchers.states import JobState


def submit(
    command: CommandArg = None,
    algorithm: AlgorithmOpt = None,
    dataset: Annotated[str | None, typer.Option("--dataset", help="Dataset id")] = None,
    data_version: Annotated[str | None, typer.Option("--data-version", help="Dataset version hash")] = None,
    direct: DirectOpt = False,
    folder: Annotated[
        Path | None, typer.Option("--folder", help="--direct: the job folder (shared filesystem)")
    ] = None,
    account: AccountOpt = None,
    framework: FrameworkOpt = FrameworkChoice.horovod,
    job_name: Annotated[str, typer.Option("--job-name", "-J")] = "train",
    algorithm_version: Annotated[str | None, typer.Option("--algorithm-version")] = None,
    nodes: NodesOpt = 1,
    ntasks_per_node: NtasksPerNodeOpt = 1,
    gpus_per_node: GpusPerNodeOpt = 0,
    cpus_per_task: CpusPerTaskOpt = 1,
    mem: Annotated[str | None, mem_option("Memory per node, e.g. 16G")] = None,
    time_limit: Annotated[str, time_option("Slurm time format, e.g. 2:00:00")] = "60",
    partition: PartitionOpt = None,
    param: Annotated[list[str] | None, typer.Option("--param", help="NAME=VALUE (repeatable)")] = None,
    idempotency_key: Annotated[str | None, typer.Option("--idempotency-key")] = None,
    wait: Annotated[bool, typer.Option("--wait", help="Follow the job live; exit with its outcome")] = False,
    url: UrlOpt = None,
    token: TokenOpt = None,
    token_file: TokenFileOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Submit a training job through the gateway (like sbatch, with the team's partition and quota)."""
    params = parse_params(param)
    resources = resources_from_flags(
        nodes=nodes,
        ntasks_per_node=ntasks_per_node,
        gpus_per_node=gpus_per_node,
        cpus_per_task=cpus_per_task,
        mem=mem,
        time_limit=time_limit,
    )
    if direct:
        spec = direct_spec(command, partition, folder, job_name, account, resources, params, framework.value)
        raise typer.Exit(submit_direct(spec, wait=wait, json_out=json_out))
    if framework != "horovod":
        raise typer.BadParameter(
            "through the gateway, the algorithm version names the framework", param_hint="--framework"
        )
    if not (algorithm and dataset and data_version):
        raise typer.BadParameter("needs --algorithm, --dataset and --data-version (or --direct with a command)")
    with bad_parameters():
        request = JobCreate(
            **resources.model_dump(),
            name=job_name,
            algorithm=algorithm,
            algorithm_version=algorithm_version,
            dataset_id=dataset,
            train_data_version_hash=data_version,
            partition=partition,
            parameters=dict(params),
            idempotency_key=idempotency_key,
        )
    with client(url, token, token_file) as c:
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


def status(
    job_id: JobIdArg,
    url: UrlOpt = None,
    token: TokenOpt = None,
    token_file: TokenFileOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """One job, in full."""
    with client(url, token, token_file) as c:
        try:
            job = c.job(job_id)
        except ClientError as exc:
            raise fail(exc) from None
    if json_out:
        typer.echo(job.model_dump_json())
        return
    print_job(job)


def jobs(
    team: Annotated[str | None, typer.Option("--team")] = None,
    state: Annotated[JobState | None, typer.Option("--state", "-t")] = None,
    limit: Annotated[int, typer.Option("--limit", "-n")] = 50,
    wide: Annotated[
        bool, typer.Option("--wide", "-l", help="More fields: team, full state, Slurm id, position")
    ] = False,
    fmt: Annotated[
        str | None, typer.Option("--format", "-o", help="squeue-style fields, e.g. '%.16i %.8u %.2t %R'")
    ] = None,
    noheader: Annotated[bool, typer.Option("--noheader", "-h", help="No header line")] = False,
    url: UrlOpt = None,
    token: TokenOpt = None,
    token_file: TokenFileOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """List jobs, newest first, as squeue does: full ids, 80 columns (--wide for more), -o for your own fields.

    Codes: %i id, %j name, %u user, %a team, %P partition, %t state (2 letters), %T state, %M time, %D nodes,
    %R reason, %A Slurm id, %Q queue position, %V submitted, %x exit code.
    """
    chosen = fmt or (lines.WIDE_FORMAT if wide else lines.DEFAULT_FORMAT)
    try:
        lines.render([], chosen)
    except lines.FormatError as exc:
        raise typer.BadParameter(str(exc), param_hint="--format") from None
    with client(url, token, token_file) as c:
        try:
            page = c.jobs(team=team, state=state, limit=limit)
        except ClientError as exc:
            raise fail(exc) from None
    if json_out:
        typer.echo(page.model_dump_json())
        return
    output = lines.render(page.items, chosen, header=not noheader, width=None if (wide or fmt) else lines.WIDTH)
    if output:
        typer.echo(output)


def logs(
    job_id: JobIdArg,
    rank: Annotated[int | None, typer.Option("--rank", "-r", help="One rank (default: all)")] = None,
    lines: Annotated[int, typer.Option("--lines", "-n")] = 50,
    follow_: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing new lines until the job ends")] = False,
    url: UrlOpt = None,
    token: TokenOpt = None,
    token_file: TokenFileOpt = None,
) -> None:
    """The tail of each rank's output."""
    with client(url, token, token_file) as c:
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


def cancel(job_ids: JobIdsArg, url: UrlOpt = None, token: TokenOpt = None, token_file: TokenFileOpt = None) -> None:
    """Cancel jobs (like scancel): waiting ones at once, running ones through Slurm."""
    code = 0
    with client(url, token, token_file) as c:
        for job_id in job_ids:
            try:
                job = c.cancel(job_id)
                typer.echo(f"{job.id}: cancel requested ({job.state.value})")
            except ClientError as exc:
                err.print(f"hpcgw cancel: {job_id}: {exc}", style="red", markup=False)
                code = 1
    raise typer.Exit(code)


def metrics(
    job_id: JobIdArg,
    url: UrlOpt = None,
    token: TokenOpt = None,
    token_file: TokenFileOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Per-epoch training metrics."""
    with client(url, token, token_file) as c:
        try:
            found = c.metrics(job_id)
        except ClientError as exc:
            raise fail(exc) from None
    if json_out:
        typer.echo(json.dumps(found.epochs))
        return
    table = metrics_table(found.epochs)
    notes = [f"best epoch {found.best_epoch}"] if found.best_epoch is not None else []
    if found.health_reason:
        notes.append(f"{found.state.value if found.state else ''}: {found.health_reason}")
    table.caption = "; ".join(notes) or None
    console.print(table)


def render(
    command: CommandArg = None,
    algorithm: AlgorithmOpt = None,
    dataset: Annotated[str | None, typer.Option("--dataset")] = None,
    data_version: Annotated[str | None, typer.Option("--data-version")] = None,
    direct: Annotated[bool, typer.Option("--direct", help="The launchers' script here, no gateway")] = False,
    folder: Annotated[Path | None, typer.Option("--folder", help="--direct: the job folder")] = None,
    account: AccountOpt = None,
    framework: FrameworkOpt = FrameworkChoice.horovod,
    nodes: NodesOpt = 1,
    ntasks_per_node: NtasksPerNodeOpt = 1,
    gpus_per_node: GpusPerNodeOpt = 0,
    cpus_per_task: CpusPerTaskOpt = 1,
    mem: Annotated[str | None, mem_option()] = None,
    time_limit: Annotated[str, time_option()] = "60",
    partition: PartitionOpt = None,
    param: Annotated[list[str] | None, typer.Option("--param")] = None,
    url: UrlOpt = None,
    token: TokenOpt = None,
    token_file: TokenFileOpt = None,
) -> None:
    """Print the exact job script a request would produce, without submitting it (a dry run)."""
    resources = resources_from_flags(
        nodes=nodes,
        ntasks_per_node=ntasks_per_node,
        gpus_per_node=gpus_per_node,
        cpus_per_task=cpus_per_task,
        mem=mem,
        time_limit=time_limit,
    )
    params = parse_params(param)
    if direct:
        from launchers.submission import render_script

        spec = direct_spec(command, partition, folder, "train", account, resources, params, framework.value)
        typer.echo(render_script(spec), nl=False)
        return
    if not (algorithm and dataset and data_version):
        raise typer.BadParameter("needs --algorithm, --dataset and --data-version (or --direct with a command)")
    if framework != "horovod":
        raise typer.BadParameter(
            "through the gateway, the algorithm version names the framework", param_hint="--framework"
        )
    with bad_parameters():
        request = JobCreate(
            **resources.model_dump(),
            algorithm=algorithm,
            dataset_id=dataset,
            train_data_version_hash=data_version,
            partition=partition,
            parameters=dict(params),
        )
    with client(url, token, token_file) as c:
        try:
            typer.echo(c.render(request), nl=False)
        except ClientError as exc:
            raise fail(exc) from None


VERIFY_EXIT = {"identical": 0, "different": 1, "failed": 2, "unverifiable": 3}


def rerun(
    job_id: JobIdArg,
    verify: Annotated[
        bool, typer.Option("--verify", help="Wait for the rerun, then compare its model's SHA-256 with the original's")
    ] = False,
    nodes: Annotated[int | None, typer.Option("--nodes", "-N", min=1, help="Change the world size")] = None,
    tasks_per_node: Annotated[int | None, typer.Option("--ntasks-per-node", min=1)] = None,
    wait: Annotated[bool, typer.Option("--wait", help="Follow the rerun; exit with its outcome")] = False,
    url: UrlOpt = None,
    token: TokenOpt = None,
    token_file: TokenFileOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Run a job again from its recorded inputs. With --verify: exit 0 when the model is byte-identical, 1 when
    it differs (the recorded inputs that differ are listed), 2 when a run failed, 3 when no digest was recorded."""
    request = RerunRequest(verify=verify, nodes=nodes, tasks_per_node=tasks_per_node)
    with client(url, token, token_file) as c:
        try:
            job = c.rerun(job_id, request)
            if not (verify or wait):
                typer.echo(job.model_dump_json() if json_out else f"Submitted job {job.id} (rerun of {job_id})")
                return
            if not json_out:
                err.print(f"Submitted job {job.id} (rerun of {job_id})")
            final = follow(c, job.id, quiet=json_out, progress_to_stderr=verify)
            if not verify:
                if json_out:
                    typer.echo(final.model_dump_json())
                raise typer.Exit(exit_code_for(final))
            answer = c.verification(job.id)
        except ClientError as exc:
            raise fail(exc) from None
    if json_out:
        typer.echo(answer.model_dump_json())
    else:
        console.print(f"{answer.status}: {answer.detail}", highlight=False, markup=False)
        for diff in answer.differences:
            console.print(f"  {diff.input}: {diff.original} -> {diff.rerun}", highlight=False, markup=False)
        console.print(f"  model sha256: {answer.original_model_sha256} (original)", highlight=False, markup=False)
        console.print(f"  model sha256: {answer.rerun_model_sha256} (rerun)", highlight=False, markup=False)
    raise typer.Exit(VERIFY_EXIT.get(answer.status, 2))


def register(app: typer.Typer) -> None:
    """`submit`: past the trainer command's first word every flag is the trainer's, as with sbatch's script."""
    app.command(context_settings={"allow_interspersed_args": False}, epilog=epilog("submit"))(submit)
    app.command(context_settings={"allow_interspersed_args": False}, epilog=epilog("render"))(render)
    for command in (status, jobs, logs, cancel, metrics, algorithms, reregister, rerun, watch):
        app.command(epilog=epilog(command.__name__))(command)
