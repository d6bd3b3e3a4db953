"""The hot path reads through indexes: every statement a POST (with an idempotency key) or a GET of one job sends
to the database is planned by SQLite as an index or primary-key search, never a scan of the job table, so its
cost does not grow with the jobs stored. Checked on SQLite's own plan (EXPLAIN QUERY PLAN) of the statements the
requests really sent."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import event

from gateway.app import create_app
from tests.gateway.conftest import auth, job_body, make_config

ALGORITHM = {
    "name": "intent-classifier",
    "version": "1.0",
    "image": "/images/intent-classifier.sif",
    "command": ["python", "train.py"],
    "local_command": ["python", "train.py"],
    "team": "team-a",
}


def plans_of(client: TestClient, send: Any) -> list[tuple[str, list[str]]]:
    """(statement, its plan's lines) for each SELECT that ``send()`` made the gateway run."""
    engine = client.app.state.engine  # type: ignore[attr-defined]
    seen: list[tuple[str, Any]] = []

    def record(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT"):
            seen.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", record)
    try:
        send()
    finally:
        event.remove(engine, "before_cursor_execute", record)
    plans = []
    with engine.connect() as connection:
        for statement, parameters in seen:
            rows = connection.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}", parameters).all()
            plans.append((statement, [str(row[-1]) for row in rows]))
    return plans


def test_post_and_get_search_the_job_table_through_indexes_only(tmp_path: Path) -> None:
    app = create_app(make_config(tmp_path, f"sqlite:///{tmp_path}/gw.db"), run_worker=False)
    with TestClient(app) as client:
        assert client.post("/v1/algorithms", json=ALGORITHM, headers=auth("admin")).status_code == 201
        for i in range(4):  # rows in the state the backlog count filters on (the team queues 5 at most)
            client.post("/v1/jobs", json=job_body(name=f"j{i}"), headers=auth("alice"))
        created: dict[str, Any] = {}

        def post() -> None:
            response = client.post("/v1/jobs", json=job_body(idempotency_key="k-1"), headers=auth("alice"))
            assert response.status_code == 201, response.text
            created.update(response.json())

        posted = plans_of(client, post)
        fetched = plans_of(client, lambda: client.get(f"/v1/jobs/{created['id']}", headers=auth("alice")))
    on_jobs = [(s, p) for s, p in posted + fetched if " job" in s.replace('"', " ")]
    assert len(on_jobs) >= 3, posted  # the idempotency lookup, the backlog count, the GET
    for statement, plan in on_jobs:
        assert not any(line.startswith("SCAN job") for line in plan), (statement, plan)
        assert any(line.startswith("SEARCH job") for line in plan), (statement, plan)
    # the team's backlog, counted at every POST, is read from its index alone, never from the table's rows
    [backlog] = [plan for statement, plan in on_jobs if "count(" in statement.lower()]
    assert any("USING COVERING INDEX ix_job_team_state_sweep" in line for line in backlog), backlog
