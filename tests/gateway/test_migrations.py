"""Migrations upgrade a database that already holds jobs, on SQLite and PostgreSQL, keeping the rows."""

from __future__ import annotations

from alembic import command
from sqlalchemy import text

from gateway.store.db import alembic_config, make_engine, migrate


def test_upgrade_keeps_existing_jobs(database_url: str) -> None:
    engine = make_engine(database_url)
    with engine.connect() as connection:
        cfg = alembic_config(database_url)
        cfg.attributes["connection"] = connection
        command.upgrade(cfg, "0001")
        connection.commit()
    with engine.begin() as connection:
        connection.execute(
            text(
                'INSERT INTO job (id, name, team, "user", state, '
                " restarts, submit_time, partition, account, nodes, "
                "tasks_per_node, gpus_per_node, cpus_per_task, time_limit_min, algorithm, algorithm_version, image, "
                "command, dataset_id, train_data_version_hash, parameters, folder, dispatching, metrics, updated_at, "
                "cancel_requested) VALUES ('j1', 'n', 'team-a', 'u', 'succeeded', 0, CURRENT_TIMESTAMP, 'p', 'a', 1, "
                "1, "
                "0, 1, 5, 'alg', '1', 'img', '[]', 'd', 'h', '{}', '/f', false, '[]', CURRENT_TIMESTAMP, false)"
            )
        )
        connection.execute(
            text("INSERT INTO jobevent (job_id, state, at) VALUES ('j1', 'succeeded', CURRENT_TIMESTAMP)")
        )
    migrate(engine)  # 0001 -> head, with rows that reference each other
    with engine.connect() as connection:
        row = connection.execute(text("SELECT id, attempt, submit_folder FROM job")).one()
        assert tuple(row) == ("j1", 0, "")
        assert connection.execute(text("SELECT count(*) FROM jobevent")).scalar() == 1
    engine.dispose()
