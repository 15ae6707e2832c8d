"""The commands that talk to a running gateway over HTTP: ``generate``, ``batch``, ``jobs``.

They need no database and no settings of the gateway's: only where it is (``--url`` or
``IMAGEGATE_URL``) and an API key (``--api-key`` or ``IMAGEGATE_API_KEY``). Progress goes to
stderr; stdout carries the result (``--json``: one JSON object a script can read). The exit codes
are :class:`imagegate.client.ExitCode`'s.
"""

from __future__ import annotations

import json
import os
import sys
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from imagegate.batch import BatchFileError, BatchRun, Tally, read_lines, save_images
from imagegate.client import ClientError, ExitCode, GatewayClient

DEFAULT_URL = "http://127.0.0.1:2407"
err = Console(stderr=True)
jobs_app = typer.Typer(help="List, show and cancel jobs on a running gateway.", no_args_is_help=True)

UrlOption = Annotated[
    str, typer.Option("--url", envvar="IMAGEGATE_URL", show_envvar=True, help="The gateway's base URL.")
]
KeyOption = Annotated[
    str | None,
    typer.Option(
        "--api-key",
        envvar="IMAGEGATE_API_KEY",
        show_envvar=True,
        help="An API key of the gateway (prefer the variable: options show in the process list).",
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout.")]


def _exit(
    code: ExitCode, message: str | None = None, *, as_json: bool = False, error: ClientError | None = None
) -> NoReturn:
    """Leave with ``code``, saying why on stderr (and, for ``--json``, as ``{"error": …}`` on stdout)."""
    if message:
        err.print(f"[red]{escape(message)}[/red]")
    if as_json and code != ExitCode.OK:
        detail = error.as_dict() if error is not None else {"status": None, "code": None, "message": message}
        _print_json({"error": detail, "exit_code": int(code)})
    raise typer.Exit(int(code))


@contextmanager
def _client(url: str, api_key: str | None, *, as_json: bool = False) -> Iterator[GatewayClient]:
    if not api_key:
        _exit(ExitCode.USAGE, "No API key: set IMAGEGATE_API_KEY or pass --api-key.", as_json=as_json)
    if not url.startswith(("http://", "https://")):
        _exit(ExitCode.USAGE, f"--url must be an http(s) URL, not {url!r}.", as_json=as_json)
    client = GatewayClient(url, api_key)
    try:
        yield client
    except ClientError as exc:
        _exit(exc.exit_code, exc.message, as_json=as_json, error=exc)
    except KeyboardInterrupt:
        _exit(ExitCode.INTERRUPTED, "Interrupted; what was submitted goes on in the gateway.", as_json=as_json)
    finally:
        client.close()


def _print_json(data: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False) + "\n")


# -- generate -----------------------------------------------------------------------------------


class ImageBars:
    """One progress bar per image of a job, and what each says."""

    STYLES = {"queued": "dim", "running": "yellow", "succeeded": "green", "failed": "red", "canceled": "magenta"}

    def __init__(self, progress: Progress, n: int) -> None:
        self.progress = progress
        self.tasks: list[TaskID] = [progress.add_task(f"image {i + 1}", total=None, status="queued") for i in range(n)]

    def show(self, view: dict[str, Any], saved: dict[int, Path]) -> None:
        for image in view["images"]:
            status = str(image["status"])
            task = self.tasks[image["index"]]
            style = self.STYLES.get(status, "")
            label = f"[{style}]{status}[/{style}]" if style else status
            if image["index"] in saved:
                label += f" {escape(saved[image['index']].name)}"
            elif image.get("error"):
                label += f" {escape(str(image['error'].get('message', ''))[:80])}"
            ended = status in ("succeeded", "failed", "canceled")
            self.progress.update(task, total=1 if ended else None, completed=1 if ended else 0, status=label)


def _job_result(view: dict[str, Any], saved: dict[int, Path]) -> dict[str, Any]:
    return {
        "job_id": view["id"],
        "status": view["status"],
        "model": view.get("model"),
        "cost_usd": view["cost_usd"],
        "paths": [str(saved[i]) for i in sorted(saved)],
        "images": [
            {
                "index": i["index"],
                "status": i["status"],
                "path": str(saved[i["index"]]) if i["index"] in saved else None,
                "error": i.get("error"),
            }
            for i in view["images"]
        ],
    }


def _job_exit(status: str) -> ExitCode:
    return {"succeeded": ExitCode.OK, "partial": ExitCode.PARTIAL}.get(status, ExitCode.FAILED)


def generate(
    prompt: Annotated[str, typer.Argument(help="What to draw.")],
    n: Annotated[int, typer.Option("-n", "--n", min=1, max=10, help="How many images.")] = 1,
    model: Annotated[str | None, typer.Option("--model", help="A model id (GET /v1/models).")] = None,
    size: Annotated[str | None, typer.Option("--size", help="WIDTHxHEIGHT, e.g. 1024x1024.")] = None,
    quality: Annotated[str | None, typer.Option("--quality", help="low, medium, high, auto.")] = None,
    output_format: Annotated[str | None, typer.Option("--format", help="png, jpeg or webp.")] = None,
    out: Annotated[Path, typer.Option("--out", help="Where the images are written.")] = Path("."),
    url: UrlOption = DEFAULT_URL,
    api_key: KeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """Make images with one job, watch each one's progress, write them to --out, print the cost."""
    body: dict[str, Any] = {"prompt": prompt, "n": n}
    body.update(
        {
            k: v
            for k, v in {"model": model, "size": size, "quality": quality, "output_format": output_format}.items()
            if v is not None
        }
    )
    saved: dict[int, Path] = {}
    with _client(url, api_key, as_json=as_json) as client:
        submitted = client.submit(body, idempotency_key=f"imagegate-cli-{uuid.uuid4()}")
        view = submitted
        err.print(f"job [bold]{view['id']}[/bold] ({escape(str(view.get('model')))}, {n} image(s))")
        columns = (
            TextColumn("{task.description}"),
            BarColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.fields[status]}"),
        )
        try:
            with Progress(*columns, console=err, transient=False) as progress:
                bars = ImageBars(progress, len(view["images"]))
                for view in client.follow(submitted["id"]):
                    save_images(client, view, out, view["id"], saved)
                    bars.show(view, saved)
        except KeyboardInterrupt:
            _exit(
                ExitCode.INTERRUPTED, f"Interrupted; the job goes on: imagegate jobs show {view['id']}", as_json=as_json
            )
    result = _job_result(view, saved)
    if as_json:
        _print_json(result)
    else:
        for path in result["paths"]:
            print(path)
        err.print(f"{view['status']}: {len(saved)} of {len(view['images'])} image(s), cost ${view['cost_usd']}")
    raise typer.Exit(int(_job_exit(str(view["status"]))))


# -- batch ----------------------------------------------------------------------------------------


def batch(
    file: Annotated[Path, typer.Argument(help="JSONL: one POST /v1/images/generations body per line, with an 'id'.")],
    out: Annotated[Path, typer.Option("--out", help="Where the images are written.")] = Path("."),
    concurrency: Annotated[
        int, typer.Option("--concurrency", "-k", min=1, max=64, help="Lines in flight at once.")
    ] = 4,
    results: Annotated[
        Path | None, typer.Option("--results", help="The results JSONL (default OUT/results.jsonl).")
    ] = None,
    retry_failed: Annotated[
        bool, typer.Option("--retry-failed", help="Run lines recorded as failed, partial or canceled again.")
    ] = False,
    url: UrlOption = DEFAULT_URL,
    api_key: KeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """One job per line, resumable: lines already written are skipped, none is paid twice."""
    try:
        lines = read_lines(file)
    except BatchFileError as exc:
        _exit(ExitCode.USAGE, str(exc), as_json=as_json)
    results_path = results or out / "results.jsonl"
    with _client(url, api_key, as_json=as_json) as client:
        columns = (
            TextColumn("lines"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[detail]}"),
            TimeElapsedColumn(),
        )
        with Progress(*columns, console=err) as progress:
            task = progress.add_task("batch", total=len(lines), detail="")

            def show(tally: Tally) -> None:
                progress.update(
                    task,
                    completed=len(tally.outcomes),
                    detail=f"images {tally.images_done}/{tally.images_total} · ${tally.cost:.6f}"
                    + (f" · {tally.skipped} skipped" if tally.skipped else ""),
                )

            runner = BatchRun(client, out, results_path, concurrency, retry_failed=retry_failed, on_change=show)
            try:
                tally = runner.run(lines)
            except KeyboardInterrupt:
                progress.stop()
                err.print(
                    "[red]Interrupted[/red]; the lines in flight go on in the gateway. Run the same command "
                    "again to resume: nothing is paid twice."
                )
                sys.stderr.flush()
                # the lines in flight are threads blocked on the network: leave without waiting for
                # them (every finished line's record is already written and closed)
                os._exit(int(ExitCode.INTERRUPTED))
    summary = tally.summary(results_path)
    if as_json:
        _print_json(summary)
    else:
        statuses = ", ".join(f"{count} {status}" for status, count in summary["statuses"].items())
        err.print(
            f"{len(lines)} line(s): {statuses}; {tally.skipped} skipped (done before); "
            f"cost of this run ${summary['cost_usd']}; results in {results_path}"
        )
    raise typer.Exit(int(tally.exit_code()))


# -- jobs -----------------------------------------------------------------------------------------


@jobs_app.command("list")
def jobs_list(
    limit: Annotated[int, typer.Option("--limit", min=1, max=100)] = 20,
    status: Annotated[str | None, typer.Option("--status", help="Only jobs in this status.")] = None,
    url: UrlOption = DEFAULT_URL,
    api_key: KeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """The key's most recent jobs."""
    with _client(url, api_key, as_json=as_json) as client:
        page = client.jobs(limit=limit, status=status)
    if as_json:
        _print_json(page)
        return
    table = Table("id", "status", "model", "images", "created")
    for job in page["data"]:
        progress = job["progress"]
        table.add_row(
            job["id"],
            job["status"],
            escape(str(job["model"])),
            f"{progress['succeeded']}/{progress['total']}",
            str(job["created_at"]),
        )
    Console(width=160).print(table)


def _job_command(name: str, summary: str, act: Callable[[GatewayClient, str], dict[str, Any]]) -> None:
    """``imagegate jobs NAME JOB_ID``: ``act`` on the job, then show it."""

    def command(
        job_id: Annotated[str, typer.Argument()],
        url: UrlOption = DEFAULT_URL,
        api_key: KeyOption = None,
        as_json: JsonOption = False,
    ) -> None:
        with _client(url, api_key, as_json=as_json) as client:
            view = act(client, job_id)
        _show(view, as_json=as_json)

    command.__doc__ = summary
    jobs_app.command(name)(command)


_job_command("show", "One job: its status, cost and images.", GatewayClient.job)
_job_command(
    "cancel", "Cancel what of a job has not started (what runs finishes and is delivered).", GatewayClient.cancel
)


def _show(view: dict[str, Any], *, as_json: bool) -> None:
    if as_json:
        _print_json({"job_id": view["id"], **view})
        return
    progress = view["progress"]
    print(
        f"{view['id']}  {view['status']}  {view['model']}  {progress['succeeded']}/{progress['total']} image(s)  "
        f"${view['cost_usd']}"
    )
    for image in view["images"]:
        detail = image.get("url") or (image.get("error") or {}).get("message") or ""
        print(f"  {image['index']}  {image['status']:<9}  {detail}")


def register(app: typer.Typer) -> None:
    app.command()(generate)
    app.command()(batch)
    app.add_typer(jobs_app, name="jobs")


remote_app = typer.Typer(
    help="imagegate: a queued image-generation gateway.", no_args_is_help=True, pretty_exceptions_enable=False
)
"""These commands alone, as ``imagegate generate|batch|jobs`` runs them (imagegate/entry.py)."""
register(remote_app)
