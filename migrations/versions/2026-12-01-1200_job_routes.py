"""jobs store every planned route (routes) instead of the first one alone (applied)

Revision ID: 3c1d2e5f7a90
Revises: a45c7f8fff1f
Create Date: 2026-12-01 12:00:00

"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = '3c1d2e5f7a90'
down_revision: str | Sequence[str] | None = 'a45c7f8fff1f'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_jobs = sa.table('jobs', sa.column('id', sa.String), sa.column('applied', sa.JSON), sa.column('routes', sa.JSON))


def upgrade() -> None:
    """Jobs written before keep the route they were planned with, as a plan of one route."""
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('routes', sa.JSON(), nullable=True))
    connection = op.get_bind()
    for job_id, applied in connection.execute(sa.select(_jobs.c.id, _jobs.c.applied)).all():
        connection.execute(sa.update(_jobs).where(_jobs.c.id == job_id).values(routes=[applied]))
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.alter_column('routes', existing_type=sa.JSON(), nullable=False)
        batch_op.drop_column('applied')


def downgrade() -> None:
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('applied', sa.JSON(), nullable=True))
    connection = op.get_bind()
    for job_id, routes in connection.execute(sa.select(_jobs.c.id, _jobs.c.routes)).all():
        connection.execute(sa.update(_jobs).where(_jobs.c.id == job_id).values(applied=routes[0]))
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.alter_column('applied', existing_type=sa.JSON(), nullable=False)
        batch_op.drop_column('routes')
