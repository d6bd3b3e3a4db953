"""The dispatch builds one spec per signature, not per job: no stored field outside the signature may move a shape,
or jobs that need different sbatch scripts would share one. And a job whose own part breaks a JobSpec's rules fails
alone."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import JSON
from sqlalchemy.types import TypeDecorator
from sqlmodel import Session

from gateway.store.models import Job
from gateway.store.rows import JOB
from gateway.submit.specs import job_spec
from gateway.worker.shapes import SIGNATURE, Shapes, element, shape
from tests.worker.conftest import Gateway
from tests.worker.fakeslurm import FakeSlurm


def variants(column: Any, value: Any) -> list[Any]:
    """Other values a stored field could hold, by its column's type."""
    stored_type = column.type
    while isinstance(stored_type, TypeDecorator):
        stored_type = stored_type.impl_instance
    kind = dict if isinstance(stored_type, JSON) else stored_type.python_type
    if kind is bool:
        return [not value]
    if kind is int:
        return [(value or 0) + 3]
    if kind is float:
        return [(value or 1.0) * 2]
    if kind is datetime:
        # SQLModel table models do not validate at init: a bare Job() has its defaults only
        return [(value or Job().submit_time) + timedelta(days=1)]  # type: ignore[call-arg]
    if kind in (dict, list):
        return [{"LR": "0.5", "heartbeat_s": 7}, ["python", "other.py"], [{"epoch": 1}]]
    if kind is str:
        return [f"{value or ''}x", "team-b", "9" * 32]
    raise AssertionError(f"no variants for {column.key}'s type {kind!r}")


@pytest.mark.parametrize("runtime", ["none", "apptainer"])
def test_no_stored_field_outside_the_signature_moves_a_shape(
    make_gateway: Callable[..., Gateway], runtime: str
) -> None:
    gw = make_gateway()  # submitted as runtime none: apptainer would re-check the fixture's (absent) image file
    job = gw.job(gw.submit(parameters={"LR": "0.1"}))
    gw.config = gw.config.model_copy(update={"container_runtime": runtime})
    stored = {column.key: getattr(job, column.key) for column in JOB.columns}
    stored["image"] = "oras://registry.example/intent-classifier.sif"  # apptainer's spec checks a local path exists
    expected = shape(job_spec(gw.config, Job(**stored)))
    checked = 0
    for column in JOB.columns:
        if column.key in SIGNATURE:
            continue
        for value in variants(column, stored[column.key]):
            other = Job(**{**stored, column.key: value})
            try:
                spec = job_spec(gw.config, other)
            except (ValueError, TypeError):
                continue  # not a job the gateway could have stored
            assert shape(spec) == expected, f"{column.key} = {value!r} changes the shape but is not in SIGNATURE"
            checked += 1
    assert checked > 40


def test_jobs_alike_in_signature_share_one_spec_and_others_do_not(gw: Gateway) -> None:
    a, b = gw.job(gw.submit(parameters={"LR": "0.1"})), gw.job(gw.submit(parameters={"LR": "0.2"}))
    c = gw.job(gw.submit(nodes=2))
    shapes = Shapes(gw.config)
    assert shapes.of(a) == shapes.of(b) and shapes.of(a)[1] is shapes.of(b)[1]
    assert shapes.of(c)[0] != shapes.of(a)[0]
    for job in (a, b, c):
        assert shapes.of(job)[0] == shape(job_spec(gw.config, job))
    assert element(gw.config, b).env == job_spec(gw.config, b).env
    assert element(gw.config, b).command == job_spec(gw.config, b).command


def test_a_job_whose_environment_breaks_the_rules_fails_alone(gw: Gateway, fake: FakeSlurm) -> None:
    """A row written past the API's checks (a reserved name among its parameters) cannot sink its array."""
    good, bad = gw.submit(parameters={"LR": "0.1"}), gw.submit(parameters={"LR": "0.2"})
    with Session(gw.engine) as session:
        row = session.get(Job, bad)
        assert row is not None
        row.parameters = {"LD_LIBRARY_PATH": "/tmp/evil"}
        session.add(row)
        session.commit()
    gw.cycle()
    assert gw.job(bad).state == "failed" and "LD_LIBRARY_PATH" in (gw.job(bad).reason or "")
    assert gw.job(good).state == "queued" and fake.count("sbatch") == 1
