"""Run health: the policy a job runs under, and the verdict one cycle's evidence gives. Pure functions.

On a shared cluster the costly failures are the runs Slurm sees as healthy: a rank stuck in a collective, a
loss gone NaN, a model that stopped improving while holding its nodes. The worker (gateway/worker/health.py)
gathers the evidence it already has each cycle (the metrics file, each rank's heartbeat file) and asks
:func:`evaluate`; this module never reads a file or calls Slurm, so every rule is tested on plain values.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from launchers.states import JobState

Action = Literal["stop", "requeue"]
_METRIC = r"^[A-Za-z_][A-Za-z0-9_.-]{0,63}$"


class HealthPolicy(BaseModel):
    """What the worker watches in a running job, and what it does when a rule fires. A team's configuration
    sets its defaults (``[teams.X.health]``); a request overrides any field (``"health": {...}``)."""

    model_config = ConfigDict(extra="forbid")

    heartbeat_s: float = Field(10.0, ge=0.5, le=600, description="how often each rank writes its heartbeat")
    hang_timeout_s: float | None = Field(
        None, ge=5, le=7 * 86400, description="stop (or requeue) when no rank made progress for this long; null: off"
    )
    on_hang: Action = "stop"
    loss_metric: str = Field("loss", pattern=_METRIC, description="the metric the divergence rule reads")
    stop_on_nan: bool = Field(True, description="a NaN or infinite loss is a divergence")
    max_loss: float | None = Field(None, description="a loss above this is a divergence; null: no bound")
    on_divergence: Action = "stop"
    monitor: str = Field("loss", pattern=_METRIC, description="the metric early stopping watches")
    mode: Literal["min", "max"] = Field("min", description="min: lower is better (a loss); max: an accuracy")
    min_delta: float = Field(0.0, ge=0, description="a smaller change than this is no improvement")
    patience: int | None = Field(None, ge=1, le=100_000, description="epochs without improvement; null: off")
    max_restarts: int = Field(2, ge=0, le=100, description="requeues the policy may ask for; then it stops")


class HealthOverrides(BaseModel):
    """A request's changes to its team's policy: only the fields given (null turns a rule off)."""

    model_config = ConfigDict(extra="forbid", strict=True)  # `"max_restarts": true` is no count

    heartbeat_s: float | None = Field(None, ge=0.5, le=600)
    hang_timeout_s: float | None = Field(None, ge=5, le=7 * 86400)
    on_hang: Action | None = None
    loss_metric: str | None = Field(None, pattern=_METRIC)
    stop_on_nan: bool | None = None
    max_loss: float | None = None
    on_divergence: Action | None = None
    monitor: str | None = Field(None, pattern=_METRIC)
    mode: Literal["min", "max"] | None = None
    min_delta: float | None = Field(None, ge=0)
    patience: int | None = Field(None, ge=1, le=100_000)
    max_restarts: int | None = Field(None, ge=0, le=100)


NOT_NULLABLE = ("heartbeat_s", "on_hang", "loss_metric", "stop_on_nan", "on_divergence", "monitor", "mode")


def resolve(defaults: HealthPolicy, overrides: HealthOverrides | None) -> HealthPolicy:
    if overrides is None:
        return defaults
    given = overrides.model_dump(exclude_unset=True)
    for name in NOT_NULLABLE:
        if name in given and given[name] is None:
            del given[name]  # "no value" for a field that must have one: the team's
    return HealthPolicy.model_validate({**defaults.model_dump(), **given})


SILENT_NAMED = 4  # ranks named in a reason (the columns that hold it are bounded); the nodes excluded are all


@dataclass(frozen=True)
class Verdict:
    state: JobState  # HUNG, DIVERGED or STOPPED_EARLY
    action: Action
    reason: str
    exclude: tuple[str, ...] = ()  # nodes whose ranks went silent: the next attempt runs elsewhere


@dataclass(frozen=True)
class Assessment:
    verdict: Verdict | None
    best_epoch: int | None


def number(value: Any) -> float | None:
    """A metric's value as a float: NaN and infinities may arrive as strings (strict JSON has no literal)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str) and value.strip().lower() in ("nan", "inf", "+inf", "-inf", "infinity", "-infinity"):
        return float(value.strip().lower().replace("infinity", "inf"))
    return None


def evaluate(
    policy: HealthPolicy,
    metrics: list[dict[str, Any]],
    heartbeats: dict[int, dict[str, Any]],
    started_at: float | None,
    now: float,
    *,
    restarts_used: int = 0,
    may_requeue: bool = True,
    stalled: tuple[int | None, Verdict | None] | None = None,
) -> Assessment:
    """The verdict for a running job, first rule first: divergence, then a hang, then a plateau. ``stalled``:
    :func:`plateau` of these metrics, when the caller kept it from a cycle with the same metrics."""
    best_epoch, stop_early = stalled if stalled is not None else plateau(policy, metrics)
    verdict = _divergence(policy, metrics, heartbeats) or _hang(policy, heartbeats, started_at, now) or stop_early
    if verdict is not None and verdict.action == "requeue":
        if not may_requeue:
            verdict = Verdict(verdict.state, "stop", f"{verdict.reason}; the job may not be requeued (requeue=false)")
        elif restarts_used >= policy.max_restarts:
            verdict = Verdict(
                verdict.state, "stop", f"{verdict.reason}; requeued {restarts_used} times already (max_restarts)"
            )
    return Assessment(verdict, best_epoch)


def _divergence(
    policy: HealthPolicy, metrics: list[dict[str, Any]], heartbeats: dict[int, dict[str, Any]]
) -> Verdict | None:
    name = policy.loss_metric
    seen: list[tuple[float, str]] = []
    if metrics:
        last = metrics[-1]
        value = number(last.get(name))
        if value is not None:
            seen.append((value, f"at epoch {last.get('epoch', len(metrics))}"))
    for rank, beat in sorted(heartbeats.items()):
        progress = beat.get("progress")
        if isinstance(progress, dict):
            value = number(progress.get(name))
            if value is not None:
                where = f"step {progress['step']}" if "step" in progress else f"epoch {progress.get('epoch', '?')}"
                seen.append((value, f"at {where} on rank {rank}"))
    for value, where in seen:
        if not math.isfinite(value) and policy.stop_on_nan:
            return Verdict(JobState.DIVERGED, policy.on_divergence, f"diverged: {name} is {value} {where}")
        if policy.max_loss is not None and value > policy.max_loss:
            return Verdict(
                JobState.DIVERGED,
                policy.on_divergence,
                f"diverged: {name} {value:g} {where} is above max_loss {policy.max_loss:g}",
            )
    return None


def _hang(
    policy: HealthPolicy, heartbeats: dict[int, dict[str, Any]], started_at: float | None, now: float
) -> Verdict | None:
    """No rank made progress for ``hang_timeout_s``. Progress is a trainer's report where the trainer makes any
    (on any rank), else a heartbeat: a trainer that reports nothing is alive while its processes are."""
    timeout = policy.hang_timeout_s
    if timeout is None or started_at is None:
        return None
    last, reports = last_progress(heartbeats, started_at)
    if now - last <= timeout:
        return None
    silent_after = 3 * policy.heartbeat_s
    silent = sorted(
        (rank, str(b.get("host", "?")))
        for rank, b in heartbeats.items()
        if _is_time(b.get("time")) and now - float(b["time"]) > silent_after
    )
    what = "progress" if reports else "heartbeat"
    reason = f"hung: no rank reported {what} for {now - last:.0f} s (hang_timeout_s {timeout:g})"
    if silent:
        named = ", ".join(f"rank {rank} on {host}" for rank, host in silent[:SILENT_NAMED])
        more = f" and {len(silent) - SILENT_NAMED} more" if len(silent) > SILENT_NAMED else ""
        reason += f"; silent: {named}{more}"
    return Verdict(JobState.HUNG, policy.on_hang, reason, tuple(sorted({host for _, host in silent})))


def last_progress(heartbeats: dict[int, dict[str, Any]], started_at: float) -> tuple[float, bool]:
    """When any rank last made progress, and whether that is a trainer's report (True) or a heartbeat."""
    reports = [float(b["progress_at"]) for b in heartbeats.values() if _is_time(b.get("progress_at"))]
    beats = [float(b["time"]) for b in heartbeats.values() if _is_time(b.get("time"))]
    return max([started_at, *(reports or beats)]), bool(reports)


def needs_heartbeats(policy: HealthPolicy) -> bool:
    return policy.hang_timeout_s is not None or policy.stop_on_nan or policy.max_loss is not None


def plateau(policy: HealthPolicy, metrics: list[dict[str, Any]]) -> tuple[int | None, Verdict | None]:
    """The best epoch of the monitored metric, and early stopping once ``patience`` epochs did not beat it."""
    best: float | None = None
    best_epoch: int | None = None
    last_epoch: int | None = None
    for index, line in enumerate(metrics):
        value = number(line.get(policy.monitor))
        if value is None or not math.isfinite(value):
            continue
        epoch = line.get("epoch")
        epoch = epoch if isinstance(epoch, int) and not isinstance(epoch, bool) else index + 1
        last_epoch = epoch
        better = best is None or (
            value < best - policy.min_delta if policy.mode == "min" else value > best + policy.min_delta
        )
        if better:
            best, best_epoch = value, epoch
    if policy.patience is None or best_epoch is None or last_epoch is None:
        return best_epoch, None
    if last_epoch - best_epoch < policy.patience:
        return best_epoch, None
    reason = (
        f"stopped early: {policy.monitor} did not improve by {policy.min_delta:g} for {last_epoch - best_epoch} "
        f"epochs (patience {policy.patience}); best {best:g} at epoch {best_epoch}"
    )
    return best_epoch, Verdict(JobState.STOPPED_EARLY, "stop", reason)


def _is_time(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
