"""Request dependencies: the database session, the caller, the running app's state."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterator
from typing import Annotated, Any

from fastapi import Depends, Path, Request
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlmodel import Session
from starlette.convertors import StringConvertor, register_url_convertor

from gateway.api.ratelimit import RateLimiter
from gateway.config import GatewayConfig
from gateway.site.auth import Principal, authenticate
from gateway.submit.intake import Intake
from gateway.worker.status import WorkerView

# Declares the bearer scheme in the OpenAPI document; the 401 itself comes from ``authenticate``, in the one
# error shape (the scheme's own error would be a 403 in FastAPI's).
_bearer = HTTPBearer(auto_error=False, description="a token from the gateway's configuration")


def get_session(request: Request) -> Iterator[Session]:
    with Session(request.app.state.engine, expire_on_commit=False) as session:
        yield session


def _releasing(endpoint: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(endpoint)
    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            return endpoint(*args, **kwargs)
        finally:
            for value in kwargs.values():
                if isinstance(value, Session):
                    value.close()  # the result is already built from it: its connection goes back now

    return run


class ReleasingRoute(APIRoute):
    """A route whose session gives its connection back as soon as the endpoint returns, in the endpoint's thread.

    FastAPI serialises a sync endpoint's result in the thread pool, and closes the session only after that. Under
    load (bench/load.py), finished requests held every pooled connection while waiting for a thread, and every
    thread waited for a connection: the gateway stopped answering. Every route of the API uses this class."""

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        if not inspect.iscoroutinefunction(endpoint):
            endpoint = _releasing(endpoint)
        super().__init__(path, endpoint, **kwargs)


# The dependencies that do no I/O are coroutines: FastAPI runs a plain function dependency in its thread pool, a
# hop that cost more than the work itself, on every request.
async def get_config(request: Request) -> GatewayConfig:
    return request.app.state.config  # type: ignore[no-any-return]


async def get_worker(request: Request) -> WorkerView:
    return request.app.state.worker_view  # type: ignore[no-any-return]


async def get_limiter(request: Request) -> RateLimiter:
    return request.app.state.limiter  # type: ignore[no-any-return]


async def get_intake(request: Request) -> Intake:
    return request.app.state.intake  # type: ignore[no-any-return]


async def get_principal(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> Principal:
    return authenticate(request.app.state.config, f"Bearer {credentials.credentials}" if credentials else None)


SessionDep = Annotated[Session, Depends(get_session)]
ConfigDep = Annotated[GatewayConfig, Depends(get_config)]
WorkerDep = Annotated[WorkerView, Depends(get_worker)]
PrincipalDep = Annotated[Principal, Depends(get_principal)]
LimiterDep = Annotated[RateLimiter, Depends(get_limiter)]
IntakeDep = Annotated[Intake, Depends(get_intake)]


class _HexId(StringConvertor):
    """Ids the gateway made (16 hex digits) in routes' paths, ``/{job_id:hexid}``: a path that cannot be an id
    (``GET /v1/jobs/render``) matches no id route, so it is answered 405 or 404 by routing, not as a bad id."""

    regex = "[0-9a-f]{1,32}"


register_url_convertor("hexid", _HexId())

# Identifiers in paths: what the gateway creates (16 hex digits) and algorithm names, bounded before any query.
JobIdPath = Annotated[str, Path(pattern=r"^[0-9a-f]{1,32}$", description="the gateway's job id")]
SweepIdPath = Annotated[str, Path(pattern=r"^[0-9a-f]{1,32}$", description="the gateway's sweep id")]
NamePath = Annotated[str, Path(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$", description="an algorithm's name")]
