"""Bearer tokens: looked up by their SHA-256, never stored or compared in clear."""

from __future__ import annotations

import hmac
from dataclasses import dataclass

from gateway.config import GatewayConfig, hash_token
from gateway.errors import UnauthorizedError


@dataclass(frozen=True)
class Principal:
    user: str
    team: str | None
    admin: bool

    def can_see(self, team: str) -> bool:
        return self.admin or self.team == team

    def team_of(self, requested: str | None) -> str | None:
        """The team a request is for, before any check (what the rate limiter counts against): the one an admin
        names, anyone else's own. gateway.submit.job_requests.resolve_team checks it."""
        return requested if self.admin else self.team


def authenticate(config: GatewayConfig, authorization: str | None) -> Principal:
    if not authorization or not authorization.lower().startswith("bearer "):
        raise UnauthorizedError("missing bearer token")
    principal = principal_of_digest(config, hash_token(authorization[7:].strip()))
    if principal is None:
        raise UnauthorizedError("invalid token")
    return principal


def principal_of_digest(config: GatewayConfig, digest: str, *, user: str | None = None) -> Principal | None:
    """Whom a token's digest stands for in the configuration as it is now (None once the token is taken out of
    it); with ``user``, only if it still stands for that user."""
    for token in config.tokens:
        if hmac.compare_digest(token.digest, digest):
            if user is not None and token.user != user:
                return None
            return Principal(user=token.user, team=token.team, admin=token.role == "admin")
    return None
