"""OpenAI-shaped upstreams of the fake: Images API generations and edits
(https://platform.openai.com/docs/api-reference/images) and an OpenAI-compatible chat upstream
with image output (OpenRouter's convention)."""

from __future__ import annotations

import json
import re
import time
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from tests.fakes import upstream_images as img
from tests.fakes.upstream_common import (
    Accepted,
    FakeRequest,
    FakeResponse,
    Reject,
    event_stream,
    json_response,
    load_json_object,
    new_id,
    openai_error,
    prompt_words,
    pydantic_messages,
    raw_json_response,
)

if TYPE_CHECKING:
    from tests.fakes.upstream import Call, FakeUpstream

GEN1 = ("gpt-image-1.5", "gpt-image-1-mini", "chatgpt-image-latest")
GEN2 = ("gpt-image-2", "gpt-image-2-2026-04-21")
GEN25 = (
    "gpt-image-2.5-sunburst",
    "gpt-image-2.5-flare",
    "gpt-image-2.5-sunburst-2026-09-08",
    "gpt-image-2.5-flare-2026-09-08",
    "gpt-image-2.6-sunburst",
    "gpt-image-2.6-flare",
)
OPENAI_MODELS = GEN1 + GEN2 + GEN25
RETIRED = ("gpt-image-1", "dall-e-2", "dall-e-3")
STANDARD_SIZES = ("1024x1024", "1536x1024", "1024x1536")
GEN1_TOKENS = {
    "low": {"1024x1024": 272, "1024x1536": 408, "1536x1024": 400},
    "medium": {"1024x1024": 1056, "1024x1536": 1584, "1536x1024": 1568},
    "high": {"1024x1024": 4160, "1024x1536": 6240, "1536x1024": 6208},
}
GEN2_TOKENS_1024 = {"low": 200, "medium": 1770, "high": 7030, "xhigh": 10000, "max": 14000}
INPUT_IMAGE_TOKENS = {"low": 272, "high": 4160}
STREAM_PAUSE_S = 0.2
"""Between two events of a streamed answer (a draft takes the real upstream seconds)."""
PARTIAL_IMAGE_TOKENS = 100
"""Output image tokens each streamed draft adds (https://platform.openai.com/docs/guides/image-generation:
"each partial image adds 100 image output tokens")."""
STREAM_ERROR = {
    "message": "The server had an error while processing your request. Sorry about that!",
    "type": "server_error",
    "param": None,
    "code": None,
}
MODERATION = {
    "message": "Your request was rejected by the safety system. safety_violations=[sexual].",
    "type": "image_generation_user_error",
    "param": None,
    "code": "moderation_blocked",
}


class OpenAIModel(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class _ImageParams(OpenAIModel):
    prompt: Annotated[str, Field(min_length=1, max_length=32000)]
    model: str | None = None
    n: Annotated[int, Field(ge=1, le=10)] | None = None
    size: str | None = None
    quality: str | None = None
    background: Literal["transparent", "opaque", "auto"] | None = None
    output_format: Literal["png", "jpeg", "webp"] | None = None
    output_compression: Annotated[int, Field(ge=0, le=100)] | None = None
    moderation: Literal["low", "auto"] | None = None
    user: str | None = None
    stream: bool | None = None
    partial_images: Annotated[int, Field(ge=0, le=3)] | None = None


class GenerationsRequest(_ImageParams):
    response_format: Literal["url", "b64_json"] | None = None
    style: Literal["vivid", "natural"] | None = None
    safety_identifier: str | None = None


class EditFields(_ImageParams):
    """Text fields of a multipart edit, already converted from strings."""

    input_fidelity: Literal["high", "low"] | None = None
    response_format: Literal["url", "b64_json"] | None = None


class ImageRef(OpenAIModel):
    image_url: str | None = None
    file_id: str | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> ImageRef:
        if (self.image_url is None) == (self.file_id is None):
            raise ValueError("exactly one of image_url and file_id")
        return self


class EditsJsonRequest(_ImageParams):
    images: Annotated[list[ImageRef], Field(min_length=1, max_length=16)]
    mask: ImageRef | None = None
    input_fidelity: Literal["high", "low"] | None = None


def openai_fail(
    status: int,
    message: str,
    violations: list[str],
    param: str | None = None,
    code: str | None = None,
    type_: str | None = None,
) -> Reject:
    return Reject(json_response(status, openai_error(status, message, type_, param, code)), violations)


def check_bearer(req: FakeRequest, expected: str, what: str) -> None:
    token = req.bearer()
    if token != expected:
        shown = f"{token[:3]}...{token[-4:]}" if token else "none"
        raise openai_fail(
            401,
            f"Incorrect API key provided: {shown}. You can find your API key at "
            "https://platform.openai.com/account/api-keys.",
            [f"{what}: Authorization: Bearer key {'missing' if token is None else 'wrong'}"],
            code="invalid_api_key",
        )


def validate_body(model_cls: type[OpenAIModel], data: dict[str, Any]) -> Any:
    try:
        return model_cls.model_validate(data)
    except ValidationError as exc:
        messages = pydantic_messages(exc)
        loc, msg, kind = messages[0]
        code = {
            "extra_forbidden": "unknown_parameter",
            "missing": "missing_required_parameter",
            "less_than_equal": "integer_above_max_value",
        }.get(kind, "invalid_value")
        text = (
            f"Unknown parameter: '{loc}'."
            if kind == "extra_forbidden"
            else f"Invalid value for '{loc}': {msg}."
        )
        raise openai_fail(
            400, text, [f"{where}: {m}" for where, m, _ in messages], param=loc, code=code
        ) from exc


def _check_model(call: Call, model: Any) -> str:
    call.model = model if isinstance(model, str) else None
    if model is None:
        raise openai_fail(
            404,
            "The model `dall-e-2` has been deprecated.",
            ["model omitted (OpenAI's default is dall-e-2, retired)"],
            code="model_not_found",
        )
    if not isinstance(model, str):
        raise openai_fail(400, "Invalid type for 'model'.", ["model must be a string"], param="model")
    if model in RETIRED:
        raise openai_fail(404, f"The model `{model}` has been deprecated.", [], code="model_not_found")
    if model not in OPENAI_MODELS:
        raise openai_fail(
            404,
            f"The model `{model}` does not exist or you do not have access to it.",
            [f"unknown OpenAI image model {model!r}"],
            code="model_not_found",
        )
    return model


def _parse_size(model: str, size: str) -> tuple[int, int] | None:
    if size == "auto":
        return 1024, 1024
    if model in GEN1:
        return tuple(int(v) for v in size.split("x")) if size in STANDARD_SIZES else None  # type: ignore[return-value]
    match = re.fullmatch(r"([1-9][0-9]*)x([1-9][0-9]*)", size)
    if not match:
        return None
    w, h = int(match[1]), int(match[2])
    long, short = max(w, h), min(w, h)
    if w % 16 or h % 16 or long > 3 * short or long > 3840 or short > 2160:
        return None
    return w, h


class _ImagePlan:
    """Checked parameters of a generations/edits call and its answer."""

    def __init__(
        self,
        model: str,
        p: _ImageParams,
        *,
        edit: bool,
        fidelity: str | None = None,
        input_images: int = 0,
        response_format: str | None = None,
        first_dims: tuple[int, int] | None = None,
    ) -> None:
        self.model, self.p, self.edit = model, p, edit
        self.problems: list[tuple[str, str]] = []
        size = p.size or "auto"
        dims = _parse_size(model, size)
        if size == "auto" and first_dims:  # an edit follows its input's orientation
            ratio = img.nearest_ratio(*first_dims, ("1:1", "3:2", "2:3"))
            dims = {"1:1": (1024, 1024), "3:2": (1536, 1024), "2:3": (1024, 1536)}[ratio]
        if dims is None:
            self.problems.append(("size", f"size {size!r} is not supported by {model}"))
        self.width, self.height = dims or (1024, 1024)
        qualities = ("low", "medium", "high", "auto") + (("xhigh", "max") if model in GEN25 else ())
        if p.quality is not None and p.quality not in qualities:
            self.problems.append(("quality", f"quality {p.quality!r} is not supported by {model}"))
        self.fmt = p.output_format or "png"
        if p.background == "transparent" and self.fmt not in ("png", "webp"):
            self.problems.append(("background", "transparent background needs output_format png or webp"))
        if p.output_compression not in (None, 100) and self.fmt not in ("jpeg", "webp"):
            self.problems.append(("output_compression", "output_compression is only for jpeg/webp"))
        if response_format == "url":
            self.problems.append(("response_format", f"response_format 'url' is not supported by {model}"))
        if p.partial_images is not None and not p.stream:
            self.problems.append(("partial_images", "partial_images is only valid with stream: true"))
        if edit and fidelity is not None:
            if model in GEN2 + GEN25:
                self.problems.append(("input_fidelity", f"input_fidelity must be omitted for {model}"))
            elif model == "gpt-image-1-mini" and fidelity != "low":
                self.problems.append(("input_fidelity", "gpt-image-1-mini supports input_fidelity low only"))
        self.quality = "medium" if p.quality in (None, "auto") else p.quality
        self.size = f"{self.width}x{self.height}"
        self.n = p.n or 1
        self.input_images = input_images
        self.fidelity = fidelity or "low"

    def raise_problems(self) -> None:
        if self.problems:
            param, message = self.problems[0]
            raise openai_fail(
                400,
                f"Invalid value for '{param}': {message}.",
                [f"{param}: {m}" for param, m in self.problems],
                param=param,
                code="invalid_value",
            )

    def usage(self) -> dict[str, Any]:
        if self.model in GEN1:
            per_image = GEN1_TOKENS[self.quality].get(self.size, GEN1_TOKENS[self.quality]["1024x1024"])
        else:
            per_image = round(GEN2_TOKENS_1024[self.quality] * self.width * self.height / (1024 * 1024))
        text_tokens = max(1, prompt_words(self.p.prompt))
        image_in = INPUT_IMAGE_TOKENS[self.fidelity] * self.input_images
        drafts = (self.p.partial_images or 0) if self.p.stream else 0
        output = (per_image + PARTIAL_IMAGE_TOKENS * drafts) * self.n
        return {
            "input_tokens": text_tokens + image_in,
            "input_tokens_details": {"text_tokens": text_tokens, "image_tokens": image_in},
            "output_tokens": output,
            "output_tokens_details": {"image_tokens": output, "text_tokens": 0},
            "total_tokens": text_tokens + image_in + output,
        }

    def build(self, kind: str | None) -> FakeResponse:
        if kind == "moderation":
            return json_response(400, {"error": MODERATION})
        if kind == "bad_json":
            return raw_json_response(200, '{"created": ' + str(int(time.time())) + ', "data": [')
        transparent = self.p.background == "transparent"
        data = []
        for i in range(0 if kind == "no_image" else self.n):
            encoded = img.b64(
                img.render(
                    self.width,
                    self.height,
                    self.fmt,
                    img.colour_for(self.p.prompt) + i,
                    transparent,
                    self.p.output_compression,
                )
            )
            if kind == "bad_base64":
                encoded = "!!!not base64!!!"
            elif kind == "wrong_mime":
                encoded = img.b64(img.NOT_AN_IMAGE)
            data.append({"b64_json": encoded})
        echo = {
            "background": "transparent" if transparent else "opaque",
            "output_format": self.fmt,
            "size": self.size,
            "quality": self.quality,
        }
        if not self.p.stream:
            return json_response(
                200,
                {"created": int(time.time()), "data": data, **echo, "usage": self.usage()},
                {"x-request-id": new_id("req_", 24)},
            )
        return self._stream(data, echo, kind)

    def _stream(self, data: list[dict[str, Any]], echo: dict[str, Any], kind: str | None) -> FakeResponse:
        """Server-sent events as the OpenAI API streams them: each image's drafts
        (``*.partial_image``, ``partial_image_index`` from 0), then its ``*.completed`` event with
        the call's usage; ``STREAM_PAUSE_S`` apart. The ``stream_error`` fault sends the first
        image's drafts, then an ``error`` event, and ends."""
        prefix = "image_edit" if self.edit else "image_generation"
        transparent = self.p.background == "transparent"
        events: list[tuple[str, dict[str, Any]]] = []
        for i, item in enumerate(data):
            for j in range(self.p.partial_images or 0):
                # a draft is a picture of its own, never its image's final colour
                colour = img.colour_for(self.p.prompt) + i + j + 1
                draft = img.b64(img.render(self.width, self.height, self.fmt, colour, transparent))
                events.append((f"{prefix}.partial_image", {
                    "type": f"{prefix}.partial_image", "b64_json": draft, "partial_image_index": j,
                    "created_at": int(time.time()), **echo}))
            if kind == "stream_error":
                events.append(("error", {"error": STREAM_ERROR}))
                break
            events.append((f"{prefix}.completed", {
                "type": f"{prefix}.completed", "b64_json": item["b64_json"], "created_at": int(time.time()),
                **echo, "usage": self.usage()}))
        return event_stream([(STREAM_PAUSE_S if i else 0.0, f"event: {name}\ndata: {json.dumps(e)}\n\n".encode())
                             for i, (name, e) in enumerate(events)], {"x-request-id": new_id("req_", 24)})


# --- /v1/images/generations -----------------------------------------------------------------------


def handle_generations(fake: FakeUpstream, req: FakeRequest, call: Call) -> Accepted:
    check_bearer(req, fake.openai_key, "openai_generations")
    data, problem = load_json_object(req)
    if problem or data is None:
        raise openai_fail(400, "We could not parse the JSON body of your request.", [problem or "no body"])
    model = _check_model(call, data.get("model"))
    body: GenerationsRequest = validate_body(GenerationsRequest, data)
    plan = _ImagePlan(model, body, edit=False, response_format=body.response_format)
    plan.raise_problems()
    return Accepted(model, body.prompt, plan.build)


# --- /v1/images/edits -----------------------------------------------------------------------------

FILE_PARTS = ("image", "image[]", "mask", "markup")
INT_FIELDS = ("n", "output_compression", "partial_images")


def handle_edits(fake: FakeUpstream, req: FakeRequest, call: Call) -> Accepted:
    check_bearer(req, fake.openai_key, "openai_edits")
    if req.content_type == "application/json":
        return _edits_json(req, call)
    if req.content_type != "multipart/form-data" or call.form is None or call.files is None:
        raise openai_fail(
            400,
            "Invalid Content-Type header; expected multipart/form-data or application/json.",
            [
                f"edits body must be multipart/form-data or JSON, got {req.content_type!r}"
                + ("" if req.content_type != "multipart/form-data" else " (unparseable multipart)")
            ],
        )
    form, files = call.form, call.files
    problems: list[str] = []
    fields: dict[str, Any] = {}
    for name, values in form.items():
        if name in FILE_PARTS:
            problems.append(f"{name} must be a file part, got a text field")
        elif len(values) != 1:
            problems.append(f"text field {name} sent {len(values)} times")
        else:
            fields[name] = values[0]
    for name in files:
        if name not in FILE_PARTS:
            problems.append(f"unknown file part {name!r}")
    if problems:
        raise openai_fail(400, problems[0], problems, code="unknown_parameter")
    for name in INT_FIELDS:
        if name in fields:
            try:
                fields[name] = int(fields[name])
            except ValueError:
                problems.append(f"{name}: {fields[name]!r} is not an integer")
    if "stream" in fields:
        if fields["stream"] not in ("true", "false"):
            problems.append(f"stream: {fields['stream']!r} is not true/false")
        fields["stream"] = fields["stream"] == "true"
    if problems:
        raise openai_fail(400, problems[0], problems)
    model = _check_model(call, fields.get("model"))
    body: EditFields = validate_body(EditFields, fields)
    images = files.get("image", []) + files.get("image[]", [])
    if not 1 <= len(images) <= 16:
        problems.append(f"edits need 1-16 images, got {len(images)}")
    first_dims = None
    for i, (filename, ctype, data) in enumerate(images):
        actual = img.sniff(data)
        if actual not in ("image/png", "image/jpeg", "image/webp"):
            problems.append(f"image {i} ({filename}) is not png/webp/jpeg (sniffed {actual})")
        elif ctype.startswith("image/") and ctype != actual:
            problems.append(f"image {i} ({filename}) declared {ctype} but the bytes are {actual}")
        elif i == 0:
            first_dims = img.dimensions(data)
    masks = files.get("mask", [])
    if len(masks) > 1:
        problems.append("at most one mask")
    for filename, _ctype, data in masks[:1]:
        if img.sniff(data) != "image/png":
            problems.append(f"mask ({filename}) must be a PNG")
        elif first_dims and img.dimensions(data) != first_dims:
            problems.append(f"mask size {img.dimensions(data)} does not match the first image {first_dims}")
    if files.get("markup"):
        if model not in GEN25:
            problems.append(f"markup is not supported by {model}")
        if masks:
            problems.append("markup cannot be combined with mask")
    if problems:
        raise openai_fail(400, problems[0], problems, param="image")
    plan = _ImagePlan(
        model,
        body,
        edit=True,
        fidelity=body.input_fidelity,
        input_images=len(images),
        response_format=body.response_format,
        first_dims=first_dims,
    )
    plan.raise_problems()
    return Accepted(model, body.prompt, plan.build)


def _edits_json(req: FakeRequest, call: Call) -> Accepted:
    data, problem = load_json_object(req)
    if problem or data is None:
        raise openai_fail(400, "We could not parse the JSON body of your request.", [problem or "no body"])
    model = _check_model(call, data.get("model"))
    body: EditsJsonRequest = validate_body(EditsJsonRequest, data)
    problems: list[str] = []
    first_dims = None
    for i, ref in enumerate(body.images):
        decoded, problem = _check_ref(ref, f"images[{i}]", ("image/png", "image/jpeg", "image/webp"))
        if problem:
            problems.append(problem)
        elif decoded is not None and i == 0:
            first_dims = img.dimensions(decoded)
    if body.mask is not None:
        decoded, problem = _check_ref(body.mask, "mask", ("image/png",))
        if problem:
            problems.append(problem)
        elif decoded is not None and first_dims and img.dimensions(decoded) != first_dims:
            problems.append(
                f"mask size {img.dimensions(decoded)} does not match the first image {first_dims}"
            )
    if problems:
        raise openai_fail(400, problems[0], problems, param="images")
    plan = _ImagePlan(
        model,
        body,
        edit=True,
        fidelity=body.input_fidelity,
        input_images=len(body.images),
        first_dims=first_dims,
    )
    plan.raise_problems()
    return Accepted(model, body.prompt, plan.build)


def _check_ref(ref: ImageRef, what: str, allowed: tuple[str, ...]) -> tuple[bytes | None, str | None]:
    if ref.file_id is not None or (ref.image_url or "").startswith("https://"):
        return None, None
    parsed = img.parse_data_url(ref.image_url or "")
    if parsed is None:
        return None, f"{what}.image_url must be an https URL or a base64 data URL"
    return img.check_image(parsed[1], parsed[0], f"{what}.image_url", allowed)
