"""The example trainer's hold (PAUSE_AFTER_EPOCH), run for real in its DDP form as a one-rank Gloo group: the first
run holds after the named epoch's checkpoint, a run resumed from that checkpoint does not, and bad values are
refused before training starts. Tests of preemption rely on it to find the job where they signal it."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from examples.intent_classifier import TRAINER_DIR, ensure_dataset


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run_trainer(tmp_path: Path, data: Path, **params: str) -> subprocess.CompletedProcess[str]:
    env = {
        "PATH": "/usr/bin:/bin",
        "RANK": "0",
        "WORLD_SIZE": "1",
        "LOCAL_RANK": "0",
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(free_port()),
        "GLOO_SOCKET_IFNAME": "lo",
        "TRAINING_DATA_PATH": str(data),
        "MODEL_OUTPUT_DIR": str(tmp_path / "model"),
        "METRICS_FILE": str(tmp_path / "metrics.jsonl"),
        "SEED": "7",
        "LR": "0.3",
        **params,
    }
    return subprocess.run(
        [sys.executable, str(TRAINER_DIR / "train_ddp.py")], env=env, capture_output=True, text=True, timeout=300
    )


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("intents")
    ensure_dataset(directory)
    return directory


def test_only_the_first_run_holds_after_the_named_epoch(tmp_path: Path, data: Path) -> None:
    first = run_trainer(tmp_path, data, EPOCHS="2", PAUSE_AFTER_EPOCH="1", PAUSE_S="0.2")
    assert first.returncode == 0, first.stderr[-2000:]
    lines = first.stdout.splitlines()
    held = lines.index("holding 0.2 s after epoch 1 (PAUSE_AFTER_EPOCH)")
    assert lines[held - 1].startswith("epoch 1/2: ") and lines[held + 1].startswith("epoch 2/2: ")
    # The same request, requeued: it resumes from epoch 2's checkpoint, past the hold.
    resumed = run_trainer(tmp_path, data, EPOCHS="3", PAUSE_AFTER_EPOCH="1", PAUSE_S="0.2")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resuming after epoch 2" in resumed.stdout and "holding" not in resumed.stdout
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == 3


@pytest.mark.parametrize(("name", "value"), [("PAUSE_S", "-1"), ("PAUSE_S", "nan"), ("PAUSE_AFTER_EPOCH", "-2")])
def test_a_bad_hold_is_refused_before_training(tmp_path: Path, data: Path, name: str, value: str) -> None:
    done = run_trainer(tmp_path, data, **{"EPOCHS": "1", "PAUSE_AFTER_EPOCH": "1", name: value})
    assert done.returncode == 1
    assert "intent-classifier: bad hyper-parameter" in done.stderr
    assert not (tmp_path / "metrics.jsonl").exists()
