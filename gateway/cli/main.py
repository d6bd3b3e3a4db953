"""Entry point of the `hpcgw` console script."""

from __future__ import annotations

import logging
import os
from importlib.metadata import entry_points

import typer

from gateway.cli import accounts, jobs
from gateway.cli.serve import serve, worker
from gateway.cli.sweep import sweep

app = typer.Typer(
    help="hpcgw: a training-job gateway for Slurm clusters.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
# Command groups from other distributions: the development cluster (devcluster/) adds `hpcgw cluster`.
for _plugin in entry_points(group="hpcgw.cli"):
    app.add_typer(_plugin.load(), name=_plugin.name)
app.command()(serve)
app.command()(worker)
app.add_typer(accounts.app, name="accounts")
jobs.register(app)
app.command(context_settings={"allow_interspersed_args": False})(sweep)


@app.callback()
def _main(verbose: bool = typer.Option(False, "--verbose", "-v", help="Log what is being run")) -> None:
    level = logging.DEBUG if verbose or os.environ.get("HPCGW_DEBUG") else logging.INFO
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("alembic").setLevel(logging.WARNING)  # its plugins log a line each as it is imported


if __name__ == "__main__":  # `python -m gateway.cli.main`: how `hpcgw serve` starts its worker
    app()
