"""What a training job asks for: resources, container, trainer command and environment.

Everything here ends up in an sbatch script, an `apptainer` argv or a process environment, so it is validated
on the way in and rejected with the offending field named, before anything reaches Slurm.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from launchers.resources import Resources
from launchers.slurm.privilege import check_unix_name

ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
SLURM_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
# Set by the launcher or Slurm; a user who sets them would silently break rank placement or the protocol's paths.
# The rest change what runs before the trainer's first line, as its user: the dynamic loader's (LD_PRELOAD),
# glibc's and the allocator's, and the start-up hooks of shells and interpreters (BASH_ENV, PYTHONSTARTUP,
# PERL5OPT, NODE_OPTIONS, …). A parameter may not set any of them.
RESERVED_ENV_PREFIXES = (
    "SLURM_",
    "SLURMD_",
    "SUBMITIT_",
    "HOROVOD_",
    "APPTAINER",
    "SINGULARITY",
    "OMPI_",
    "PMIX_",
    "TORCHELASTIC_",
    "LD_",
    "DYLD_",
    "MALLOC_",
    "GLIBC_",
    "BASH_FUNC_",
    "PYTHON",
    "PERL",
    "RUBY",
    "NODE_",
    "LUA_",
    "JAVA_",
    "_JAVA_",
)
# torch.distributed's seven (RANK … MASTER_PORT) the runtime sets per rank for DDP (launchers/runtime/ddp.py).
RESERVED_ENV_NAMES = frozenset(
    {"PATH", "HOME", "CUDA_VISIBLE_DEVICES", "USER", "LOGNAME", "SHELL"}
    | {"RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK", "MASTER_ADDR", "MASTER_PORT"}
    | {"BASH_ENV", "ENV", "IFS", "PS4", "SHELLOPTS", "BASHOPTS", "CDPATH", "GLOBIGNORE", "PROMPT_COMMAND"}
    | {"GCONV_PATH", "HOSTALIASES", "LOCPATH", "NLSPATH", "RESOLV_HOST_CONF", "RES_OPTIONS", "LOCALDOMAIN"}
    | {"GETCONF_DIR", "TZDIR", "OPENSSL_CONF", "OPENSSL_ENGINES", "JDK_JAVA_OPTIONS", "CLASSPATH", "TCLLIBPATH"}
)
MAX_ENV_VALUE_LEN = 32 * 1024
Framework = Literal["horovod", "ddp"]


def check_env(env: dict[str, str]) -> dict[str, str]:
    """A JobSpec's rules for its environment, also for an array element's own, which travels outside a JobSpec."""
    for name, value in env.items():
        if not ENV_NAME_RE.match(name):
            raise ValueError(f"invalid environment variable name {name!r}")
        if name in RESERVED_ENV_NAMES or name.startswith(RESERVED_ENV_PREFIXES):
            raise ValueError(f"environment variable {name!r} is reserved for the launcher or Slurm")
        if "\0" in value or len(value) > MAX_ENV_VALUE_LEN:
            raise ValueError(f"value of {name!r} contains NUL or is longer than {MAX_ENV_VALUE_LEN} characters")
    return env


def check_no_nul(items: tuple[str, ...]) -> tuple[str, ...]:
    if any("\0" in item for item in items):
        raise ValueError("contains a NUL character")
    return items


class Bind(BaseModel):
    """A bind mount into the container. Apptainer's --bind syntax reserves ':' and ','."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    source: Path
    target: Path
    read_only: bool = False

    @field_validator("source", "target")
    @classmethod
    def _bindable(cls, value: Path) -> Path:
        text = str(value)
        if not value.is_absolute():
            raise ValueError(f"bind paths must be absolute, got {text!r}")
        if any(c in text for c in ":,\n\0"):
            raise ValueError(
                f"bind path {text!r} contains ':', ',' or a newline, which apptainer --bind cannot express"
            )
        return value

    def as_apptainer(self) -> str:
        return f"{self.source}:{self.target}" + (":ro" if self.read_only else "")


# A pass-through pattern: a variable's name, or a name's beginning followed by one '*'. It reaches the shim's
# ``[[ $name == $pattern ]]`` unquoted, so nothing but letters, digits and '_' may be a glob character there;
# a leading letter keeps the shim's own ``_hpcgw_*`` variables out of every pattern's reach.
ENV_PATTERN_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]*\*?$")
# What always crosses into the container, whatever a site lists: Slurm's per-task placement, submitit's, and the
# protocol's own variables (rendezvous, heartbeat, restart count). Without them no rank knows who it is.
REQUIRED_ENV_PASSTHROUGH = ("SLURM_*", "SLURMD_*", "SUBMITIT_*", "HPCGW_*")
# What a site's node environment usually sets for the interconnect and the GPUs, and what `srun --mpi=pmix`
# hands each task: dropped by --cleanenv unless passed on. A site replaces the list (gateway: [container]).
DEFAULT_ENV_PASSTHROUGH = ("NCCL_*", "UCX_*", "CUDA_VISIBLE_DEVICES", "OMPI_*", "PMIX_*", "PMI_*")


def check_env_patterns(patterns: tuple[str, ...]) -> tuple[str, ...]:
    for pattern in patterns:
        if not ENV_PATTERN_RE.match(pattern):
            raise ValueError(
                f"invalid environment pass-through pattern {pattern!r}: a variable name, or a name's beginning "
                "followed by '*'"
            )
    return patterns


class ContainerSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    runtime: Literal["apptainer", "none"] = "none"
    image: str | None = None
    binds: tuple[Bind, ...] = ()
    # The host variables (names, or prefixes ending in '*') a rank's container receives besides
    # REQUIRED_ENV_PASSTHROUGH; every other variable of the node's environment stays out (--cleanenv).
    env_passthrough: tuple[str, ...] = DEFAULT_ENV_PASSTHROUGH
    # Under srun, the ranks of one node share one container (apptainer --sharens): the first mounts the image,
    # the others join it, so the image is mounted once per node, not once per rank. Off by default: Apptainer
    # 1.4.5 fails a rank that joins after the node's first rank has exited ("could not open proc directory"),
    # which ranks that rendezvous at start (Horovod, DDP) never do but independent tasks can; and on this
    # project's 2-core cluster it saved no start-up time that the bench could tell from noise (bench.container).
    share_per_node: bool = False

    @field_validator("env_passthrough")
    @classmethod
    def _patterns(cls, patterns: tuple[str, ...]) -> tuple[str, ...]:
        return check_env_patterns(patterns)

    @model_validator(mode="after")
    def _image_for_apptainer(self) -> ContainerSpec:
        if self.runtime == "apptainer":
            if not self.image:
                raise ValueError("container.image is required with runtime 'apptainer'")
            if "\n" in self.image or "\0" in self.image:
                raise ValueError("container.image contains a control character")
            if "://" not in self.image and not Path(self.image).is_file():
                raise ValueError(f"container.image {self.image!r} does not exist")
        elif self.image is not None:
            raise ValueError("container.image is only used with runtime 'apptainer'")
        return self


class JobSpec(Resources):
    """One multi-node Horovod training job: the resources (nodes, tasks, GPUs, CPUs, memory, time limit), where
    they come from, and what runs."""

    model_config = ConfigDict(extra="forbid")

    name: str = "hpcgw-train"
    partition: str
    account: str | None = None
    qos: str | None = None
    # escape hatches
    extra_sbatch: tuple[str, ...] = ()
    setup: tuple[str, ...] = ()
    # container and trainer
    container: ContainerSpec = ContainerSpec()
    command: tuple[str, ...] = Field(min_length=1)
    env: dict[str, str] = Field(default_factory=dict)
    # where submitit keeps the job's pickles, per-rank logs and markers
    folder: Path
    # The trainer's distributed framework: Horovod (its Gloo rendezvous, or MPI), or torch.distributed (DDP), whose
    # RANK, WORLD_SIZE, MASTER_ADDR... the in-job runtime sets from Slurm's variables (launchers/runtime/ddp.py).
    framework: Framework = "horovod"
    # A Python function instead of a trainer: the cloudpickle payload (function, args, kwargs) every rank calls
    # in its task process (launchers.runtime.function); ``command`` then only names it.
    function: Path | None = None
    # Horovod controller: gloo (default) or MPI through `srun --mpi=pmix`
    controller: Literal["gloo", "mpi"] = "gloo"
    rendezvous_timeout_s: float = Field(60.0, gt=0, le=3600)
    signal_delay_s: int = Field(90, ge=5, le=3600)
    max_requeues: int = Field(3, ge=0, le=100)
    # Slurm runs the job again after a node failure or preemption (sbatch --requeue); False: it fails instead.
    requeue: bool = True
    # Slurm's --comment; the gateway stores its job id here, to find the job again after a crash.
    comment: str | None = Field(None, max_length=256, pattern=r"^[A-Za-z0-9_.:@/+-]+$")
    # The Unix user sbatch runs as (through sudo, see launchers.slurm.privilege); None: whoever submits. The
    # gateway sets it to the token's user, so that the job runs, is accounted and is limited as that user.
    run_as: str | None = None

    @field_validator("run_as")
    @classmethod
    def _unix_name(cls, value: str | None) -> str | None:
        return None if value is None else check_unix_name(value)

    @model_validator(mode="after")
    def _framework(self) -> JobSpec:
        if self.framework == "ddp" and self.controller == "mpi":
            raise ValueError("controller 'mpi' is Horovod's; a DDP job rendezvouses through torch's TCPStore")
        return self

    @field_validator("name", "partition", "account", "qos")
    @classmethod
    def _slurm_name(cls, value: str | None) -> str | None:
        if value is not None and not SLURM_NAME_RE.match(value):
            raise ValueError(f"{value!r} is not a valid Slurm name ([A-Za-z0-9][A-Za-z0-9_.-]*, at most 64)")
        return value

    @field_validator("env")
    @classmethod
    def _env(cls, env: dict[str, str]) -> dict[str, str]:
        return check_env(env)

    @field_validator("extra_sbatch")
    @classmethod
    def _extra_sbatch(cls, lines: tuple[str, ...]) -> tuple[str, ...]:
        for line in lines:
            if not line.startswith("--") or "\n" in line or "\r" in line:
                raise ValueError(f"extra sbatch directive {line!r} must be one '--option[=value]' without newlines")
        return lines

    @field_validator("setup", "command")
    @classmethod
    def _no_nul(cls, items: tuple[str, ...]) -> tuple[str, ...]:
        return check_no_nul(items)

    @field_validator("function")
    @classmethod
    def _payload(cls, value: Path | None) -> Path | None:
        if value is None:
            return None
        if any(c in str(value) for c in "\n\0"):
            raise ValueError("function payload path must not contain newlines or NUL")
        return value.expanduser().absolute()

    @field_validator("folder")
    @classmethod
    def _folder(cls, value: Path) -> Path:
        value = value.expanduser().absolute()
        if any(c in str(value) for c in "\n\0%"):
            raise ValueError("folder must not contain newlines, NUL or '%' (Slurm expands % in log paths)")
        return value
