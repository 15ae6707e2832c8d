"""``imagegate``: serve, worker, migrate, keys, usage; and, against a running gateway, generate,
batch and jobs (imagegate/remote.py)."""

from __future__ import annotations

import asyncio
import json
import logging
import logging.config
import socket
import sys
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, NoReturn, TypeVar

import typer
from pydantic import BaseModel, ValidationError
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from sqlalchemy.ext.asyncio import AsyncSession

from api.routes.usage import parse_when
from core import key_service
from core.billing.repo import usage_query
from core.billing.reports import METRICS, UsageRow, parse_groups, report, rows_from, to_csv, total
from core.config import Settings, get_settings
from core.db import async_session_factory, create_async_db_engine
from core.errors import GatewayError
from core.key_service import KeyCreate, WebhookPolicy, key_view
from core.logcontext import logging_config
from core.migrate import upgrade_head
from core.routing import load_for_settings
from imagegate import remote
from imagegate.access_log import uvicorn_log_config

T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)

app = typer.Typer(help="imagegate: a queued image-generation gateway.", no_args_is_help=True,
                  pretty_exceptions_enable=False)
keys_app = typer.Typer(help="Manage API keys.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
remote.register(app)
err = Console(stderr=True)
WORKER_HEALTHCHECK_S = 60
"""How long `serve --workers N` waits for an API process to answer uvicorn's health check."""


def _logging(settings: Settings) -> None:
    logging.config.dictConfig(logging_config(settings.log_format, settings.log_level))
    # warnings (Celery's about running as root, deprecations) become records, in the same format
    logging.captureWarnings(settings.log_format == "json")


def _say(settings: Settings, text: str) -> None:
    """A line for the operator: on the console, or a log record in the JSON format (so that
    every line of the output is a JSON object)."""
    if settings.log_format == "json":
        logging.getLogger("imagegate").info(text)
    else:
        err.print(text)


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
              "log_config": uvicorn_log_config(settings.log_format, settings.log_level),
              "timeout_graceful_shutdown": 30}
    if settings.redis_url:
        _say(settings, f"imagegate (distributed) on {settings.resolved_public_url}")
        # with --workers, uvicorn's supervisor kills a process that does not answer its health
        # check within this many seconds; its default (5 s) is shorter than an API process takes
        # to import and start on a busy machine, which then never comes up
        uvicorn.run("api.main:create_distributed_app", factory=True, workers=workers,
                    timeout_worker_healthcheck=WORKER_HEALTHCHECK_S, **common)  # type: ignore[arg-type]
    else:
        from imagegate.embedded import create_embedded_app

        if workers != 1:
            raise typer.BadParameter("embedded mode runs one process; set IMAGEGATE_REDIS_URL to scale")
        _say(settings, f"imagegate (embedded) on {settings.resolved_public_url}")
        uvicorn.run(create_embedded_app(settings), **common)  # type: ignore[arg-type]


def _create_first_key(settings: Settings) -> None:
    catalogue = load_for_settings(settings)

    async def first(session: AsyncSession) -> str | None:
        if await key_service.any_key(session):
            return None
        _, secret = await key_service.create_key(session, KeyCreate(name="default"), catalogue=catalogue)
        return secret

    secret = _run(settings, first)
    if secret is None:
        err.print("API keys exist already; 'imagegate keys create --name NAME' makes another.")
        return
    url = settings.resolved_public_url
    err.print(
        "\n[bold]Your first API key[/bold] (named 'default'; shown once, keep it):\n\n"
        f"    {secret}\n\n"
        "Try it:\n"
        f"    curl {url}/v1/images/generations -H 'Authorization: Bearer {secret}' \\\n"
        "         -H 'Content-Type: application/json' -d '{\"prompt\": \"a lighthouse at dusk\"}'\n",
        highlight=False, soft_wrap=True,
    )


@app.command()
def worker(
    hostname: Annotated[str | None, typer.Option(help="Celery node name.")] = None,
    beat: Annotated[bool, typer.Option(
        "--beat", help="Also run Celery beat: the periodic retention clean-up (one worker is enough).")] = False,
) -> None:
    """Run a Celery worker for distributed mode (an event-loop pool, IMAGEGATE_WORKER_CONCURRENCY images at once)."""
    from worker.celery_app import create_celery_app, run_worker, serve_metrics
    from worker.runtime import WorkerRuntime

    settings = get_settings()
    _logging(settings)
    if not settings.redis_url:
        raise typer.BadParameter("'imagegate worker' is for distributed mode: set IMAGEGATE_REDIS_URL")
    runtime = WorkerRuntime.build(settings)
    if settings.worker_metrics_port:
        serve_metrics(settings.host, settings.worker_metrics_port)
    # the runtime's clients are closed on the pool's event loop as the worker shuts down
    code = run_worker(create_celery_app(runtime, keep_logging=settings.log_format == "json"), runtime,
                      hostname or f"imagegate@{socket.gethostname()}", beat=beat)
    if code:
        raise typer.Exit(code)


@app.command()
def migrate() -> None:
    """Bring the database schema up to date (alembic upgrade head)."""
    upgrade_head(get_settings())


def _run(settings: Settings, work: Callable[[AsyncSession], Awaitable[T]]) -> T:
    """Migrate, then run ``work`` with a database session (the same async code the API runs)."""
    upgrade_head(settings)

    async def main() -> T:
        engine = create_async_db_engine(settings.resolved_database_url, pool_size=1, max_overflow=1)
        try:
            async with async_session_factory(engine)() as session:
                return await work(session)
        finally:
            await engine.dispose()

    return asyncio.run(main())


def _fail(message: str) -> NoReturn:
    err.print(f"[red]{escape(message)}[/red]")
    raise typer.Exit(1)


def _validated(model: type[M], values: dict[str, Any]) -> M:
    """The key service's own validation (the admin API's), as the CLI's option names."""
    try:
        return model.model_validate({k: v for k, v in values.items() if v is not None})
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        field = str(first["loc"][0]) if first.get("loc") else ""
        option = "--" + field.replace("_", "-") if field else "a value"
        raise typer.BadParameter(f"{option}: {first['msg']}") from None


@keys_app.command("create")
def keys_create(
    name: Annotated[str, typer.Option("--name", help="A unique name for the key.")],
    budget_usd: Annotated[str | None, typer.Option("--budget-usd", help="Hard cap on total spend.")] = None,
    monthly_budget_usd: Annotated[str | None, typer.Option("--monthly-budget-usd",
                                                           help="Hard cap per calendar month.")] = None,
    rpm: Annotated[int | None, typer.Option("--rpm", help="Requests per minute.")] = None,
    images_per_minute: Annotated[int | None, typer.Option("--images-per-minute")] = None,
    models: Annotated[str | None, typer.Option("--models", help="Allowed model ids, comma-separated.")] = None,
    markup: Annotated[str | None, typer.Option("--markup", help="This key's markup, e.g. 1.25.")] = None,
    webhook_url: Annotated[str | None, typer.Option("--webhook-url",
                                                    help="The webhook of the key's jobs that name none.")] = None,
    own_webhook_secret: Annotated[bool, typer.Option(
        "--own-webhook-secret", help="Sign the key's webhooks with a secret of its own (printed once).")] = False,
) -> None:
    """Create a key; its secret is printed once, alone on the last line of stdout."""
    settings = get_settings()
    spec = _validated(KeyCreate, {
        "name": name, "budget_usd": budget_usd, "monthly_budget_usd": monthly_budget_usd, "rpm": rpm,
        "images_per_minute": images_per_minute, "markup": markup, "webhook_url": webhook_url,
        "webhook_secret": "new" if own_webhook_secret else None,
        "models": [m.strip() for m in models.split(",") if m.strip()] if models else None})
    catalogue = load_for_settings(settings)
    policy = WebhookPolicy.from_settings(settings)
    try:
        key, secret, webhook_secret = _run(settings, lambda session: key_service.create_key_with_webhook(
            session, spec, catalogue=catalogue, webhooks=policy))
    except GatewayError as exc:
        _fail(exc.message)
    err.print(f"Created key [bold]{escape(key.name)}[/bold] ({key.prefix}…). Store the secret now: "
              "it is not shown again.")
    if webhook_secret is not None:
        err.print(f"Its webhooks are signed with its own secret (shown once): {webhook_secret}", highlight=False)
    print(secret)


@keys_app.command("list")
def keys_list() -> None:
    """List keys (never their secrets)."""
    settings = get_settings()
    found = _run(settings, key_service.list_keys)
    table = Table("name", "prefix", "created", "status", "budget", "committed", "rpm", "img/min", "models")
    for key in found:
        view = key_view(key)
        table.add_row(escape(key.name), key.prefix + "…", key.created_at.strftime("%Y-%m-%d %H:%M"),
                      "revoked" if key.revoked_at else "active",
                      f"${view['budget_usd']}" if view["budget_usd"] is not None else "-",
                      f"${view['committed_usd']}", str(key.rpm or "-"), str(key.images_per_minute or "-"),
                      ",".join(key.models_allowed) if key.models_allowed else "all")
    Console(width=200).print(table)


@keys_app.command("revoke")
def keys_revoke(name: Annotated[str, typer.Argument(help="The key's name (or id).")]) -> None:
    """Revoke a key: it is refused from the next request on."""
    settings = get_settings()
    try:
        _run(settings, lambda session: key_service.revoke_key(session, name))
    except GatewayError as exc:
        _fail(exc.message)
    err.print(f"Revoked key {escape(name)}.")


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
        start = parse_when(since, param="--since", end=False)
        stop = parse_when(until, param="--until", end=True)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    except GatewayError as exc:
        raise typer.BadParameter(exc.message) from None
    if fmt not in ("table", "csv", "json"):
        raise typer.BadParameter("--format must be table, csv or json")

    async def load(session: AsyncSession) -> list[UsageRow]:
        key_id = (await key_service.find_key(session, key)).id if key is not None else None
        dialect = session.get_bind().dialect.name
        query = usage_query(dialect=dialect, group_by=groups, key_id=key_id, since=start, until=stop)
        return rows_from((await session.execute(query)).all(), groups)

    try:
        rows = _run(settings, load)
    except GatewayError as exc:
        _fail(exc.message)
    if fmt == "csv":
        sys.stdout.write(to_csv(rows, group_by=groups))
    elif fmt == "json":
        print(json.dumps(report(rows, group_by=groups, since=start, until=stop), indent=2))
    else:
        table = Table(*groups, *METRICS, title="imagegate usage")
        for row in rows:
            data = row.as_dict()
            cells = [escape(str(data[g])) if data[g] is not None else "" for g in groups]
            table.add_row(*cells, *[str(data[m]) for m in METRICS])
        totals = total(rows).as_dict()
        table.add_row("TOTAL", *[""] * (len(groups) - 1), *[str(totals[m]) for m in METRICS], style="bold")
        Console(width=220).print(table)


def main() -> None:
    app()
