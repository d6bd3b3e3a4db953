"""A submitter killed between sbatch and submitit's rename of the pickle: the rename is finished on adoption."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

from launchers.runtime.element import ELEMENTS_PREFIX, element_entry, write_manifest
from launchers.submission import finish_interrupted_array, finish_interrupted_submission


def test_a_single_jobs_temporary_pickle_becomes_its_submitted_pickle(tmp_path: Path) -> None:
    old, new = tmp_path / f"{uuid.uuid4().hex}.pkl", tmp_path / f"{uuid.uuid4().hex}.pkl"
    old.write_bytes(b"first attempt, died before sbatch")
    new.write_bytes(b"the one sbatch took")
    os.utime(old, ns=(1, 1))
    (tmp_path / "958_0_log.out").write_text("")
    assert finish_interrupted_submission(tmp_path, "958")
    assert (tmp_path / "958_submitted.pkl").read_bytes() == b"the one sbatch took"
    assert not finish_interrupted_submission(tmp_path, "958")  # done already: nothing to do


def test_nothing_to_finish_when_submitit_had_renamed_it(tmp_path: Path) -> None:
    (tmp_path / "12_submitted.pkl").write_bytes(b"x")
    assert not finish_interrupted_submission(tmp_path, "12")
    assert not finish_interrupted_submission(tmp_path / "missing", "13")


def test_each_array_task_gets_its_own_pickle_back(tmp_path: Path) -> None:
    for index in range(3):
        (tmp_path / f"task{index}-{uuid.uuid4().hex}.pkl").write_text(f"task {index}")
    (tmp_path / "40_1_submitted.pkl").write_text("task 1")  # renamed before the crash
    assert finish_interrupted_array(tmp_path, "40") == 2
    assert {p.name: p.read_text() for p in tmp_path.glob("40_*_submitted.pkl")} == {
        "40_0_submitted.pkl": "task 0",
        "40_1_submitted.pkl": "task 1",
        "40_2_submitted.pkl": "task 2",
    }


def shared_pickle(folder: Path, elements: int, content: bytes) -> Path:
    manifest = folder / f"{ELEMENTS_PREFIX}{uuid.uuid4().hex}.json"
    write_manifest(manifest, [element_entry(["train"], {"I": str(i)}) for i in range(elements)])
    manifest.with_suffix(".pkl").write_bytes(content)
    return manifest.with_suffix(".pkl")


def test_a_shared_pickle_is_linked_under_every_elements_name(tmp_path: Path) -> None:
    old = shared_pickle(tmp_path, 3, b"an attempt whose sbatch failed")
    os.utime(old, ns=(1, 1))
    shared_pickle(tmp_path, 3, b"the one sbatch took")
    assert finish_interrupted_array(tmp_path, "41") == 3
    assert {p.name: p.read_bytes() for p in tmp_path.glob("41_*_submitted.pkl")} == {
        f"41_{i}_submitted.pkl": b"the one sbatch took" for i in range(3)
    }
    assert finish_interrupted_array(tmp_path, "41") == 0


def test_a_half_linked_array_is_finished_with_its_own_shared_pickle(tmp_path: Path) -> None:
    """The crash came between two links: the links made name the pickle, though a newer one is unlinked."""
    taken = shared_pickle(tmp_path, 4, b"array 42")
    os.link(taken, tmp_path / "42_0_submitted.pkl")
    shared_pickle(tmp_path, 2, b"a later attempt that never reached sbatch")
    assert finish_interrupted_array(tmp_path, "42") == 3
    assert {p.read_bytes() for p in tmp_path.glob("42_*_submitted.pkl")} == {b"array 42"}
    assert len(list(tmp_path.glob("42_*_submitted.pkl"))) == 4
