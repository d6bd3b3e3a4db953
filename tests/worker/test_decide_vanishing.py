"""``decide()`` on the case it once left to the worker's loop: a pending array element the gateway cancelled,
which Slurm forgets without a record. (A state the table lacks: tests/worker/test_poll.py.)"""

from __future__ import annotations

from datetime import UTC, datetime
from types import SimpleNamespace

from gateway.worker.apply import Evidence, decide
from launchers.slurm.squeue import PendingInfo
from launchers.states import JobState

NOW = datetime(2026, 11, 23, 17, 0, tzinfo=UTC)


def stored(slurm_job_id: str) -> SimpleNamespace:
    """A job row as decide() reads it: a queued array element."""
    return SimpleNamespace(
        state="queued",
        slurm_job_id=slurm_job_id,
        slurm_state="PENDING",
        reason=None,
        position_in_queue=1,
        restarts=0,
        start_time=None,
        time_limit_min=60,
    )


def test_a_cancelled_element_slurm_forgot_is_cancelled() -> None:
    transition = decide(stored(slurm_job_id="7_3"), Evidence(seen=None, vanishing=True), NOW)
    assert transition.state is JobState.CANCELLED
    assert transition.fields["slurm_state"] == "CANCELLED"
    assert transition.fields["reason"].startswith("cancelled while waiting in Slurm")


def test_a_cancelled_element_still_pending_waits_for_slurm() -> None:
    pending = PendingInfo(reason="Priority", partition="team-a", position=2)
    transition = decide(stored(slurm_job_id="7_3"), Evidence(seen=None, pending=pending, vanishing=True), NOW)
    assert transition.state is None
    assert transition.fields == {"reason": "Priority", "position_in_queue": 2}
