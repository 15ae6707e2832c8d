"""What every log record carries, and the two log formats (``IMAGEGATE_LOG_FORMAT``).

The ids of the work a line is about live in context variables, set where the work starts: the API
middleware (request id: the caller's ``x-request-id`` or a new one), authentication (key prefix),
submit (job id, model), the worker's task (request id carried in the task's headers, job and image
ids, model) and the sweeper (job id). :class:`ContextFilter`, on every handler, copies them onto
each record, so the same fields appear in the API, the worker and the sweeper; a call may also
pass them as ``extra`` (the upstream client gives ``upstream_status`` and ``latency_ms``).

``text`` (the default, for ``make run``) is one readable line; ``json`` is one JSON object per
line with ``time``, ``level``, ``logger``, ``message`` and every field that is set. Secrets never
reach a record: keys are logged by their visible prefix only, query strings are dropped from
request lines (:class:`DropQueryString`: httpx's here, in every process, uvicorn's access log in
``imagegate/access_log.py``) and upstream texts are redacted before they are raised.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterator
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

FIELDS = ("request_id", "job_id", "image_id", "key_prefix", "model", "upstream_status", "latency_ms")
"""The context fields of a record, in the order a JSON line lists them."""

_VARS: dict[str, ContextVar[Any]] = {name: ContextVar(f"imagegate_{name}", default=None) for name in FIELDS}

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s%(context)s"


def bind(**fields: Any) -> list[tuple[ContextVar[Any], Any]]:
    """Set context fields for the code that follows in this context; returns what :func:`unbind`
    takes to put them back."""
    return [(var, var.set(fields[name])) for name, var in _VARS.items() if name in fields]


def unbind(tokens: list[tuple[ContextVar[Any], Any]]) -> None:
    for var, token in reversed(tokens):
        var.reset(token)


@contextlib.contextmanager
def bound(**fields: Any) -> Iterator[None]:
    """The context fields set while the block runs."""
    tokens = bind(**fields)
    try:
        yield
    finally:
        unbind(tokens)


def current(name: str) -> Any:
    return _VARS[name].get()


class ContextFilter(logging.Filter):
    """Puts the context fields on each record (a field given as ``extra`` wins) and, for the text
    format, a ``context`` suffix with those that are set."""

    def filter(self, record: logging.LogRecord) -> bool:
        suffix = []
        for name, var in _VARS.items():
            value = record.__dict__.get(name)
            if value is None:
                value = var.get()
                record.__dict__[name] = value
            if value is not None:
                suffix.append(f"{name}={value}")
        record.context = (" [" + " ".join(suffix) + "]") if suffix else ""
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (UTC, ISO 8601), level, logger, message, the context fields
    that are set, and the exception's traceback if any."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in FIELDS:
            value = record.__dict__.get(name)
            if value is not None:
                line[name] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False, default=str)


def formatter_config(log_format: str) -> dict[str, Any]:
    """A ``logging.config.dictConfig`` formatter for ``log_format``."""
    if log_format == "json":
        return {"()": f"{__name__}.JsonFormatter"}
    return {"format": TEXT_FORMAT}


_URL_ARGUMENT = {"uvicorn.access": 2, "httpx": 1}
"""Which argument of a logger's records is the URL. uvicorn logs a request as
``'%s - "%s %s HTTP/%s" %d'`` with (client address, method, path with query string, HTTP version,
status), the order its ``AccessFormatter`` reads them in; httpx as ``'HTTP Request: %s %s "%s %d %s"'``
with (method, URL, HTTP version, status, reason)."""


class DropQueryString(logging.Filter):
    """Removes the query string from the URL of uvicorn's access records and httpx's request
    records; other records pass unchanged.

    Query strings carry secrets: an API key sent as ``?key=`` (as Google's clients do), the
    ``signature`` of a signed file URL, the signature of a presigned URL a caller sends as an
    image to fetch, the token a webhook receiver takes in its URL. uvicorn's access log writes
    each request's path with its query string, and httpx logs the URL of every request it sends
    (at INFO): the API's image fetches, the worker's upstream calls and webhook deliveries."""

    def filter(self, record: logging.LogRecord) -> bool:
        position = _URL_ARGUMENT.get(record.name)
        args = record.args
        if position is None or not isinstance(args, tuple) or len(args) <= position:
            return True
        url = str(args[position])
        if "?" in url:
            record.args = (*args[:position], url.split("?", 1)[0], *args[position + 1:])
        return True


def logging_config(log_format: str, level: str) -> dict[str, Any]:
    """A ``dictConfig`` sending every record to stderr in ``log_format``, with the context fields,
    and httpx's request records without their query strings."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"context": {"()": f"{__name__}.ContextFilter"},
                    "drop_query_string": {"()": f"{__name__}.DropQueryString"}},
        "loggers": {"httpx": {"filters": ["drop_query_string"]}},
        "formatters": {"imagegate": formatter_config(log_format)},
        "handlers": {
            "imagegate": {
                "class": "logging.StreamHandler",
                "formatter": "imagegate",
                "filters": ["context"],
                "stream": "ext://sys.stderr",
            }
        },
        "root": {"handlers": ["imagegate"], "level": level.upper()},
    }
