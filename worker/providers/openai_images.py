"""OpenAI Images API for the GPT image models (https://platform.openai.com/docs/api-reference/images).

Generations are JSON; edits (the images a prompt edits: the current turn's, or a conversation's
last image) are multipart (``image[]``, ``mask`` and the scalar fields as text
parts), as the official SDK sends them. ``n`` is native: one call makes every image of its group.
Usage tokens are kept, shared out per image. Error answers are OpenAI's
(:mod:`worker.providers.openai_errors`: ``moderation_blocked`` is a content-policy error).

When the caller streams partial images (``request.partial_images``), the call asks for
``stream: true`` and ``partial_images``, and the answer is server-sent events, as the openai SDK's
``ImageGenStreamEvent`` / ``ImageEditStreamEvent`` types describe them:
``image_generation.partial_image`` (``image_edit.partial_image``) drafts, each handed on as it
arrives, then ``image_generation.completed`` (``image_edit.completed``) with the final image and
the call's ``usage``; an ``error`` event ends the call as an error answer would.
:class:`ImageStreamReader` reads them (pure, fed a line at a time); :func:`read_image_stream` is
the thin shell over the response's lines.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from typing import Any

import httpx
from pydantic import BaseModel, ConfigDict, ValidationError

from core.errors import ContentPolicyError, GatewayError, UpstreamError
from core.generation import ProviderImage, Usage
from worker.providers.base import PartialFrame, ProviderCall
from worker.providers.http import Redact
from worker.providers.openai_errors import MODERATION_CODES, OpenAIError, OpenAIErrors
from worker.providers.payload import decode_image, split_usage
from worker.providers.sse import ServerSentEvent, SSEDecoder

log = logging.getLogger(__name__)

_EXT = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp", "image/gif": "gif"}


class TokensDetails(BaseModel):
    model_config = ConfigDict(extra="ignore")
    text_tokens: int = 0
    image_tokens: int = 0


class ImagesUsage(BaseModel):
    model_config = ConfigDict(extra="ignore")
    input_tokens: int = 0
    input_tokens_details: TokensDetails | None = None
    output_tokens: int = 0
    output_tokens_details: TokensDetails | None = None


class ImageItem(BaseModel):
    model_config = ConfigDict(extra="ignore")
    b64_json: str | None = None
    revised_prompt: str | None = None


class ImagesResponse(BaseModel):
    model_config = ConfigDict(extra="ignore")
    created: int
    data: list[ImageItem] = []
    output_format: str | None = None
    usage: ImagesUsage | None = None


def _fields(call: ProviderCall) -> dict[str, Any]:
    applied = call.applied
    fields: dict[str, Any] = {"model": applied.upstream_model, "prompt": call.request.prompt, "n": call.count}
    if applied.upstream_size:
        fields["size"] = applied.upstream_size
    if applied.upstream_quality:
        fields["quality"] = applied.upstream_quality
    fields["output_format"] = applied.upstream_format
    if applied.output_compression is not None and applied.upstream_format in ("jpeg", "webp"):
        fields["output_compression"] = applied.output_compression
    if applied.background == "transparent":
        fields["background"] = "transparent"
    if call.request.moderation in ("low", "auto"):
        fields["moderation"] = call.request.moderation
    if call.wants_partials:
        fields["stream"] = True
        fields["partial_images"] = call.request.partial_images
    return fields


def build_generation_body(call: ProviderCall) -> dict[str, Any]:
    return _fields(call)


def build_edit_parts(call: ProviderCall) -> tuple[dict[str, str], list[tuple[str, tuple[str, bytes, str]]]]:
    """Multipart text fields and files of an edit (``image[]`` repeated, ``mask``)."""
    fields = {k: ("true" if v else "false") if isinstance(v, bool) else str(v) for k, v in _fields(call).items()}
    if call.applied.input_fidelity:
        fields["input_fidelity"] = call.applied.input_fidelity
    files = [("image[]", (f"image-{i}.{_EXT.get(img.mime_type, 'png')}", img.data, img.mime_type))
             for i, img in enumerate(call.edit_inputs)]
    if call.mask is not None:
        files.append(("mask", ("mask.png", call.mask.data, call.mask.mime_type)))
    return fields, files


def parse_images(response: httpx.Response, call: ProviderCall, *, label: str) -> list[ProviderImage]:
    try:
        wire = ImagesResponse.model_validate_json(response.content)
    except ValidationError:
        raise UpstreamError(f"The {label} answered with a body that is not an ImagesResponse.",
                            code="upstream_bad_response", retryable=True) from None
    return _images(wire.data, wire.usage, wire.output_format, call, label=label)


def _images(data: list[ImageItem], wire_usage: ImagesUsage | None, output_format: str | None, call: ProviderCall,
            *, label: str) -> list[ProviderImage]:
    items = [d for d in data if d.b64_json][: call.count]
    if not items:
        raise UpstreamError("The model returned no image.", code="no_images_generated", retryable=True)
    usage = wire_usage or ImagesUsage()
    total = Usage(
        input_tokens=usage.input_tokens,
        input_text_tokens=usage.input_tokens_details.text_tokens if usage.input_tokens_details else 0,
        input_image_tokens=usage.input_tokens_details.image_tokens if usage.input_tokens_details else 0,
        output_tokens=usage.output_tokens,
        output_text_tokens=usage.output_tokens_details.text_tokens if usage.output_tokens_details else 0,
        output_image_tokens=(usage.output_tokens_details.image_tokens if usage.output_tokens_details
                             else usage.output_tokens),
    )
    declared = f"image/{output_format or call.applied.upstream_format}"
    return [decode_image(item.b64_json or "", declared_mime=declared, label=label, text=item.revised_prompt,
                         usage=share)
            # the call's usage is shared over the images it was asked for: an image it did not
            # deliver leaves its share unbilled rather than billed to the others
            for item, share in zip(items, split_usage(total, call.count)[:len(items)], strict=True)]


class StreamedImage(BaseModel):
    """The data of a streamed event: a draft (``*.partial_image``) or a final image (``*.completed``)."""

    model_config = ConfigDict(extra="ignore")
    type: str
    b64_json: str | None = None
    partial_image_index: int = 0
    size: str | None = None
    quality: str | None = None
    background: str | None = None
    output_format: str | None = None
    revised_prompt: str | None = None
    usage: ImagesUsage | None = None


class ImageStreamReader:
    """Reads a streamed Images answer a line at a time (pure: no I/O).

    :meth:`feed` returns each draft once its event is complete, naming the job's image it belongs
    to (drafts precede their image's completed event, so the n-th image's drafts come after n-1
    completed events); :meth:`images` returns the final images once the stream has ended. The
    usage of the last completed event is the call's (as a JSON answer's is), shared over its
    images. A draft that does not decode is skipped (it is only a preview); an ``error`` event
    raises the error the caller gets.
    """

    def __init__(self, call: ProviderCall, *, label: str, redact: Redact) -> None:
        self.call = call
        self.label = label
        self.redact = redact
        self._decoder = SSEDecoder()
        self._finals: list[StreamedImage] = []

    def feed(self, line: str) -> PartialFrame | None:
        event = self._decoder.feed(line)
        return self._read(event) if event is not None else None

    def images(self) -> list[ProviderImage]:
        last = self._decoder.finish()
        if last is not None:
            self._read(last)
        finals = self._finals
        final = finals[-1] if finals else None
        return _images([ImageItem(b64_json=f.b64_json, revised_prompt=f.revised_prompt) for f in finals],
                       final.usage if final else None, final.output_format if final else None, self.call,
                       label=self.label)

    def _read(self, event: ServerSentEvent) -> PartialFrame | None:
        if event.data.strip() == "[DONE]":
            return None
        try:
            payload = json.loads(event.data)
        except ValueError:
            raise UpstreamError(f"The {self.label} streamed an event that is not JSON.",
                                code="upstream_bad_response", retryable=True) from None
        if event.event == "error" or (isinstance(payload, dict) and ("error" in payload
                                                                     or payload.get("type") == "error")):
            raise self._error(payload)
        try:
            item = StreamedImage.model_validate(payload)
        except ValidationError:
            raise UpstreamError(f"The {self.label} streamed an event that is not an image event.",
                                code="upstream_bad_response", retryable=True) from None
        if item.type.endswith(".completed"):
            self._finals.append(item)
        elif item.type.endswith(".partial_image"):
            return self._draft(item)
        return None

    def _draft(self, item: StreamedImage) -> PartialFrame | None:
        position = len(self._finals)
        call = self.call
        if position >= call.count or not item.b64_json:
            return None
        fmt = item.output_format or call.applied.upstream_format
        try:
            image = decode_image(item.b64_json, declared_mime=f"image/{fmt}", label=self.label)
        except UpstreamError as exc:
            log.info("a partial image of the %s was skipped: %s", self.label, exc.code)
            return None
        return PartialFrame(index=call.indices[position], partial_index=item.partial_image_index, data=image.data,
                            output_format=image.mime_type.removeprefix("image/"),
                            size=item.size or f"{image.width}x{image.height}", quality=item.quality or "auto",
                            background=item.background or call.applied.background)

    def _error(self, payload: Any) -> GatewayError:
        body = payload.get("error") if isinstance(payload, dict) and isinstance(payload.get("error"), dict) else payload
        try:
            error = OpenAIError.model_validate(body if isinstance(body, dict) else {})
        except ValidationError:
            error = OpenAIError()
        text = self.redact(error.message)
        if error.code in MODERATION_CODES:
            return ContentPolicyError(text or "The request was rejected by the upstream's safety system.",
                                      code=error.code)
        detail = f"{error.code or error.type or 'error'}: {text}".strip().rstrip(":")
        # a server's error mid-stream is worth another try, as a 500 is; a refusal is not
        retryable = error.type in (None, "server_error")
        return UpstreamError(f"The {self.label} failed while streaming ({detail}).", code="upstream_error",
                             retryable=retryable)


def read_image_stream(lines: Iterable[str], call: ProviderCall, *, label: str, redact: Redact) -> list[ProviderImage]:
    """The images of a streamed answer, handing each draft to ``call.on_partial`` as it arrives."""
    reader = ImageStreamReader(call, label=label, redact=redact)
    for line in lines:
        frame = reader.feed(line)
        if frame is not None and call.on_partial is not None:
            call.on_partial(frame)
    return reader.images()


class OpenAIImagesAdapter(OpenAIErrors):
    label = "OpenAI Images API"

    def __init__(self, *, redact: Redact | None = None) -> None:
        self.redact: Redact = redact or (lambda text: text)

    def streams(self, call: ProviderCall) -> bool:
        return call.wants_partials

    def build_request(self, call: ProviderCall, *, base_url: str, headers: dict[str, str]) -> httpx.Request:
        if call.edit_inputs:
            fields, files = build_edit_parts(call)
            return httpx.Request("POST", f"{base_url}/images/edits", headers=headers, data=fields, files=files)
        return httpx.Request("POST", f"{base_url}/images/generations", headers=headers,
                             json=build_generation_body(call))

    def parse_response(self, response: httpx.Response, call: ProviderCall) -> list[ProviderImage]:
        if response.headers.get("content-type", "").startswith("text/event-stream"):
            return read_image_stream(response.iter_lines(), call, label=self.label, redact=self.redact)
        response.read()  # a streamed call answered in one piece
        return parse_images(response, call, label=self.label)
