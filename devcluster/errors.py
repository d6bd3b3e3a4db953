"""The development cluster's one error: what went wrong, and what to do about it."""

from __future__ import annotations


class ClusterError(RuntimeError):
    """`cluster up`/`down` could not do what was asked; the message says what to do."""
