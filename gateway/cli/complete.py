"""Shell completion of what only the gateway knows: job ids, algorithm names, partitions.

Each asks the gateway that ``HPCGW_URL``/``HPCGW_TOKEN`` (or ~/.config/hpcgw/config.toml) name, with a short
timeout and no retries; a gateway that does not answer completes nothing rather than hanging the shell.
Install with ``hpcgw --install-completion``.
"""

from __future__ import annotations

from collections.abc import Callable

from gateway.client import Client, ClientError

TIMEOUT_S = 2.0


def _ask(fetch: Callable[[Client], list[str]], incomplete: str) -> list[str]:
    try:
        with Client(None, None, retries=0, timeout_s=TIMEOUT_S) as c:
            found = fetch(c)
    except (ClientError, OSError):
        return []
    return sorted({name for name in found if name.startswith(incomplete)})


def job_ids(incomplete: str) -> list[str]:
    return _ask(lambda c: [j.id for j in c.jobs(limit=200).items], incomplete)


def algorithm_names(incomplete: str) -> list[str]:
    return _ask(lambda c: [a.name for a in c.algorithms()], incomplete)


def partitions(incomplete: str) -> list[str]:
    return _ask(lambda c: [p for team in c.teams() for p in team.partitions], incomplete)
