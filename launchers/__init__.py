"""Submit Horovod training jobs to Slurm from a login node, with or without the gateway.

The names below are loaded on first use, so that ``import launchers.spec`` (as the gateway's client does)
does not import submitit and the rest of the submission machinery.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from launchers.errors import SpecError, SubmitError
    from launchers.executor import Executor, FunctionJob
    from launchers.job import Job, JobFailedError
    from launchers.outcomes import FunctionFailedError
    from launchers.space import GridSpace, ListSpace, RandomSpace
    from launchers.spec import Bind, ContainerSpec, JobSpec
    from launchers.states import JobState
    from launchers.submission import render_script, submit
    from launchers.sweeps import sweep

_EXPORTS = {
    "Bind": "launchers.spec",
    "ContainerSpec": "launchers.spec",
    "Executor": "launchers.executor",
    "FunctionFailedError": "launchers.outcomes",
    "FunctionJob": "launchers.executor",
    "GridSpace": "launchers.space",
    "Job": "launchers.job",
    "JobFailedError": "launchers.job",
    "JobSpec": "launchers.spec",
    "JobState": "launchers.states",
    "ListSpace": "launchers.space",
    "RandomSpace": "launchers.space",
    "SpecError": "launchers.errors",
    "SubmitError": "launchers.errors",
    "render_script": "launchers.submission",
    "submit": "launchers.submission",
    "sweep": "launchers.sweeps",
}

__all__ = [
    "Bind",
    "ContainerSpec",
    "Executor",
    "FunctionFailedError",
    "FunctionJob",
    "GridSpace",
    "Job",
    "JobFailedError",
    "JobSpec",
    "JobState",
    "ListSpace",
    "RandomSpace",
    "SpecError",
    "SubmitError",
    "render_script",
    "submit",
    "sweep",
]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'launchers' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value
