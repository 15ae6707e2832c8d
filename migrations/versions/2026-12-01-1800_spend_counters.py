"""per-key spend counters, ledger rows that carry what reports need, retries found by request

Revision ID: 7e2b9c4d1a55
Revises: 3c1d2e5f7a90
Create Date: 2026-12-01 18:00:00

"""
from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = '7e2b9c4d1a55'
down_revision: str | Sequence[str] | None = '3c1d2e5f7a90'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('api_keys', schema=None) as batch_op:
        batch_op.add_column(sa.Column('charged_micros', sa.BigInteger(), nullable=False, server_default='0'))
    op.create_table(
        'key_spend',
        sa.Column('api_key_id', sa.String(length=40), nullable=False),
        sa.Column('period', sa.String(length=10), nullable=False),
        sa.Column('charged_micros', sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(['api_key_id'], ['api_keys.id'], name=op.f('fk_key_spend_api_key_id_api_keys')),
        sa.PrimaryKeyConstraint('api_key_id', 'period', name=op.f('pk_key_spend')),
    )
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.create_index('ix_jobs_api_key_id_request_hash', ['api_key_id', 'request_hash'], unique=False)
    with op.batch_alter_table('ledger_entries', schema=None) as batch_op:
        batch_op.add_column(sa.Column('outcome', sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column('size', sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column('quality', sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column('input_tokens', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('output_tokens', sa.Integer(), nullable=True))
        batch_op.drop_constraint('fk_ledger_entries_job_id_jobs', type_='foreignkey')
        batch_op.drop_constraint('fk_ledger_entries_job_image_id_job_images', type_='foreignkey')
        batch_op.create_foreign_key(op.f('fk_ledger_entries_job_id_jobs'), 'jobs', ['job_id'], ['id'],
                                    ondelete='SET NULL')
        batch_op.create_foreign_key(op.f('fk_ledger_entries_job_image_id_job_images'), 'job_images',
                                    ['job_image_id'], ['id'], ondelete='SET NULL')

    # what the ledger already holds: each key's charges in all, per day and per month
    connection = op.get_bind()
    ledger = sa.table('ledger_entries', sa.column('api_key_id', sa.String), sa.column('kind', sa.String),
                      sa.column('amount_micros', sa.BigInteger), sa.column('created_at', sa.DateTime),
                      sa.column('job_image_id', sa.String))
    images = sa.table('job_images', sa.column('id', sa.String), sa.column('status', sa.String),
                      sa.column('size', sa.String), sa.column('quality', sa.String),
                      sa.column('input_tokens', sa.Integer), sa.column('output_tokens', sa.Integer),
                      sa.column('job_id', sa.String), sa.column('model', sa.String),
                      sa.column('finished_at', sa.DateTime))
    keys = sa.table('api_keys', sa.column('id', sa.String), sa.column('charged_micros', sa.BigInteger))
    spend = sa.table('key_spend', sa.column('api_key_id', sa.String), sa.column('period', sa.String),
                     sa.column('charged_micros', sa.BigInteger))
    totals: dict[str, int] = {}
    periods: dict[tuple[str, str], int] = {}
    charges = connection.execute(sa.select(ledger.c.api_key_id, ledger.c.amount_micros, ledger.c.created_at)
                                 .where(ledger.c.kind == 'charge')).all()
    for key_id, amount, created in charges:
        if isinstance(created, datetime):
            stamp = (created.astimezone(UTC) if created.tzinfo else created).strftime("%Y-%m-%d")
        else:
            stamp = str(created)[:10]
        totals[key_id] = totals.get(key_id, 0) + int(amount)
        for period in (stamp, stamp[:7]):
            periods[(key_id, period)] = periods.get((key_id, period), 0) + int(amount)
    for key_id, total in totals.items():
        connection.execute(sa.update(keys).where(keys.c.id == key_id).values(charged_micros=total))
    if periods:
        connection.execute(sa.insert(spend), [{"api_key_id": k, "period": p, "charged_micros": v}
                                              for (k, p), v in periods.items()])
    # an image's charge or release row says what the image was, as its row does today; a free
    # image, which had no ledger row, gets one of 0
    jobs = sa.table('jobs', sa.column('id', sa.String), sa.column('api_key_id', sa.String),
                    sa.column('model', sa.String))
    rows = connection.execute(
        sa.select(images.c.id, images.c.status, images.c.size, images.c.quality, images.c.input_tokens,
                  images.c.output_tokens, images.c.job_id, images.c.model, images.c.finished_at,
                  jobs.c.api_key_id, jobs.c.model)
        .select_from(images.join(jobs, jobs.c.id == images.c.job_id))).all()
    entries = sa.table('ledger_entries', sa.column('job_image_id', sa.String), sa.column('kind', sa.String),
                       sa.column('outcome', sa.String), sa.column('size', sa.String), sa.column('quality', sa.String),
                       sa.column('input_tokens', sa.Integer), sa.column('output_tokens', sa.Integer),
                       sa.column('api_key_id', sa.String), sa.column('job_id', sa.String),
                       sa.column('amount_micros', sa.BigInteger), sa.column('upstream_cost_micros', sa.BigInteger),
                       sa.column('model', sa.String), sa.column('created_at', sa.DateTime))
    for (image_id, status, size, quality, input_tokens, output_tokens, job_id, served, finished,
         key_id, job_model) in rows:
        if status not in ('succeeded', 'failed', 'canceled'):
            continue
        kind = 'charge' if status == 'succeeded' else 'release'
        described = {"outcome": status, "size": size, "quality": quality, "input_tokens": input_tokens,
                     "output_tokens": output_tokens}
        updated = connection.execute(sa.update(entries).where(entries.c.job_image_id == image_id,
                                                              entries.c.kind == kind).values(described))
        if updated.rowcount == 0:
            connection.execute(sa.insert(entries).values(
                api_key_id=key_id, job_id=job_id, job_image_id=image_id, kind=kind, amount_micros=0,
                upstream_cost_micros=0, model=served or job_model, created_at=finished, **described))


def downgrade() -> None:
    with op.batch_alter_table('ledger_entries', schema=None) as batch_op:
        batch_op.drop_constraint('fk_ledger_entries_job_id_jobs', type_='foreignkey')
        batch_op.drop_constraint('fk_ledger_entries_job_image_id_job_images', type_='foreignkey')
        batch_op.create_foreign_key(op.f('fk_ledger_entries_job_id_jobs'), 'jobs', ['job_id'], ['id'])
        batch_op.create_foreign_key(op.f('fk_ledger_entries_job_image_id_job_images'), 'job_images',
                                    ['job_image_id'], ['id'])
        batch_op.drop_column('output_tokens')
        batch_op.drop_column('input_tokens')
        batch_op.drop_column('quality')
        batch_op.drop_column('size')
        batch_op.drop_column('outcome')
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.drop_index('ix_jobs_api_key_id_request_hash')
    op.drop_table('key_spend')
    with op.batch_alter_table('api_keys', schema=None) as batch_op:
        batch_op.drop_column('charged_micros')
