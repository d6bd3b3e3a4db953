"""Who is looking: a session, whose random id is kept in a cookie that page scripts cannot read (HttpOnly,
SameSite=Strict), and whose record is in the database.

The cookie never holds the API token: a stolen cookie dies at log-out or expiry, and the token it was opened
with is checked against the configuration at every request, so taking a token out of the configuration ends
its sessions too. The record is in the database, not in memory, so that every process of `hpcgw serve
--processes N` sees the same sessions.

A form that changes something (cancel, log out) also carries a token derived from the session's id: a page of
another site can make the browser send the cookie, but cannot read this page to learn the form's token.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import timedelta

from fastapi import Request, Response
from sqlalchemy import delete
from sqlmodel import Session

from gateway.config import GatewayConfig, hash_token
from gateway.errors import UnauthorizedError
from gateway.site.auth import Principal, authenticate, principal_of_digest
from gateway.store.models import UiSession, aware, utcnow

COOKIE = "hpcgw_ui"
COOKIE_MAX_AGE_S = 12 * 3600
MAX_SESSION_ID_CHARS = 128  # ours are 43; a longer cookie is not worth hashing


def _digest(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


def _session_id(request: Request) -> str | None:
    session_id = request.cookies.get(COOKIE)
    return session_id if session_id and len(session_id) <= MAX_SESSION_ID_CHARS else None


def principal_of(request: Request, config: GatewayConfig, db: Session) -> Principal | None:
    """The session's user, if the session is open, unexpired, and its token still in the configuration."""
    session_id = _session_id(request)
    row = db.get(UiSession, _digest(session_id)) if session_id else None
    if row is None or aware(row.expires_at) <= utcnow():
        return None
    return principal_of_digest(config, row.token_sha256, user=row.user)


def check_token(config: GatewayConfig, token: str) -> Principal | None:
    try:
        return authenticate(config, f"Bearer {token.strip()}")
    except UnauthorizedError:
        return None


def open_session(db: Session, principal: Principal, token: str) -> str:
    """A new session for a token just checked; the expired ones go at the same time (no sweeper to run)."""
    session_id = secrets.token_urlsafe(32)
    now = utcnow()
    db.execute(delete(UiSession).where(UiSession.expires_at <= now))  # type: ignore[arg-type]
    db.add(
        UiSession(
            id_sha256=_digest(session_id),
            token_sha256=hash_token(token.strip()),
            user=principal.user,
            created_at=now,
            expires_at=now + timedelta(seconds=COOKIE_MAX_AGE_S),
        )
    )
    db.commit()
    return session_id


def close_session(db: Session, request: Request) -> None:
    session_id = _session_id(request)
    if session_id:
        db.execute(delete(UiSession).where(UiSession.id_sha256 == _digest(session_id)))  # type: ignore[arg-type]
        db.commit()


def remember(response: Response, request: Request, session_id: str) -> None:
    response.set_cookie(
        COOKIE,
        session_id,
        max_age=COOKIE_MAX_AGE_S,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path="/ui",
    )


def forget(response: Response) -> None:
    response.delete_cookie(COOKIE, path="/ui")


def form_token(request: Request) -> str:
    """The token a page's forms carry: bound to the session's id, useless without it."""
    secret = request.cookies.get(COOKIE, "")
    return hmac.new(secret.encode(), b"hpcgw-ui-form", hashlib.sha256).hexdigest()[:32]


def form_token_ok(request: Request, sent: str | None) -> bool:
    return bool(sent) and hmac.compare_digest(form_token(request), sent or "")
