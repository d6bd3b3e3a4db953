"""`hpcgw watch`: the team's queue, kept up to date, like `watch squeue` but redrawn in place.

On a terminal it is one view that changes in place; piped or in a CI log, it prints a job's line only when
something it shows changed (the clock aside), so that the log reads as the queue's history.
"""

from __future__ import annotations

import time
from typing import Annotated

import typer
from rich.live import Live
from rich.text import Text

from gateway.cli import lines
from gateway.cli.options import TokenFileOpt, TokenOpt, UrlOpt, client, fail
from gateway.cli.views import err, interactive
from gateway.client import ClientError
from gateway.schemas import JobPublic


def watch(
    team: Annotated[str | None, typer.Option("--team", help="admins: whose queue")] = None,
    interval: Annotated[float, typer.Option("--interval", "-i", min=0.5, help="seconds between looks")] = 2.0,
    iterations: Annotated[int | None, typer.Option("--iterations", min=1, help="stop after this many looks")] = None,
    wide: Annotated[bool, typer.Option("--wide", "-l")] = False,
    url: UrlOpt = None,
    token: TokenOpt = None,
    token_file: TokenFileOpt = None,
) -> None:
    """The jobs that have not ended yet, newest first, until Ctrl-C."""
    fmt = lines.WIDE_FORMAT if wide else lines.DEFAULT_FORMAT
    live = Live(console=err, transient=False, auto_refresh=False) if interactive() else None
    shown: dict[str, str] = {}
    looks = 0
    try:
        if live is not None:
            live.start()
        with client(url, token, token_file) as c:
            while iterations is None or looks < iterations:
                looks += 1
                try:
                    queue = [j for j in c.jobs(team=team, limit=1000).items if not j.state.is_terminal]
                except ClientError as exc:
                    raise fail(exc) from None
                if live is not None:
                    stamp = time.strftime("%H:%M:%S")
                    live.update(Text(f"{lines.render(queue, fmt)}\n{len(queue)} jobs not ended, {stamp}"), refresh=True)
                else:
                    _print_changes(queue, shown)
                if iterations is None or looks < iterations:
                    time.sleep(interval)
    except KeyboardInterrupt:
        pass
    finally:
        if live is not None:
            live.stop()


def _print_changes(queue: list[JobPublic], shown: dict[str, str]) -> None:
    for job in queue:
        line = lines.change_line(job)
        if shown.get(job.id) != line:
            typer.echo(line)
            shown[job.id] = line
    gone = set(shown) - {j.id for j in queue}
    for job_id in sorted(gone):
        typer.echo(f"{job_id}  ended")
        del shown[job_id]
