"""core.logcontext.DropQueryString, on uvicorn's access records (imagegate.access_log) and httpx's
request records in every process: they lose their query string, nothing else."""

from __future__ import annotations

import logging
import logging.config

import httpx
import pytest

from core.logcontext import DropQueryString, logging_config
from imagegate.access_log import uvicorn_log_config


def access_record(path: str) -> logging.LogRecord:
    # the arguments uvicorn's HTTP protocols log a request with
    return logging.LogRecord("uvicorn.access", logging.INFO, __file__, 1, '%s - "%s %s HTTP/%s" %d',
                             ("127.0.0.1:5000", "GET", path, "1.1", 200), None)


@pytest.mark.parametrize(("path", "logged"), [
    ("/v1/models?key=ig-secret", "/v1/models"),
    ("/v1/files/img_1?expires=1&signature=abc", "/v1/files/img_1"),
    ("/health", "/health"),
    ("/v1/jobs?", "/v1/jobs"),
])
def test_the_query_string_is_dropped_and_the_path_kept(path: str, logged: str) -> None:
    record = access_record(path)
    assert DropQueryString().filter(record) is True
    assert record.getMessage() == f'127.0.0.1:5000 - "GET {logged} HTTP/1.1" 200'


def test_httpx_request_records_lose_the_query_string() -> None:
    record = logging.LogRecord("httpx", logging.INFO, __file__, 1, 'HTTP Request: %s %s "%s %d %s"',
                               ("GET", httpx.URL("https://images.example/a.png?X-Amz-Signature=abc"), "HTTP/1.1",
                                200, "OK"), None)
    assert DropQueryString().filter(record) is True
    assert record.getMessage() == 'HTTP Request: GET https://images.example/a.png "HTTP/1.1 200 OK"'


def test_other_records_pass_unchanged() -> None:
    record = logging.LogRecord("uvicorn.access", logging.INFO, __file__, 1, "plain %s", ("a?b",), None)
    assert DropQueryString().filter(record) is True and record.getMessage() == "plain a?b"


def test_the_logging_configuration_installs_the_filter(capsys: pytest.CaptureFixture[str]) -> None:
    logging.config.dictConfig(uvicorn_log_config())
    logger = logging.getLogger("uvicorn.access")
    try:
        logger.handle(access_record("/v1/models?key=ig-secret"))
        out = capsys.readouterr().out
        installed = [type(f) for f in logging.getLogger("httpx").filters]
    finally:  # the configuration is global: undo it
        for name in ("uvicorn", "uvicorn.access", "httpx"):
            logging.getLogger(name).filters.clear()
            logging.getLogger(name).handlers.clear()
    assert "GET /v1/models HTTP/1.1" in out and "ig-secret" not in out
    assert installed == [DropQueryString]


def test_imagegate_s_own_configuration_installs_it_on_httpx_too() -> None:
    """The configuration of processes uvicorn does not start (``imagegate worker``, the CLI)."""
    logging.config.dictConfig(logging_config("text", "INFO"))
    try:
        installed = [type(f) for f in logging.getLogger("httpx").filters]
    finally:
        logging.getLogger("httpx").filters.clear()
    assert installed == [DropQueryString]
