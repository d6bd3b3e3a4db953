"""the distributed framework of an algorithm version and of a job: horovod (every row so far) or ddp

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-24 04:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel.sql.sqltypes
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: Sequence[str] | None = None
depends_on: Sequence[str] | None = None


def upgrade() -> None:
    for table in ("algorithmversion", "job"):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.add_column(
                sa.Column(
                    "framework", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False, server_default="horovod"
                )
            )


def downgrade() -> None:
    for table in ("job", "algorithmversion"):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_column("framework")
