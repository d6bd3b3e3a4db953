"""`hpcgw algorithms|reregister`: what is registered, and pinning a rebuilt image again."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from gateway.cli import complete
from gateway.cli.options import JsonOpt, TokenFileOpt, TokenOpt, UrlOpt, client, fail
from gateway.cli.views import algorithms_table, console
from gateway.client import ClientError


def algorithms(
    url: UrlOpt = None, token: TokenOpt = None, token_file: TokenFileOpt = None, json_out: JsonOpt = False
) -> None:
    """Registered algorithms and their versions."""
    with client(url, token, token_file) as c:
        try:
            items = c.algorithms()
        except ClientError as exc:
            raise fail(exc) from None
    if json_out:
        typer.echo(json.dumps([a.model_dump(mode="json") for a in items]))
        return
    console.print(algorithms_table(items))


def reregister(
    name: Annotated[str, typer.Argument(help="the algorithm", autocompletion=complete.algorithm_names)],
    version: Annotated[str, typer.Argument(help="its version whose image file was rebuilt")],
    url: UrlOpt = None,
    token: TokenOpt = None,
    token_file: TokenFileOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Re-register an algorithm version's image: record the SHA-256 of its file as it is now. A version's image is
    pinned, so after a rebuild its submissions are refused until its team (or an admin) does this."""
    with client(url, token, token_file) as c:
        try:
            algorithm = c.reregister(name, version)
        except ClientError as exc:
            raise fail(exc) from None
    found = next((v for v in algorithm.versions if v.version == version), None)
    if json_out:
        typer.echo(json.dumps(found.model_dump(mode="json") if found else None))
        return
    digest = found.image_digest if found else None
    typer.echo(f"{name} {version}: {found.image if found else '-'} pinned to {digest or 'no digest (runtime none)'}")
