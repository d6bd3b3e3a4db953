"""Entry point of the `hpcgw` console script."""

from __future__ import annotations

import logging
import os

import typer

from gateway.cli import cluster, jobs
from gateway.cli.serve import serve
from gateway.cli.sweep import sweep

app = typer.Typer(
    help="hpcgw: a training-job gateway for Slurm clusters.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(cluster.app, name="cluster")
app.command()(serve)
jobs.register(app)
app.command(context_settings={"allow_interspersed_args": False})(sweep)


@app.callback()
def _main(verbose: bool = typer.Option(False, "--verbose", "-v", help="Log what is being run")) -> None:
    level = logging.DEBUG if verbose or os.environ.get("HPCGW_DEBUG") else logging.INFO
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
