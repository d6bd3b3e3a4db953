"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-23 02:50:42.169710
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel.sql.sqltypes
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: Sequence[str] | None = None
depends_on: Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "algorithm",
        sa.Column("name", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("team", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column("description", sqlmodel.sql.sqltypes.AutoString(length=1000), nullable=False),
        sa.Column("current_version", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("created_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )
    with op.batch_alter_table("algorithm", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_algorithm_team"), ["team"], unique=False)

    op.create_table(
        "job",
        sa.Column("id", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column("name", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("team", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column("user", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("state", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("slurm_job_id", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=True),
        sa.Column("slurm_state", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=True),
        sa.Column("reason", sqlmodel.sql.sqltypes.AutoString(length=256), nullable=True),
        sa.Column("position_in_queue", sa.Integer(), nullable=True),
        sa.Column("exit_code", sa.Integer(), nullable=True),
        sa.Column("restarts", sa.Integer(), nullable=False),
        sa.Column("submit_time", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.Column("slurm_submit_time", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
        sa.Column("start_time", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
        sa.Column("end_time", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
        sa.Column("partition", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("account", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("qos", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
        sa.Column("nodes", sa.Integer(), nullable=False),
        sa.Column("tasks_per_node", sa.Integer(), nullable=False),
        sa.Column("gpus_per_node", sa.Integer(), nullable=False),
        sa.Column("cpus_per_task", sa.Integer(), nullable=False),
        sa.Column("mem_gb", sa.Float(), nullable=True),
        sa.Column("time_limit_min", sa.Integer(), nullable=False),
        sa.Column("algorithm", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("algorithm_version", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("image", sqlmodel.sql.sqltypes.AutoString(length=1024), nullable=False),
        sa.Column("image_digest", sqlmodel.sql.sqltypes.AutoString(length=128), nullable=True),
        sa.Column("command", sa.JSON(), nullable=False),
        sa.Column("dataset_id", sqlmodel.sql.sqltypes.AutoString(length=128), nullable=False),
        sa.Column("train_data_version_hash", sqlmodel.sql.sqltypes.AutoString(length=128), nullable=False),
        sa.Column("parameters", sa.JSON(), nullable=False),
        sa.Column("idempotency_key", sqlmodel.sql.sqltypes.AutoString(length=128), nullable=True),
        sa.Column("rerun_of", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=True),
        sa.Column("folder", sqlmodel.sql.sqltypes.AutoString(length=1024), nullable=False),
        sa.Column("dispatching", sa.Boolean(), nullable=False),
        sa.Column("dispatch_error", sqlmodel.sql.sqltypes.AutoString(length=2000), nullable=True),
        sa.Column("cancel_requested", sa.Boolean(), nullable=False),
        sa.Column("metrics", sa.JSON(), nullable=False),
        sa.Column("updated_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("team", "user", "idempotency_key"),
    )
    with op.batch_alter_table("job", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_job_slurm_job_id"), ["slurm_job_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_job_state"), ["state"], unique=False)
        batch_op.create_index("ix_job_team_state", ["team", "state"], unique=False)

    op.create_table(
        "algorithmversion",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("algorithm", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("version", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("image", sqlmodel.sql.sqltypes.AutoString(length=1024), nullable=False),
        sa.Column("image_digest", sqlmodel.sql.sqltypes.AutoString(length=128), nullable=True),
        sa.Column("command", sa.JSON(), nullable=False),
        sa.Column("local_command", sa.JSON(), nullable=True),
        sa.Column("created_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["algorithm"],
            ["algorithm.name"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("algorithm", "version"),
    )
    with op.batch_alter_table("algorithmversion", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_algorithmversion_algorithm"), ["algorithm"], unique=False)

    op.create_table(
        "jobevent",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("job_id", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column("state", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("slurm_state", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=True),
        sa.Column("reason", sqlmodel.sql.sqltypes.AutoString(length=256), nullable=True),
        sa.Column("at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["job_id"],
            ["job.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("jobevent", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_jobevent_job_id"), ["job_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("jobevent", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_jobevent_job_id"))

    op.drop_table("jobevent")
    with op.batch_alter_table("algorithmversion", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_algorithmversion_algorithm"))

    op.drop_table("algorithmversion")
    with op.batch_alter_table("job", schema=None) as batch_op:
        batch_op.drop_index("ix_job_team_state")
        batch_op.drop_index(batch_op.f("ix_job_state"))
        batch_op.drop_index(batch_op.f("ix_job_slurm_job_id"))

    op.drop_table("job")
    with op.batch_alter_table("algorithm", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_algorithm_team"))

    op.drop_table("algorithm")
