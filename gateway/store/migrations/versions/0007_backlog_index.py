"""the team's backlog counted in an index alone: (team, state) becomes (team, state, sweep_id)

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-24 11:40:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: Sequence[str] | None = None
depends_on: Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("job", schema=None) as batch_op:
        batch_op.drop_index("ix_job_team_state")
        batch_op.create_index("ix_job_team_state_sweep", ["team", "state", "sweep_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("job", schema=None) as batch_op:
        batch_op.drop_index("ix_job_team_state_sweep")
        batch_op.create_index("ix_job_team_state", ["team", "state"], unique=False)
