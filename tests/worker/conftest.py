"""The worker on a fresh SQLite database, against the fake Slurm: jobs are created the way the API creates them,
and tests drive ``Worker.run_cycle()`` by hand (the worker thread is never started)."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from gateway.config import GatewayConfig
from gateway.schemas import JobCreate, SweepCreate
from gateway.site.auth import Principal
from gateway.store.db import make_engine, migrate
from gateway.store.models import PUBLISHED, Algorithm, AlgorithmVersion, Job, JobAttempt, JobEvent, Sweep
from gateway.submit.intake import create_job
from gateway.submit.sweeps import create_sweep
from gateway.worker.loop import Worker
from launchers.runtime.markers import JobMarkers
from launchers.space import GridSpace, Scalar
from tests.gateway.conftest import DATASET, make_config
from tests.worker.fakeslurm import FakeSlurm

ALGORITHM = "intent-classifier"


def teams(**overrides: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """team-a: 2 jobs and 4 GPUs at once; team-b: 1 job and 2 GPUs. ``overrides`` update a team's values."""
    base: dict[str, dict[str, Any]] = {
        "team-a": {"partitions": ["team-a"], "account": "team-a", "max_nodes": 2, "max_running_jobs": 2, "max_gpus": 4},
        "team-b": {"partitions": ["team-b"], "account": "team-b", "max_nodes": 2, "max_running_jobs": 1, "max_gpus": 2},
    }
    for name, values in overrides.items():
        base[name.replace("_", "-")].update(values)
    return base


@dataclass
class Gateway:
    config: GatewayConfig
    engine: Engine
    worker: Worker
    fake: FakeSlurm

    def submit(self, team: str = "team-a", **fields: Any) -> str:
        """A job stored as the API stores it (``accepted``); returns its id."""
        request = JobCreate(algorithm=ALGORITHM, dataset_id=DATASET[0], train_data_version_hash=DATASET[1], **fields)
        with Session(self.engine, expire_on_commit=False) as session:
            job, created = create_job(session, self.config, principal(team), request, {})
        assert created
        job_id: str = job.id
        return job_id

    def sweep(self, values: list[Scalar], max_parallel: int, team: str = "team-a") -> str:
        body = SweepCreate(
            name="lr",
            base=JobCreate(algorithm=ALGORITHM, dataset_id=DATASET[0], train_data_version_hash=DATASET[1]),
            space=GridSpace(grid={"LR": values}),
            max_parallel=max_parallel,
        )
        with Session(self.engine, expire_on_commit=False) as session:
            return create_sweep(session, self.config, principal(team), body, {}).id

    def cycle(self, times: int = 1) -> bool:
        changed = False
        for _ in range(times):
            changed |= self.worker.run_cycle()
        return changed

    def job(self, job_id: str) -> Job:
        with Session(self.engine, expire_on_commit=False) as session:
            job = session.get(Job, job_id)
            assert job is not None
            return job

    def tasks(self, sweep_id: str) -> list[Job]:
        with Session(self.engine, expire_on_commit=False) as session:
            return list(session.exec(select(Job).where(Job.sweep_id == sweep_id).order_by(col(Job.task_index))))

    def sweep_row(self, sweep_id: str) -> Sweep:
        with Session(self.engine, expire_on_commit=False) as session:
            sweep = session.get(Sweep, sweep_id)
            assert sweep is not None
            return sweep

    def state(self, job_id: str) -> str:
        return self.job(job_id).state

    def history(self, job_id: str) -> list[str]:
        with Session(self.engine) as session:
            events = session.exec(select(JobEvent).where(JobEvent.job_id == job_id).order_by(col(JobEvent.id)))
            return [e.state for e in events]

    def events(self, job_id: str) -> list[JobEvent]:
        with Session(self.engine, expire_on_commit=False) as session:
            return list(session.exec(select(JobEvent).where(JobEvent.job_id == job_id).order_by(col(JobEvent.id))))

    def update(self, job_id: str, **values: Any) -> None:
        with Session(self.engine) as session:
            job = session.get(Job, job_id)
            assert job is not None
            for name, value in values.items():
                setattr(job, name, value)
            session.add(job)
            session.commit()

    def markers(self, job_id: str) -> JobMarkers:
        """The job's marker files, where the worker looks for them (its submitit folder, by Slurm id)."""
        job = self.job(job_id)
        assert job.slurm_job_id is not None
        return JobMarkers(Path(job.submit_folder), job.slurm_job_id)

    def attempts(self, job_id: str) -> list[JobAttempt]:
        with Session(self.engine, expire_on_commit=False) as session:
            query = select(JobAttempt).where(JobAttempt.job_id == job_id).order_by(col(JobAttempt.number))
            return list(session.exec(query))

    def slurm_id(self, job_id: str) -> str:
        slurm_id = self.job(job_id).slurm_job_id
        assert slurm_id is not None
        return slurm_id


def principal(team: str) -> Principal:
    return Principal(user=f"user-{team}", team=team, admin=False)


def add_algorithm(engine: Engine) -> None:
    with Session(engine) as session:
        # published: every team's jobs run it (a team's own algorithm is resolved by its jobs alone)
        session.add(Algorithm(name=ALGORITHM, team=PUBLISHED, current_version="1.0"))
        session.add(
            AlgorithmVersion(
                algorithm=ALGORITHM,
                version="1.0",
                image="/images/intent-classifier.sif",
                command=["python", "/opt/intent-classifier/train.py"],
                local_command=["python", "train.py"],
            )
        )
        session.commit()


def _no_fsync(dbapi_conn: Any, _record: object) -> None:
    """After the gateway's own pragmas: a test database need not survive a power cut (and fsync is slow)."""
    dbapi_conn.execute("PRAGMA synchronous=OFF")


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> FakeSlurm:
    # Should anything slip past the seam, it must not reach the real cluster someone else is using.
    monkeypatch.setenv("SLURM_CONF", str(tmp_path / "no-such-slurm.conf"))
    return FakeSlurm().install(monkeypatch)


@pytest.fixture(scope="session")
def migrated_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A database migrated to the newest schema, with the algorithm, once: each test starts from a copy of it."""
    path = tmp_path_factory.mktemp("template") / "gw.db"
    engine = make_engine(f"sqlite:///{path}")
    migrate(engine)
    add_algorithm(engine)
    engine.dispose()  # the last connection checkpoints the WAL into the file
    return path


@pytest.fixture
def make_gateway(tmp_path: Path, fake: FakeSlurm, migrated_db: Path) -> Iterator[Callable[..., Gateway]]:
    engines: list[Engine] = []

    def make(team_overrides: dict[str, dict[str, Any]] | None = None, **config: Any) -> Gateway:
        path = tmp_path / "gw.db"
        if not path.exists():
            shutil.copyfile(migrated_db, path)
        cfg = make_config(tmp_path, f"sqlite:///{path}", teams=teams(**(team_overrides or {})), **config)
        engine = make_engine(cfg.database_url)
        event.listen(engine, "connect", _no_fsync)
        engines.append(engine)
        migrate(engine)  # at the newest already: what the gateway does at every start
        worker = Worker(engine, cfg)
        worker._partitions_at = float("-inf")  # the first cycle reads the partitions, however young the host
        return Gateway(cfg, engine, worker, fake)

    yield make
    for engine in engines:
        engine.dispose()


@pytest.fixture
def gw(make_gateway: Callable[..., Gateway]) -> Gateway:
    return make_gateway()
