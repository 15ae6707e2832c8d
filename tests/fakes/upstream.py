"""A fake upstream for imagegate: one real HTTP server speaking the Gemini API, Imagen ``:predict``,
Vertex AI (with a Google OAuth2 token endpoint), the OpenAI Images API and an OpenAI-compatible chat
upstream exactly as the providers' API references document them.

Routing and handling are a pure function (:meth:`FakeUpstream.dispatch`) over a small
:class:`~tests.fakes.upstream_common.FakeRequest`; two adapters expose it: a
``ThreadingHTTPServer`` on 127.0.0.1 (:meth:`FakeUpstream.start`) for the worker process in
end-to-end tests, and :meth:`FakeUpstream.transport` (an ``httpx.MockTransport``) for unit tests.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import anyio
import httpx

from tests.fakes import upstream_chat as chat
from tests.fakes import upstream_google as google
from tests.fakes import upstream_imagen as imagen
from tests.fakes import upstream_openai as openai
from tests.fakes.upstream_common import (
    Accepted,
    FakeRequest,
    FakeResponse,
    Reject,
    google_error,
    json_response,
    oauth_error,
    openai_error,
    parse_multipart,
    parse_urlencoded,
    raw_json_response,
    try_json,
)
from tests.fakes.upstream_oauth import OAuthServer

IMAGEN_FILE = Path(__file__).resolve().parents[2] / "core" / "catalogue" / "imagen.toml"
"""The catalogue rows that route the ``imagen-4.0-*`` ids to Imagen ``:predict``."""
GEMINI_ENDPOINTS = ("gemini", "gemini_stream", "vertex_gemini", "vertex_gemini_stream")
IMAGEN_ENDPOINTS = ("imagen", "vertex_imagen")
OPENAI_ENDPOINTS = ("openai_generations", "openai_edits", "chat")
ENDPOINTS = (*GEMINI_ENDPOINTS, *IMAGEN_ENDPOINTS, *OPENAI_ENDPOINTS, "token")
_IMAGE_FAULTS = {"status", "hang", "trickle", "bad_json", "no_image", "bad_base64", "wrong_mime"}
TRICKLE_PIECES = 100
"""A ``trickle`` fault sends its answer in this many pieces, ``delay_s`` apart."""
FAULT_KINDS: dict[str, set[str]] = {
    **{e: _IMAGE_FAULTS | {"safety_prompt", "safety_finish", "usage"} for e in GEMINI_ENDPOINTS},
    **{e: set(_IMAGE_FAULTS) for e in IMAGEN_ENDPOINTS},
    **{e: _IMAGE_FAULTS | {"moderation", "usage"} for e in OPENAI_ENDPOINTS},
    # a streamed answer (stream: true) that sends its drafts, then an error event
    **{e: _IMAGE_FAULTS | {"moderation", "usage", "stream_error"} for e in ("openai_generations", "openai_edits")},
    "token": {"status", "hang", "bad_json"},
}
USAGE_FIELDS = ("usage", "usageMetadata")
"""The usage object of an answer, by protocol: OpenAI's ``usage``, Google's ``usageMetadata``."""

_GEMINI_PATH = re.compile(r"/(?:v1beta|v1)/models/(?P<model>.+):(?P<method>[A-Za-z]+)")
_VERTEX_PATH = re.compile(
    r"/vertex/(?P<version>v1|v1beta1)/projects/(?P<project>[^/]+)/locations/"
    r"(?P<location>[^/]+)/publishers/google/models/(?P<model>.+):(?P<method>[A-Za-z]+)"
)


@dataclass
class Call:
    """One request the fake received (``status`` is filled in once answered)."""

    endpoint: str
    model: str | None
    time: float
    headers: dict[str, str]
    json: dict[str, Any] | None = None
    form: dict[str, list[str]] | None = None
    files: dict[str, list[tuple[str, str, bytes]]] | None = None
    status: int = 0


@dataclass
class Fault:
    endpoint: str
    kind: str
    model: str | None = None
    times: int = 1
    status: int | None = None
    headers: dict[str, str] = field(default_factory=dict)
    body: dict[str, Any] | None = None
    delay_s: float = 0.0
    prompt_contains: str | None = None


class FakeUpstream:
    """Fake Google / OpenAI / chat upstreams with request validation, call counting and faults.

    * ``calls`` lists every request in order; ``count(endpoint, model)`` counts them.
    * ``violations`` collects every request that real providers would refuse (unknown field, wrong
      enum, bad key, wrong shape); such requests are also answered 400/401/404 in the provider's
      own error shape. A test should normally end with ``assert fake.violations == []``.
    * ``add_fault`` makes the next matching request(s) fail in a chosen way (see ``FAULT_KINDS``).
      Faults apply only to requests that pass validation: a refused request never consumes one.
      The ``usage`` fault answers normally but reports the usage fields given as ``body`` (merged
      into the answer's ``usage`` or ``usageMetadata``): an upstream billing more than it documents.
      The ``hang`` fault answers ``delay_s`` late; the ``trickle`` fault answers at once, but sends
      the answer in ``TRICKLE_PIECES`` pieces ``delay_s`` apart (chunked): every read is inside a
      client's read timeout, the whole answer far longer.

    Endpoint names: ``gemini``, ``gemini_stream``, ``imagen``, ``vertex_gemini``,
    ``vertex_gemini_stream``, ``vertex_imagen``, ``openai_generations``, ``openai_edits``, ``chat``,
    ``token`` (and ``unknown`` for requests to no known route).

    Use ``start()``/``stop()`` (or ``with FakeUpstream() as fake:``) for a real server, or
    ``transport()`` for an in-process ``httpx.MockTransport`` over the very same handlers.
    Before ``start()``, ``base_url`` is ``http://fake-upstream.invalid`` (fine for ``transport()``).
    """

    def __init__(
        self,
        *,
        gemini_key: str = "test-gemini-key",
        openai_key: str = "test-openai-key",
        chat_key: str = "test-chat-key",
        token_ttl_s: int = 3600,
    ) -> None:
        self.gemini_key = gemini_key
        self.openai_key = openai_key
        self.chat_key = chat_key
        self.token_ttl_s = token_ttl_s
        self.oauth = OAuthServer(token_ttl_s)
        self.base_url = "http://fake-upstream.invalid"
        self.calls: list[Call] = []
        self.violations: list[str] = []
        self._faults: list[Fault] = []
        self.stream_pause_s: float | None = None
        """When set, the pause between a streamed answer's events (instead of each handler's own)."""
        self._lock = threading.Lock()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # --- URLs ---------------------------------------------------------------------------------
    @property
    def gemini_base_url(self) -> str:
        return self.base_url

    @property
    def openai_base_url(self) -> str:
        return self.base_url + "/v1"

    @property
    def chat_base_url(self) -> str:
        return self.base_url + "/chat/v1"

    @property
    def vertex_base_url(self) -> str:
        return self.base_url + "/vertex"

    @property
    def token_uri(self) -> str:
        return self.base_url + "/token"

    # --- lifecycle ----------------------------------------------------------------------------
    def start(self) -> FakeUpstream:
        """Serve on 127.0.0.1 at a free port in a daemon thread; sets ``base_url``."""
        if self._server is not None:
            return self
        server = _Server(("127.0.0.1", 0), _Handler)
        server.fake = self
        self._server = server
        self.base_url = f"http://127.0.0.1:{server.server_address[1]}"
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="fake-upstream", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.stopping.set()
        server.shutdown()
        server.server_close()
        if self._thread is not None:
            self._thread.join(5)

    def __enter__(self) -> FakeUpstream:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def transport(self) -> httpx.MockTransport:
        """The same handlers in-process (sync and async httpx clients; ``hang`` sleeps)."""
        return _Transport(self)

    def gateway_settings(self, tmp: Path) -> dict[str, str]:
        """imagegate settings (by field name of ``core.config.Settings``) that point every provider
        family at this fake: the Gemini API, OpenAI Images, the chat gateway, Vertex AI (with a
        service account written to ``tmp``) and Imagen (``core/catalogue/imagen.toml``), with short
        timeouts and quick retries."""
        account = tmp / "service-account.json"
        account.write_text(json.dumps(self.service_account_info()))
        return {
            "gemini_api_key": self.gemini_key,
            "gemini_base_url": self.gemini_base_url,
            "openai_api_key": self.openai_key,
            "openai_base_url": self.openai_base_url,
            "chat_upstream_base_url": self.chat_base_url,
            "chat_upstream_api_key": self.chat_key,
            "vertex_project": "test-project",
            "vertex_credentials_file": str(account),
            "vertex_base_url": self.vertex_base_url,
            "models_file": str(IMAGEN_FILE),
            "upstream_timeout_s": "2",
            "upstream_max_attempts": "3",
            "upstream_backoff_base_s": "0.05",
            "upstream_backoff_max_s": "0.2",
        }

    # --- state --------------------------------------------------------------------------------
    def service_account_info(self, project_id: str = "test-project") -> dict[str, Any]:
        """A Google service-account JSON dict with a fresh RSA key; its JWTs are accepted by /token."""
        return self.oauth.new_service_account(project_id, self.token_uri)

    def expire_tokens(self) -> None:
        """Make every issued access token expired (Vertex then answers 401 without a violation)."""
        self.oauth.expire_all()

    def count(self, endpoint: str | None = None, model: str | None = None) -> int:
        with self._lock:
            return sum(1 for c in self.calls if endpoint in (None, c.endpoint) and model in (None, c.model))

    def add_fault(
        self,
        endpoint: str,
        kind: str,
        *,
        model: str | None = None,
        times: int = 1,
        status: int | None = None,
        headers: dict[str, str] | None = None,
        body: dict[str, Any] | None = None,
        delay_s: float = 0.0,
        prompt_contains: str | None = None,
    ) -> None:
        """Make the next ``times`` matching requests fail with ``kind`` (each match consumes one)."""
        if endpoint not in FAULT_KINDS:
            raise ValueError(f"unknown endpoint {endpoint!r}; one of {', '.join(ENDPOINTS)}")
        if kind not in FAULT_KINDS[endpoint]:
            raise ValueError(
                f"fault {kind!r} is not available on {endpoint} ({sorted(FAULT_KINDS[endpoint])})"
            )
        if kind == "status" and status is None:
            raise ValueError("a 'status' fault needs status=")
        if kind == "usage" and not body:
            raise ValueError("a 'usage' fault needs body= (the usage fields to report)")
        if times < 1:
            raise ValueError("times must be >= 1")
        with self._lock:
            self._faults.append(
                Fault(
                    endpoint, kind, model, times, status, dict(headers or {}), body, delay_s, prompt_contains
                )
            )

    def faults_pending(self) -> int:
        """How many fault uses are left (0 once every added fault has been consumed)."""
        with self._lock:
            return sum(f.times for f in self._faults)

    def reset(self, *, forget_tokens: bool = False) -> None:
        """Forget calls, violations and faults. Service accounts stay valid.

        Issued access tokens stay valid too unless ``forget_tokens=True``: the gateway's worker
        caches its Vertex token across tests, and a token this fake really issued must not turn
        into a "never issued" violation. Use :meth:`expire_tokens` to force a refresh instead.
        """
        with self._lock:
            self.calls.clear()
            self.violations.clear()
            self._faults.clear()
            self.stream_pause_s = None
        if forget_tokens:
            self.oauth.reset()

    # --- the pure handler ---------------------------------------------------------------------
    def dispatch(self, req: FakeRequest) -> FakeResponse:
        """Route, record, validate and answer one request (no I/O; ``delay_s`` is for the adapter)."""
        call = Call(endpoint="unknown", model=None, time=time.monotonic(), headers=dict(req.headers))
        self._fill_body(call, req)
        handler = self._route(req, call)
        with self._lock:
            self.calls.append(call)
        try:
            accepted = handler()
        except Reject as refusal:
            self._violate(call.endpoint, refusal.violations)
            response = refusal.response
        except Exception as exc:  # a bug in the fake must not pass unnoticed
            self._violate(call.endpoint, [f"internal error in the fake upstream: {exc!r}"])
            response = json_response(500, {"error": {"message": repr(exc)}})
        else:
            response = self._answer(call, accepted)
        call.status = response.status
        return response

    def _violate(self, endpoint: str, messages: list[str]) -> None:
        if messages:
            with self._lock:
                self.violations.extend(f"{endpoint}: {m}" for m in messages)

    @staticmethod
    def _fill_body(call: Call, req: FakeRequest) -> None:
        if req.content_type == "application/json":
            call.json = try_json(req)
        elif req.content_type == "multipart/form-data":
            try:
                parsed = parse_multipart(req)
            except Exception:
                return
            call.form, call.files = parsed.form, parsed.files
        elif req.content_type == "application/x-www-form-urlencoded":
            call.form = parse_urlencoded(req)

    def _route(self, req: FakeRequest, call: Call) -> Any:
        """Set ``call.endpoint``/``call.model`` and return the handler to run."""
        path = req.path
        if req.method != "POST":
            return self._refuse_route(f"{req.method} {path} is not a route of the fake upstream", 404)
        if match := _GEMINI_PATH.fullmatch(path):
            model, method = match["model"], match["method"]
            call.model = model
            if method == "generateContent":
                call.endpoint = "gemini"
                return lambda: google.handle_generate(
                    self, req, model=model, vertex=False, stream=False, project=None
                )
            if method == "streamGenerateContent":
                call.endpoint = "gemini_stream"
                return lambda: google.handle_generate(
                    self, req, model=model, vertex=False, stream=True, project=None
                )
            if method == "predict":
                call.endpoint = "imagen"
                return lambda: imagen.handle_predict(self, req, model=model, vertex=False, project=None)
            return self._refuse_route(f"method {method!r} is not served by the fake upstream", 404)
        if match := _VERTEX_PATH.fullmatch(path):
            model, method, project = match["model"], match["method"], match["project"]
            call.model = model
            if method in ("generateContent", "streamGenerateContent"):
                stream = method == "streamGenerateContent"
                call.endpoint = "vertex_gemini_stream" if stream else "vertex_gemini"
                return lambda: google.handle_generate(
                    self, req, model=model, vertex=True, stream=stream, project=project
                )
            if method == "predict":
                call.endpoint = "vertex_imagen"
                return lambda: imagen.handle_predict(self, req, model=model, vertex=True, project=project)
            return self._refuse_route(f"Vertex method {method!r} is not served by the fake upstream", 404)
        simple = {
            "/v1/images/generations": ("openai_generations", openai.handle_generations),
            "/v1/images/edits": ("openai_edits", openai.handle_edits),
            "/chat/v1/chat/completions": ("chat", chat.handle_chat),
        }
        if path in simple:
            call.endpoint, handle = simple[path]
            return lambda: handle(self, req, call)
        if path == "/token":
            call.endpoint = "token"
            return lambda: self._token(req, call)
        return self._refuse_route(f"POST {path} is not a route of the fake upstream", 404)

    @staticmethod
    def _refuse_route(message: str, status: int) -> Any:
        def refuse() -> Accepted:
            raise Reject(json_response(status, google_error(status, message)), [message])

        return refuse

    def _token(self, req: FakeRequest, call: Call) -> Accepted:
        response = self.oauth.handle_token(req, call.form)

        def build(kind: str | None) -> FakeResponse:
            if kind == "bad_json":
                return raw_json_response(200, '{"access_token": ')
            return response

        return Accepted(None, "", build)

    def _answer(self, call: Call, accepted: Accepted) -> FakeResponse:
        response = self._faulted(call, accepted)
        pause = self.stream_pause_s
        if response.chunks is not None and pause is not None:
            response.chunks = [(pause if i else 0.0, chunk) for i, (_, chunk) in enumerate(response.chunks)]
        return response

    def _faulted(self, call: Call, accepted: Accepted) -> FakeResponse:
        call.model = accepted.model or call.model
        fault = self._take_fault(call.endpoint, call.model, accepted.prompt)
        if fault is None:
            return accepted.build(None)
        if fault.kind == "status":
            assert fault.status is not None
            response = json_response(
                fault.status,
                fault.body if fault.body is not None else self._error_body(call.endpoint, fault.status),
            )
        elif fault.kind == "usage":
            response = self._with_usage(call.endpoint, accepted.build(None), fault.body or {})
        elif fault.kind == "trickle":
            response = accepted.build(None)
            body, size = response.body, max(1, -(-len(response.body) // TRICKLE_PIECES))
            response.chunks = [(fault.delay_s if i else 0.0, body[start:start + size])
                               for i, start in enumerate(range(0, len(body), size))]
            response.headers.update(fault.headers)
            return response
        else:
            response = accepted.build(None if fault.kind == "hang" else fault.kind)
        response.headers.update(fault.headers)
        response.delay_s = fault.delay_s
        return response

    def _take_fault(self, endpoint: str, model: str | None, prompt: str) -> Fault | None:
        with self._lock:
            for fault in self._faults:
                if (
                    fault.endpoint == endpoint
                    and fault.model in (None, model)
                    and (fault.prompt_contains is None or fault.prompt_contains in prompt)
                ):
                    fault.times -= 1
                    if fault.times == 0:
                        self._faults.remove(fault)
                    return fault
        return None

    def _with_usage(self, endpoint: str, response: FakeResponse, usage: dict[str, Any]) -> FakeResponse:
        """``response`` with ``usage`` merged into its usage object (JSON answers only)."""
        payload = json.loads(response.body) if response.headers.get("content-type") == "application/json" else None
        field_name = next((f for f in USAGE_FIELDS if isinstance(payload, dict) and f in payload), None)
        if payload is None or field_name is None:
            self._violate(endpoint, ["a 'usage' fault needs a JSON answer with a usage object (not a stream)"])
            return response
        payload[field_name] = {**payload[field_name], **usage}
        return json_response(response.status, payload, dict(response.headers))

    @staticmethod
    def _error_body(endpoint: str, status: int) -> dict[str, Any]:
        if endpoint in OPENAI_ENDPOINTS:
            return openai_error(status)
        if endpoint == "token":
            return oauth_error("invalid_grant" if status < 500 else "internal_failure", f"HTTP {status}")
        return google_error(status)


# --- adapters -------------------------------------------------------------------------------------


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 512  # hundreds of calls may connect at once (the worker's concurrency)
    fake: FakeUpstream

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.stopping = threading.Event()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def _serve(self) -> None:
        body = self._read_body()
        url = urlsplit(self.path)
        headers: dict[str, str] = {}
        for name, value in self.headers.items():
            key = name.lower()
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
        request = FakeRequest(
            self.command, url.path, parse_qs(url.query, keep_blank_values=True), headers, body
        )
        response = self.server.fake.dispatch(request)
        if response.delay_s > 0 and self.server.stopping.wait(response.delay_s):
            self.close_connection = True
            return
        try:
            self.send_response(response.status)
            for name, value in response.headers.items():
                self.send_header(name, value)
            if response.chunks is not None:
                self._send_chunked(response.chunks)
                return
            self.send_header("Content-Length", str(len(response.body)))
            self.end_headers()
            self.wfile.write(response.body)
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (e.g. a hang fault)
            self.close_connection = True

    def _send_chunked(self, chunks: list[tuple[float, bytes]]) -> None:
        """A streamed answer, each chunk written (HTTP/1.1 chunked coding) after its pause."""
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for pause_s, chunk in chunks:
            if pause_s > 0 and self.server.stopping.wait(pause_s):
                self.close_connection = True
                return
            self.wfile.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
            self.wfile.flush()
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve

    def log_message(self, format: str, *args: Any) -> None:
        pass


def _to_fake(request: httpx.Request) -> FakeRequest:
    headers = {k.lower(): v for k, v in request.headers.multi_items()}
    return FakeRequest(
        request.method,
        request.url.path,
        parse_qs(request.url.query.decode(), keep_blank_values=True),
        headers,
        request.content,
    )


def _to_httpx(response: FakeResponse, request: httpx.Request) -> httpx.Response:
    if response.chunks is not None:
        return httpx.Response(response.status, headers=response.headers, stream=_Chunks(response.chunks),
                              request=request)
    return httpx.Response(response.status, headers=response.headers, content=response.body, request=request)


class _Chunks(httpx.SyncByteStream, httpx.AsyncByteStream):
    """A streamed answer in-process: each chunk after its pause."""

    def __init__(self, chunks: list[tuple[float, bytes]]) -> None:
        self._chunks = chunks

    def __iter__(self) -> Iterator[bytes]:
        for pause_s, chunk in self._chunks:
            time.sleep(pause_s)
            yield chunk

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for pause_s, chunk in self._chunks:
            await anyio.sleep(pause_s)
            yield chunk


class _Transport(httpx.MockTransport):
    def __init__(self, fake: FakeUpstream) -> None:
        super().__init__(self._handle)
        self._fake = fake

    def _handle(self, request: httpx.Request) -> httpx.Response:
        response = self._fake.dispatch(_to_fake(request))
        if response.delay_s > 0:
            time.sleep(response.delay_s)
        return _to_httpx(response, request)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        await request.aread()
        response = self._fake.dispatch(_to_fake(request))
        if response.delay_s > 0:
            await anyio.sleep(response.delay_s)
        return _to_httpx(response, request)
