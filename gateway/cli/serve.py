"""`hpcgw serve`: run the gateway (the HTTP API and its Slurm worker)."""

from __future__ import annotations

import os
from pathlib import Path
from types import FrameType
from typing import Annotated

import typer


def serve(
    config: Annotated[Path, typer.Option("--config", "-c", help="The gateway's TOML configuration")],
    host: Annotated[str, typer.Option(help="Address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on")] = 8080,
) -> None:
    """Start the HTTP gateway and its Slurm worker. SIGTERM or Ctrl-C: the worker stops dispatching at once,
    finishes the row it is writing, and the server drains its connections (at most 10 s)."""
    try:  # the server's dependencies load only for `serve`: a login node may have the client alone
        import uvicorn

        from gateway import identity
        from gateway.app import create_app
        from gateway.config import ConfigError, load_config
        from gateway.folders import GATEWAY_UMASK, FolderError, make_private
    except ModuleNotFoundError as exc:
        typer.echo(
            f"hpcgw serve: error: {exc.name} is not installed; "
            "the server needs: pip install 'hpc-train-gateway[server]'",
            err=True,
        )
        raise typer.Exit(2) from None

    os.umask(GATEWAY_UMASK)  # what the gateway writes is its own and its teams', never everyone's
    try:
        settings = load_config(config)
        make_private(config)
    except (ConfigError, FolderError) as exc:
        typer.echo(f"hpcgw serve: error: {exc}", err=True)
        raise typer.Exit(2) from None
    if os.geteuid() == 0:
        typer.echo(
            "hpcgw serve: error: the gateway never runs as root; run it as its own user "
            "(the development cluster's is `hpcgw`: runuser -u hpcgw -- hpcgw serve …), see docs/security.md",
            err=True,
        )
        raise typer.Exit(2)
    found = identity.problems(settings)
    if found:
        typer.echo("hpcgw serve: error: jobs could not run as their users:", err=True)
        for line in found:
            typer.echo(f"  - {line}", err=True)
        raise typer.Exit(2)
    app = create_app(settings)
    if settings.database_url.startswith("sqlite:///"):  # created by now; its -wal and -shm files follow its mode
        make_private(Path(settings.database_url.removeprefix("sqlite:///")))
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="info", timeout_graceful_shutdown=10))
    drain = server.handle_exit

    def handle_exit(sig: int, frame: FrameType | None) -> None:
        app.state.worker.request_stop()  # before the connections drain, not after: no sbatch after the signal
        drain(sig, frame)

    server.handle_exit = handle_exit  # type: ignore[method-assign]
    server.run()
