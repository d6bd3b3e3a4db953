"""The health policy's rules on plain values (gateway.run_health), the heartbeat thread's files
(launchers.runtime.heartbeat), and the rerun comparison (gateway.submit.reruns)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from gateway.run_health import HealthOverrides, HealthPolicy, evaluate, resolve
from gateway.store.models import Job
from gateway.submit.reruns import verify
from launchers.runtime.heartbeat import Heartbeat, last_report
from launchers.runtime.markers import JobMarkers
from launchers.states import JobState

NOW = 1_000_000.0


def beat(
    rank: int, at: float, progress_at: float | None = None, host: str = "n1", **progress: object
) -> dict[str, Any]:
    return {"rank": rank, "host": host, "time": at, "progress_at": progress_at, "progress": progress or None}


def test_a_nan_or_unbounded_loss_is_a_divergence() -> None:
    policy = HealthPolicy(max_loss=10)
    nan = evaluate(policy, [{"epoch": 1, "loss": 1.0}, {"epoch": 2, "loss": "NaN"}], {}, NOW - 5, NOW)
    assert nan.verdict is not None and nan.verdict.state is JobState.DIVERGED and nan.verdict.action == "stop"
    assert "loss is nan at epoch 2" in nan.verdict.reason
    big = evaluate(policy, [], {1: beat(1, NOW, NOW, step=40, loss=12.5)}, NOW - 5, NOW).verdict
    assert big is not None and "12.5 at step 40 on rank 1 is above max_loss 10" in big.reason
    assert evaluate(policy, [{"epoch": 1, "loss": 9.0}], {}, NOW - 5, NOW).verdict is None
    off = HealthPolicy(stop_on_nan=False)
    assert evaluate(off, [{"epoch": 1, "loss": float("inf")}], {}, NOW - 5, NOW).verdict is None


def test_a_hang_is_no_progress_from_any_rank_and_names_the_silent_nodes() -> None:
    policy = HealthPolicy(hang_timeout_s=30, heartbeat_s=2, on_hang="requeue")
    moving = {0: beat(0, NOW, NOW - 40, step=3), 1: beat(1, NOW, NOW - 10, host="n2", step=3)}
    assert evaluate(policy, [], moving, NOW - 100, NOW).verdict is None  # rank 1 reported 10 s ago
    stuck = {0: beat(0, NOW - 1, NOW - 40, step=3), 1: beat(1, NOW - 35, NOW - 35, host="n2", step=3)}
    verdict = evaluate(policy, [], stuck, NOW - 100, NOW).verdict
    assert verdict is not None and verdict.state is JobState.HUNG and verdict.action == "requeue"
    assert verdict.exclude == ("n2",) and "silent: rank 1 on n2" in verdict.reason
    # A trainer that reports nothing: its heartbeats are its progress.
    quiet = {0: beat(0, NOW - 1), 1: beat(1, NOW - 1)}
    assert evaluate(policy, [], quiet, NOW - 100, NOW).verdict is None
    gone = evaluate(policy, [], {0: beat(0, NOW - 31), 1: beat(1, NOW - 31)}, NOW - 100, NOW).verdict
    assert gone is not None and "no rank reported heartbeat for 31 s" in gone.reason
    # A run that just started is not hung, even before its first heartbeat.
    assert evaluate(policy, [], {}, NOW - 10, NOW).verdict is None
    assert evaluate(HealthPolicy(), [], stuck, NOW - 100, NOW).verdict is None  # no timeout: rule off


def test_a_reason_names_a_few_silent_ranks_and_excludes_every_silent_node() -> None:
    policy = HealthPolicy(hang_timeout_s=5, heartbeat_s=1)
    beats = {rank: beat(rank, NOW - 60, NOW - 60, host=f"node{rank:04d}", step=1) for rank in range(500)}
    verdict = evaluate(policy, [], beats, NOW - 100, NOW).verdict
    assert verdict is not None and len(verdict.reason) < 256 and "and 496 more" in verdict.reason
    assert len(verdict.exclude) == 500


def test_requeues_are_bounded_and_need_a_requeueable_job() -> None:
    policy = HealthPolicy(hang_timeout_s=5, on_hang="requeue", max_restarts=2)
    stuck = {0: beat(0, NOW - 60, NOW - 60, step=1)}
    assert evaluate(policy, [], stuck, NOW - 100, NOW, restarts_used=1).verdict.action == "requeue"  # type: ignore[union-attr]
    spent = evaluate(policy, [], stuck, NOW - 100, NOW, restarts_used=2).verdict
    assert spent is not None and spent.action == "stop" and "requeued 2 times already" in spent.reason
    pinned = evaluate(policy, [], stuck, NOW - 100, NOW, may_requeue=False).verdict
    assert pinned is not None and pinned.action == "stop" and "requeue=false" in pinned.reason


@pytest.mark.parametrize(
    ("mode", "values", "best", "stops"),
    [
        ("min", [1.0, 0.5, 0.6, 0.55], 2, True),
        ("min", [1.0, 0.5, 0.6, 0.45], 4, False),
        ("min", [1.0, 0.5, 0.495, 0.492], 2, True),  # improvements smaller than min_delta do not count
        ("max", [0.5, 0.9, 0.8, 0.85], 2, True),
        ("max", [0.5, 0.9, 0.8], 2, False),
    ],
)
def test_early_stopping_counts_epochs_since_the_best(mode: str, values: list[float], best: int, stops: bool) -> None:
    policy = HealthPolicy(monitor="m", mode=mode, patience=2, min_delta=0.01)  # type: ignore[arg-type]
    metrics = [{"epoch": i + 1, "m": v} for i, v in enumerate(values)]
    result = evaluate(policy, metrics, {}, NOW, NOW)
    assert result.best_epoch == best
    assert (result.verdict is not None) is stops
    if stops:
        assert result.verdict is not None and result.verdict.state is JobState.STOPPED_EARLY
        assert f"at epoch {best}" in result.verdict.reason


def test_a_request_overrides_its_teams_policy_field_by_field() -> None:
    team = HealthPolicy(hang_timeout_s=600, patience=5)
    merged = resolve(team, HealthOverrides.model_validate({"patience": 2, "hang_timeout_s": None, "mode": None}))
    assert (merged.patience, merged.hang_timeout_s, merged.mode) == (2, None, "min")
    assert resolve(team, None) is team
    with pytest.raises(ValidationError):
        HealthOverrides.model_validate({"on_hang": "reboot"})
    with pytest.raises(ValidationError):
        HealthOverrides.model_validate({"monitor": "$(rm -rf /)"})


def test_the_heartbeat_thread_reports_progress_as_it_happens(tmp_path: Path) -> None:
    markers = JobMarkers(tmp_path, "77")
    progress = markers.progress_path(1, 0)
    progress.parent.mkdir(parents=True)
    heartbeat = Heartbeat(markers.heartbeat_path(1, 0), 1, interval_s=30, progress_file=progress).start()
    try:
        first = markers.heartbeats(0, 2)
        assert list(first) == [1] and first[1]["progress"] is None and first[1]["beats"] == 1
        with open(progress, "a") as fh:
            fh.write(json.dumps({"step": 5, "loss": float("nan")}) + "\n")
        deadline = time.monotonic() + 5
        while (markers.heartbeats(0, 2)[1].get("progress") or {}).get("step") != 5:
            assert time.monotonic() < deadline, "the report did not reach the heartbeat"
            time.sleep(0.1)
        record = markers.heartbeats(0, 2)[1]
        assert record["progress"] == {"step": 5, "loss": "NaN"}  # strict JSON: NaN as a string
        assert record["progress_at"] == pytest.approx(progress.stat().st_mtime)
    finally:
        heartbeat.stop()


def test_the_last_report_is_the_last_complete_line(tmp_path: Path) -> None:
    path = tmp_path / "p"
    path.write_text('{"step": 1}\n{"step": 2}\n{"step": 3, "lo')
    found = last_report(path)
    assert found is not None and found[0] == {"step": 2}
    assert last_report(tmp_path / "missing") is None


def _job(job_id: str, nodes: int, sha: str, **provenance: object) -> Job:
    return Job(
        id=job_id, name="n", team="t", user="u", partition="p", account="a", nodes=nodes, tasks_per_node=2,
        gpus_per_node=0, cpus_per_task=1, time_limit_min=5, algorithm="alg", algorithm_version="1", image="i",
        command=["python", "t.py"], dataset_id="d", train_data_version_hash="h", parameters={"SEED": "7"},
        folder="/f", state=JobState.SUCCEEDED,
        provenance={"world_size": nodes * 2, "model_sha256": sha, "versions": {"torch": "2.5"}, **provenance},
    )  # fmt: skip


def test_a_verified_rerun_names_what_differs() -> None:
    original = _job("a", 2, "x")
    assert verify(original, _job("b", 2, "x")).status == "identical"
    resized = verify(original, _job("c", 1, "y"))
    assert resized.status == "different"
    assert {(d.input, d.original, d.rerun) for d in resized.differences} >= {("world_size", 4, 2), ("nodes", 2, 1)}
    noisy = verify(original, _job("d", 2, "y", model_files={"model.pt": "2"}))
    assert noisy.status == "different" and "not deterministic" in noisy.detail and noisy.differences == []
    running = _job("e", 2, "x")
    running.state = JobState.RUNNING
    assert verify(original, running).status == "pending"


def test_a_nan_in_a_metrics_line_is_stored_as_a_string(tmp_path: Path) -> None:
    from gateway.worker.metrics import MetricsReader

    path = tmp_path / "metrics.jsonl"
    path.write_text('{"epoch": 1, "loss": 0.5}\n{"epoch": 2, "loss": NaN, "acc": Infinity}\n')
    epochs = MetricsReader().read("j", path)
    assert epochs == [{"epoch": 1, "loss": 0.5}, {"epoch": 2, "loss": "NaN", "acc": "Infinity"}]
    assert json.dumps(epochs, allow_nan=False)  # what the API and PostgreSQL need
