"""``imagegate``: serve, worker, migrate, keys."""

from __future__ import annotations

import json
import logging
import socket
import sys
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table
from sqlalchemy import select
from sqlalchemy.orm import sessionmaker

from core.billing.pricing import usd
from core.billing.reports import METRICS, parse_groups, report, rows_from, to_csv, total, usage_query
from core.config import Settings, get_settings
from core.db import create_sync_engine, sync_sessionmaker
from core.errors import GatewayError
from core.keys import generate_key
from core.migrate import upgrade_head
from core.models import ApiKey
from core.routing import load_for_settings

app = typer.Typer(help="imagegate: a queued image-generation gateway.", no_args_is_help=True,
                  pretty_exceptions_enable=False)
keys_app = typer.Typer(help="Manage API keys.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
err = Console(stderr=True)


def _logging(settings: Settings) -> None:
    logging.basicConfig(level=settings.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


@app.command()
def serve(
    workers: Annotated[int, typer.Option(help="API processes (distributed mode only).")] = 1,
    first_key: Annotated[bool, typer.Option(
        "--first-key", help="If no API key exists yet, create one named 'default' and print it.")] = False,
) -> None:
    """Migrate the database if needed and start the API (embedded mode: also the worker)."""
    import uvicorn

    settings = get_settings()
    _logging(settings)
    upgrade_head(settings)
    if first_key:
        _create_first_key(settings)
    common = {"host": settings.host, "port": settings.port, "log_level": settings.log_level.lower(),
              "timeout_graceful_shutdown": 30}
    if settings.redis_url:
        err.print(f"imagegate (distributed) on {settings.resolved_public_url}")
        uvicorn.run("api.main:create_distributed_app", factory=True, workers=workers, **common)  # type: ignore[arg-type]
    else:
        from imagegate.embedded import create_embedded_app

        if workers != 1:
            raise typer.BadParameter("embedded mode runs one process; set IMAGEGATE_REDIS_URL to scale")
        err.print(f"imagegate (embedded) on {settings.resolved_public_url}")
        uvicorn.run(create_embedded_app(settings), **common)  # type: ignore[arg-type]


def _create_first_key(settings: Settings) -> None:
    sessions = sync_sessionmaker(create_sync_engine(settings.resolved_database_url, pool_size=1, max_overflow=1))
    with sessions.begin() as session:
        if session.scalar(select(ApiKey.id).limit(1)) is not None:
            err.print("API keys exist already; 'imagegate keys create --name NAME' makes another.")
            return
        new = generate_key()
        session.add(ApiKey(id=new.id, name="default", prefix=new.prefix, secret_hash=new.secret_hash))
    url = settings.resolved_public_url
    err.print(
        "\n[bold]Your first API key[/bold] (named 'default'; shown once, keep it):\n\n"
        f"    {new.secret}\n\n"
        "Try it:\n"
        f"    curl {url}/v1/images/generations -H 'Authorization: Bearer {new.secret}' \\\n"
        "         -H 'Content-Type: application/json' -d '{\"prompt\": \"a lighthouse at dusk\"}'\n",
        highlight=False, soft_wrap=True,
    )


@app.command()
def worker(
    hostname: Annotated[str | None, typer.Option(help="Celery node name.")] = None,
) -> None:
    """Run a Celery worker for distributed mode (thread pool, IMAGEGATE_WORKER_CONCURRENCY)."""
    from worker.celery_app import create_celery_app, worker_argv
    from worker.runtime import WorkerRuntime

    settings = get_settings()
    _logging(settings)
    if not settings.redis_url:
        raise typer.BadParameter("'imagegate worker' is for distributed mode: set IMAGEGATE_REDIS_URL")
    runtime = WorkerRuntime.build(settings)
    celery = create_celery_app(runtime)
    try:
        celery.worker_main(worker_argv(settings, hostname=hostname or f"imagegate@{socket.gethostname()}"))
    finally:
        runtime.close()


@app.command()
def migrate() -> None:
    """Bring the database schema up to date (alembic upgrade head)."""
    upgrade_head(get_settings())


def _sessions(settings: Settings) -> sessionmaker[Any]:
    upgrade_head(settings)
    return sync_sessionmaker(create_sync_engine(settings.resolved_database_url, pool_size=1, max_overflow=1))


def _micros(usd_text: str | None, option: str) -> int | None:
    if usd_text is None:
        return None
    try:
        value = Decimal(usd_text)
    except InvalidOperation:
        raise typer.BadParameter(f"{option} must be a number of dollars, e.g. 25 or 12.50") from None
    if value < 0:
        raise typer.BadParameter(f"{option} cannot be negative")
    return int((value * 1_000_000).to_integral_value())


@keys_app.command("create")
def keys_create(
    name: Annotated[str, typer.Option("--name", help="A unique name for the key.")],
    budget_usd: Annotated[str | None, typer.Option("--budget-usd", help="Hard cap on total spend.")] = None,
    monthly_budget_usd: Annotated[str | None, typer.Option("--monthly-budget-usd",
                                                           help="Hard cap per calendar month.")] = None,
    rpm: Annotated[int | None, typer.Option("--rpm", min=1, help="Requests per minute.")] = None,
    images_per_minute: Annotated[int | None, typer.Option("--images-per-minute", min=1)] = None,
    models: Annotated[str | None, typer.Option("--models", help="Allowed model ids, comma-separated.")] = None,
    markup: Annotated[str | None, typer.Option("--markup", help="This key's markup, e.g. 1.25.")] = None,
) -> None:
    """Create a key; its secret is printed once, alone on the last line of stdout."""
    settings = get_settings()
    new = generate_key()
    allowed = None
    if models:
        catalogue = load_for_settings(settings)
        try:
            allowed = [catalogue.resolve(m.strip()).spec.id for m in models.split(",") if m.strip()]
        except GatewayError as exc:
            raise typer.BadParameter(exc.message) from None
    if markup is not None:
        try:
            if Decimal(markup) <= 0:
                raise InvalidOperation
        except InvalidOperation:
            raise typer.BadParameter("--markup must be a positive number, e.g. 1.25") from None
    with _sessions(settings).begin() as session:
        if session.scalar(select(ApiKey).where(ApiKey.name == name)) is not None:
            err.print(f"[red]a key named {name!r} already exists[/red]")
            raise typer.Exit(1)
        session.add(ApiKey(id=new.id, name=name, prefix=new.prefix, secret_hash=new.secret_hash,
                           budget_micros=_micros(budget_usd, "--budget-usd"),
                           monthly_budget_micros=_micros(monthly_budget_usd, "--monthly-budget-usd"),
                           rpm=rpm, images_per_minute=images_per_minute, models_allowed=allowed,
                           markup=markup, committed_micros=0))
    err.print(f"Created key [bold]{name}[/bold] ({new.prefix}…). Store the secret now: "
              "it is not shown again.")
    print(new.secret)


@keys_app.command("list")
def keys_list() -> None:
    """List keys (never their secrets)."""
    settings = get_settings()
    with _sessions(settings)() as session:
        keys = list(session.scalars(select(ApiKey).order_by(ApiKey.created_at)))
    table = Table("name", "prefix", "created", "status", "budget", "committed", "rpm", "img/min", "models")
    for key in keys:
        table.add_row(key.name, key.prefix + "…", key.created_at.strftime("%Y-%m-%d %H:%M"),
                      "revoked" if key.revoked_at else "active",
                      f"${usd(key.budget_micros)}" if key.budget_micros is not None else "-",
                      f"${usd(key.committed_micros)}", str(key.rpm or "-"), str(key.images_per_minute or "-"),
                      ",".join(key.models_allowed) if key.models_allowed else "all")
    Console(width=200).print(table)


@keys_app.command("revoke")
def keys_revoke(name: Annotated[str, typer.Argument(help="The key's name.")]) -> None:
    """Revoke a key: it is refused from the next request on."""
    settings = get_settings()
    with _sessions(settings).begin() as session:
        key = session.scalar(select(ApiKey).where(ApiKey.name == name))
        if key is None:
            err.print(f"[red]no key named {name!r}[/red]")
            raise typer.Exit(1)
        if key.revoked_at is None:
            key.revoked_at = datetime.now(UTC)
    err.print(f"Revoked key {name}.")


@app.command()
def usage(
    key: Annotated[str | None, typer.Option("--key", help="Only this key (name).")] = None,
    since: Annotated[str | None, typer.Option("--since", help="YYYY-MM-DD (UTC).")] = None,
    until: Annotated[str | None, typer.Option("--until", help="YYYY-MM-DD (UTC), inclusive.")] = None,
    group_by: Annotated[str, typer.Option("--group-by", help="key, model, size, quality, day.")] = "key,model,day",
    fmt: Annotated[str, typer.Option("--format", help="table, csv or json.")] = "table",
) -> None:
    """Usage and cost per key, model, size, quality and day, from the ledger's own figures."""
    settings = get_settings()
    try:
        groups = parse_groups(group_by, default=["key", "model", "day"])
        start = _day_bound(since, end=False)
        stop = _day_bound(until, end=True)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    if fmt not in ("table", "csv", "json"):
        raise typer.BadParameter("--format must be table, csv or json")
    sessions = _sessions(settings)
    with sessions() as session:
        key_id = None
        if key is not None:
            found = session.scalar(select(ApiKey).where(ApiKey.name == key))
            if found is None:
                err.print(f"[red]no key named {key!r}[/red]")
                raise typer.Exit(1)
            key_id = found.id
        dialect = session.get_bind().dialect.name
        rows = rows_from(session.execute(usage_query(dialect=dialect, group_by=groups, key_id=key_id,
                                                     since=start, until=stop)).all(), groups)
    if fmt == "csv":
        sys.stdout.write(to_csv(rows, group_by=groups))
    elif fmt == "json":
        print(json.dumps(report(rows, group_by=groups, since=start, until=stop), indent=2))
    else:
        table = Table(*groups, *METRICS, title="imagegate usage")
        for row in rows:
            data = row.as_dict()
            cells = [str(data[g]) if data[g] is not None else "" for g in groups]
            table.add_row(*cells, *[str(data[m]) for m in METRICS])
        totals = total(rows).as_dict()
        table.add_row("TOTAL", *[""] * (len(groups) - 1), *[str(totals[m]) for m in METRICS], style="bold")
        Console(width=220).print(table)


def _day_bound(value: str | None, *, end: bool) -> datetime | None:
    if not value:
        return None
    day = date.fromisoformat(value)
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    return start + timedelta(days=1) if end else start


def main() -> None:
    app()
