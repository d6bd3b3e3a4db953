"""The dashboard's pages without a browser or Slurm, on SQLite and PostgreSQL: the login cookie, what each
token may see, the cancel form's token, the sweep page's best task (its last metrics extracted by the
database) and the admin view. tests/slurm/test_ui.py runs the same pages in Chromium on the real cluster."""

from __future__ import annotations

import re
from typing import Any

from fastapi.testclient import TestClient
from sqlmodel import Session

from gateway.store.models import Job, Sweep
from tests.gateway.conftest import TOKENS, auth, job_body


def log_in(client: TestClient, user: str) -> None:
    client.cookies.clear()
    response = client.post("/ui/login", data={"token": TOKENS[user], "next": "/ui"}, follow_redirects=False)
    assert response.status_code == 303, response.text
    cookie = response.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/ui" in cookie


def test_without_a_valid_cookie_every_page_is_the_login_page(client: TestClient) -> None:
    for path in ("/ui", "/ui/teams/team-a", "/ui/admin", "/ui/jobs/0123456789abcdef"):
        response = client.get(path, follow_redirects=False)
        assert response.status_code == 303 and response.headers["location"].startswith("/ui/login"), path
    client.cookies.set("hpcgw_ui", "forged", path="/ui")
    assert client.get("/ui/teams/team-a").url.path == "/ui/login"
    wrong = client.post("/ui/login", data={"token": "nope", "next": "https://evil.example/"})
    assert wrong.status_code == 401 and "does not know this token" in wrong.text
    assert 'value="/ui"' in wrong.text  # a login link cannot send the browser elsewhere


def test_a_team_sees_its_jobs_only_and_cancels_with_the_forms_token(
    client: TestClient, algorithm: dict[str, Any]
) -> None:
    mine = client.post("/v1/jobs", json=job_body(name="mine"), headers=auth("alice")).json()
    response = client.post("/v1/jobs", json=job_body(name="theirs"), headers=auth("bob"))
    assert response.status_code == 201, response.text
    theirs = response.json()
    log_in(client, "alice")
    page = client.get("/ui/teams/team-a")
    assert page.status_code == 200 and f'data-job-id="{mine["id"]}"' in page.text
    assert theirs["id"][:8] not in page.text
    assert client.get(f"/ui/jobs/{theirs['id']}").status_code == 404
    assert client.get("/ui/teams/team-b").status_code == 404
    assert client.get("/ui/admin").status_code == 404
    job_page = client.get(f"/ui/jobs/{mine['id']}").text
    token = re.search(r'name="form_token" value="([0-9a-f]+)"', job_page).group(1)  # type: ignore[union-attr]
    assert client.post(f"/ui/jobs/{mine['id']}/cancel", data={"form_token": "0" * 32}).status_code == 403
    assert client.get(f"/v1/jobs/{mine['id']}", headers=auth("alice")).json()["state"] == "accepted"
    done = client.post(f"/ui/jobs/{mine['id']}/cancel", data={"form_token": token}, follow_redirects=False)
    assert done.status_code == 303
    assert client.get(f"/v1/jobs/{mine['id']}", headers=auth("alice")).json()["state"] == "cancelled"
    curves = client.get(f"/ui/jobs/{mine['id']}/curves").json()
    assert curves["state"] == "cancelled" and curves["terminal"] is True


def test_the_sweep_page_marks_the_best_task_and_the_admin_sees_every_team(
    client: TestClient, algorithm: dict[str, Any]
) -> None:
    template = client.post("/v1/jobs", json=job_body(name="base"), headers=auth("alice")).json()
    with Session(client.app.state.engine) as session:  # type: ignore[attr-defined]
        base = session.get(Job, template["id"])
        assert base is not None
        sweep = Sweep(name="lr", team="team-a", user="alice", max_parallel=2, space={}, task_count=3)
        session.add(sweep)
        session.flush()
        for index, (lr, accuracy) in enumerate([(0.1, 0.7), (0.5, 0.9), (0.9, 0.8)]):
            data = base.model_dump(exclude={"id"})
            data.update(
                name=f"lr[{index}]",
                sweep_id=sweep.id,
                task_index=index,
                state="succeeded",
                parameters={"LR": str(lr)},
                metrics=[{"epoch": 1, "accuracy": 0.1}, {"epoch": 2, "accuracy": accuracy}],
            )
            session.add(Job.model_validate(data))
        session.commit()
        sweep_id = sweep.id
    log_in(client, "alice")
    page = client.get(f"/ui/sweeps/{sweep_id}?metric=accuracy&mode=max").text
    assert re.search(r'<tr class="best" data-task="1">', page)
    lowest = client.get(f"/ui/sweeps/{sweep_id}?metric=accuracy&mode=min").text
    assert re.search(r'<tr class="best" data-task="0">', lowest)
    log_in(client, "bob")
    assert client.get(f"/ui/sweeps/{sweep_id}").status_code == 404
    log_in(client, "admin")
    admin = client.get("/ui/admin")
    assert admin.status_code == 200
    assert 'data-team="team-a"' in admin.text and 'data-team="team-b"' in admin.text
    assert re.search(r'data-team="team-a">.*?<td class="succeeded">3</td>', admin.text, re.S)
    assert client.get("/ui/static/plotly.min.js").headers["content-type"].startswith("text/javascript")
