"""Shared pieces of the adapter tests: calls planned on the shipped catalogue, real images made
with Pillow, canned upstream responses, a multipart body reader, and a redactor with no secrets."""

from __future__ import annotations

import base64
import email
import email.policy
import io
import json
from typing import Any

import httpx
from PIL import Image

from core.generation import GenerationRequest, InputImage
from core.planning import plan
from core.routing import Catalogue
from worker.providers.base import InputBytes, PartialSink, ProviderCall
from worker.providers.http import Redactor

CATALOGUE = Catalogue.load(configured={"demo", "gemini", "imagen", "openai_images", "vertex_gemini",
                                       "vertex_imagen", "openai_chat"})

NO_SECRETS = Redactor([])
"""For an adapter's ``parse_error`` where no secret is configured."""


def make_call(model: str, *, indices: list[int] | None = None, inputs: list[InputBytes] | None = None,
              mask: InputBytes | None = None, prompt: str = "a lighthouse at dusk",
              on_partial: PartialSink | None = None, **fields: Any) -> ProviderCall:
    """A ProviderCall as run_job builds it: the request planned for ``model`` on the shipped catalogue."""
    n = max(len(indices or [0]), fields.pop("n", 1))
    fields.setdefault("input_images", [InputImage(object_key=f"inputs/{i}", mime_type=image.mime_type)
                                       for i, image in enumerate(inputs or [])])
    request = GenerationRequest(prompt=prompt, model=model, n=n, **fields)
    applied = plan(request, CATALOGUE.resolve(model), grids=CATALOGUE.grids)
    return ProviderCall(request, applied, indices or [0], inputs or [], mask, on_partial)


def image_bytes(fmt: str = "png", width: int = 24, height: int = 16, color: tuple[int, ...] = (220, 40, 40),
                mode: str = "RGB") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, (width, height), color).save(buffer, format=fmt.upper())
    return buffer.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def ok(body: Any) -> httpx.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return httpx.Response(200, content=content, headers={"content-type": "application/json"},
                          request=httpx.Request("POST", "https://upstream.test/"))


def error_response(status: int, body: Any) -> httpx.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return httpx.Response(status, content=content, request=httpx.Request("POST", "https://upstream.test/"))


def google_error(status: int, status_name: str, message: str = "failed",
                 details: list[dict[str, Any]] | None = None) -> httpx.Response:
    """A Google error answer: ``{"error": {code, message, status, details}}``."""
    return error_response(status, {"error": {"code": status, "message": message, "status": status_name,
                                             "details": details or []}})


def retry_info(delay: str) -> dict[str, Any]:
    return {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": delay}


def quota_failure(quota_id: str) -> dict[str, Any]:
    return {"@type": "type.googleapis.com/google.rpc.QuotaFailure",
            "violations": [{"quotaMetric": "generativelanguage.googleapis.com/generate_content_requests",
                            "quotaId": quota_id}]}


def json_body(request: httpx.Request) -> Any:
    assert request.headers["content-type"] == "application/json"
    return json.loads(request.content)


def multipart_parts(request: httpx.Request) -> list[tuple[str, str | None, str | None, bytes]]:
    """(name, filename, content type, payload) of each part, parsed with the stdlib email parser."""
    body = request.read()
    head = f"Content-Type: {request.headers['content-type']}\r\nMIME-Version: 1.0\r\n\r\n".encode()
    message = email.message_from_bytes(head + body, policy=email.policy.HTTP)
    assert message.is_multipart()
    parts = []
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        filename = part.get_filename()
        ctype = part.get_content_type() if part.get("content-type") else None
        payload = part.get_payload(decode=True)
        assert isinstance(payload, bytes)
        parts.append((str(name), filename, ctype, payload))
    return parts
