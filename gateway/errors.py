"""Domain errors, each translated to one HTTP status in one place (gateway.app)."""

from __future__ import annotations


class GatewayError(Exception):
    status_code = 500

    def __init__(self, detail: str, field: str | None = None, *, retry_after_s: float | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.field = field
        self.retry_after_s = retry_after_s  # sent as Retry-After: when trying again can succeed


class InvalidRequestError(GatewayError):
    """The request is well-formed JSON but cannot be run (unknown algorithm, too big for the team, ...)."""

    status_code = 422


class ForbiddenError(GatewayError):
    """The token is known, but this gateway does not let it do this (a site switch that is off)."""

    status_code = 403


class NotFoundError(GatewayError):
    """Unknown, or belongs to another team: the caller cannot tell which."""

    status_code = 404


class ConflictError(GatewayError):
    status_code = 409


class QueueFullError(GatewayError):
    """The team's backlog in the gateway (max_queued_jobs) is full."""

    status_code = 429


class RateLimitedError(GatewayError):
    """The token or its team submitted faster than its rate limit allows."""

    status_code = 429


class UnauthorizedError(GatewayError):
    status_code = 401
