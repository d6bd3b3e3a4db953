"""`hpcgw accounts`: the teams' Slurm accounts, users and associations, from the gateway's configuration."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from launchers.slurm.shell import CommandError

if TYPE_CHECKING:
    from gateway.config import GatewayConfig

app = typer.Typer(
    help="Keep Slurm's accounts and associations (each team's limits and fair-share) as the configuration says.",
    no_args_is_help=True,
)
ConfigOption = Annotated[Path, typer.Option("--config", "-c", help="The gateway's TOML configuration")]


def _load(config: Path, command: str) -> GatewayConfig:
    from gateway.config import ConfigError, load_config  # the server's dependencies, loaded only when used

    try:
        return load_config(config)
    except ConfigError as exc:
        typer.echo(f"hpcgw accounts {command}: error: {exc}", err=True)
        raise typer.Exit(2) from None


@app.command()
def check(config: ConfigOption) -> None:
    """Report every difference between the configuration and Slurm's accounting; exit 1 when there is one."""
    from gateway.site import accounts

    try:
        lines = accounts.check(_load(config, "check"))
    except CommandError as exc:
        typer.echo(f"hpcgw accounts check: error: {exc}", err=True)
        raise typer.Exit(2) from None
    for line in lines:
        typer.echo(f"drift: {line}")
    if lines:
        typer.echo(f"{len(lines)} difference(s); `hpcgw accounts sync` makes Slurm follow the configuration")
        raise typer.Exit(1)
    typer.echo("no drift: Slurm holds every team's account, limits and users as configured")


@app.command()
def sync(
    config: ConfigOption,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the sacctmgr calls without running them")] = False,
) -> None:
    """Create or update the teams' accounts, limits and user associations in Slurm (needs a Slurm
    administrator, such as root); idempotent: a second run changes nothing."""
    from gateway.site import accounts

    settings = _load(config, "sync")
    try:
        commands = accounts.plan(settings) if dry_run else accounts.sync(settings)
    except CommandError as exc:
        typer.echo(f"hpcgw accounts sync: error: {exc}", err=True)
        raise typer.Exit(2) from None
    for argv in commands:
        typer.echo(("would run: " if dry_run else "ran: ") + " ".join(argv))
    typer.echo(f"{len(commands)} change(s)" if commands else "nothing to change")
