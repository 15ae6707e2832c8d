"""``imagegate batch``: one job per line of a JSONL file, resumable without paying twice.

Each line is a JSON object: the body of ``POST /v1/images/generations`` (``prompt``, and
optionally ``model``, ``n``, ``size``, ``quality``, …) plus an ``id`` naming the line (letters,
digits, ``.``, ``_``, ``-``; unique in the file). The file is checked whole before anything is
sent: one bad line sends nothing.

A line's images are written as ``OUT/<id>_<index>.<ext>``, and its outcome is appended to the
results file (JSONL, one object per line run: ``id``, ``job_id``, ``status``, ``images`` (their
paths), ``cost_usd``, ``error``) once its images are on disk.

Resuming: each line is submitted with an ``Idempotency-Key`` derived from its id and its content,
so a line sent again, after an interruption, gets the job it already has (the gateway keeps keys
for 24 h) and is charged once; a line whose outcome is in the results file (and whose images are
still on disk) is not sent at all. ``--retry-failed`` runs the lines recorded as failed, partial
or canceled again, as new jobs (their key also names the job they replace).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from imagegate.client import ClientError, ExitCode, GatewayClient, Unreachable

ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
EXTENSIONS = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp"}
RETRIED = ("failed", "partial", "canceled")


class BatchFileError(ValueError):
    """The batch file cannot be run as it is (the message names the line)."""


@dataclass(frozen=True)
class Line:
    id: str
    body: dict[str, Any]
    number: int

    def idempotency_key(self, *, replacing: str | None = None) -> str:
        """The same for the same line (id and content), whatever the run: ``replacing`` names the
        job a retry replaces, so that a retry is a new job (and itself resumable)."""
        canonical = json.dumps(
            {"id": self.id, "body": self.body, "replacing": replacing},
            sort_keys=True,
            separators=(",", ":"),
            ensure_ascii=False,
        )
        return "imagegate-batch-" + hashlib.sha256(canonical.encode()).hexdigest()[:48]


def read_lines(path: Path) -> list[Line]:
    """Every line of the batch file, checked: JSON objects with a unique, file-safe ``id`` and a
    ``prompt``. Blank lines are skipped."""
    lines: list[Line] = []
    seen: dict[str, int] = {}
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise BatchFileError(f"{path}: cannot be read ({exc})") from None
    for number, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        where = f"{path}:{number}"
        try:
            item = json.loads(raw)
        except ValueError as exc:
            raise BatchFileError(f"{where}: not JSON ({exc})") from None
        if not isinstance(item, dict):
            raise BatchFileError(f"{where}: a line must be a JSON object")
        line_id = item.pop("id", None)
        if isinstance(line_id, int) and not isinstance(line_id, bool):
            line_id = str(line_id)
        if not isinstance(line_id, str) or not ID_PATTERN.match(line_id):
            raise BatchFileError(
                f"{where}: 'id' must be a name of letters, digits, '.', '_' or '-' (it names the line's files)"
            )
        if line_id in seen:
            raise BatchFileError(f"{where}: the id '{line_id}' is already used on line {seen[line_id]}")
        if not isinstance(item.get("prompt"), str) or not item["prompt"].strip():
            raise BatchFileError(f"{where}: 'prompt' must be a non-empty string")
        seen[line_id] = number
        lines.append(Line(line_id, item, number))
    if not lines:
        raise BatchFileError(f"{path}: no lines to run")
    return lines


def read_results(path: Path) -> dict[str, dict[str, Any]]:
    """The outcomes recorded so far, by line id (the last one of an id wins). A last line cut
    short by an interruption is ignored."""
    found: dict[str, dict[str, Any]] = {}
    if not path.exists():
        return found
    for raw in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(raw)
        except ValueError:
            continue
        if isinstance(record, dict) and isinstance(record.get("id"), str):
            found[record["id"]] = record
    return found


def _end_last_line(path: Path) -> None:
    """A results file whose last line an interruption cut short gets its newline, so that the
    next record starts a line of its own."""
    if path.exists() and path.stat().st_size:
        with path.open("rb+") as handle:
            handle.seek(-1, os.SEEK_END)
            if handle.read(1) != b"\n":
                handle.write(b"\n")


def _done(record: dict[str, Any], out: Path) -> bool:
    """Whether a recorded line is finished: its images are all still on disk."""
    return all((out / Path(p).name).exists() for p in record.get("images") or [])


def image_path(out: Path, name: str, image: dict[str, Any]) -> Path:
    ext = EXTENSIONS.get(str(image.get("mime_type")), "bin")
    return out / f"{name}_{image['index']}.{ext}"


def save_images(client: GatewayClient, view: dict[str, Any], out: Path, name: str, saved: dict[int, Path]) -> None:
    """Download the job's delivered images not yet saved (into ``saved``, by index)."""
    for image in view["images"]:
        if image["status"] == "succeeded" and image["index"] not in saved and image.get("url"):
            path = image_path(out, name, image)
            client.download(image["url"], path)
            saved[image["index"]] = path


@dataclass
class Tally:
    """What a batch run did, for its progress bar and its summary."""

    total: int
    skipped: int = 0
    images_total: int = 0
    images_done: int = 0
    cost: Decimal = Decimal(0)
    outcomes: dict[str, str] = field(default_factory=dict)
    """status by line id, recorded earlier or in this run ("unreachable": not run)."""
    records: list[dict[str, Any]] = field(default_factory=list)
    """The records written in this run."""

    def exit_code(self) -> ExitCode:
        statuses = set(self.outcomes.values())
        if "unreachable" in statuses:
            return ExitCode.UNREACHABLE
        if statuses <= {"succeeded"}:
            return ExitCode.OK
        if statuses & {"succeeded", "partial"}:
            return ExitCode.PARTIAL
        return ExitCode.FAILED

    def summary(self, results: Path) -> dict[str, Any]:
        counts = {s: sum(1 for v in self.outcomes.values() if v == s) for s in sorted(set(self.outcomes.values()))}
        return {
            "results": str(results),
            "lines": self.total,
            "skipped": self.skipped,
            "statuses": counts,
            "images": self.images_done,
            "cost_usd": f"{self.cost:.6f}",
            "jobs": self.records,
        }


@dataclass
class BatchRun:
    client: GatewayClient
    out: Path
    results: Path
    concurrency: int
    retry_failed: bool = False
    on_change: Callable[[Tally], None] = lambda tally: None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def run(self, lines: list[Line]) -> Tally:
        self.out.mkdir(parents=True, exist_ok=True)
        recorded = read_results(self.results)
        _end_last_line(self.results)
        tally = Tally(total=len(lines))
        todo: list[tuple[Line, str | None]] = []
        for line in lines:
            record = recorded.get(line.id)
            if record is not None and _done(record, self.out):
                if self.retry_failed and record.get("status") in RETRIED:
                    todo.append((line, record.get("job_id")))
                    continue
                tally.skipped += 1
                tally.outcomes[line.id] = str(record.get("status"))
                continue
            # not recorded (or its files are gone): send it; its key finds the job it may already have
            todo.append((line, str(record["replacing"]) if record and record.get("replacing") else None))
        tally.images_total = sum(int(line.body.get("n") or 1) for line, _ in todo)
        self.on_change(tally)
        pool = ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="batch")
        try:
            futures = [pool.submit(self._one, line, replacing, tally) for line, replacing in todo]
            for future in as_completed(futures):
                future.result()
        except BaseException:  # Ctrl-C: start no other line; those in flight are the caller's to end
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        pool.shutdown()
        return tally

    def _one(self, line: Line, replacing: str | None, tally: Tally) -> None:
        saved: dict[int, Path] = {}
        view: dict[str, Any] | None = None
        try:
            submitted = self.client.submit(line.body, idempotency_key=line.idempotency_key(replacing=replacing))
            view = submitted
            for view in self.client.follow(submitted["id"]):
                before = len(saved)
                save_images(self.client, view, self.out, line.id, saved)
                if len(saved) != before:
                    with self._lock:
                        tally.images_done += len(saved) - before
                    self.on_change(tally)
        except Unreachable:
            with self._lock:
                tally.outcomes[line.id] = "unreachable"  # not recorded: the next run sends it again
            self.on_change(tally)
            return
        except ClientError as exc:
            record = self._record(line, view, saved, replacing, error=exc.as_dict())
        else:
            record = self._record(line, view, saved, replacing)
        with self._lock:
            tally.outcomes[line.id] = record["status"]
            tally.cost += Decimal(record["cost_usd"])
            tally.records.append(record)
            with self.results.open("a", encoding="utf-8") as handle:
                handle.write(json.dumps(record, ensure_ascii=False) + "\n")
                handle.flush()
        self.on_change(tally)

    def _record(
        self,
        line: Line,
        view: dict[str, Any] | None,
        saved: dict[int, Path],
        replacing: str | None,
        *,
        error: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        errors = [i["error"] for i in (view or {}).get("images", []) if i.get("error")]
        status = "failed" if error is not None or view is None else str(view["status"])
        return {
            "id": line.id,
            "line": line.number,
            "job_id": view["id"] if view else None,
            "status": status,
            "images": [str(saved[i]) for i in sorted(saved)],
            "cost_usd": str(view["cost_usd"]) if view else "0.000000",
            "error": error or (errors[0] if errors else None) or (view or {}).get("error"),
            "replacing": replacing,
        }
