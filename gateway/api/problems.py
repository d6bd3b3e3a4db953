"""Every error the gateway answers, in one shape (``ErrorBody``), and the statuses each operation declares.

Generated clients trust the OpenAPI document: an error body that differs from it, or a status it does not
list, breaks them. So every exception becomes an ``ErrorBody`` here, FastAPI's own validation errors included,
and every route lists the statuses it can answer with ``declare``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import FastAPI, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from gateway.errors import GatewayError
from gateway.schemas import ErrorBody, Problem

log = logging.getLogger(__name__)

# What a caller should wait before trying again when the database does not answer (a PostgreSQL restart, a full
# disk being cleared): long enough not to hammer it, short enough that a restart is barely noticed.
DATABASE_RETRY_AFTER_S = 5

_DESCRIPTIONS = {
    400: "The request cannot be read.",
    401: "No bearer token, or one the gateway does not know.",
    403: "This gateway does not allow it for the token's team (a site setting, e.g. functions.enabled).",
    404: "No such object, or one that belongs to another team.",
    409: "The object's state does not allow this (it exists already, it has ended).",
    413: "The request body is larger than the gateway accepts (max_body_bytes).",
    422: "The request does not validate, or cannot run (unknown algorithm, too big for the team); `field` names "
    "the first field at fault and `problems` lists them all.",
    429: "Too many requests from this token or team (rate limit), or the team's backlog is full "
    "(max_queued_jobs). `Retry-After` says when to try again.",
    503: "The database does not answer (restarting, disk full). Nothing was written; try again after "
    "`Retry-After` seconds.",
}
_RETRY_AFTER = {"Retry-After": {"description": "Seconds to wait before trying again.", "schema": {"type": "integer"}}}

# What every route that needs a token and the database can answer; and one that reads a JSON body, besides.
AUTHENTICATED = (401, 422, 503)
BODY = (400, 413)


def declare(*codes: int, also: dict[int | str, dict[str, Any]] | None = None) -> dict[int | str, dict[str, Any]]:
    """The ``responses=`` of a route: each error status it can answer, with the one error body (and ``also``,
    its other successes)."""
    declared: dict[int | str, dict[str, Any]] = dict(also or {})
    for code in sorted(set(codes)):
        entry: dict[str, Any] = {"model": ErrorBody, "description": _DESCRIPTIONS[code]}
        if code in (429, 503):
            entry["headers"] = _RETRY_AFTER
        declared[code] = entry
    return declared


def error_response(
    status_code: int,
    detail: str,
    *,
    field: str | None = None,
    problems: Sequence[Problem] = (),
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    body = ErrorBody(detail=detail, field=field, problems=list(problems))
    return JSONResponse(body.model_dump(mode="json"), status_code=status_code, headers=headers)


def retry_after(seconds: float) -> dict[str, str]:
    return {"Retry-After": str(max(1, math.ceil(seconds)))}


def _location(loc: Sequence[int | str]) -> str | None:
    """``("body", "parameters", "LR")`` → ``"parameters.LR"``: where in the request, as the caller wrote it."""
    parts = [str(p) for p in loc]
    if parts and parts[0] in ("body", "query", "path", "header", "cookie"):
        parts = parts[1:]
    return ".".join(parts) or None


_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def _methods(app: FastAPI, request: Request) -> list[str]:
    """The methods some route answers on this path (asked of the router itself, included routers and all)."""
    return [
        method
        for method in _METHODS
        if any(route.matches({**request.scope, "method": method})[0] == Match.FULL for route in app.router.routes)
    ]


def install(app: FastAPI) -> None:
    @app.exception_handler(GatewayError)
    async def _gateway_error(_request: Request, exc: GatewayError) -> JSONResponse:
        headers: dict[str, str] = {}
        if exc.status_code == 401:
            headers["WWW-Authenticate"] = "Bearer"
        if exc.retry_after_s is not None:
            headers |= retry_after(exc.retry_after_s)
        return error_response(exc.status_code, exc.detail, field=exc.field, headers=headers or None)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [Problem(field=_location(e.get("loc", ())), message=str(e.get("msg", ""))) for e in exc.errors()]
        first = problems[0] if problems else Problem(field=None, message="invalid request")
        where = f"{first.field}: " if first.field else ""
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        return error_response(422, f"{where}{first.message}{more}", field=first.field, problems=problems)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        """Routing's own answers (404 for an unknown path, 405), in the one shape. A 405's ``Allow`` lists every
        method of the path: Starlette's names only the first route that matched it."""
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            headers["Allow"] = ", ".join(_methods(app, request))
        return error_response(exc.status_code, str(exc.detail), headers=headers or None)

    async def _database(request: Request, exc: Exception) -> JSONResponse:
        log.warning("%s %s: database unavailable: %s", request.method, request.url.path, exc)
        return error_response(
            status.HTTP_503_SERVICE_UNAVAILABLE,
            "the database does not answer; nothing was written, try again",
            headers=retry_after(DATABASE_RETRY_AFTER_S),
        )

    for kind in (OperationalError, InterfaceError, PoolTimeoutError):
        app.add_exception_handler(kind, _database)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("%s %s: unexpected error", request.method, request.url.path, exc_info=exc)
        return error_response(500, "internal error; the gateway's log has the details")

    @app.exception_handler(DBAPIError)
    async def _dbapi(request: Request, exc: DBAPIError) -> JSONResponse:
        if exc.connection_invalidated:
            return await _database(request, exc)
        return await _unexpected(request, exc)
