"""Who is looking: the token, kept in a cookie that page scripts cannot read (HttpOnly, SameSite=Strict).

A form that changes something (cancel, log out) also carries a token derived from the cookie's: a page of
another site can make the browser send the cookie, but cannot read this page to learn the form's token.
"""

from __future__ import annotations

import hashlib
import hmac

from fastapi import Request, Response

from gateway.auth import Principal, authenticate
from gateway.config import GatewayConfig
from gateway.errors import UnauthorizedError

COOKIE = "hpcgw_ui"
COOKIE_MAX_AGE_S = 12 * 3600


def principal_of(request: Request, config: GatewayConfig) -> Principal | None:
    token = request.cookies.get(COOKIE)
    if not token:
        return None
    try:
        return authenticate(config, f"Bearer {token}")
    except UnauthorizedError:
        return None


def check_token(config: GatewayConfig, token: str) -> Principal | None:
    try:
        return authenticate(config, f"Bearer {token.strip()}")
    except UnauthorizedError:
        return None


def remember(response: Response, request: Request, token: str) -> None:
    response.set_cookie(
        COOKIE,
        token.strip(),
        max_age=COOKIE_MAX_AGE_S,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path="/ui",
    )


def forget(response: Response) -> None:
    response.delete_cookie(COOKIE, path="/ui")


def form_token(request: Request) -> str:
    """The token a page's forms carry: bound to the session's cookie, useless without it."""
    secret = request.cookies.get(COOKIE, "")
    return hmac.new(secret.encode(), b"hpcgw-ui-form", hashlib.sha256).hexdigest()[:32]


def form_token_ok(request: Request, sent: str | None) -> bool:
    return bool(sent) and hmac.compare_digest(form_token(request), sent or "")
