"""job attempts (one row per run of a requeued job) and the request's requeue choice

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23 16:10:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel.sql.sqltypes
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: Sequence[str] | None = None
depends_on: Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "jobattempt",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("job_id", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("slurm_job_id", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column("slurm_state", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column("node_list", sqlmodel.sql.sqltypes.AutoString(length=1024), nullable=False),
        sa.Column("start_time", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
        sa.Column("end_time", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
        sa.Column("reason", sqlmodel.sql.sqltypes.AutoString(length=256), nullable=True),
        sa.ForeignKeyConstraint(["job_id"], ["job.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("job_id", "number"),
    )
    with op.batch_alter_table("jobattempt", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_jobattempt_job_id"), ["job_id"], unique=False)
    with op.batch_alter_table("job", schema=None) as batch_op:
        batch_op.add_column(sa.Column("requeue", sa.Boolean(), nullable=False, server_default=sa.true()))


def downgrade() -> None:
    with op.batch_alter_table("job", schema=None) as batch_op:
        batch_op.drop_column("requeue")
    with op.batch_alter_table("jobattempt", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_jobattempt_job_id"))
    op.drop_table("jobattempt")
