"""the month's charges on the key row, for the monthly budget check

Revision ID: 5f1e7a3c9d20
Revises: bbdbe93484cf
Create Date: 2026-12-04 05:00:00

"""
from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = '5f1e7a3c9d20'
down_revision: str | Sequence[str] | None = 'bbdbe93484cf'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('api_keys', schema=None) as batch_op:
        batch_op.add_column(sa.Column('charged_month', sa.String(length=7), nullable=True))
        batch_op.add_column(sa.Column('month_charged_micros', sa.BigInteger(), nullable=False, server_default='0'))

    # this month's charges, from each key's spend counter of the month
    month = datetime.now(UTC).strftime('%Y-%m')
    keys = sa.table('api_keys', sa.column('id', sa.String), sa.column('charged_month', sa.String),
                    sa.column('month_charged_micros', sa.BigInteger))
    spend = sa.table('key_spend', sa.column('api_key_id', sa.String), sa.column('period', sa.String),
                     sa.column('charged_micros', sa.BigInteger))
    charged = (sa.select(spend.c.charged_micros)
               .where(spend.c.api_key_id == keys.c.id, spend.c.period == month).scalar_subquery())
    op.get_bind().execute(
        keys.update()
        .where(sa.exists(sa.select(sa.literal(1)).where(spend.c.api_key_id == keys.c.id, spend.c.period == month)))
        .values(charged_month=month, month_charged_micros=charged))


def downgrade() -> None:
    with op.batch_alter_table('api_keys', schema=None) as batch_op:
        batch_op.drop_column('month_charged_micros')
        batch_op.drop_column('charged_month')
