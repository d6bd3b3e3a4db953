"""/v1/teams, /healthz and /metrics (Prometheus text format).

/healthz answers anyone (a load balancer asks it without a token) and so says nothing that names a team, a
job, a host or a path; an admin's token gets the details. /metrics names every team and its numbers: it needs
an admin's token or the site's scraping token (``metrics_token_sha256``), sent as a bearer token."""

from __future__ import annotations

import hmac
from collections import defaultdict
from collections.abc import Iterator
from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric, SummaryMetricFamily
from prometheus_client.registry import Collector
from sqlmodel import Session, col, select

from gateway.api.deps import ConfigDep, PrincipalDep, ReleasingRoute, SessionDep, WorkerDep
from gateway.api.problems import declare
from gateway.config import GatewayConfig, hash_token
from gateway.errors import ForbiddenError, UnauthorizedError
from gateway.schemas import TeamPublic
from gateway.site.auth import authenticate
from gateway.store.models import Job
from gateway.submit.job_requests import counts_by_team
from gateway.worker.status import WorkerView, healthy
from launchers.states import FAILED_STATES, JobState

router = APIRouter(tags=["system"], route_class=ReleasingRoute)
_bearer = HTTPBearer(auto_error=False)
BearerDep = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


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
def healthz(session: SessionDep, config: ConfigDep, worker: WorkerDep, request: Request) -> dict[str, object]:
    """``degraded`` while the worker is down, its last cycle failed, or a job's tracking fails (still 200: the
    API answers; what is degraded is said in the fields). Anyone may ask; an admin's bearer token adds the
    details. The token is read from the header, not declared as the route's security: the route needs none."""
    session.exec(select(1)).one()  # the database answers
    scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
    admin = scheme.lower() == "bearer" and _is_admin(
        config, HTTPAuthorizationCredentials(scheme=scheme, credentials=credentials)
    )
    health = worker.health(detailed=admin)
    return {"status": "ok" if healthy(health) else "degraded", "database": "ok", **health}


def _is_admin(config: GatewayConfig, bearer: HTTPAuthorizationCredentials | None) -> bool:
    """A missing or unknown token is no error here: the answer is the one for anyone."""
    if bearer is None:
        return False
    try:
        return authenticate(config, f"Bearer {bearer.credentials}").admin
    except UnauthorizedError:
        return False


def _check_scraper(config: GatewayConfig, bearer: HTTPAuthorizationCredentials | None) -> None:
    if bearer is None:
        raise UnauthorizedError("missing bearer token")
    wanted = config.metrics_token_sha256
    if wanted is not None and hmac.compare_digest(hash_token(bearer.credentials), wanted):
        return
    if not authenticate(config, f"Bearer {bearer.credentials}").admin:  # 401 for a token it does not know
        raise ForbiddenError("/metrics needs an admin token or the metrics token")


@router.get(
    "/metrics",
    response_class=Response,
    responses=declare(
        401, 403, 503, also={200: {"content": {CONTENT_TYPE_LATEST.split(";")[0]: {"schema": {"type": "string"}}}}}
    ),
)
def metrics(session: SessionDep, config: ConfigDep, worker: WorkerDep, bearer: BearerDep) -> Response:
    """Prometheus text, gathered at scrape time from the database and the worker's counters."""
    _check_scraper(config, bearer)
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
    yield CounterMetricFamily(
        "hpcgw_tracking_failures", "Failed applies of one job (that job alone).", value=s.tracking_failures
    )
    yield GaugeMetricFamily("hpcgw_jobs_tracking_failing", "Jobs whose last apply failed.", value=s.jobs_failing)
    yield CounterMetricFamily("hpcgw_worker_cycle_failures", "Worker cycles that failed whole.", value=s.cycle_failures)
