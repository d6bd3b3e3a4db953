"""Request dependencies: the database session, the caller, the running app's state."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Header, Request
from sqlmodel import Session

from gateway.auth import Principal, authenticate
from gateway.config import GatewayConfig
from gateway.tracker import Tracker


def get_session(request: Request) -> Iterator[Session]:
    with Session(request.app.state.engine, expire_on_commit=False) as session:
        yield session


def get_config(request: Request) -> GatewayConfig:
    return request.app.state.config  # type: ignore[no-any-return]


def get_tracker(request: Request) -> Tracker:
    return request.app.state.tracker  # type: ignore[no-any-return]


def get_principal(request: Request, authorization: Annotated[str | None, Header()] = None) -> Principal:
    return authenticate(request.app.state.config, authorization)


SessionDep = Annotated[Session, Depends(get_session)]
ConfigDep = Annotated[GatewayConfig, Depends(get_config)]
TrackerDep = Annotated[Tracker, Depends(get_tracker)]
PrincipalDep = Annotated[Principal, Depends(get_principal)]
