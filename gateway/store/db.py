"""Database engine, sessions, and schema migrations (Alembic, run at start-up)."""

from __future__ import annotations

import logging
from pathlib import Path

from alembic import command
from alembic.config import Config as AlembicConfig
from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlmodel import create_engine

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
# FastAPI runs sync routes in one thread pool (anyio's, set to API_THREADS at start-up). Each route holds at most
# one connection, and gives it back as its endpoint returns (gateway.api.deps.ReleasingRoute: without that, under
# bench/load.py every connection was held by a finished request waiting for a thread to serialise its answer, and
# the gateway stopped answering). The pool has a connection for every thread, and some for the worker and spare.
API_THREADS = 40
POOL_SIZE = 10
POOL_OVERFLOW = API_THREADS + 10 - POOL_SIZE
MIGRATION_LOCK = 0x6870636D67  # a PostgreSQL advisory lock key ("hpcmg"), held while migrating


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        if url.startswith("sqlite:///") and url != "sqlite:///:memory:":
            Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        in_memory = url in ("sqlite://", "sqlite:///:memory:")  # one connection, shared: no pool to size
        sizes = {} if in_memory else {"pool_size": POOL_SIZE, "max_overflow": POOL_OVERFLOW}
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30}, **sizes)

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: object, _record: object) -> None:
            cursor = dbapi_conn.cursor()  # type: ignore[attr-defined]
            cursor.execute("PRAGMA journal_mode=WAL")  # readers never wait for the poller's writes
            # With WAL, NORMAL survives a crash of the gateway (each commit is in the WAL before it returns);
            # only an OS crash or power loss can drop the last commits. PostgreSQL is for sites that need more.
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=POOL_SIZE, max_overflow=POOL_OVERFLOW)


def alembic_config(url: str) -> AlembicConfig:
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest migration (a no-op when it is there already)."""
    logging.getLogger("alembic").setLevel(logging.WARNING)  # its per-plugin INFO lines say nothing useful
    cfg = alembic_config(engine.url.render_as_string(hide_password=False))
    sqlite = engine.dialect.name == "sqlite"
    with engine.connect() as connection:
        if engine.dialect.name == "postgresql":
            # Several gateways starting at once on a new database would each create the tables; one at a time,
            # the later ones find the schema at head. Released with the connection.
            connection.exec_driver_sql(f"SELECT pg_advisory_lock({MIGRATION_LOCK})")
        if sqlite:
            # SQLite alters a table by copying it and dropping the old one; with foreign keys enforced, the drop
            # fails as soon as other tables reference rows (a database with jobs in it). Off for the migration only.
            connection.exec_driver_sql("PRAGMA foreign_keys=OFF")
        cfg.attributes["connection"] = connection
        command.upgrade(cfg, "head")
        connection.commit()
        if engine.dialect.name == "postgresql":
            connection.exec_driver_sql(f"SELECT pg_advisory_unlock({MIGRATION_LOCK})")
            connection.commit()
        if sqlite:
            connection.exec_driver_sql("PRAGMA foreign_keys=ON")
