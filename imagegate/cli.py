"""``imagegate``: serve, worker, migrate, keys."""

from __future__ import annotations

import logging
import socket
from datetime import UTC, datetime
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table
from sqlalchemy import select
from sqlalchemy.orm import sessionmaker

from core.config import Settings, get_settings
from core.db import create_sync_engine, sync_sessionmaker
from core.keys import generate_key
from core.migrate import upgrade_head
from core.models import ApiKey

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
    sessions = sync_sessionmaker(create_sync_engine(settings.resolved_database_url))
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
    return sync_sessionmaker(create_sync_engine(settings.resolved_database_url))


@keys_app.command("create")
def keys_create(name: Annotated[str, typer.Option("--name", help="A unique name for the key.")]) -> None:
    """Create a key; its secret is printed once, alone on the last line of stdout."""
    settings = get_settings()
    new = generate_key()
    with _sessions(settings).begin() as session:
        if session.scalar(select(ApiKey).where(ApiKey.name == name)) is not None:
            err.print(f"[red]a key named {name!r} already exists[/red]")
            raise typer.Exit(1)
        session.add(ApiKey(id=new.id, name=name, prefix=new.prefix, secret_hash=new.secret_hash))
    err.print(f"Created key [bold]{name}[/bold] ({new.prefix}…). Store the secret now: "
              "it is not shown again.")
    print(new.secret)


@keys_app.command("list")
def keys_list() -> None:
    """List keys (never their secrets)."""
    settings = get_settings()
    with _sessions(settings)() as session:
        keys = list(session.scalars(select(ApiKey).order_by(ApiKey.created_at)))
    table = Table("name", "prefix", "created", "status")
    for key in keys:
        table.add_row(key.name, key.prefix + "…", key.created_at.strftime("%Y-%m-%d %H:%M"),
                      "revoked" if key.revoked_at else "active")
    Console().print(table)


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


def main() -> None:
    app()
