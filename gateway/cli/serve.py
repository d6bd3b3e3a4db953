"""`hpcgw serve`: run the gateway."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
import uvicorn

from gateway.config import ConfigError, load_config


def serve(
    config: Annotated[Path, typer.Option("--config", "-c", help="The gateway's TOML configuration")],
    host: Annotated[str, typer.Option(help="Address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on")] = 8080,
) -> None:
    """Start the HTTP gateway and its Slurm worker."""
    from gateway.app import create_app

    try:
        settings = load_config(config)
    except ConfigError as exc:
        typer.echo(f"hpcgw serve: error: {exc}", err=True)
        raise typer.Exit(2) from None
    uvicorn.run(create_app(settings), host=host, port=port, log_level="info")
