"""Which Slurm states can come back, on output captured from the local cluster (tests/data/requeue/): a node
killed under a 2-node job (nf-*), `scontrol requeue` (rq-*), a `--no-requeue` job on a failed node (nr-*).

The worker's reading of Slurm (observe) runs on the captured text through the one command seam; the decision
(decide) is the pure function the worker applies."""

from __future__ import annotations

import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import pytest

from gateway.worker.apply import Evidence, decide
from gateway.worker.observe import Identity, Observations, observe
from launchers.slurm import commands
from launchers.slurm.sacct import DELIMITER, delimiter_of
from launchers.slurm.shell import CommandError
from launchers.slurm.squeue import JSON_ARGV
from launchers.states import MAY_RUN_AGAIN, JobState
from tests.worker.slurmtext import CAPTURED_SACCT_FIELDS, json_from_scontrol, resent_sacct

DATA = Path(__file__).resolve().parents[1] / "data" / "requeue"
NOW = datetime(2026, 11, 23, 17, 0, tzinfo=UTC)
SINFO_N2_DOWN = "\n".join(f"{n}|team-a|2|4000|{'down*' if n == 'n2' else 'idle'}|up" for n in ("n1", "n2", "n3"))


class CapturedSlurm:
    """Answers the worker's Slurm commands with captured text; counts the calls."""

    def __init__(self, sacct: str, scontrol: str | None, sinfo: str = SINFO_N2_DOWN) -> None:
        self.outputs = {"sacct": sacct, "scontrol": scontrol, "sinfo": sinfo, "squeue": ""}
        self.calls: list[str] = []

    def __call__(self, argv: list[str], **_: object) -> subprocess.CompletedProcess[str]:
        """slurmctld's jobs come from ``squeue --json`` (the captured ``scontrol show job`` converted); sacct's
        rows are re-sent with the call's own delimiter."""
        name = argv[0]
        self.calls.append(name)
        text = self.outputs["scontrol" if list(argv) == JSON_ARGV else name]
        if text is None:
            raise CommandError(tuple(argv), 1, "", "slurm_load_jobs error: Unable to contact slurm controller")
        if list(argv) == JSON_ARGV:
            text = json_from_scontrol(text)
        elif name == "sacct":
            text = resent_sacct(text, delimiter_of(argv))
        return subprocess.CompletedProcess(argv, 0, text, "")


def captured(name: str) -> tuple[str, str]:
    scontrol = (DATA / f"{name}.scontrol").read_text()
    if scontrol.startswith("slurm_load_jobs error"):
        scontrol = ""  # `scontrol show job` (all jobs) simply does not list a job slurmctld has forgotten
    return (DATA / f"{name}.sacct").read_text(), scontrol


def job_id(sacct_text: str) -> str:
    return sacct_text.split(DELIMITER, 1)[0]


def stored(state: str, restarts: int = 0, reason: str | None = None, slurm_id: str = "1") -> SimpleNamespace:
    return SimpleNamespace(
        state=state,
        slurm_job_id=slurm_id,
        slurm_state="RUNNING",
        reason=reason,
        position_in_queue=None,
        restarts=restarts,
        start_time=None,
        time_limit_min=10,
    )


def look(
    monkeypatch: pytest.MonkeyPatch, sacct: str, scontrol: str | None, comment: str | None = None
) -> tuple[Observations, CapturedSlurm]:
    slurm = CapturedSlurm(sacct, scontrol)
    monkeypatch.setattr(commands, "run", slurm)
    wanted = {job_id(sacct): Identity(comment, datetime(2026, 11, 23, 15, 0, tzinfo=UTC))}
    return observe(wanted, want_pending=False), slurm


def test_node_failure_then_requeue_then_success(monkeypatch: pytest.MonkeyPatch) -> None:
    # The window that misled the gateway: accounting's latest row is NODE_FAIL, slurmctld already requeued it.
    obs, slurm = look(monkeypatch, *captured("nf-nodefail"))
    seen = obs.jobs["1"]
    assert (seen.slurm_state, seen.restarts, seen.previous and seen.previous.slurm_state) == ("PENDING", 1, "NODE_FAIL")
    assert seen.failed_nodes == ["n2"] and slurm.calls == ["sacct", "squeue", "sinfo"]
    step = decide(stored("running"), Evidence(seen=seen), NOW)
    assert step.state is JobState.REQUEUED
    assert step.fields["reason"] == "node n2 failed; requeued by Slurm (restart 1)"
    assert step.fields["restarts"] == 1 and "exit_code" not in step.fields

    # Accounting caught up: NODE_FAIL, then the pending run. Still requeued; the node's name is kept.
    obs, slurm = look(monkeypatch, *captured("nf-pending"))
    assert slurm.calls == ["sacct", "sinfo"]  # no state that can come back is the latest: slurmctld not asked
    named = "node n2 failed; requeued by Slurm (restart 1)"
    step = decide(stored("requeued", 1, named), Evidence(seen=obs.jobs["1"]), NOW)
    assert step.history == [] and step.fields["reason"] == named

    # Running again on other nodes; the start marker of the first run does not count for the second.
    obs, _ = look(monkeypatch, *captured("nf-rerun"))
    stale = decide(stored("requeued", 1, named), Evidence(seen=obs.jobs["1"], started={"restart": 0}), NOW)
    assert [h[0] for h in stale.history] == [JobState.LAUNCHING]
    fresh = decide(stored("requeued", 1, named), Evidence(seen=obs.jobs["1"], started={"restart": 1}), NOW)
    assert [h[0] for h in fresh.history] == [JobState.LAUNCHING, JobState.RUNNING]

    for name in ("nf-completed", "nf-forgotten"):
        obs, _ = look(monkeypatch, *captured(name))
        seen = obs.jobs["1"]
        step = decide(stored("running", 1), Evidence(seen=seen, started={"restart": 1}), NOW)
        assert step.state is JobState.SUCCEEDED and step.fields["restarts"] == 1
        assert [(a.slurm_state, a.node_list) for a in seen.attempts] == [
            ("NODE_FAIL", "n[1-2]"),
            ("COMPLETED", "n[1,3]"),
        ]


def test_scontrol_requeue(monkeypatch: pytest.MonkeyPatch) -> None:
    sacct, scontrol = captured("rq-requeued")
    obs, _ = look(monkeypatch, sacct, scontrol)
    step = decide(stored("running", slurm_id="2"), Evidence(seen=obs.jobs["2"]), NOW)
    assert step.state is JobState.REQUEUED and step.fields["restarts"] == 1
    assert step.fields["reason"].startswith("requeued (scontrol requeue")
    obs, _ = look(monkeypatch, *captured("rq-completed"))
    done = decide(stored("running", 1, slurm_id="2"), Evidence(seen=obs.jobs["2"], started={"restart": 1}), NOW)
    assert done.state is JobState.SUCCEEDED and done.fields["restarts"] == 1


def test_an_unanswering_controller_keeps_the_job_open(monkeypatch: pytest.MonkeyPatch) -> None:
    sacct, _ = captured("nf-nodefail")
    obs, _ = look(monkeypatch, sacct, None)
    step = decide(stored("running"), Evidence(seen=obs.jobs["1"]), NOW)
    assert step.history == [] and step.fields == {}


@pytest.mark.parametrize("controller", ["COMPLETING", None])
def test_a_requeue_slurmctld_has_not_finished_waits_for_it(monkeypatch: pytest.MonkeyPatch, controller: str) -> None:
    """Seen on the local cluster: accounting's REQUEUED row lands while slurmctld still ends the run (COMPLETING);
    recorded then, the reason could not name the requeue and the restart count was 0."""
    sacct, scontrol = captured("rq-requeued")
    ending = None if controller is None else scontrol.replace("JobState=PENDING", f"JobState={controller}")
    obs, _ = look(monkeypatch, sacct, ending)
    step = decide(stored("running", slurm_id="2"), Evidence(seen=obs.jobs["2"]), NOW)
    assert step.history == [] and step.fields == {}


def row(
    state: str, *, job: str = "9", nodes: str = "n[1-2]", submit: str = "2026-11-23T16:00:00", comment: str = ""
) -> str:
    ended = state not in ("PENDING", "RUNNING")
    values = {
        "JobID": job, "JobIDRaw": job, "JobName": "hpcgw-x", "State": state, "ExitCode": "0:0",
        "Partition": "team-a", "Account": "team-a", "NNodes": "2", "NodeList": nodes, "Submit": submit,
        "Start": submit, "End": "2026-11-23T16:05:00" if ended else "Unknown", "Elapsed": "00:05:00",
        "Reason": "None", "Comment": comment,
    }  # fmt: skip
    return DELIMITER.join(values[f] for f in CAPTURED_SACCT_FIELDS) + "\n"


def controller(state: str, job: str = "9", restarts: int = 1) -> str:
    return (
        f"JobId={job} JobName=hpcgw-x JobState={state} Reason=BeginTime Requeue=1 Restarts={restarts} "
        f"ExitCode=0:0 SubmitTime=2026-11-23T16:05:00 StartTime=Unknown EndTime=Unknown NodeList=(null)\n"
    )


EXPECTED_FINAL = {
    "NODE_FAIL": (JobState.FAILED, "node n2 failed; Slurm did not requeue the job"),
    "PREEMPTED": (JobState.FAILED, "preempted; Slurm did not requeue the job"),
    "BOOT_FAIL": (JobState.FAILED, "its nodes failed to boot"),
    "TIMEOUT": (JobState.TIMEOUT, "reached its time limit of 10 min"),
    "SPECIAL_EXIT": (JobState.FAILED, "special_exit"),
    "REQUEUED": (JobState.REQUEUED, None),
    "REQUEUE_HOLD": (JobState.REQUEUED, None),
    "REQUEUE_FED": (JobState.REQUEUED, None),
}


@pytest.mark.parametrize("state", sorted(MAY_RUN_AGAIN))
def test_every_state_slurm_may_come_back_from(monkeypatch: pytest.MonkeyPatch, state: str) -> None:
    # slurmctld runs it again: requeued, with why
    obs, _ = look(monkeypatch, row(state), controller("PENDING"))
    again = decide(stored("running", slurm_id="9"), Evidence(seen=obs.jobs["9"]), NOW)
    assert again.state is JobState.REQUEUED and again.fields["restarts"] == 1
    assert again.fields["reason"].endswith("requeued by Slurm (restart 1)")
    # slurmctld holds it ended, or has forgotten it: the row is final
    for held in (controller(state, restarts=0), ""):
        obs, _ = look(monkeypatch, row(state), held)
        final = decide(stored("running", slurm_id="9"), Evidence(seen=obs.jobs["9"]), NOW)
        expected_state, expected_reason = EXPECTED_FINAL[state]
        assert final.state is expected_state, (state, held)
        if expected_reason is not None:
            assert final.fields["reason"] == expected_reason


def test_a_reused_job_id_is_not_confused_with_ours(monkeypatch: pytest.MonkeyPatch) -> None:
    old = row("COMPLETED", submit="2026-11-20T09:00:00")  # same id, days before our sbatch: a state reset
    obs, _ = look(monkeypatch, old, "")
    assert obs.jobs == {}
    theirs = row("COMPLETED", comment="someone else's job")
    obs, _ = look(monkeypatch, theirs, "", comment="hpcgw:abc")
    assert obs.jobs == {}
    ours = row("COMPLETED", comment="hpcgw:abc")
    obs, _ = look(monkeypatch, old + ours, "", comment="hpcgw:abc")
    assert [a.slurm_state for a in obs.jobs["9"].attempts] == ["COMPLETED"] and obs.jobs["9"].restarts == 0


def test_a_job_nobody_knows_is_lost_only_after_the_grace() -> None:
    job = stored("queued")
    assert decide(job, Evidence(seen=None), NOW).history == []
    lost = decide(job, Evidence(seen=None, lost_after_s=timedelta(minutes=11).total_seconds()), NOW)
    assert lost.state is JobState.FAILED
    assert lost.fields["reason"].startswith("lost: neither accounting nor slurmctld has a record of Slurm job 1")


def test_a_job_slurm_does_not_requeue_fails_naming_the_node(monkeypatch: pytest.MonkeyPatch) -> None:
    sinfo = (DATA / "nr-sinfo.txt").read_text()  # n2 down* after its slurmd was killed
    for name in ("nr-nodefail", "nr-forgotten"):  # slurmctld holds it NODE_FAIL (Requeue=0), then forgets it
        sacct, scontrol = captured(name)
        slurm = CapturedSlurm(sacct, scontrol, sinfo)
        monkeypatch.setattr(commands, "run", slurm)
        obs = observe({"4": Identity("hpcgw:norequeue2", None)}, want_pending=False)
        step = decide(stored("running", slurm_id="4"), Evidence(seen=obs.jobs["4"]), NOW)
        assert step.state is JobState.FAILED and step.fields["restarts"] == 0
        assert step.fields["reason"] == "node n2 failed; Slurm did not requeue the job"
        assert slurm.calls == ["sacct", "squeue", "sinfo"]


def test_a_missing_job_is_confirmed_with_slurmctld_once_per_cycle(monkeypatch: pytest.MonkeyPatch) -> None:
    slurm = CapturedSlurm("", controller("RUNNING", job="8"))  # accounting knows neither; slurmctld holds 8
    monkeypatch.setattr(commands, "run", slurm)
    wanted = {"7": Identity(None, None), "8": Identity(None, None)}
    obs = observe(wanted, want_pending=False, confirm_missing={"7", "8"})
    assert obs.jobs == {} and obs.known_to_controller == {"8"} and slurm.calls == ["sacct", "squeue"]
    quiet = observe(wanted, want_pending=False)  # nobody overdue: slurmctld is not asked
    assert quiet.known_to_controller is None


def test_a_run_slurmctld_is_still_ending_changes_nothing_yet(monkeypatch: pytest.MonkeyPatch) -> None:
    # Seen on the cluster: for a fraction of a second after NODE_FAIL reaches accounting, slurmctld holds the
    # job COMPLETING; whether it is requeued is decided after. Neither "launching" nor "failed" is true yet.
    sacct, _ = captured("nf-nodefail")
    obs, _ = look(monkeypatch, sacct, controller("COMPLETING", job="1", restarts=0))
    step = decide(stored("running"), Evidence(seen=obs.jobs["1"], started={"restart": 0}), NOW)
    assert step.history == [] and step.fields == {}
