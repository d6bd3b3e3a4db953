"""Entry point of the `hpcgw` console script."""

from __future__ import annotations

import logging
import os
from importlib.metadata import entry_points

import typer

from gateway.cli import accounts, jobs
from gateway.cli.helptext import epilog
from gateway.cli.serve import serve, worker
from gateway.cli.sweep import sweep

DAEMONS = frozenset({"serve", "worker"})
app = typer.Typer(
    help="hpcgw: a training-job gateway for Slurm clusters.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
# Command groups from other distributions: the development cluster (devcluster/) adds `hpcgw cluster`.
for _plugin in entry_points(group="hpcgw.cli"):
    app.add_typer(_plugin.load(), name=_plugin.name)
app.command(epilog=epilog("serve"))(serve)
app.command(epilog=epilog("worker"))(worker)
app.add_typer(accounts.app, name="accounts", epilog=epilog("accounts"))
jobs.register(app)
app.command(context_settings={"allow_interspersed_args": False}, epilog=epilog("sweep"))(sweep)


@app.callback()
def _main(
    ctx: typer.Context,
    verbose: int = typer.Option(0, "--verbose", "-v", count=True, help="-v: log each request; -vv: debug"),
) -> None:
    """Quiet by default: a command prints its own output and real warnings. The service's commands (serve,
    worker) log what they do, as daemons do."""
    daemon = ctx.invoked_subcommand in DAEMONS
    if verbose >= 2 or os.environ.get("HPCGW_DEBUG"):
        level = logging.DEBUG
    elif verbose == 1 or daemon:
        level = logging.INFO
    else:
        level = logging.WARNING
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("alembic").setLevel(logging.WARNING)  # its plugins log a line each as it is imported
    if daemon and verbose < 2:
        logging.getLogger("httpx").setLevel(logging.WARNING)


if __name__ == "__main__":  # `python -m gateway.cli.main`: how `hpcgw serve` starts its worker
    app()
