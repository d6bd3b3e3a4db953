"""What runs on every rank: the picklable task submitit executes, wrapping the in-job Horovod bootstrap.

Each rank's submitit worker calls :class:`TrainerTask`. It sets Horovod's variables from Slurm's, hosts the Gloo
rendezvous on rank 0 (and writes the start marker once every rank has registered there), runs the trainer as a
child process with a heartbeat thread beside it (launchers.runtime.heartbeat), and records the trainer's exit
code and, on rank 0 after a success, the run's provenance (launchers.runtime.provenance). A failing trainer ends
the worker with the same exit code, so ``srun --kill-on-bad-exit`` stops the other ranks at once and the job
script can report the code.

It is a submitit ``Checkpointable``: on the preemption/time-out signal submitit calls :meth:`checkpoint` on rank
0 and requeues the job (from inside an image, through the job script: launchers.runtime.requeue); the trainer
then resumes from its own per-epoch checkpoint.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import submitit

from launchers.runtime import provenance, requeue
from launchers.runtime.ddp import HostedStore, ddp_env
from launchers.runtime.heartbeat import DEFAULT_INTERVAL_S, Heartbeat
from launchers.runtime.markers import JobMarkers
from launchers.runtime.rendezvous import (
    EXIT_RENDEZVOUS,
    network_iface,
    resolve_node_address,
    start_rendezvous_server,
    wait_for_port,
)
from launchers.runtime.topology import HorovodTopology

log = logging.getLogger("hpcgw.task")
requeue.install()  # imported while submitit unpickles the task, before the signal can come


@dataclass
class RankRun:
    """One rank's run as :meth:`TrainerTask._start` set it up: what the trainer (or function) runs with."""

    topology: HorovodTopology
    markers: JobMarkers
    env: dict[str, str]
    restart: int
    server: Any
    heartbeat: Heartbeat
    hosts: list[str]
    tag: str


class TrainerTask(submitit.helpers.Checkpointable):
    """Picklable: it travels to every rank in submitit's pickle, with the trainer's command and environment."""

    def __init__(
        self,
        command: list[str],
        env: dict[str, str],
        folder: str,
        rendezvous_timeout_s: float,
        controller: str = "gloo",
        framework: str = "horovod",
    ) -> None:
        self.command = command
        self.env = env
        self.folder = folder
        self.rendezvous_timeout_s = rendezvous_timeout_s
        self.controller = controller
        self.framework = framework

    def _host(
        self,
        topology: HorovodTopology,
        addr: str,
        port: int,
        on_all_ranks: Callable[[], None],
        progress_file: Path,
    ) -> tuple[Any, int]:
        """Rank 0's rendezvous: torch's TCPStore for DDP, Horovod's HTTP rendezvous for Gloo. Both call
        ``on_all_ranks`` once every rank has initialised its framework (for DDP, at the latest when rank 0's
        trainer reports progress in ``progress_file``)."""
        if self.framework == "ddp":
            store = HostedStore(
                addr, port, topology.size, self.rendezvous_timeout_s, on_all_ranks, progress_file.exists
            )
            return store, store.port
        server, _ = start_rendezvous_server(topology, port, on_all_ranks=on_all_ranks)
        return server, server.server_address[1]

    def __call__(self) -> dict[str, Any]:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s hpcgw-task %(levelname)s: %(message)s")
        run = self._start()
        try:
            code = self._run(run)
        finally:
            run.heartbeat.stop()
            if run.server is not None:
                run.server.close() if self.framework == "ddp" else run.server.shutdown()
        topology, markers = run.topology, run.markers
        if code == 0 and topology.rank == 0:
            provenance.write(
                markers.provenance_path, provenance.record(run.env, self.command, topology.size, run.hosts)
            )
        markers.write_exit(topology.rank, run.restart, code)
        if code != 0:
            log.error("%s: trainer exited with code %d", run.tag, code)
            _exit_now(code)
        return {"rank": topology.rank, "size": topology.size, "exit_code": code, "restart": run.restart}

    def _run(self, run: RankRun) -> int:
        """The trainer, as a child process; its exit code."""
        return _run_trainer(self.command, run.env)

    def _start(self) -> RankRun:
        """Everything before the trainer: placement, the rendezvous (hosted on rank 0), the framework's
        variables, the heartbeat thread and the first provenance record."""
        host_env = dict(os.environ)
        topology, job_id, addr = _placement(host_env)
        restart = int(host_env.get("SLURM_RESTART_COUNT", "0") or 0)
        markers = JobMarkers(Path(self.folder), job_id)
        env = {**host_env, **self.env, "HPCGW_RESTART_COUNT": str(restart)}
        tag = f"rank {topology.rank}/{topology.size} on {topology.hostname}"

        server: Any = None
        port = 0
        rendezvous = self.framework == "ddp" or self.controller == "gloo"
        if topology.rank == 0:
            markers.clear_started()
            if rendezvous:
                # Any free port (or the configured one); the others learn it from the job folder. A port derived
                # from the job id can collide with an ephemeral port some other connection holds.
                wanted = int(host_env.get("HPCGW_RENDEZVOUS_PORT", "0") or 0)
                try:
                    server, port = self._host(
                        topology,
                        addr,
                        wanted,
                        lambda: markers.write_started(topology.size, restart),
                        markers.progress_path(topology.rank, restart),
                    )
                except (OSError, RuntimeError) as exc:  # RuntimeError: torch's TCPStore cannot bind
                    log.error("%s: cannot host the rendezvous on port %d: %s", tag, wanted, exc)
                    markers.write_exit(topology.rank, restart, EXIT_RENDEZVOUS)
                    _exit_now(EXIT_RENDEZVOUS)
                markers.write_rendezvous(restart, addr, port)
                log.info("%s: %s rendezvous at %s:%d (restart %d)", tag, self.framework, addr, port, restart)
            else:
                markers.write_started(topology.size, restart)
        elif rendezvous:
            try:
                deadline = time.monotonic() + self.rendezvous_timeout_s
                addr, port = markers.wait_rendezvous(restart, self.rendezvous_timeout_s)
                wait_for_port(addr, port, max(1.0, deadline - time.monotonic()))
            except TimeoutError as exc:
                log.error("%s: %s", tag, exc)
                markers.write_exit(topology.rank, restart, EXIT_RENDEZVOUS)
                _exit_now(EXIT_RENDEZVOUS)
        iface = network_iface(host_env, addr)
        if self.framework == "ddp":
            env.update(ddp_env(topology, addr, port, iface))
        else:
            env.update(topology.horovod_env(addr, port, iface, self.rendezvous_timeout_s))
        if self.controller == "mpi":
            for key in ("HOROVOD_CONTROLLER", "HOROVOD_CPU_OPERATIONS", "HOROVOD_GLOO_RENDEZVOUS_ADDR"):
                env.pop(key, None)
        env["HPCGW_PROGRESS_FILE"] = str(markers.progress_path(topology.rank, restart))
        heartbeat = Heartbeat(
            markers.heartbeat_path(topology.rank, restart),
            topology.rank,
            interval_s=float(env.get("HPCGW_HEARTBEAT_S") or DEFAULT_INTERVAL_S),
            progress_file=markers.progress_path(topology.rank, restart),
            metrics_file=Path(env["METRICS_FILE"]) if topology.rank == 0 and env.get("METRICS_FILE") else None,
        ).start()
        hosts = [host for host, _ in topology.hosts]
        if topology.rank == 0:  # what this run is, whatever its end; the model's digest joins it at a success
            provenance.write(
                markers.provenance_path, provenance.record(env, self.command, topology.size, hosts, model=False)
            )
        return RankRun(topology, markers, env, restart, server, heartbeat, hosts, tag)


def _placement(env: Mapping[str, str]) -> tuple[HorovodTopology, str, str]:
    """Topology, job id and rendezvous address, from Slurm's variables or from submitit's local executor."""
    if "SLURM_PROCID" in env and env.get("SUBMITIT_EXECUTOR") != "local":
        topology = HorovodTopology.from_slurm(env)
        return topology, slurm_job_id(env), resolve_node_address(topology.hosts[0][0], env)
    job_env = submitit.JobEnvironment()
    size = job_env.num_tasks
    topology = HorovodTopology(
        job_env.global_rank, size, job_env.local_rank, size, 0, 1, "localhost", (("localhost", size),)
    )
    return topology, str(job_env.job_id), "127.0.0.1"


def slurm_job_id(env: Mapping[str, str]) -> str:
    """The id the outside knows this job by: ``A_i`` for an array element (as sacct and submitit print it)."""
    if env.get("SLURM_ARRAY_JOB_ID") and env.get("SLURM_ARRAY_TASK_ID"):
        return f"{env['SLURM_ARRAY_JOB_ID']}_{env['SLURM_ARRAY_TASK_ID']}"
    return env["SLURM_JOB_ID"]


def _run_trainer(command: list[str], env: Mapping[str, str]) -> int:
    # The preemption signal (USR2) is submitit's to handle on rank 0; the trainer ignores it and relies on its
    # per-epoch checkpoints, so a signal arriving mid-epoch never kills it half-way through a save.
    proc = subprocess.Popen(command, env=dict(env), preexec_fn=lambda: signal.signal(signal.SIGUSR2, signal.SIG_IGN))
    try:
        code = proc.wait()
    except BaseException:
        _stop(proc)
        raise
    return 128 - code if code < 0 else code


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


def _exit_now(code: int) -> NoReturn:
    """Leave with the trainer's own exit code; submitit would turn any failure into exit code 1."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
