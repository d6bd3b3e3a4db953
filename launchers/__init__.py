"""Submit Horovod training jobs to Slurm from a login node, with or without the gateway."""

from launchers.job import Job, JobFailedError
from launchers.space import GridSpace, ListSpace, RandomSpace
from launchers.spec import Bind, ContainerSpec, JobSpec
from launchers.states import JobState
from launchers.submit import SpecError, SubmitError, render_script, submit
from launchers.sweep import sweep

__all__ = [
    "Bind",
    "ContainerSpec",
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
