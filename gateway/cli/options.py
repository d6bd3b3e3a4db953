"""What every `hpcgw` command shares: its options, the parsing of their values, and the gateway connection.

A flag declared once here means the same thing in `submit`, `render` and `sweep`, as it does in sbatch. Values
are refused here, before any request is built, as usage errors (exit code 2) that name the flag or the field;
a gateway that refuses or cannot be reached is exit code 1.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError

from gateway.cli import complete
from gateway.cli.views import err
from gateway.client import Client, ClientError
from launchers.resources import Resources
from launchers.slurm import times

UrlOpt = Annotated[str | None, typer.Option("--url", envvar="HPCGW_URL", help="Gateway URL")]
# The token itself is never an argument: every user of the machine reads command lines (`ps`, /proc/*/cmdline).
# --token is still parsed, so that it is refused with the way to do it instead of "no such option".
TokenOpt = Annotated[str | None, typer.Option("--token", hidden=True, show_default=False)]
TokenFileOpt = Annotated[
    Path | None,
    typer.Option(
        "--token-file",
        envvar="HPCGW_TOKEN_FILE",
        help="File holding the API token, readable by you only (else HPCGW_TOKEN, or ~/.config/hpcgw/config.toml)",
        show_default=False,
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output")]
JobIdArg = Annotated[
    str, typer.Argument(help="A job id, or a unique prefix of it (4 or more digits)", autocompletion=complete.job_ids)
]
JobIdsArg = Annotated[list[str], typer.Argument(help="Job ids or unique prefixes", autocompletion=complete.job_ids)]
AlgorithmOpt = Annotated[
    str | None, typer.Option("--algorithm", help="Registered algorithm name", autocompletion=complete.algorithm_names)
]
PartitionOpt = Annotated[
    str | None, typer.Option("--partition", "-p", help="Slurm partition", autocompletion=complete.partitions)
]

# sbatch's resource flags. --mem and --time are built per command (mem_option, time_option): their help differs.
NodesOpt = Annotated[int, typer.Option("--nodes", "-N")]
NtasksPerNodeOpt = Annotated[int, typer.Option("--ntasks-per-node")]
GpusPerNodeOpt = Annotated[int, typer.Option("--gpus-per-node")]
CpusPerTaskOpt = Annotated[int, typer.Option("--cpus-per-task", "-c")]

# What `--direct` needs in place of the gateway's algorithm and dataset (submit and sweep).
CommandArg = Annotated[list[str] | None, typer.Argument(help="With --direct: the trainer command, after --")]
DirectOpt = Annotated[bool, typer.Option("--direct", help="Submit through the launchers here, no gateway")]
AccountOpt = Annotated[str | None, typer.Option("--account", "-A", help="--direct: Slurm account")]


class FrameworkChoice(StrEnum):
    horovod = "horovod"
    ddp = "ddp"


FrameworkOpt = Annotated[
    FrameworkChoice,
    typer.Option(
        "--framework",
        help="--direct: horovod, or ddp (torch.distributed; RANK, WORLD_SIZE, MASTER_ADDR... set per rank). Through "
        "the gateway the algorithm version says",
    ),
]


def mem_option(help_text: str | None = None) -> Any:
    """sbatch's --mem, with the help its command gives it."""
    return typer.Option("--mem", help=help_text)


def time_option(help_text: str | None = None) -> Any:
    """sbatch's --time/-t, with the help its command gives it."""
    return typer.Option("--time", "-t", help=help_text)


def parse_time_min(value: str) -> int:
    """The launchers' one Slurm duration parser, its refusal turned into a usage error."""
    try:
        return times.parse_duration_min(value)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None


def parse_mem_gb(value: str) -> float:
    """The launchers' one sbatch memory parser, its refusal turned into a usage error."""
    try:
        return times.parse_mem_gb(value)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None


def parse_params(items: list[str] | None) -> dict[str, str]:
    """--param NAME=VALUE, repeated; a value may itself hold '='."""
    params: dict[str, str] = {}
    for item in items or []:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise typer.BadParameter(f"expected NAME=VALUE, got {item!r}", param_hint="--param")
        params[name] = value
    return params


def problems(exc: ValidationError) -> str:
    """pydantic's errors on one line, each led by the field it refused (``value`` for the whole model)."""
    return "; ".join(f"{'.'.join(map(str, e['loc'])) or 'value'}: {e['msg']}" for e in exc.errors())


@contextmanager
def bad_parameters() -> Iterator[None]:
    """A model built from flags and refused by pydantic is a usage error (exit code 2), not a traceback."""
    try:
        yield
    except ValidationError as exc:
        raise typer.BadParameter(problems(exc)) from None


def resources_from_flags(
    *,
    nodes: int,
    ntasks_per_node: int,
    gpus_per_node: int = 0,
    cpus_per_task: int,
    mem: str | None = None,
    time_limit: str,
) -> Resources:
    """The sbatch-style flags as the one definition of a job's resources, which both the gateway's request and
    the launchers' spec inherit: the limits are checked once, here, whichever path the job then takes."""
    mem_gb = parse_mem_gb(mem) if mem else None
    minutes = parse_time_min(time_limit)
    with bad_parameters():
        return Resources(
            nodes=nodes,
            tasks_per_node=ntasks_per_node,
            gpus_per_node=gpus_per_node,
            cpus_per_task=cpus_per_task,
            mem_gb=mem_gb,
            time_limit_min=minutes,
        )


def client(url: str | None, token: str | None, token_file: Path | None = None) -> Client:
    """No URL or token to be found is a usage error (2), unlike a gateway that refuses (1); so is a token on the
    command line, where every user of the machine can read it."""
    if token is not None:
        err.print(
            "hpcgw: error: --token would show the token to every user of this machine (ps); "
            "set HPCGW_TOKEN, or pass --token-file FILE (a file only you can read)",
            style="red",
            highlight=False,
            markup=False,
        )
        raise typer.Exit(2)
    try:
        return Client(url, token_file=token_file)
    except ClientError as exc:
        err.print(f"hpcgw: error: {exc}", style="red", highlight=False, markup=False)
        raise typer.Exit(2) from None


def fail(exc: ClientError) -> typer.Exit:
    """The gateway refused or could not be reached: its message, and exit code 1."""
    err.print(f"hpcgw: error: {exc}", style="red", highlight=False, markup=False)
    return typer.Exit(1)
