"""Dashboard sessions: the cookie is a random id, never the API token; a log-out, an expiry or a token taken out of
the configuration ends the session; and every API process (``hpcgw serve --processes N``) shares them, through
the database."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path

from fastapi.testclient import TestClient
from sqlmodel import Session, select

from gateway.app import create_app
from gateway.store.models import UiSession, utcnow
from tests.gateway.conftest import TOKENS, make_config


def _log_in(client: TestClient, user: str) -> str:
    client.cookies.clear()
    response = client.post("/ui/login", data={"token": TOKENS[user], "next": "/ui"}, follow_redirects=False)
    assert response.status_code == 303, response.text
    cookie: str | None = client.cookies.get("hpcgw_ui")
    assert cookie
    return cookie


def _shows_team_page(client: TestClient, cookie: str) -> bool:
    client.cookies.clear()
    client.cookies.set("hpcgw_ui", cookie, path="/ui")
    response = client.get("/ui/teams/team-a", follow_redirects=False)
    return response.status_code == 200 and "team-a" in response.text


def _form_token(client: TestClient) -> str:
    page = client.get("/ui/teams/team-a").text
    return re.search(r'name="form_token" value="([0-9a-f]+)"', page).group(1)  # type: ignore[union-attr]


def test_the_cookie_is_a_session_not_the_token(client: TestClient) -> None:
    cookie = _log_in(client, "alice")
    assert TOKENS["alice"] not in cookie and len(cookie) >= 32
    assert _shows_team_page(client, cookie)
    with Session(client.app.state.engine) as db:  # type: ignore[attr-defined]
        rows = db.exec(select(UiSession)).all()
    assert [row.user for row in rows] == ["alice"]
    assert cookie not in rows[0].id_sha256 and TOKENS["alice"] not in rows[0].token_sha256  # digests only
    assert not _shows_team_page(client, TOKENS["alice"])  # the token itself is no cookie


def test_log_out_ends_the_session_for_a_copied_cookie(client: TestClient) -> None:
    cookie = _log_in(client, "alice")
    assert _shows_team_page(client, cookie)
    assert client.post("/ui/logout", data={"form_token": "0" * 32}, follow_redirects=False).status_code == 303
    assert _shows_team_page(client, cookie)  # a log-out without the form's token (another site's form) does nothing
    out = client.post("/ui/logout", data={"form_token": _form_token(client)}, follow_redirects=False)
    assert out.status_code == 303
    assert not _shows_team_page(client, cookie)  # the same cookie, sent again: the login page
    with Session(client.app.state.engine) as db:  # type: ignore[attr-defined]
        assert db.exec(select(UiSession)).all() == []


def test_an_expired_session_is_refused(client: TestClient) -> None:
    cookie = _log_in(client, "alice")
    with Session(client.app.state.engine) as db:  # type: ignore[attr-defined]
        row = db.exec(select(UiSession)).one()
        row.expires_at = utcnow() - timedelta(seconds=1)
        db.add(row)
        db.commit()
    assert not _shows_team_page(client, cookie)


def test_a_token_taken_out_of_the_configuration_ends_its_sessions(tmp_path: Path, database_url: str) -> None:
    with TestClient(create_app(make_config(tmp_path, database_url), run_worker=False)) as client:
        alice, bob = _log_in(client, "alice"), _log_in(client, "bob")
    config = make_config(tmp_path, database_url)
    config = config.model_copy(update={"tokens": [t for t in config.tokens if t.user != "alice"]})
    with TestClient(create_app(config, run_worker=False)) as client:  # the gateway restarted with the new list
        assert not _shows_team_page(client, alice)
        client.cookies.clear()
        client.cookies.set("hpcgw_ui", bob, path="/ui")
        assert client.get("/ui/teams/team-b", follow_redirects=False).status_code == 200


def test_every_api_process_shares_the_sessions(tmp_path: Path, database_url: str) -> None:
    """Two apps on one database, as `hpcgw serve --processes 2` runs them: a log-in on one opens a session on
    both, a log-out on the other ends it on both."""
    config = make_config(tmp_path, database_url)
    with (
        TestClient(create_app(config, run_worker=False)) as one,
        TestClient(create_app(config, run_worker=False)) as two,
    ):
        cookie = _log_in(one, "alice")
        assert _shows_team_page(two, cookie)
        assert two.post("/ui/logout", data={"form_token": _form_token(two)}, follow_redirects=False).status_code == 303
        assert not _shows_team_page(one, cookie)
