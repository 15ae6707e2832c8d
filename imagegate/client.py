"""A client of a running gateway, for the CLI's ``generate``, ``batch`` and ``jobs`` commands.

It speaks the gateway's public HTTP API only (it could run on another host than the gateway):
``POST /v1/images/generations`` with ``Prefer: respond-async`` to submit a job, ``GET
/v1/jobs/{id}/events`` to follow it (``GET /v1/jobs/{id}`` every second where the stream is not
offered or breaks), the job's image URLs to download its images, ``GET``/``DELETE /v1/jobs``.

Errors are :class:`ClientError` subclasses, each with the CLI exit code it stands for
(:class:`ExitCode`). The API key is sent as a bearer header to the gateway's own origin only,
and no message here ever holds it.
"""

from __future__ import annotations

import contextlib
import enum
import json
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from core.jobs import JobStatus

RETRIES = 3
"""Tries of a request the gateway could not be reached for (a submit carries an Idempotency-Key,
so a retry can never make a second job)."""
RATE_LIMIT_WAIT_S = 600.0
"""How long a request refused by a key's rate limit is retried (after its Retry-After) at most."""
POLL_S = 1.0
STREAM_READ_TIMEOUT_S = 120.0
"""The gateway sends a keep-alive every few seconds; this much silence means the stream broke."""
CHUNK = 1 << 20


class ExitCode(enum.IntEnum):
    """The CLI's exit codes; scripts rely on them, so they never change meaning."""

    OK = 0
    """Everything asked for succeeded."""
    PARTIAL = 1
    """Some images (or batch lines) succeeded, some did not."""
    USAGE = 2
    """Bad options or input file, or a request the gateway refused as invalid (nothing was run)."""
    FAILED = 3
    """Nothing succeeded: the job(s) failed or were canceled, or the key's budget refused them."""
    UNREACHABLE = 4
    """The gateway could not be reached, or answered that it is unavailable."""
    INTERRUPTED = 130
    """Stopped by Ctrl-C; jobs already submitted go on in the gateway."""


class ClientError(Exception):
    exit_code = ExitCode.FAILED

    def __init__(self, message: str, *, status: int | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code

    def as_dict(self) -> dict[str, Any]:
        return {"status": self.status, "code": self.code, "message": self.message}


class Unreachable(ClientError):
    exit_code = ExitCode.UNREACHABLE


class Refused(ClientError):
    """The gateway refused the request: invalid, unauthorized, not found, conflicting."""

    exit_code = ExitCode.USAGE


class Declined(ClientError):
    """The request was valid but not run: the key's budget or quota is spent."""

    exit_code = ExitCode.FAILED


def _error_of(response: httpx.Response) -> ClientError:
    """The gateway's error answer (OpenAI's ``{"error": {...}}`` shape) as a ClientError."""
    message, code = f"HTTP {response.status_code}", None
    with contextlib.suppress(ValueError, AttributeError, TypeError, KeyError):
        error = response.json()["error"]
        message, code = str(error.get("message") or message), error.get("code")
    status = response.status_code
    if status >= 500:
        return Unreachable(f"the gateway answered {status}: {message}", status=status, code=code)
    if status in (402, 429):
        return Declined(message, status=status, code=code)
    return Refused(message, status=status, code=code)


def _retry_after(response: httpx.Response) -> float:
    with contextlib.suppress(ValueError):
        return max(0.1, float(response.headers.get("retry-after", "1")))
    return 1.0


def _atomic_write(path: Path, chunks: Iterator[bytes]) -> int:
    """Write ``path`` whole or not at all (a temporary file renamed), so that an interrupted
    download never leaves a file that looks finished."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    size = 0
    try:
        with os.fdopen(handle, "wb") as out:
            for chunk in chunks:
                out.write(chunk)
                size += len(chunk)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    return size


class GatewayClient:
    """One gateway, one API key; safe to share between threads (httpx.Client is)."""

    def __init__(self, base_url: str, api_key: str, *, timeout_s: float = 60.0,
                 transport: httpx.BaseTransport | None = None, poll_s: float = POLL_S) -> None:
        self.base_url = base_url.rstrip("/")
        self.poll_s = poll_s
        self._auth = {"Authorization": f"Bearer {api_key}"}
        self._http = httpx.Client(
            timeout=httpx.Timeout(timeout_s, connect=10.0), headers={"User-Agent": "imagegate-cli"},
            transport=transport,
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> GatewayClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # -- requests ---------------------------------------------------------------------------------

    def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """A request to the gateway, retried while it cannot be reached (RETRIES) or the key's
        rate limit refuses it (RATE_LIMIT_WAIT_S); an error answer raises."""
        url = self.base_url + path
        headers = {**self._auth, **kwargs.pop("headers", {})}
        deadline = time.monotonic() + RATE_LIMIT_WAIT_S
        failures = 0
        while True:
            try:
                response = self._http.request(method, url, headers=headers, **kwargs)
            except httpx.TransportError as exc:
                failures += 1
                if failures >= RETRIES:
                    raise Unreachable(f"cannot reach the gateway at {self.base_url} ({type(exc).__name__})") from None
                time.sleep(0.5 * failures)
                continue
            if response.status_code == 429 and _error_code(response) != "insufficient_quota":
                wait = _retry_after(response)
                if time.monotonic() + wait < deadline:
                    time.sleep(wait)
                    continue
            if response.status_code in (502, 503) and failures + 1 < RETRIES:
                failures += 1
                time.sleep(_retry_after(response))
                continue
            if response.status_code >= 400:
                raise _error_of(response)
            return response

    def submit(self, body: dict[str, Any], *, idempotency_key: str) -> dict[str, Any]:
        """Submit a job (the body of ``POST /v1/images/generations``); its job view at once. The
        same key with the same body returns the same job, and charges it once."""
        response = self._send(
            "POST",
            "/v1/images/generations",
            json=body,
            headers={"Prefer": "respond-async", "Idempotency-Key": idempotency_key},
        )
        return dict(response.json())

    def job(self, job_id: str) -> dict[str, Any]:
        return dict(self._send("GET", f"/v1/jobs/{job_id}").json())

    def jobs(self, *, limit: int = 20, status: str | None = None, after: str | None = None) -> dict[str, Any]:
        params = {k: v for k, v in {"limit": limit, "status": status, "after": after}.items() if v is not None}
        return dict(self._send("GET", "/v1/jobs", params=params).json())

    def cancel(self, job_id: str) -> dict[str, Any]:
        return dict(self._send("DELETE", f"/v1/jobs/{job_id}").json())

    def download(self, url: str, path: Path) -> int:
        """Save an image from its URL (whole, or not at all); its size in bytes."""
        own = url.startswith(self.base_url + "/")  # the key goes to the gateway only, never elsewhere
        headers = self._auth if own else {}
        for attempt in range(1, RETRIES + 1):
            try:
                with self._http.stream("GET", url, headers=headers) as response:
                    if response.status_code >= 400:
                        response.read()
                        raise _error_of(response)
                    return _atomic_write(path, response.iter_bytes(CHUNK))
            except httpx.TransportError as exc:
                if attempt == RETRIES:
                    raise Unreachable(f"cannot download {path.name} ({type(exc).__name__})") from None
                time.sleep(0.5 * attempt)
        raise AssertionError("unreachable")

    # -- following a job ----------------------------------------------------------------------------

    def events(self, job_id: str) -> Iterator[tuple[str, dict[str, Any]]]:
        """The job's server-sent events (name, data) until the gateway closes the stream.
        Raises :class:`EventsUnavailable` when the gateway does not offer them."""
        url = f"{self.base_url}/v1/jobs/{job_id}/events"
        timeout = httpx.Timeout(STREAM_READ_TIMEOUT_S, connect=10.0)
        with self._http.stream("GET", url, headers=self._auth, timeout=timeout) as response:
            if response.status_code >= 400:
                response.read()
                error = _error_of(response)
                if error.code == "job_not_found" or response.status_code not in (404, 405):
                    raise error
                raise EventsUnavailable(error.message)
            name, data = "message", ""
            for line in response.iter_lines():
                if line.startswith("event:"):
                    name = line[6:].strip()
                elif line.startswith("data:"):
                    data += line[5:].strip()
                elif not line and data:
                    yield name, json.loads(data)
                    name, data = "message", ""

    def follow(self, job_id: str) -> Iterator[dict[str, Any]]:
        """The job's view each time it changes, the last one ended. Follows its event stream;
        polls where the gateway offers none or the stream breaks."""
        view: dict[str, Any] | None = None
        try:
            for name, data in self.events(job_id):
                if name in ("job.snapshot", "job.ended"):
                    view = data
                elif name.startswith("image.") and view is not None:
                    images = view["images"]
                    view = {**view, "images": [data if i["index"] == data["index"] else i for i in images]}
                else:
                    continue
                yield view
                if name == "job.ended":
                    return
        except (EventsUnavailable, httpx.TransportError, ValueError):
            pass  # no stream, a broken one, or one that said something unreadable: poll
        while True:
            current = self.job(job_id)
            if current != view:
                view = current
                yield view
            if JobStatus(current["status"]).is_terminal:
                return
            time.sleep(self.poll_s)


class EventsUnavailable(Exception):
    """The gateway has no event stream for jobs (an older one): poll instead."""


def _error_code(response: httpx.Response) -> str | None:
    with contextlib.suppress(ValueError, AttributeError, TypeError, KeyError):
        return str(response.json()["error"]["code"])
    return None
