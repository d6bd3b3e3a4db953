"""An array's elements share one pickle and one manifest: each runs its own entry, and a checkpoint replaces only
its own element's pickle."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest
from submitit.core.job_environment import _checkpoint
from submitit.core.utils import DelayedSubmission

from launchers.runtime.element import ArrayElement, element_entry, manifest_size, write_manifest
from launchers.runtime.function import FunctionTask
from launchers.runtime.task import TrainerTask
from launchers.submission import link_elements


@pytest.fixture
def shared(tmp_path: Path) -> Path:
    manifest = tmp_path / "elements-abc.json"
    entries = [element_entry(["python", "train.py", f"--n={i}"], {"LR": str(i / 10)}) for i in range(3)]
    write_manifest(manifest, [*entries, element_entry(["ignored"], {}, tmp_path / "function.pkl")])
    element = ArrayElement(str(manifest), str(tmp_path), 30.0, "gloo", "horovod")
    path = manifest.with_suffix(".pkl")
    DelayedSubmission(element).dump(path)
    return path


def load(path: Path) -> ArrayElement:
    with path.open("rb") as handle:
        element = pickle.load(handle).function
    assert isinstance(element, ArrayElement)
    return element


def test_each_element_runs_its_own_entry(shared: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert manifest_size(shared.with_suffix(".json")) == 4
    task = load(shared).element(2)
    assert type(task) is TrainerTask
    assert (task.command, task.env, task.rendezvous_timeout_s) == (["python", "train.py", "--n=2"], {"LR": "0.2"}, 30.0)
    function = load(shared).element(3)
    assert isinstance(function, FunctionTask) and function.payload == str(shared.parent / "function.pkl")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "1")
    assert load(shared)._own().env == {"LR": "0.1"}


def test_a_checkpoint_replaces_only_its_own_elements_link(shared: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    names = [shared.parent / f"7_{i}_submitted.pkl" for i in range(3)]
    assert link_elements(shared, names) == 3 and link_elements(shared, names) == 0
    assert {os.stat(n).st_ino for n in names} == {os.stat(shared).st_ino}
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "1")
    delayed = DelayedSubmission.load(names[1])
    assert hasattr(delayed.function, "checkpoint")  # as submitit asks before it requeues
    assert _checkpoint(delayed, names[1], countdown=2) == ""  # submitit's own dump: write, then rename
    with names[1].open("rb") as handle:
        requeued = pickle.load(handle).function
    assert type(requeued) is TrainerTask and requeued.env == {"LR": "0.1"}
    assert isinstance(load(names[0]), ArrayElement) and isinstance(load(shared), ArrayElement)
    assert load(names[2])._task is None  # what ran in element 1 did not travel into the shared pickle
