"""/metrics names every team and its numbers: an admin's token or the site's scraping token only. /healthz answers
anyone (a load balancer), with counts and states only; an admin's token adds the names, hosts and error texts."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from gateway.app import create_app
from gateway.worker.stats import WorkerStats
from tests.gateway.conftest import auth, make_config

SCRAPER = "a-scraper-token-of-this-site"
SECRET_BITS = ("worker", "last_error", "last_cycle_error", "failing_jobs")


@pytest.fixture
def scraped(tmp_path: Path, database_url: str) -> Iterator[TestClient]:
    digest = hashlib.sha256(SCRAPER.encode()).hexdigest()
    app = create_app(make_config(tmp_path, database_url, metrics_token_sha256=digest), run_worker=False)
    with TestClient(app) as c:
        yield c


def test_metrics_needs_the_admin_or_the_scraping_token(scraped: TestClient) -> None:
    assert scraped.get("/metrics").status_code == 401
    assert scraped.get("/metrics", headers={"Authorization": "Bearer guessed"}).status_code == 401
    assert scraped.get("/metrics", headers=auth("alice")).status_code == 403  # a team's token: not every team's
    for headers in (auth("admin"), {"Authorization": f"Bearer {SCRAPER}"}):
        answer = scraped.get("/metrics", headers=headers)
        assert answer.status_code == 200 and "hpcgw_jobs{" in answer.text
        assert "hpcgw_tracking_failures" in answer.text and "hpcgw_worker_cycle_failures" in answer.text
    # the scraping token is for /metrics alone
    assert scraped.get("/v1/jobs", headers={"Authorization": f"Bearer {SCRAPER}"}).status_code == 401


def test_healthz_tells_anyone_counts_and_an_admin_the_details(scraped: TestClient) -> None:
    stats: WorkerStats = scraped.app.state.worker.stats  # type: ignore[attr-defined]  # the in-process worker's
    stats.last_error = "sacct failed: /etc/slurm/slurm.conf"
    stats.jobs_failing, stats.tracking_failures = 1, 3
    stats.failing_jobs = {"abcdef0123456789": "tracking failed: ValueError: /jobs/team-a/abcdef0123456789"}
    public = scraped.get("/healthz")
    assert public.status_code == 200
    body = public.json()
    assert not set(SECRET_BITS) & set(body)
    for secret in ("abcdef0123456789", "/etc/slurm", "team-a"):
        assert secret not in public.text
    assert (body["jobs_failing"], body["tracking_failures"], body["status"]) == (1, 3, "degraded")
    for headers in (auth("alice"), {"Authorization": "Bearer guessed"}):  # not an admin: anyone's answer
        assert scraped.get("/healthz", headers=headers).json().keys() == body.keys()
    detailed = scraped.get("/healthz", headers=auth("admin")).json()
    assert detailed["failing_jobs"] == stats.failing_jobs and detailed["last_error"] == stats.last_error
    assert set(SECRET_BITS) <= set(detailed)
