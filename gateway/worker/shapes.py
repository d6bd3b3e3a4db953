"""Which waiting jobs can share one job array, and what each brings to it.

Jobs with the same shape (everything in their spec but the per-element fields) share an sbatch script. Building a
full ``JobSpec`` per job only to compare shapes was the dispatch's largest cost after the file system: a spec is
built once per distinct *signature* instead, the stored fields the spec is made from, less the per-element ones.
Jobs alike in their signature are alike in their shape; the converse need not hold, since grouping is still by the
shape itself. ``tests/unit/test_shapes.py`` changes every other stored field and checks that the shape stays.

Each job's own part (its command and environment) is checked by the same rules as a JobSpec's, job by job, so that
a row that would not make a valid spec fails alone, with its reason, instead of sinking its array.
"""

from __future__ import annotations

import json
from typing import Any, NamedTuple

from gateway.config import GatewayConfig
from gateway.store.models import Job, JobFields
from gateway.submit.job_requests import FUNCTION_ALGORITHM
from gateway.submit.specs import job_env, job_spec
from launchers.resources import RESOURCE_FIELDS
from launchers.spec import JobSpec, check_env, check_no_nul

# What may differ between the elements of one array: the rest is the sbatch script's, and must be equal.
PER_ELEMENT = frozenset({"name", "command", "env", "folder", "comment"})
# The stored fields ``gateway.submit.specs`` makes a spec's shared part from (and a few more, which only split groups).
SIGNATURE = ("user", *JobFields.PLACEMENT, *RESOURCE_FIELDS, "requeue", *JobFields.SCRIPT_INPUTS)


class Element(NamedTuple):
    """What one job brings to an array besides the shared script."""

    command: tuple[str, ...]
    env: dict[str, str]


def shape(spec: JobSpec) -> str:
    """Jobs with the same shape can share an sbatch script; the key is everything else in their spec."""
    return json.dumps(spec.model_dump(mode="json", exclude=set(PER_ELEMENT)), sort_keys=True)


def element(config: GatewayConfig, job: Job) -> Element:
    """The job's command and environment, by a JobSpec's rules (ValueError when they break one)."""
    return Element(check_no_nul(tuple(job.command)), check_env(job_env(config, job)))


class Shapes:
    """Each job's shape, and a spec of that shape to build its array from: one ``job_spec`` per signature."""

    def __init__(self, config: GatewayConfig) -> None:
        self.config = config
        self._known: dict[tuple[Any, ...], tuple[str, JobSpec]] = {}

    def of(self, job: Job) -> tuple[str, JobSpec]:
        if job.algorithm == FUNCTION_ALGORITHM:  # its own payload file: never the same script as another job's
            spec = job_spec(self.config, job)
            return shape(spec), spec
        signature = tuple(getattr(job, name) for name in SIGNATURE)
        known = self._known.get(signature)
        if known is None:
            spec = job_spec(self.config, job)
            known = self._known[signature] = (shape(spec), spec)
        return known
