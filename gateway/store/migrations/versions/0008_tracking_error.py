"""a job's tracking error: why the worker could not apply a cycle's evidence to it (its own files, its record)

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-04 16:45:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel.sql.sqltypes
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: Sequence[str] | None = None
depends_on: Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("job", schema=None) as batch_op:
        batch_op.add_column(sa.Column("tracking_error", sqlmodel.sql.sqltypes.AutoString(length=512), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("job", schema=None) as batch_op:
        batch_op.drop_column("tracking_error")
