"""/v1/teams, /healthz and /metrics (Prometheus text format)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric, SummaryMetricFamily
from prometheus_client.registry import Collector
from sqlmodel import Session, col, select

from gateway.api.deps import ConfigDep, PrincipalDep, ReleasingRoute, SessionDep, WorkerDep
from gateway.api.problems import declare
from gateway.config import GatewayConfig
from gateway.jobs import counts_by_team
from gateway.models import Job
from gateway.schemas import TeamPublic
from gateway.worker.status import WorkerView
from launchers.states import FAILED_STATES, JobState

router = APIRouter(tags=["system"], route_class=ReleasingRoute)


@router.get("/v1/teams", response_model=list[TeamPublic], responses=declare(401, 503))
def list_teams(session: SessionDep, config: ConfigDep, principal: PrincipalDep) -> list[TeamPublic]:
    counts = counts_by_team(session)
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


@router.get("/healthz", responses=declare(503))
def healthz(session: SessionDep, worker: WorkerDep) -> dict[str, object]:
    session.exec(select(1)).one()  # the database answers
    health = worker.health()
    return {"status": "ok" if health["worker_alive"] else "degraded", "database": "ok", **health}


@router.get(
    "/metrics",
    response_class=Response,
    responses=declare(
        503, also={200: {"content": {CONTENT_TYPE_LATEST.split(";")[0]: {"schema": {"type": "string"}}}}}
    ),
)
def metrics(session: SessionDep, config: ConfigDep, worker: WorkerDep) -> Response:
    """Prometheus text, gathered at scrape time from the database and the worker's counters."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Snapshot(list(_families(session, config, worker))))
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)


class _Snapshot(Collector):
    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterator[Metric]:
        return iter(self.families)


def _families(session: Session, config: GatewayConfig, worker: WorkerView) -> Iterator[Metric]:
    counts = {(t, s): n for t, by_state in counts_by_team(session).items() for s, n in by_state.items()}
    jobs = GaugeMetricFamily("hpcgw_jobs", "Jobs by team and state.", labels=["team", "state"])
    failures = CounterMetricFamily(
        "hpcgw_job_failures", "Jobs that ended failed, timed out, hung or diverged.", labels=["team"]
    )
    for team in config.teams:
        for state in JobState:
            jobs.add_metric([team, state.value], counts.get((team, state.value), 0))
        failed = sum(counts.get((team, state.value), 0) for state in FAILED_STATES)
        failures.add_metric([team], failed)
    yield jobs
    yield failures
    started = session.exec(
        select(Job.team, Job.submit_time, Job.start_time, Job.end_time).where(col(Job.start_time).is_not(None))
    ).all()
    waits: dict[str, list[float]] = defaultdict(list)
    runs: dict[str, list[float]] = defaultdict(list)
    for team, submitted, start, end in started:
        if start is None:  # the query asked for started jobs only
            continue
        waits[team].append(max(0.0, (start - submitted).total_seconds()))
        if end is not None:
            runs[team].append(max(0.0, (end - start).total_seconds()))
    for name, data, help_text in (
        ("hpcgw_queue_wait_seconds", waits, "From request to Slurm start."),
        ("hpcgw_run_seconds", runs, "From Slurm start to end."),
    ):
        summary = SummaryMetricFamily(name, help_text, labels=["team"])
        for team in config.teams:
            summary.add_metric([team], count_value=len(data.get(team, [])), sum_value=sum(data.get(team, [])))
        yield summary
    s = worker.stats
    yield SummaryMetricFamily(
        "hpcgw_poll_cycle_seconds", "Duration of the worker's cycles.", count_value=s.cycles, sum_value=s.cycle_s_sum
    )
    yield GaugeMetricFamily("hpcgw_poll_cycle_last_seconds", "Duration of the last cycle.", value=s.last_cycle_s)
    yield CounterMetricFamily(
        "hpcgw_slurm_commands", "Slurm commands run by the worker's polls.", value=s.slurm_commands
    )
    yield GaugeMetricFamily("hpcgw_accounting_up", "1 when sacct answers.", value=int(s.accounting_ok))
