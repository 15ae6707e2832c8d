"""Request logs without query strings: uvicorn's access log, and httpx's log of the requests
imagegate makes.

Query strings carry secrets: an API key sent as ``?key=`` (as Google's clients do), the
``signature`` of a signed file URL, which opens the image to whoever holds it, and the signature
of a presigned URL a caller sends as an image to fetch. uvicorn's access log writes each request's
path with its query string, and httpx logs the URL of every request it sends (at INFO);
:class:`DropQueryString` keeps the path and drops the query. It is installed through the logging
configuration uvicorn applies in every process it starts (:func:`uvicorn_log_config`), so
``--workers N`` is covered too.
"""

from __future__ import annotations

import copy
import logging
from typing import Any

from core.logcontext import formatter_config, logging_config

_URL_ARGUMENT = {"uvicorn.access": 2, "httpx": 1}
"""Which argument of a logger's records is the URL. uvicorn logs a request as
``'%s - "%s %s HTTP/%s" %d'`` with (client address, method, path with query string, HTTP version,
status), the order its ``AccessFormatter`` reads them in; httpx as ``'HTTP Request: %s %s "%s %d %s"'``
with (method, URL, HTTP version, status, reason)."""


class DropQueryString(logging.Filter):
    """Removes the query string from the URL of uvicorn's access records and httpx's request
    records; other records pass unchanged."""

    def filter(self, record: logging.LogRecord) -> bool:
        position = _URL_ARGUMENT.get(record.name)
        args = record.args
        if position is None or not isinstance(args, tuple) or len(args) <= position:
            return True
        url = str(args[position])
        if "?" in url:
            record.args = (*args[:position], url.split("?", 1)[0], *args[position + 1:])
        return True


def uvicorn_log_config(log_format: str = "text", level: str = "INFO") -> dict[str, Any]:
    """uvicorn's own logging configuration with :class:`DropQueryString` on its access logger and
    on httpx's logger, and imagegate's records (the root logger) in ``log_format`` with their
    context fields (``core/logcontext.py``): in every process uvicorn starts. In the ``json``
    format uvicorn's own lines are JSON objects too."""
    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    ours = logging_config(log_format, level)
    config.setdefault("filters", {})["drop_query_string"] = {"()": f"{__name__}.DropQueryString"}
    config["filters"].update(ours["filters"])
    config["formatters"].update(ours["formatters"])
    config["handlers"].update(ours["handlers"])
    config["root"] = ours["root"]
    config["loggers"]["uvicorn.access"]["filters"] = ["drop_query_string"]
    config["loggers"]["httpx"] = {"filters": ["drop_query_string"]}
    if log_format == "json":
        for name in ("default", "access"):
            config["formatters"][name] = formatter_config("json")
            config["handlers"][name]["filters"] = ["context"]
    return config
