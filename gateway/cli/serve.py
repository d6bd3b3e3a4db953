"""`hpcgw serve` (the HTTP API, N processes, and for development a worker beside them) and `hpcgw worker`
(dispatch, polling and reconciliation, in a process of its own)."""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from gateway.config import GatewayConfig

log = logging.getLogger(__name__)
PR_SET_PDEATHSIG = 1
ConfigOption = Annotated[Path, typer.Option("--config", "-c", help="The gateway's TOML configuration")]


def _prepare(config: Path, command: str) -> GatewayConfig:
    """What both commands check before they touch anything: the server's dependencies, a readable private
    configuration, not root, and a sudoers rule that lets jobs run as their users."""
    try:  # the server's dependencies load only here: a login node may have the client alone
        import uvicorn  # noqa: F401

        from gateway.config import ConfigError, load_config
        from gateway.site import identity
        from gateway.site.folders import GATEWAY_UMASK, FolderError, make_private
    except ModuleNotFoundError as exc:
        typer.echo(
            f"hpcgw {command}: error: {exc.name} is not installed; "
            "the server needs: pip install 'hpc-train-gateway[server]'",
            err=True,
        )
        raise typer.Exit(2) from None

    os.umask(GATEWAY_UMASK)  # what the gateway writes its teams may read, never change; others never see
    try:
        settings = load_config(config)
        settings.check_run_as()
        make_private(config)
    except (ConfigError, FolderError) as exc:
        typer.echo(f"hpcgw {command}: error: {exc}", err=True)
        raise typer.Exit(2) from None
    if os.geteuid() == 0:
        typer.echo(
            f"hpcgw {command}: error: the gateway never runs as root; run it as its own user "
            f"(the development cluster's is `hpcgw`: runuser -u hpcgw -- hpcgw {command} …), see docs/security.md",
            err=True,
        )
        raise typer.Exit(2)
    found = identity.problems(settings)
    if found:
        typer.echo(f"hpcgw {command}: error: jobs could not run as their users:", err=True)
        for line in found:
            typer.echo(f"  - {line}", err=True)
        raise typer.Exit(2)
    return settings


def _private_database(settings: GatewayConfig) -> None:
    from gateway.site.folders import make_private

    if settings.database_url.startswith("sqlite:///"):  # created by now; its -wal and -shm files follow its mode
        make_private(Path(settings.database_url.removeprefix("sqlite:///")))


def serve(
    config: ConfigOption,
    host: Annotated[str, typer.Option(help="Address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on")] = 8080,
    processes: Annotated[
        int,
        typer.Option(
            "--processes", "--workers", min=1, max=64, help="HTTP processes serving the API (uvicorn's workers)"
        ),
    ] = 1,
    with_worker: Annotated[
        bool,
        typer.Option(
            "--with-worker/--no-worker",
            help="Start an `hpcgw worker` beside the API (development, one host). A deployment runs "
            "`hpcgw worker` on its own and serves with --no-worker.",
        ),
    ] = True,
) -> None:
    """Serve the HTTP API. The API never calls Slurm: it stores requests and reads what the worker wrote.
    SIGTERM or Ctrl-C: the worker stops dispatching at once, then the server drains its connections (at most 10 s).

    Example: hpcgw serve -c gateway.toml --processes 4 --no-worker
    """
    settings = _prepare(config, "serve")
    import uvicorn

    from gateway.store.db import make_engine, migrate

    engine = make_engine(settings.database_url)  # once, here: N processes must not race to migrate
    migrate(engine)
    engine.dispose()
    _private_database(settings)
    child = _start_worker(config) if with_worker else None
    os.environ["HPCGW_SERVE_CONFIG"] = str(config.resolve())
    server_config = uvicorn.Config(
        "gateway.app:from_environment",
        factory=True,
        host=host,
        port=port,
        workers=processes,
        log_level="info",
        timeout_graceful_shutdown=10,
        http="gateway.cli.nodelay:NoDelayProtocol",
    )
    # uvicorn re-raises the signal that stopped it, once it has shut down, to the handler that was there before
    # it: this one, so that the worker (which dies with this process) is waited for first.
    received: list[int] = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda sig, _frame: received.append(sig))
    try:
        if processes == 1:
            server = uvicorn.Server(server_config)
            drain = server.handle_exit

            def handle_exit(sig: int, frame: FrameType | None) -> None:
                if child is not None and child.poll() is None:  # first: no sbatch after the signal
                    child.send_signal(signal.SIGTERM)
                drain(sig, frame)

            server.handle_exit = handle_exit  # type: ignore[method-assign]
            server.run()
        else:
            from uvicorn.supervisors import Multiprocess

            sock = server_config.bind_socket()
            Multiprocess(server_config, sockets=[sock]).run()
    finally:
        if child is not None:
            _stop_worker(child)
    if received:  # exit as the signal asked, as uvicorn would have
        signal.signal(received[-1], signal.SIG_DFL)
        signal.raise_signal(received[-1])


def _start_worker(config: Path) -> subprocess.Popen[bytes]:
    """`hpcgw worker` as a child that dies with this process, however it dies (PR_SET_PDEATHSIG): a serve that
    is SIGKILLed must not leave a worker that keeps the lease from the next one."""
    env = {**os.environ, "HPCGW_PARENT_PID": str(os.getpid())}
    argv = [sys.executable, "-m", "gateway.cli.main", "worker", "--config", str(config)]
    child = subprocess.Popen(argv, env=env)

    def watch() -> None:
        code = child.wait()
        if code not in (0, -signal.SIGTERM):
            log.error("hpcgw worker exited with code %s; the API keeps serving, nothing reaches Slurm", code)

    threading.Thread(target=watch, name="worker-watch", daemon=True).start()
    return child


def _stop_worker(child: subprocess.Popen[bytes]) -> None:
    if child.poll() is None:
        child.send_signal(signal.SIGTERM)
    try:
        child.wait(timeout=40)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait()


def _die_with_parent() -> None:
    parent = os.environ.get("HPCGW_PARENT_PID")
    if not parent or not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)  # a crash of serve is a crash of its worker
    if os.getppid() != int(parent):  # the parent died before prctl: there is nothing left to serve
        os._exit(1)


def worker(config: ConfigOption) -> None:
    """Run the worker: dispatch accepted jobs to Slurm (coalesced into job arrays), poll sacct, reconcile after a
    crash. Several may run on one PostgreSQL database: one is active, the others stand by and take over within a
    second of its end. With SQLite a second one refuses to start. SIGTERM: no further sbatch, the row being
    written is finished, and the process exits.

    Example: hpcgw worker -c gateway.toml
    """
    _die_with_parent()
    settings = _prepare(config, "worker")
    from gateway.store.db import make_engine, migrate
    from gateway.worker.lease import WorkerConflictError
    from gateway.worker.loop import Worker

    engine = make_engine(settings.database_url)
    migrate(engine)
    _private_database(settings)
    if settings.poll.worker_nice:
        os.nice(settings.poll.worker_nice)  # the API first, when both want the CPU ([poll] worker_nice)
    running = Worker(engine, settings)
    stopped = threading.Event()

    def on_signal(sig: int, _frame: FrameType | None) -> None:
        log.info("worker: signal %d, stopping", sig)
        running.request_stop()
        stopped.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        running.start()
    except WorkerConflictError as exc:
        typer.echo(f"hpcgw worker: error: {exc}", err=True)
        raise typer.Exit(2) from None
    while not stopped.wait(1.0):
        pass
    running.stop()
    engine.dispose()
