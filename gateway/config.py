"""The gateway's one configuration file (TOML), validated at start-up with errors that name the key.

Relative paths are taken relative to the file's own directory, so a config works from any working directory.
Tokens are hashed as soon as they are read; only the hashes are kept. Outside development mode the service
refuses the well-known development tokens and short ones.
"""

from __future__ import annotations

import hashlib
import os
import pwd
import re
import tomllib
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from gateway.run_health import HealthPolicy
from launchers.spec import DEFAULT_ENV_PASSTHROUGH, check_env_patterns

DEV_TOKENS = frozenset({"team-a-dev-token", "team-b-dev-token", "team-c-dev-token", "admin-dev-token"})
MIN_TOKEN_LEN = 24
_TEAM_RE = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")


class ConfigError(ValueError):
    """The configuration cannot be used; the message names the file and the key."""


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class RateConfig(BaseModel):
    """A token bucket: ``burst`` requests at once, refilled at ``per_min`` a minute."""

    model_config = ConfigDict(extra="forbid")

    per_min: float = Field(gt=0, le=1_000_000)
    burst: int = Field(ge=1, le=1_000_000)


class RateLimitConfig(BaseModel):
    """How fast requests that create jobs (submissions, reruns, sweeps, retries) may come; none: no limit."""

    model_config = ConfigDict(extra="forbid")

    per_token: RateConfig | None = RateConfig(per_min=120, burst=120)
    per_team: RateConfig | None = RateConfig(per_min=600, burst=600)


class TeamConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    partitions: list[str] = Field(min_length=1)
    account: str
    qos: str | None = None
    max_gpus: int = Field(0, ge=0)
    max_nodes: int = Field(1, ge=1)
    max_running_jobs: int = Field(1, ge=1)
    max_queued_jobs: int = Field(100, ge=0)
    # CPUs the team's running jobs may hold at once, across the cluster (Slurm's GrpTRES=cpu); None: no limit.
    max_cpus: int | None = Field(None, ge=1)
    # The team's share of the cluster in Slurm's fair-share (the account's Fairshare).
    fairshare: int = Field(1, ge=1, le=1_000_000)
    # The Unix group whose members are the team; its job folders belong to it. Default: the team's name.
    unix_group: str | None = Field(None, pattern=r"^[a-z_][a-z0-9_-]{0,31}$")
    # This team's own rate of submissions (its bucket), instead of [rate_limits] per_team.
    submit_rate: RateConfig | None = None
    # What the worker watches in the team's running jobs (gateway/run_health.py); a request overrides any field.
    health: HealthPolicy = HealthPolicy()


class TokenConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    user: str = Field(pattern=r"^[A-Za-z0-9_.@-]{1,64}$")
    # The Unix account the user's jobs run as (sbatch, scancel, scontrol through sudo). Default: ``user``.
    unix_user: str | None = Field(None, pattern=r"^[a-z_][a-z0-9_-]{0,31}$")
    team: str | None = None
    role: Literal["user", "admin"] = "user"
    token: str | None = Field(None, repr=False)
    token_sha256: str | None = Field(None, pattern=r"^[0-9a-f]{64}$")

    @model_validator(mode="after")
    def _one_secret(self) -> TokenConfig:
        if (self.token is None) == (self.token_sha256 is None):
            raise ValueError("give exactly one of token or token_sha256")
        if self.role == "user" and self.team is None:
            raise ValueError(f"token of user {self.user!r} needs a team")
        return self

    @property
    def digest(self) -> str:
        return self.token_sha256 or hash_token(self.token or "")

    @property
    def account_name(self) -> str:
        return self.unix_user or self.user


class PollConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    interval_s: float = Field(5.0, gt=0, le=600)
    floor_s: float = Field(0.5, gt=0, le=600)
    # Job ids per sacct call. Array ids are collapsed to one id per array first; 5,000 ids is ~40 kB of argv.
    sacct_chunk: int = Field(5000, ge=1, le=50000)
    # A job neither accounting nor slurmctld has heard of is declared lost only after this long: slurmdbd
    # can lag behind slurmctld, and a job that ended leaves slurmctld after MinJobAge.
    lost_after_s: float = Field(600.0, ge=10, le=86400)
    # A worker killed during sbatch leaves sbatch running; the rows it marked are resubmitted only after this
    # long without a trace in Slurm (sbatch's own retries to slurmctld last MessageTimeout, 10 s by default).
    dispatch_grace_s: float = Field(30.0, ge=0, le=3600)
    # The niceness `hpcgw worker` runs at (and its sbatch and sacct with it). On a host it shares with the API,
    # requests are answered first when the two compete for CPU; the worker's work waits a little and is never
    # lost. Measured in bench/restd.py: 16 clients' POST p50 was 1.3 to 1.9x slurmrestd's with the worker at
    # 0, 0.7 to 1.3x at 10 or more, with as many jobs reaching Slurm per second. 0 leaves it alone.
    worker_nice: int = Field(10, ge=0, le=19)


class FunctionsConfig(BaseModel):
    """Python functions as jobs (``POST /v1/functions``). Off unless the site turns it on: a pickled function is
    code, so a token that may send one may run anything as its user on the team's partition (docs/functions.md).
    The gateway never unpickles what it is sent, nor what the job sends back."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = False
    teams: list[str] | None = None  # the teams that may; none: every team, once enabled
    # With container runtime 'apptainer': the image functions run in (it must hold submitit, cloudpickle and the
    # framework); with 'none', the project's own environment.
    image: str | None = None


class AlgorithmsConfig(BaseModel):
    """Algorithm versions that run a command of their own outside any image (``local_command``, what runs with
    container runtime 'none'). Off unless the site turns it on: such a command is code (``bash -c …``), run as
    the user of every job of the algorithm's team. Even when on, only an admin token registers one."""

    model_config = ConfigDict(extra="forbid")

    local_commands: bool = False
    teams: list[str] | None = None  # the teams whose jobs may run one; none: every team, once on


class GatewayConfig(BaseSettings):
    """The file's values, with ``HPCGW_<FIELD>`` environment variables winning over them (pydantic-settings):
    ``HPCGW_DATABASE_URL`` points a deployment at its database without editing the file."""

    model_config = SettingsConfigDict(extra="forbid", env_prefix="HPCGW_")

    dev_mode: bool = False
    database_url: str = "sqlite:///gateway.db"
    # The Slurm cluster this gateway submits to (SLURM_CONF for its Slurm commands); unset: the environment's.
    slurm_conf: Path | None = None
    dataset_root: Path
    job_root: Path
    container_runtime: Literal["apptainer", "none"] = "apptainer"
    # With runtime 'apptainer': the node's variables a job's container receives (names, or a name's beginning
    # followed by '*'), besides Slurm's, submitit's and the gateway's own (SLURM_*, SLURMD_*, SUBMITIT_*, HPCGW_*),
    # which always do. Every other variable stays out (--cleanenv). This list replaces the default, e.g.
    # container_env_passthrough = ["NCCL_*", "UCX_*", "CUDA_VISIBLE_DEVICES", "FI_PROVIDER"].
    container_env_passthrough: list[str] = Field(default_factory=lambda: list(DEFAULT_ENV_PASSTHROUGH))
    # With runtime 'apptainer': a node's ranks share one container (one image mount) instead of one each; only
    # for trainers whose ranks rendezvous at start: see launchers.spec.ContainerSpec.share_per_node.
    container_share_per_node: bool = False
    poll: PollConfig = PollConfig()
    rate_limits: RateLimitConfig = RateLimitConfig()
    teams: dict[str, TeamConfig] = Field(min_length=1)
    tokens: list[TokenConfig] = Field(min_length=1)
    max_body_bytes: int = Field(1 << 20, ge=1024)
    # A token that may read /metrics and nothing else (a Prometheus scraper's bearer token), as its SHA-256;
    # an admin token reads it too. Unset: only admins.
    metrics_token_sha256: str | None = Field(None, pattern=r"^[0-9a-f]{64}$")
    functions: FunctionsConfig = FunctionsConfig()
    algorithms: AlgorithmsConfig = AlgorithmsConfig()
    # The folders whose image files an algorithm version may name by path (their SHA-256 is recorded); any other
    # local path is refused, so that registering an image is no way to learn of, or hash, the gateway's files.
    image_roots: list[Path] = Field(default_factory=list)
    # Unix accounts below MIN_UID (system accounts) a token may still run jobs as; root never.
    allowed_system_users: list[str] = Field(default_factory=list)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (env_settings, init_settings)  # the environment over the file

    @field_validator("container_env_passthrough")
    @classmethod
    def _env_patterns(cls, patterns: list[str]) -> list[str]:
        return list(check_env_patterns(tuple(patterns)))

    @field_validator("teams")
    @classmethod
    def _team_names(cls, teams: dict[str, TeamConfig]) -> dict[str, TeamConfig]:
        for name in teams:
            if not _TEAM_RE.match(name):
                raise ValueError(f"invalid team name {name!r}")
        return teams

    @model_validator(mode="after")
    def _consistent(self) -> GatewayConfig:
        for token in self.tokens:
            if token.team is not None and token.team not in self.teams:
                raise ValueError(f"token of user {token.user!r} names unknown team {token.team!r}")
            if not self.dev_mode and token.token is not None:
                if token.token in DEV_TOKENS:
                    raise ValueError(f"development token of user {token.user!r} is refused outside dev_mode")
                if len(token.token) < MIN_TOKEN_LEN:
                    raise ValueError(f"token of user {token.user!r} is shorter than {MIN_TOKEN_LEN} characters")
        for key, teams in (("functions", self.functions.teams), ("algorithms", self.algorithms.teams)):
            for team in teams or []:
                if team not in self.teams:
                    raise ValueError(f"{key}.teams names unknown team {team!r}")
        if self.functions.enabled and self.container_runtime == "apptainer" and not self.functions.image:
            raise ValueError("functions.enabled with container_runtime 'apptainer' needs functions.image")
        digests = [t.digest for t in self.tokens]
        if len(set(digests)) != len(digests):
            raise ValueError("two tokens are the same")
        accounts: dict[str, str] = {}
        for token in self.tokens:
            if accounts.setdefault(token.user, token.account_name) != token.account_name:
                raise ValueError(f"user {token.user!r} is mapped to two Unix accounts")
            check_unix_user(token.account_name, self.allowed_system_users, user=token.user)
        return self

    def check_run_as(self, uid: int | None = None) -> None:
        """At serve start: no token may run jobs as the gateway's own account (``uid``: this process's), whose
        jobs could read its configuration, its database and every team's folders."""
        uid = os.geteuid() if uid is None else uid
        for token in self.tokens:
            try:
                account = pwd.getpwnam(token.account_name)
            except KeyError:
                continue
            if account.pw_uid == uid:
                raise ConfigError(
                    f"token of user {token.user!r} runs jobs as {token.account_name!r}, the account the gateway "
                    "itself runs as"
                )

    def unix_user_of(self, user: str) -> str:
        """The Unix account a gateway user's jobs run as."""
        for token in self.tokens:
            if token.user == user:
                return token.account_name
        return user  # a user no token names any more (an old job): the name itself

    def unix_group_of(self, team: str) -> str:
        return self.teams[team].unix_group or team

    def resolved(self, base: Path) -> GatewayConfig:
        """Relative paths (and a relative sqlite file) resolved against ``base``."""
        url = self.database_url
        prefix = "sqlite:///"
        if url.startswith(prefix) and not url.startswith(prefix + "/") and url != "sqlite:///:memory:":
            url = prefix + str((base / url[len(prefix) :]).resolve())
        # The secrets are dropped here: from now on only their hashes exist.
        tokens = [t.model_copy(update={"token": None, "token_sha256": t.digest}) for t in self.tokens]
        return self.model_copy(
            update={
                "database_url": url,
                "dataset_root": (base / self.dataset_root).resolve(),
                "job_root": (base / self.job_root).resolve(),
                "slurm_conf": None if self.slurm_conf is None else (base / self.slurm_conf).resolve(),
                "image_roots": [(base / root).resolve() for root in self.image_roots],
                "tokens": tokens,
            }
        )


MIN_UID = 1000  # below: system accounts (daemons, the gateway's own), which no token runs jobs as unless allowed


def check_unix_user(account: str, allowed_system: list[str], *, user: str) -> None:
    """A token's Unix account is an ordinary person's: never root (by name or uid 0), nor a system account
    unless ``allowed_system`` names it. An account this machine does not know is left to sudo to refuse."""
    if account == "root":
        raise ValueError(f"token of user {user!r} may not run jobs as root")
    try:
        uid = pwd.getpwnam(account).pw_uid
    except KeyError:
        return
    if uid == 0:
        raise ValueError(f"token of user {user!r} runs jobs as {account!r}, whose uid is 0")
    if uid < MIN_UID and account not in allowed_system:
        raise ValueError(
            f"token of user {user!r} runs jobs as the system account {account!r} (uid {uid} < {MIN_UID}); "
            "name it in allowed_system_users if that is meant"
        )


def load_config(path: Path) -> GatewayConfig:
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    try:
        config = GatewayConfig(**data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or '(top level)'}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"{path}: {problems}") from None
    return config.resolved(path.resolve().parent)
