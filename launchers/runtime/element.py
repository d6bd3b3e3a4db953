"""One task for every element of a job array, each element's own part read from the array's manifest.

submitit runs element ``i`` of array ``A`` from ``<A>_<i>_submitted.pkl``. Writing one pickle per element cost a
new file (an inode) per job, which on this project's disks took as long as everything else the gateway does to
send a job. Instead, the elements' commands, environments and functions go into one JSON manifest per array, and
one pickle of :class:`ArrayElement`, naming that manifest, is hard-linked under every element's name: a link is a
directory entry, not a new file. At run time the element picks its own entry by ``SLURM_ARRAY_TASK_ID``.

A checkpoint (preemption, time-out) dumps the element's own task, by submitit's write-then-rename, into that
element's name only: the link is replaced, the other elements keep the shared pickle.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import submitit

from launchers.runtime.function import FunctionTask
from launchers.runtime.task import TrainerTask

ELEMENTS_PREFIX = "elements-"  # <prefix><uuid>.json (the manifest) and <prefix><uuid>.pkl (the shared pickle)


def element_entry(command: Sequence[str], env: Mapping[str, str], function: Path | None = None) -> dict[str, Any]:
    """One element's line of the manifest."""
    entry: dict[str, Any] = {"command": list(command), "env": dict(env)}
    if function is not None:
        entry["function"] = str(function)
    return entry


def write_manifest(path: Path, entries: list[dict[str, Any]]) -> None:
    """Atomically: an element that starts while the gateway writes must never read half of it."""
    tmp = path.with_name(f".{path.name}.tmp")
    write_new_file(tmp, json.dumps(entries, separators=(",", ":")).encode())
    os.replace(tmp, path)


def write_new_file(path: Path | str, data: bytes, mode: int = 0o640, dir_fd: int | None = None) -> None:
    """A new file, never through a link nor over another's file, and never writable by the group or others
    whatever the umask: the gateway writes a job's manifest, pickles and script in a folder its team can read."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode, dir_fd=dir_fd)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    finally:
        os.close(fd)


def manifest_size(path: Path) -> int:
    with path.open() as handle:
        return len(json.load(handle))


class ArrayElement(submitit.helpers.Checkpointable):
    """Picklable and the same for every element: only the manifest's path and what the array's elements share."""

    def __init__(
        self,
        manifest: str,
        folder: str,
        rendezvous_timeout_s: float,
        controller: str = "gloo",
        framework: str = "horovod",
    ) -> None:
        self.manifest = manifest
        self.folder = folder
        self.rendezvous_timeout_s = rendezvous_timeout_s
        self.controller = controller
        self.framework = framework
        self._task: TrainerTask | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_task": None}  # the pickle stays the same for every element

    def element(self, index: int) -> TrainerTask:
        """Element ``index``'s own task, exactly as a job of its own would have pickled it."""
        with open(self.manifest) as handle:
            entry = json.load(handle)[index]
        if entry.get("function"):
            return FunctionTask(entry["function"], self.folder, self.rendezvous_timeout_s, self.framework)
        return TrainerTask(
            entry["command"], entry["env"], self.folder, self.rendezvous_timeout_s, self.controller, self.framework
        )

    def _own(self) -> TrainerTask:
        if self._task is None:
            self._task = self.element(int(os.environ["SLURM_ARRAY_TASK_ID"]))
        return self._task

    def __call__(self) -> Any:
        return self._own()()

    @property
    def checkpoint(self) -> Callable[..., Any]:
        """The element's own task's: submitit then dumps that task, not this one, under the element's name (and
        a function without a checkpoint of its own has none here either)."""
        return self._own().checkpoint
