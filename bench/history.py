"""A key with a long past, for scenario g: its jobs, images and ledger rows copied in bulk, in the
database of the bench's own gateway, from one request the key really made.

Every copy is made by the database itself (PostgreSQL: ``INSERT ... SELECT`` over
``generate_series``; SQLite: the same over a recursive CTE, all in one transaction), a few seconds
for a million rows. Copying a real row, column by column as the database reports them, keeps the
copies valid whatever the schema of the commit measured; only the ids are new, the request hashes
are distinct and the timestamps are spread over the 60 days before the run (inside the 90 days that
spend and usage queries look back over). The key's spend counters are left as they were, so its
budget and markup tier do not change: what g measures is the cost of the rows alone.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import sqlalchemy as sa

from core.db import sync_url

DAYS = 60


def _shifted(dialect: str, column: str) -> str:
    """The column's timestamp moved 1..DAYS days back (x is the series' counter)."""
    if dialect == "postgresql":
        return f"{column} - ((x % {DAYS}) + 1) * interval '1 day'"
    # SQLAlchemy stores SQLite datetimes as 'YYYY-MM-DD HH:MM:SS.ffffff'
    return f"strftime('%Y-%m-%d %H:%M:%S', {column}, '-' || ((x % {DAYS}) + 1) || ' days') || substr({column}, 20)"


def _copy(conn: sa.Connection, table: str, *, count: int, where: str, params: dict[str, Any],
          replace: dict[str, str]) -> int:
    """Insert ``count`` copies of each row of ``table`` matching ``where``; ``replace`` gives the SQL
    of the columns that change (``x`` is the copy's number, 1..count). Returns the rows inserted."""
    dialect = conn.dialect.name
    quote = conn.dialect.identifier_preparer.quote
    columns = sa.inspect(conn).get_columns(table)
    names, values = [], []
    for column in columns:
        name = column["name"]
        if name in replace:
            if replace[name]:  # "" leaves the column out (an autoincrement id)
                names.append(quote(name))
                values.append(replace[name])
            continue
        names.append(quote(name))
        source = f"t.{quote(name)}"
        values.append(_shifted(dialect, source) if isinstance(column["type"], sa.DateTime) else source)
    select = f"SELECT {', '.join(values)} FROM {quote(table)} t, {{series}} WHERE {where}"
    if dialect == "postgresql":
        sql = f"INSERT INTO {quote(table)} ({', '.join(names)}) " + select.format(
            series="generate_series(1, :count) AS s(x)")
    else:
        sql = (f"WITH RECURSIVE s(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM s WHERE x < :count) "
               f"INSERT INTO {quote(table)} ({', '.join(names)}) " + select.format(series="s"))
    return int(conn.execute(sa.text(sql), {**params, "count": count}).rowcount or 0)


def seed(database_url: str, job_id: str, *, jobs: int, ledger_rows: int) -> dict[str, Any]:
    """Give the key of job ``job_id`` ``jobs`` more jobs (each with its first image) and about
    ``ledger_rows`` more ledger rows, copies of that job's. Returns what was inserted and how long
    it took."""
    started = time.monotonic()
    tag = uuid.uuid4().hex[:8]
    job_prefix, image_prefix = f"job_hist{tag}_", f"img_hist{tag}_"
    engine = sa.create_engine(sync_url(database_url), connect_args={"timeout": 120}
                              if database_url.startswith("sqlite") else {})
    try:
        with engine.begin() as conn:
            seed_rows = int(conn.execute(sa.text("SELECT count(*) FROM ledger_entries WHERE job_id = :j"),
                                         {"j": job_id}).scalar_one())
            if not seed_rows:
                raise RuntimeError(f"job {job_id} has no ledger rows to copy")
            new_job = "(CAST(:jp AS TEXT) || x)"
            copies = {
                "jobs": _copy(conn, "jobs", count=jobs, where="t.id = :seed",
                              params={"seed": job_id, "jp": job_prefix},
                              replace={"id": new_job, "request_hash": new_job, "idempotency_key": "NULL"}),
                "job_images": _copy(conn, "job_images", count=jobs, where="t.job_id = :seed AND t.id = :first",
                                    params={"seed": job_id, "jp": job_prefix, "ip": image_prefix,
                                            "first": _first_image(conn, job_id)},
                                    replace={"id": "(CAST(:ip AS TEXT) || x)", "job_id": new_job}),
                "ledger_entries": _copy(
                    conn, "ledger_entries", count=-(-ledger_rows // seed_rows), where="t.job_id = :seed",
                    params={"seed": job_id, "jp": job_prefix, "ip": image_prefix, "jobs": jobs},
                    replace={"id": "", "job_id": "(CAST(:jp AS TEXT) || ((x % :jobs) + 1))",
                             "job_image_id": "CASE WHEN t.job_image_id IS NULL THEN NULL "
                                             "ELSE (CAST(:ip AS TEXT) || ((x % :jobs) + 1)) END"}),
            }
            key_id = conn.execute(sa.text("SELECT api_key_id FROM jobs WHERE id = :j"), {"j": job_id}).scalar_one()
            # what the key now has (rowcount is -1 for INSERT ... SELECT on SQLite)
            inserted = {table: int(conn.execute(sa.text(sql), {"k": key_id}).scalar_one()) for table, sql in (
                ("jobs", "SELECT count(*) FROM jobs WHERE api_key_id = :k"),
                ("job_images", "SELECT count(*) FROM job_images i JOIN jobs j ON j.id = i.job_id "
                               "WHERE j.api_key_id = :k"),
                ("ledger_entries", "SELECT count(*) FROM ledger_entries WHERE api_key_id = :k"))}
        if engine.dialect.name == "postgresql":
            with engine.connect() as conn:  # what autovacuum would have done long before
                conn.execute(sa.text("ANALYZE jobs, job_images, ledger_entries"))
                conn.commit()
    finally:
        engine.dispose()
    return {"inserted": inserted, "copied": copies, "seconds": round(time.monotonic() - started, 1)}


def _first_image(conn: sa.Connection, job_id: str) -> str:
    row = conn.execute(sa.text("SELECT id FROM job_images WHERE job_id = :j ORDER BY id LIMIT 1"),
                       {"j": job_id}).first()
    if row is None:
        raise RuntimeError(f"job {job_id} has no image to copy")
    return str(row[0])
