"""Request dependencies: the database session, the caller, the running app's state."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Header, Request
from sqlmodel import Session

from gateway.auth import Principal, authenticate
from gateway.config import GatewayConfig
from gateway.worker.loop import Worker


def get_session(request: Request) -> Iterator[Session]:
    with Session(request.app.state.engine, expire_on_commit=False) as session:
        yield session


def get_config(request: Request) -> GatewayConfig:
    return request.app.state.config  # type: ignore[no-any-return]


def get_worker(request: Request) -> Worker:
    return request.app.state.worker  # type: ignore[no-any-return]


def get_principal(request: Request, authorization: Annotated[str | None, Header()] = None) -> Principal:
    return authenticate(request.app.state.config, authorization)


SessionDep = Annotated[Session, Depends(get_session)]
ConfigDep = Annotated[GatewayConfig, Depends(get_config)]
WorkerDep = Annotated[Worker, Depends(get_worker)]
PrincipalDep = Annotated[Principal, Depends(get_principal)]
