"""The FastAPI application: routes, error translation, body limits, and the worker's life cycle."""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from anyio import to_thread
from fastapi import FastAPI
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.api import algorithms, functions, jobs, problems, sweeps, system
from gateway.api.ratelimit import RateLimiter
from gateway.config import GatewayConfig
from gateway.store.db import API_THREADS, make_engine, migrate
from gateway.submit.intake import Intake
from gateway.ui import routes as ui_routes
from gateway.worker.loop import Worker
from gateway.worker.status import WorkerView

log = logging.getLogger(__name__)


def create_app(config: GatewayConfig, *, run_worker: bool = True, external_worker: bool = False) -> FastAPI:
    """One process with its worker as a thread (tests, and the simplest deployment), or, with
    ``external_worker``, an API process that reads the worker's status from the database (`hpcgw serve`, where
    the worker is a process of its own). ``run_worker=False`` leaves Slurm alone entirely (service tests drive
    ``app.state.worker`` by hand)."""
    engine = make_engine(config.database_url)
    migrate(engine)
    worker = None if external_worker else Worker(engine, config)
    run_worker = run_worker and worker is not None

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        to_thread.current_default_thread_limiter().total_tokens = API_THREADS  # what the pool is sized for
        intake.start()
        if run_worker and worker is not None:
            worker.start()
        # Everything loaded so far (FastAPI, SQLAlchemy, the templates) lives as long as the process: out of the
        # collector's sight, a full collection no longer walks it (a 1,000-task sweep page: ~120 ms to ~45 ms).
        gc.collect()  # what is garbage already is collected, not frozen
        gc.freeze()
        try:
            yield
        finally:
            if run_worker and worker is not None:
                worker.stop()
            intake.stop()
            engine.dispose()

    app = FastAPI(
        title="hpc-train-gateway",
        version="0.1.0",
        lifespan=lifespan,
        description="Training requests in, multi-node Horovod jobs on each team's Slurm partition out.",
        generate_unique_id_function=lambda route: route.name,  # operationIds a generated client can live with
    )
    app.state.config, app.state.engine, app.state.worker = config, engine, worker
    app.state.worker_view = WorkerView(engine, worker, config.poll.interval_s)
    app.state.limiter = RateLimiter(config)
    app.state.intake = intake = Intake(engine, config)
    for module in (jobs, functions, sweeps, algorithms, system):
        app.include_router(module.router)
    problems.install(app)
    ui_routes.install(app)

    app.add_middleware(_BodyLimit, max_bytes=config.max_body_bytes)
    return app


class _BodyTooLarge(StarletteHTTPException):
    """Raised from ``receive`` once the bytes received pass the limit: an HTTPException, so the app's own error
    handler answers it (FastAPI re-raises those from its body parsing instead of calling them a bad body)."""


class _BodyLimit:
    """413 for a body over ``max_bytes``: at once when its declared length says so, else as soon as the bytes
    actually received pass it (a chunked body declares nothing, and a declared length may lie), so nothing past
    the limit is ever buffered. Plain ASGI: Starlette's BaseHTTPMiddleware runs each request through an extra task
    and stream, a cost paid on every request."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = Headers(scope=scope).get("content-length")
        too_large = f"request body larger than {self.max_bytes} bytes"
        if length is not None and (not length.isdigit() or int(length) > self.max_bytes):
            await problems.error_response(413, too_large)(scope, receive, send)
            return
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_bytes:
                raise _BodyTooLarge(413, too_large)
            return message

        try:
            await self.app(scope, counted, send)
        except _BodyTooLarge:  # read outside the app's error handling: nothing has been answered yet
            await problems.error_response(413, too_large)(scope, receive, send)


def from_environment() -> FastAPI:
    """The app of one of `hpcgw serve --processes N`'s processes: uvicorn imports it in each, by name, and the
    configuration's path comes through the environment (HPCGW_SERVE_CONFIG, set by `hpcgw serve`)."""
    import os
    from pathlib import Path

    from gateway.config import load_config

    return create_app(load_config(Path(os.environ["HPCGW_SERVE_CONFIG"])), external_worker=True)
