"""run health (policy, verdict, best epoch, requeues by the policy), provenance and verified reruns, and why the
gateway ended an attempt

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-24 04:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel.sql.sqltypes
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: Sequence[str] | None = None
depends_on: Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("job", schema=None) as batch_op:
        batch_op.add_column(sa.Column("health", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("health_verdict", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=True))
        batch_op.add_column(sa.Column("health_reason", sqlmodel.sql.sqltypes.AutoString(length=512), nullable=True))
        batch_op.add_column(sa.Column("health_restarts", sa.Integer(), nullable=False, server_default="0"))
        batch_op.add_column(sa.Column("excluded_nodes", sqlmodel.sql.sqltypes.AutoString(length=1024), nullable=True))
        batch_op.add_column(sa.Column("best_epoch", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("provenance", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("verify", sa.Boolean(), nullable=False, server_default=sa.false()))
    with op.batch_alter_table("jobattempt", schema=None) as batch_op:
        batch_op.add_column(sa.Column("ended_by", sqlmodel.sql.sqltypes.AutoString(length=512), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("jobattempt", schema=None) as batch_op:
        batch_op.drop_column("ended_by")
    with op.batch_alter_table("job", schema=None) as batch_op:
        for name in (
            "verify",
            "provenance",
            "best_epoch",
            "excluded_nodes",
            "health_restarts",
            "health_reason",
            "health_verdict",
        ):
            batch_op.drop_column(name)
        batch_op.drop_column("health")
