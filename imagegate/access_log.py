"""uvicorn's logging without query strings in its access log.

uvicorn writes each request's path with its query string, which may carry a secret (an API key
sent as ``?key=``, as Google's clients do; the ``signature`` of a signed file URL, which opens the
image to whoever holds it). :func:`uvicorn_log_config` puts :class:`core.logcontext.DropQueryString`
on uvicorn's access logger, next to imagegate's own configuration (which puts it on httpx's): it
is the configuration uvicorn applies in every process it starts, so ``--workers N`` is covered too.
"""

from __future__ import annotations

import copy
from typing import Any

from core.logcontext import formatter_config, logging_config


def uvicorn_log_config(log_format: str = "text", level: str = "INFO") -> dict[str, Any]:
    """uvicorn's own logging configuration with ``DropQueryString`` on its access logger and on
    httpx's logger, and imagegate's records (the root logger) in ``log_format`` with their
    context fields (``core/logcontext.py``): in every process uvicorn starts. In the ``json``
    format uvicorn's own lines are JSON objects too."""
    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    ours = logging_config(log_format, level)
    config.setdefault("filters", {}).update(ours["filters"])
    config["formatters"].update(ours["formatters"])
    config["handlers"].update(ours["handlers"])
    config["root"] = ours["root"]
    config["loggers"]["uvicorn.access"]["filters"] = ["drop_query_string"]
    config["loggers"].update(ours["loggers"])
    if log_format == "json":
        for name in ("default", "access"):
            config["formatters"][name] = formatter_config("json")
            config["handlers"][name]["filters"] = ["context"]
    return config
