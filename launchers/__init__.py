"""Submit Horovod training jobs to Slurm from a login node, with or without the gateway."""

from launchers.job import Job, JobFailedError
from launchers.spec import Bind, ContainerSpec, JobSpec
from launchers.states import JobState
from launchers.submit import SpecError, SubmitError, render_script, submit

__all__ = [
    "Bind",
    "ContainerSpec",
    "Job",
    "JobFailedError",
    "JobSpec",
    "JobState",
    "SpecError",
    "SubmitError",
    "render_script",
    "submit",
]
