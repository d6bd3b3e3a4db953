"""The FastAPI application: routes, error translation, body limits, and the worker's life cycle."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse

from gateway.api import algorithms, jobs, sweeps, system
from gateway.config import GatewayConfig
from gateway.db import make_engine, migrate
from gateway.errors import GatewayError
from gateway.worker.loop import Worker

log = logging.getLogger(__name__)


def create_app(config: GatewayConfig, *, run_worker: bool = True) -> FastAPI:
    """``run_worker=False`` leaves Slurm alone entirely (service tests drive ``app.state.worker`` by hand)."""
    engine = make_engine(config.database_url)
    migrate(engine)
    worker = Worker(engine, config)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        if run_worker:
            worker.start()
        try:
            yield
        finally:
            if run_worker:
                worker.stop()
            engine.dispose()

    app = FastAPI(
        title="hpc-train-gateway",
        version="0.1.0",
        lifespan=lifespan,
        description="Training requests in, multi-node Horovod jobs on each team's Slurm partition out.",
    )
    app.state.config, app.state.engine, app.state.worker = config, engine, worker
    for module in (jobs, sweeps, algorithms, system):
        app.include_router(module.router)

    @app.exception_handler(GatewayError)
    async def _gateway_error(_request: Request, exc: GatewayError) -> JSONResponse:
        body: dict[str, object] = {"detail": exc.detail}
        if exc.field:
            body["field"] = exc.field
        headers = {"WWW-Authenticate": "Bearer"} if exc.status_code == 401 else None
        return JSONResponse(body, status_code=exc.status_code, headers=headers)

    @app.middleware("http")
    async def _limit_body(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > config.max_body_bytes):
            return JSONResponse({"detail": f"request body larger than {config.max_body_bytes} bytes"}, status_code=413)
        return await call_next(request)

    return app
