"""Per-token and per-team rate limits on what creates jobs (submissions, reruns, sweeps, retries).

``max_queued_jobs`` bounds a team's backlog, but not how fast one token can fill it again: a loop of reruns
refills it as fast as the worker drains it, and starves the rest of the team. A token bucket per token and one
per team (from the configuration) bound that rate while still letting a burst through. The buckets live in the
gateway's process: a restart refills them, which errs on the side of admitting.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from gateway.config import GatewayConfig, RateConfig
from gateway.errors import InvalidRequestError, RateLimitedError


@dataclass
class TokenBucket:
    """``burst`` requests at once, refilled at ``per_min`` a minute."""

    per_min: float
    burst: int
    tokens: float
    updated: float

    def take(self, now: float, cost: int = 1) -> float:
        """0 when ``cost`` submissions may go now (and they are counted); otherwise the seconds until they may."""
        self.tokens = min(float(self.burst), self.tokens + (now - self.updated) * self.per_min / 60.0)
        self.updated = now
        if self.tokens >= cost:
            self.tokens -= cost
            return 0.0
        return (cost - self.tokens) * 60.0 / self.per_min

    def give_back(self, cost: int = 1) -> None:
        self.tokens = min(float(self.burst), self.tokens + cost)


class RateLimiter:
    def __init__(self, config: GatewayConfig, clock: Callable[[], float] = time.monotonic) -> None:
        self.config, self.clock = config, clock
        self._buckets: dict[tuple[str, str], TokenBucket] = {}
        self._lock = threading.Lock()  # sync routes run in a thread pool

    def _bucket(self, kind: str, key: str, rate: RateConfig, now: float) -> TokenBucket:
        bucket = self._buckets.get((kind, key))
        if bucket is None:
            bucket = self._buckets[(kind, key)] = TokenBucket(rate.per_min, rate.burst, float(rate.burst), now)
        return bucket

    def admit(self, user: str, team: str | None, cost: int = 1) -> None:
        """Count ``cost`` submissions of ``user`` (in ``team``: a sweep of N tasks, a retry of N, costs N), or
        raise 429 with when to try again. Both buckets must have room; a request refused by one is not counted by
        the other. More than a bucket's burst could never go: a 422, not a 429 to retry forever."""
        limits = self.config.rate_limits
        team_rate = self.config.teams[team].submit_rate if team in self.config.teams else None
        with self._lock:
            now = self.clock()
            checks: list[tuple[str, TokenBucket]] = []
            if limits.per_token is not None:
                checks.append((f"token of {user}", self._bucket("token", user, limits.per_token, now)))
            rate = team_rate or limits.per_team
            if team is not None and rate is not None:
                checks.append((f"team {team}", self._bucket("team", team, rate, now)))
            for who, bucket in checks:
                if cost > bucket.burst:
                    raise InvalidRequestError(
                        f"{cost} jobs in one request exceed the {who}'s burst of {bucket.burst} submissions"
                    )
            taken: list[TokenBucket] = []
            for who, bucket in checks:
                wait = bucket.take(now, cost)
                if wait > 0:
                    for earlier in taken:
                        earlier.give_back(cost)
                    raise RateLimitedError(
                        f"rate limit of the {who}: {bucket.per_min:g} submissions a minute, bursts of "
                        f"{bucket.burst}; try again in {wait:.1f} s",
                        retry_after_s=wait,
                    )
                taken.append(bucket)
