"""The gateway's tables. Schema changes go through Alembic migrations in gateway/store/migrations/."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any, overload

from sqlalchemy import JSON, Column, Dialect, Index, String, UniqueConstraint
from sqlalchemy.types import TypeDecorator
from sqlmodel import Field, SQLModel

from launchers.states import JobState


class StateColumn(TypeDecorator[JobState]):
    """A job's state as the enum in Python and as its text in the database (VARCHAR(16), as the migrations made
    it): a row read back is a JobState, and a value that is not one is refused before it reaches a row."""

    impl = String(16)
    cache_ok = True

    def process_bind_param(self, value: JobState | str | None, dialect: Dialect) -> str | None:
        return None if value is None else JobState(value).value

    def process_result_value(self, value: str | None, dialect: Dialect) -> JobState | None:
        return None if value is None else JobState(value)


def utcnow() -> datetime:
    return datetime.now(UTC)


@overload
def aware(value: datetime) -> datetime: ...
@overload
def aware(value: None) -> None: ...
def aware(value: datetime | None) -> datetime | None:
    """SQLite hands datetimes back without their zone; the gateway stores UTC."""
    return value if value is None or value.tzinfo is not None else value.replace(tzinfo=UTC)


ID_LENGTH = 16  # hex digits of the ids the gateway makes


def new_id() -> str:
    return uuid.uuid4().hex[:ID_LENGTH]


PUBLISHED = "*"  # an algorithm's team when an admin published it: every team may run it, only admins change it


class Algorithm(SQLModel, table=True):
    name: str = Field(primary_key=True, max_length=64)
    team: str = Field(max_length=32, index=True)  # the team whose jobs may run it, or PUBLISHED
    description: str = Field(default="", max_length=1000)
    current_version: str = Field(max_length=64)
    created_at: datetime = Field(default_factory=utcnow)


class AlgorithmVersion(SQLModel, table=True):
    __table_args__ = (UniqueConstraint("algorithm", "version"),)

    id: int | None = Field(default=None, primary_key=True)
    algorithm: str = Field(foreign_key="algorithm.name", max_length=64, index=True)
    version: str = Field(max_length=64)
    image: str = Field(max_length=1024)
    image_digest: str | None = Field(default=None, max_length=128)
    command: list[str] = Field(sa_column=Column(JSON, nullable=False))
    # With container runtime 'none' (no Apptainer on the machine) the trainer runs from this command instead.
    local_command: list[str] | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    framework: str = Field(default="horovod", max_length=16)  # horovod or ddp (launchers.spec.JobSpec.framework)
    created_at: datetime = Field(default_factory=utcnow)


class Sweep(SQLModel, table=True):
    """A parameter sweep: one job array (or several, past MaxArraySize) whose tasks are jobs too."""

    id: str = Field(default_factory=new_id, primary_key=True, max_length=32)
    name: str = Field(max_length=64)
    team: str = Field(max_length=32, index=True)
    user: str = Field(max_length=64)
    max_parallel: int
    space: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    task_count: int
    created_at: datetime = Field(default_factory=utcnow)
    # Slurm array ids, one per submission (the first, then one per retry-failed), in order
    array_ids: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))


class Job(SQLModel, table=True):
    __table_args__ = (
        # Per-team counts (the backlog at each submission, the pages' totals) are read from this index alone.
        Index("ix_job_team_state_sweep", "team", "state", "sweep_id"),
        # The worker's wake-up check: "accepted since my last cycle" reads this index, never the table.
        Index("ix_job_state_submit_time", "state", "submit_time"),
        UniqueConstraint("team", "user", "idempotency_key"),
    )

    id: str = Field(default_factory=new_id, primary_key=True, max_length=32)
    name: str = Field(max_length=64)
    team: str = Field(max_length=32)
    user: str = Field(max_length=64)
    state: JobState = Field(default=JobState.ACCEPTED, sa_type=StateColumn, index=True)
    # Slurm's view
    slurm_job_id: str | None = Field(default=None, max_length=32, index=True)
    slurm_state: str | None = Field(default=None, max_length=32)
    reason: str | None = Field(default=None, max_length=256)
    position_in_queue: int | None = None
    exit_code: int | None = None
    restarts: int = 0
    # times (aware, UTC)
    submit_time: datetime = Field(default_factory=utcnow)
    dispatch_time: datetime | None = None  # when `dispatching` was set: a crash's sbatch may still land until later
    slurm_submit_time: datetime | None = None
    start_time: datetime | None = None
    end_time: datetime | None = None
    # resources asked for
    partition: str = Field(max_length=64)
    account: str = Field(max_length=64)
    qos: str | None = Field(default=None, max_length=64)
    nodes: int
    tasks_per_node: int
    gpus_per_node: int
    cpus_per_task: int
    mem_gb: float | None = None
    time_limit_min: int
    requeue: bool = True  # Slurm may run the job again after a node failure or preemption
    # what ran
    algorithm: str = Field(max_length=64)
    algorithm_version: str = Field(max_length=64)
    image: str = Field(max_length=1024)
    image_digest: str | None = Field(default=None, max_length=128)
    command: list[str] = Field(sa_column=Column(JSON, nullable=False))
    framework: str = Field(default="horovod", max_length=16)
    dataset_id: str = Field(max_length=128)
    train_data_version_hash: str = Field(max_length=128)
    parameters: dict[str, str] = Field(sa_column=Column(JSON, nullable=False))
    idempotency_key: str | None = Field(default=None, max_length=128)
    rerun_of: str | None = Field(default=None, max_length=32)
    # sweeps: a task is a job with its sweep, its index in the space, and its attempt (retry-failed adds one)
    sweep_id: str | None = Field(default=None, foreign_key="sweep.id", max_length=32, index=True)
    task_index: int | None = None
    attempt: int = 0
    # coalesced dispatch: jobs of one shape sent in one cycle share a batch, one Slurm job array, element batch_index
    batch_id: str | None = Field(default=None, max_length=32, index=True)
    batch_index: int | None = None
    # bookkeeping: `folder` holds the model and metrics, `submit_folder` submitit's pickles, logs and markers
    folder: str = Field(max_length=1024)
    submit_folder: str = Field(default="", max_length=1024)
    # Set (and committed) just before sbatch; with no slurm_job_id after a crash it means "look in Slurm first".
    dispatching: bool = False
    dispatch_error: str | None = Field(default=None, max_length=2000)
    # Asked over HTTP, carried out by the worker (HTTP handlers never call Slurm).
    cancel_requested: bool = Field(default=False, index=True)
    metrics: list[dict[str, Any]] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    # run health (gateway/run_health.py): the policy the worker applies, the verdict that stopped the job (hung,
    # diverged, stopped_early) and why, how often the policy requeued it, and the best epoch of its monitor
    health: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    health_verdict: str | None = Field(default=None, max_length=16)
    health_reason: str | None = Field(default=None, max_length=512)
    health_restarts: int = 0
    # why the worker could not apply this cycle's evidence to the job (a file of its own it could not read, a
    # record it could not decide on); cleared when it applies cleanly again (gateway.worker.isolation)
    tracking_error: str | None = Field(default=None, max_length=512)
    excluded_nodes: str | None = Field(default=None, max_length=1024)  # left out after their ranks went silent
    best_epoch: int | None = None
    # what the run needs to be run again and checked (launchers.runtime.provenance), read back at success;
    # `verify`: this job reruns `rerun_of` to compare the models (hpcgw rerun --verify)
    provenance: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    verify: bool = False
    updated_at: datetime = Field(default_factory=utcnow)

    @property
    def gpus(self) -> int:
        return self.gpus_per_node * self.nodes


class JobAttempt(SQLModel, table=True):
    """One run of a job in Slurm: a requeue (node failure, preemption, time-out with a checkpoint) runs the same
    Slurm id again, and each run keeps its nodes, times and end state (from ``sacct -D``)."""

    __table_args__ = (UniqueConstraint("job_id", "number"),)

    id: int | None = Field(default=None, primary_key=True)
    job_id: str = Field(foreign_key="job.id", max_length=32, index=True)
    number: int  # 0 for the first run, then Slurm's restart count
    slurm_job_id: str = Field(max_length=32)
    slurm_state: str = Field(max_length=32)
    node_list: str = Field(default="", max_length=1024)
    start_time: datetime | None = None
    end_time: datetime | None = None
    reason: str | None = Field(default=None, max_length=256)
    # why the gateway ended this run (its health policy: hung, diverged), and the nodes it left out after it
    ended_by: str | None = Field(default=None, max_length=512)


class JobFields:
    """The Job's columns in the groups that other modules take them by, named once beside the table (with
    launchers.resources.RESOURCE_FIELDS, the resources): a retry copies some, an array's shape compares some, a poll
    reads some."""

    PLACEMENT = ("partition", "account", "qos")  # where it runs in Slurm
    # what the array's shared script is made of, beside placement and resources (gateway.worker.shapes)
    SCRIPT_INPUTS = ("framework", "algorithm", "image", "dataset_id", "train_data_version_hash")
    PER_JOB_INPUTS = ("algorithm_version", "image_digest", "command", "parameters")  # the rest of what it runs
    # what a poll reads of every active job: which Slurm job is its, and whose (gateway.worker.tracker)
    TRACKED = (
        "id",
        "state",
        "slurm_job_id",
        "sweep_id",
        "attempt",
        "batch_id",
        "submit_time",
        "slurm_submit_time",
        "user",
        "account",
    )


class JobEvent(SQLModel, table=True):
    """One row per state change: the job's history."""

    id: int | None = Field(default=None, primary_key=True)
    job_id: str = Field(foreign_key="job.id", max_length=32, index=True)
    state: JobState = Field(sa_type=StateColumn)
    slurm_state: str | None = Field(default=None, max_length=32)
    reason: str | None = Field(default=None, max_length=256)
    at: datetime = Field(default_factory=utcnow)


class WorkerStatus(SQLModel, table=True):
    """The active worker's lease and what it last saw, for every API process and every replica to read: the
    worker runs in its own process, so the API's health and partition sizes come from here, not from memory."""

    name: str = Field(default="worker", primary_key=True, max_length=32)
    holder: str = Field(default="", max_length=256)  # host:pid of the active worker
    epoch: int = 0  # one more at each take-over: what a worker did under an older epoch is no longer its to finish
    started_at: datetime | None = None
    heartbeat_at: datetime | None = None
    partitions: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    stats: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))


class UiSession(SQLModel, table=True):
    """A dashboard log-in: the cookie holds a random id, this row holds what it stands for. In the database, not in
    memory, so that every process of `hpcgw serve --processes N` knows it and a log-out ends it everywhere; the
    id itself is stored only as its SHA-256 (a copy of the table opens no session)."""

    id_sha256: str = Field(primary_key=True, max_length=64)
    token_sha256: str = Field(max_length=64)  # the token logged in with: once out of the configuration, no session
    user: str = Field(max_length=64)
    created_at: datetime = Field(default_factory=utcnow)
    expires_at: datetime = Field(index=True)
