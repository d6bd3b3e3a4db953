"""/v1/teams, /healthz and /metrics (Prometheus text format)."""

from __future__ import annotations

from collections import defaultdict

from fastapi import APIRouter, Response
from sqlalchemy import func
from sqlmodel import col, select

from gateway.api.deps import ConfigDep, PrincipalDep, SessionDep, TrackerDep
from gateway.models import Job
from gateway.schemas import TeamPublic
from launchers.states import JobState

router = APIRouter(tags=["system"])


@router.get("/v1/teams", response_model=list[TeamPublic])
def list_teams(session: SessionDep, config: ConfigDep, principal: PrincipalDep) -> list[TeamPublic]:
    counts: dict[str, dict[str, int]] = defaultdict(dict)
    for team, state, n in session.exec(select(Job.team, Job.state, func.count()).group_by(Job.team, Job.state)):
        counts[team][state] = n
    return [
        TeamPublic(
            name=name,
            partitions=t.partitions,
            account=t.account,
            qos=t.qos,
            max_gpus=t.max_gpus,
            max_nodes=t.max_nodes,
            max_running_jobs=t.max_running_jobs,
            max_queued_jobs=t.max_queued_jobs,
            jobs_by_state=counts.get(name, {}),
        )
        for name, t in config.teams.items()
        if principal.can_see(name)
    ]


@router.get("/healthz")
def healthz(session: SessionDep, tracker: TrackerDep) -> dict[str, object]:
    session.exec(select(1)).one()  # the database answers
    health = tracker.health()
    return {"status": "ok" if health["tracker_alive"] else "degraded", "database": "ok", **health}


@router.get("/metrics", response_class=Response)
def metrics(session: SessionDep, config: ConfigDep, tracker: TrackerDep) -> Response:
    lines: list[str] = []

    def family(name: str, kind: str, help_text: str) -> None:
        lines.extend([f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"])

    family("hpcgw_jobs", "gauge", "Jobs by team and state.")
    counts = {
        (t, s): n for t, s, n in session.exec(select(Job.team, Job.state, func.count()).group_by(Job.team, Job.state))
    }
    for team in config.teams:
        for state in JobState:
            lines.append(f'hpcgw_jobs{{team="{team}",state="{state.value}"}} {counts.get((team, state.value), 0)}')
    started = session.exec(
        select(Job.team, Job.submit_time, Job.start_time, Job.end_time).where(col(Job.start_time).is_not(None))
    ).all()
    waits: dict[str, list[float]] = defaultdict(list)
    runs: dict[str, list[float]] = defaultdict(list)
    for team, submitted, start, end in started:
        waits[team].append(max(0.0, (start - submitted).total_seconds()))
        if end is not None:
            runs[team].append(max(0.0, (end - start).total_seconds()))
    for name, data, help_text in (
        ("hpcgw_queue_wait_seconds", waits, "From request to Slurm start."),
        ("hpcgw_run_seconds", runs, "From Slurm start to end."),
    ):
        family(name, "summary", help_text)
        for team in config.teams:
            lines.append(f'{name}_sum{{team="{team}"}} {sum(data.get(team, [])):.3f}')
            lines.append(f'{name}_count{{team="{team}"}} {len(data.get(team, []))}')
    family("hpcgw_job_failures_total", "counter", "Jobs that ended failed or timed out.")
    for team in config.teams:
        failed = counts.get((team, JobState.FAILED.value), 0) + counts.get((team, JobState.TIMEOUT.value), 0)
        lines.append(f'hpcgw_job_failures_total{{team="{team}"}} {failed}')
    s = tracker.stats
    family("hpcgw_poll_cycle_seconds", "summary", "Duration of the tracker's cycles.")
    lines += [f"hpcgw_poll_cycle_seconds_sum {s.cycle_s_sum:.6f}", f"hpcgw_poll_cycle_seconds_count {s.cycles}"]
    family("hpcgw_poll_cycle_last_seconds", "gauge", "Duration of the last cycle.")
    lines.append(f"hpcgw_poll_cycle_last_seconds {s.last_cycle_s:.6f}")
    family("hpcgw_slurm_commands_total", "counter", "Slurm commands run by the tracker's polls.")
    lines.append(f"hpcgw_slurm_commands_total {s.slurm_commands}")
    family("hpcgw_accounting_up", "gauge", "1 when sacct answers.")
    lines.append(f"hpcgw_accounting_up {int(s.accounting_ok)}")
    return Response("\n".join(lines) + "\n", media_type="text/plain; version=0.0.4")
