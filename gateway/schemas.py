"""What the HTTP API takes and returns. Unknown fields are refused (422), and every field is bounded."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import Base64Bytes, BaseModel, ConfigDict, Field, StringConstraints, field_validator

from gateway.run_health import HealthOverrides, HealthPolicy
from launchers.resources import (
    MAX_CPUS_PER_TASK,
    MAX_GPUS_PER_NODE,
    MAX_MEM_GB,
    MAX_NODES,
    MAX_TASKS_PER_NODE,
    MAX_TIME_LIMIT_MIN,
    Resources,
)
from launchers.space import ParameterSpace
from launchers.spec import RESERVED_ENV_NAMES, RESERVED_ENV_PREFIXES, Framework
from launchers.states import JobState

PARAM_NAME_RE = re.compile(r"^[A-Z][A-Z0-9_]*$")
# The protocol's own variables: the gateway sets them, a request may not.
PROTOCOL_ENV = frozenset({"TRAINING_DATA_PATH", "MODEL_OUTPUT_DIR", "METRICS_FILE", "JOB_ID"})
MAX_PARAMETERS = 256
MAX_PARAMETER_VALUE = 4096

Name = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]
Hash = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")]
ParamValue = str | int | float | bool


def validate_parameters(params: dict[str, ParamValue]) -> dict[str, str]:
    """Names per the protocol; values become the strings the trainer will see in its environment."""
    if len(params) > MAX_PARAMETERS:
        raise ValueError(f"at most {MAX_PARAMETERS} parameters, got {len(params)}")
    out: dict[str, str] = {}
    for name, value in params.items():
        if not PARAM_NAME_RE.match(name) or len(name) > 64:
            raise ValueError(f"parameter name {name!r} must match [A-Z][A-Z0-9_]* (at most 64 characters)")
        if name in PROTOCOL_ENV or name in RESERVED_ENV_NAMES or name.startswith((*RESERVED_ENV_PREFIXES, "HPCGW_")):
            raise ValueError(
                f"parameter name {name!r} is reserved: the gateway, the launcher, Slurm, the loader, a shell or an "
                "interpreter reads it"
            )
        text = str(value).lower() if isinstance(value, bool) else str(value)
        if len(text) > MAX_PARAMETER_VALUE or "\0" in text:
            raise ValueError(f"value of {name!r} is longer than {MAX_PARAMETER_VALUE} characters or contains NUL")
        out[name] = text
    return out


class Problem(BaseModel):
    field: str | None = Field(description="where in the request, dotted (`parameters.LR`, `offset`)")
    message: str


class ErrorBody(BaseModel):
    """The body of every error the gateway answers, 4xx and 5xx alike."""

    detail: str = Field(description="what went wrong, for people")
    field: str | None = Field(None, description="the first field at fault, when one is")
    problems: list[Problem] = Field(default_factory=list, description="each validation problem, when several")


class JobCreate(Resources):
    model_config = ConfigDict(
        strict=True,  # `"nodes": true` is no number of nodes, `"requeue": 1` no yes or no: a 422, as documented
        json_schema_extra={
            "examples": [
                {
                    "name": "intents-lr03",
                    "algorithm": "intent-classifier",
                    "dataset_id": "intents",
                    "train_data_version_hash": "3f2a9c",
                    "nodes": 2,
                    "tasks_per_node": 2,
                    "time_limit_min": 30,
                    "parameters": {"LR": 0.3, "EPOCHS": 5, "SEED": 7},
                    "idempotency_key": "nightly-2026-11-23",
                }
            ]
        },
    )

    name: Name = "train"
    team: str | None = Field(None, description="admins only; others get their token's team")
    algorithm: Name
    algorithm_version: Name | None = None
    dataset_id: Name
    train_data_version_hash: Hash
    parameters: dict[str, ParamValue] = Field(default_factory=dict)
    partition: Name | None = Field(None, description="one of the team's partitions; default: its first")
    idempotency_key: Annotated[str, StringConstraints(min_length=1, max_length=128)] | None = None
    requeue: bool = Field(True, description="let Slurm run the job again after a node failure or preemption")
    health: HealthOverrides | None = Field(
        None, description="changes to the team's health policy: hang timeout, divergence, early stopping"
    )

    @field_validator("parameters")
    @classmethod
    def _parameters(cls, params: dict[str, ParamValue]) -> dict[str, ParamValue]:
        validate_parameters(params)
        return params


class FunctionCreate(Resources):
    """A Python function as a job (``Client.submit_function``): every rank calls it with the framework set up."""

    model_config = ConfigDict(extra="forbid")

    name: Name = "function"
    team: str | None = Field(None, description="admins only; others get their token's team")
    partition: Name | None = Field(None, description="one of the team's partitions; default: its first")
    framework: Framework = Field("horovod", description="initialised on every rank before the call")
    payload: Base64Bytes = Field(
        description="cloudpickle of (function, args, kwargs), base64; unpickled only in the job, as its user"
    )
    idempotency_key: Annotated[str, StringConstraints(min_length=1, max_length=128)] | None = None
    requeue: bool = Field(True, description="let Slurm run the job again after a node failure or preemption")


class RerunRequest(BaseModel):
    """A rerun of the recorded inputs; resources may change (a different world size), nothing else may."""

    model_config = ConfigDict(extra="forbid", strict=True)  # `"nodes": true` is no number of nodes

    verify: bool = Field(False, description="compare the rerun's model with the original's when it ends")
    nodes: int | None = Field(None, ge=1, le=MAX_NODES)
    tasks_per_node: int | None = Field(None, ge=1, le=MAX_TASKS_PER_NODE)
    gpus_per_node: int | None = Field(None, ge=0, le=MAX_GPUS_PER_NODE)
    cpus_per_task: int | None = Field(None, ge=1, le=MAX_CPUS_PER_TASK)
    mem_gb: float | None = Field(None, gt=0, le=MAX_MEM_GB)
    time_limit_min: int | None = Field(None, ge=1, le=MAX_TIME_LIMIT_MIN)

    def resource_changes(self) -> dict[str, Any]:
        return {k: v for k, v in self.model_dump(exclude={"verify"}).items() if v is not None}


class JobPublic(BaseModel):
    id: str
    name: str
    team: str
    user: str
    state: JobState
    slurm_job_id: str | None
    slurm_state: str | None
    reason: str | None
    position_in_queue: int | None
    exit_code: int | None
    restarts: int
    submit_time: datetime
    start_time: datetime | None
    end_time: datetime | None
    partition: str
    account: str
    qos: str | None
    resources: Resources
    algorithm: str
    algorithm_version: str
    image: str
    image_digest: str | None
    dataset_id: str
    train_data_version_hash: str
    parameters: dict[str, str]
    idempotency_key: str | None
    rerun_of: str | None
    requeue: bool = True
    health: HealthPolicy | None = Field(None, description="the policy the worker applies while the job runs")
    health_reason: str | None = Field(None, description="why the health policy stopped or requeued the job")
    health_restarts: int = Field(0, description="requeues the health policy asked for")
    tracking_error: str | None = Field(
        None, description="why the worker could not apply its last evidence to the job (its files, its record)"
    )
    best_epoch: int | None = Field(None, description="the epoch with the best value of the policy's monitor")
    provenance: dict[str, Any] | None = Field(
        None, description="what the run needs to be run again: versions, world size, the model's SHA-256"
    )
    verify: bool = Field(False, description="this job reruns rerun_of to compare the models")
    framework: Framework = Field("horovod", description="its algorithm version's distributed framework")


class AttemptPublic(BaseModel):
    """One run of the job in Slurm (a requeue runs the same Slurm id again)."""

    number: int
    slurm_job_id: str
    slurm_state: str
    node_list: str
    start_time: datetime | None
    end_time: datetime | None
    reason: str | None
    ended_by: str | None = Field(None, description="why the gateway's health policy ended this run")


class JobList(BaseModel):
    items: list[JobPublic]
    total: int
    offset: int
    limit: int


MAX_BATCH = 1000  # jobs in one POST /v1/jobs/batch: the intake stores them in one transaction


class JobBatchCreate(BaseModel):
    """Many job requests in one POST: each is checked, stored and answered on its own, as if POSTed alone."""

    model_config = ConfigDict(extra="forbid")

    jobs: list[JobCreate] = Field(min_length=1, max_length=MAX_BATCH)


class JobBatchItem(BaseModel):
    """One request's answer, at its index: the status a POST /v1/jobs of it alone would have had."""

    status: int = Field(description="201 created; 200 made earlier by its idempotency key; 422, 429 or 503 not stored")
    job: JobPublic | None = Field(None, description="the job, when status is 200 or 201")
    error: ErrorBody | None = Field(None, description="why not, when the job was not stored")
    retry_after_s: float | None = Field(None, description="seconds until a 429 or 503 may be tried again")


class JobBatchResult(BaseModel):
    items: list[JobBatchItem] = Field(description="one per request, in the order they were sent")
    created: int = Field(description="how many items are 201")


class AlgorithmVersionCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: Name
    image: Annotated[str, StringConstraints(min_length=1, max_length=1024, pattern=r"^[^\n\r\x00]+$")]
    command: list[Annotated[str, StringConstraints(min_length=1, max_length=1024)]] = Field(min_length=1, max_length=64)
    local_command: list[Annotated[str, StringConstraints(min_length=1, max_length=1024)]] | None = Field(
        None, min_length=1, max_length=64
    )
    framework: Framework = Field(
        "horovod", description="horovod, or ddp: torch.distributed with RANK, WORLD_SIZE, MASTER_ADDR set per rank"
    )


class AlgorithmCreate(AlgorithmVersionCreate):
    name: Name
    description: Annotated[str, StringConstraints(max_length=1000)] = ""
    team: str | None = Field(None, description="admins only")
    shared: bool = Field(False, description="admins only: published for every team, whose versions admins add")


class AlgorithmVersionPublic(BaseModel):
    version: str
    image: str
    image_digest: str | None
    command: list[str]
    local_command: list[str] | None
    framework: Framework = "horovod"
    created_at: datetime


class AlgorithmPublic(BaseModel):
    name: str
    team: str | None = Field(description="the team whose jobs may run it; none when shared")
    shared: bool = Field(False, description="published by an admin: every team's jobs may run it")
    description: str
    current_version: str
    versions: list[AlgorithmVersionPublic]


class TeamPublic(BaseModel):
    name: str
    partitions: list[str]
    account: str
    qos: str | None
    max_gpus: int
    max_nodes: int
    max_running_jobs: int
    max_queued_jobs: int
    jobs_by_state: dict[str, int]


class LogTail(BaseModel):
    rank: int
    path: str
    lines: list[str]


class MetricsPublic(BaseModel):
    job_id: str
    epochs: list[dict[str, Any]]
    state: JobState | None = Field(None, description="the job's state: hung, diverged, stopped_early among them")
    best_epoch: int | None = Field(None, description="the epoch with the best value of the health policy's monitor")
    health_reason: str | None = Field(None, description="why the health policy stopped or requeued the job")


class SweepCreate(BaseModel):
    """A base training request, a parameter space, and how many tasks may run at once (the %K)."""

    model_config = ConfigDict(extra="forbid")

    name: Name = "sweep"
    base: JobCreate
    space: ParameterSpace
    max_parallel: int = Field(ge=1, le=10_000)


class SweepTask(BaseModel):
    index: int
    job_id: str
    attempt: int
    state: JobState
    slurm_job_id: str | None
    exit_code: int | None
    parameters: dict[str, str]
    final_metrics: dict[str, Any] | None


class SweepPublic(BaseModel):
    id: str
    name: str
    team: str
    user: str
    max_parallel: int
    task_count: int
    array_ids: list[str]
    counts: dict[str, int]
    tasks: list[SweepTask]
    best: SweepTask | None = None


VerificationStatus = Literal["pending", "identical", "different", "failed", "unverifiable"]


class Difference(BaseModel):
    input: str
    original: Any
    rerun: Any


class Verification(BaseModel):
    original: str
    rerun: str
    status: VerificationStatus = Field(
        description="pending until the rerun ends; identical or different when both models exist"
    )
    detail: str
    original_model_sha256: str | None
    rerun_model_sha256: str | None
    differences: list[Difference] = Field(description="every recorded input that differs between the two runs")
