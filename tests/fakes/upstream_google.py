"""Gemini image models on the Gemini API and Vertex AI: ``generateContent`` and
``streamGenerateContent`` (https://ai.google.dev/api/generate-content, and Vertex AI's
https://cloud.google.com/vertex-ai/generative-ai/docs/model-reference/inference), plus the Google
auth and error helpers the Imagen module shares."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic.alias_generators import to_camel

from tests.fakes import upstream_images as img
from tests.fakes.upstream_common import (
    Accepted,
    FakeRequest,
    FakeResponse,
    Reject,
    google_error,
    json_response,
    load_json_object,
    new_id,
    prompt_words,
    pydantic_messages,
    raw_json_response,
)

if TYPE_CHECKING:
    from tests.fakes.upstream import FakeUpstream


class GoogleModel(BaseModel):
    """Google's proto3 JSON: lowerCamelCase (snake_case also accepted), unknown fields refused."""

    model_config = ConfigDict(
        extra="forbid", strict=True, alias_generator=to_camel, validate_by_name=True, validate_by_alias=True
    )


class InlineData(GoogleModel):
    mime_type: str
    data: str


class FileData(GoogleModel):
    mime_type: str | None = None
    file_uri: str


class Part(GoogleModel):
    text: str | None = None
    inline_data: InlineData | None = None
    file_data: FileData | None = None
    thought: bool | None = None
    thought_signature: str | None = None

    @model_validator(mode="after")
    def _one_data_field(self) -> Part:
        present = [n for n in ("text", "inline_data", "file_data") if getattr(self, n) is not None]
        if len(present) != 1:
            raise ValueError(
                f"a part needs exactly one of text, inlineData, fileData (got {present or 'none'})"
            )
        return self


class Content(GoogleModel):
    role: Literal["user", "model"] | None = None
    parts: Annotated[list[Part], Field(min_length=1)]


class TextPart(GoogleModel):
    text: str


class SystemInstruction(GoogleModel):
    role: str | None = None
    parts: Annotated[list[TextPart], Field(min_length=1)]


class ImageOutputOptions(GoogleModel):
    mime_type: Literal["image/png", "image/jpeg"] | None = None
    compression_quality: Annotated[int, Field(ge=0, le=100)] | None = None


class ImageConfig(GoogleModel):
    aspect_ratio: str | None = None
    image_size: str | None = None
    person_generation: Literal["ALLOW_ALL", "ALLOW_ADULT", "ALLOW_NONE"] | None = None
    prominent_people: Literal["ALLOW_PROMINENT_PEOPLE", "BLOCK_PROMINENT_PEOPLE"] | None = None
    image_output_options: ImageOutputOptions | None = None


class ThinkingConfig(GoogleModel):
    thinking_level: Literal["MINIMAL", "HIGH"] | None = None
    include_thoughts: bool | None = None


class GenerationConfig(GoogleModel):
    response_modalities: Annotated[list[Literal["TEXT", "IMAGE"]], Field(min_length=1)] | None = None
    image_config: ImageConfig | None = None
    thinking_config: ThinkingConfig | None = None
    candidate_count: int | None = None
    temperature: Annotated[float, Field(ge=0, le=2)] | None = None
    top_p: Annotated[float, Field(ge=0, le=1)] | None = None
    top_k: Annotated[int, Field(ge=1)] | None = None
    seed: int | None = None
    max_output_tokens: Annotated[int, Field(ge=1)] | None = None


GEMINI_API_CATEGORIES = (
    "HARM_CATEGORY_HARASSMENT",
    "HARM_CATEGORY_HATE_SPEECH",
    "HARM_CATEGORY_SEXUALLY_EXPLICIT",
    "HARM_CATEGORY_DANGEROUS_CONTENT",
    "HARM_CATEGORY_CIVIC_INTEGRITY",
)
VERTEX_ONLY_CATEGORIES = (
    "HARM_CATEGORY_IMAGE_HATE",
    "HARM_CATEGORY_IMAGE_DANGEROUS_CONTENT",
    "HARM_CATEGORY_IMAGE_HARASSMENT",
    "HARM_CATEGORY_IMAGE_SEXUALLY_EXPLICIT",
    "HARM_CATEGORY_JAILBREAK",
)


class SafetySetting(GoogleModel):
    category: Literal[GEMINI_API_CATEGORIES + VERTEX_ONLY_CATEGORIES]  # type: ignore[valid-type]
    threshold: Literal[
        "HARM_BLOCK_THRESHOLD_UNSPECIFIED",
        "BLOCK_LOW_AND_ABOVE",
        "BLOCK_MEDIUM_AND_ABOVE",
        "BLOCK_ONLY_HIGH",
        "BLOCK_NONE",
        "OFF",
    ]


class GenerateContentRequest(GoogleModel):
    contents: Annotated[list[Content], Field(min_length=1)]
    system_instruction: SystemInstruction | None = None
    generation_config: GenerationConfig | None = None
    safety_settings: list[SafetySetting] | None = None
    labels: dict[str, str] | None = None


SAFETY_RATINGS = [
    {
        "category": c,
        "probability": "HIGH" if i == 2 else "NEGLIGIBLE",
        **({"blocked": True} if i == 2 else {}),
    }
    for i, c in enumerate(GEMINI_API_CATEGORIES[:4])
]  # blocked: sexually explicit


# --- Errors, auth, models -----------------------------------------------------------------------


def reject(
    code: int,
    message: str,
    violations: list[str] | None,
    status: str | None = None,
    details: list[dict[str, Any]] | None = None,
) -> Reject:
    return Reject(json_response(code, google_error(code, message, status, details)), violations)


def bad_request(violations: list[str]) -> Reject:
    details = [
        {
            "@type": "type.googleapis.com/google.rpc.BadRequest",
            "fieldViolations": [{"description": v} for v in violations],
        }
    ]
    return reject(
        400, "Invalid JSON payload received. " + violations[0], violations, "INVALID_ARGUMENT", details
    )


def not_found(model: str, method: str, violation: bool) -> Reject:
    message = (
        f"models/{model} is not found for API version v1beta, or is not supported for {method}. "
        "Call ListModels to see the list of available models and their supported methods."
    )
    return reject(404, message, [f"model {model!r} is not available for {method}"] if violation else [])


def check_auth(fake: FakeUpstream, req: FakeRequest, vertex: bool, project: str | None) -> None:
    """Gemini API: ``x-goog-api-key`` or ``?key=``. Vertex: a Bearer token issued by /token."""
    if not vertex:
        key = req.headers.get("x-goog-api-key") or (req.query.get("key") or [None])[0]
        if key != fake.gemini_key:
            why = "missing" if not key else "wrong"
            raise reject(
                400,
                "API key not valid. Please pass a valid API key.",
                [f"Gemini API key {why} (x-goog-api-key header or ?key=)"],
                "INVALID_ARGUMENT",
                [
                    {
                        "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                        "reason": "API_KEY_INVALID",
                        "domain": "googleapis.com",
                        "metadata": {"service": "generativelanguage.googleapis.com"},
                    }
                ],
            )
        return
    token = req.bearer()
    state, issued = fake.oauth.check_token(token)
    if state != "ok":
        reason = {"expired": "ACCESS_TOKEN_EXPIRED", "unknown": "ACCESS_TOKEN_TYPE_UNSUPPORTED"}[state]
        if token is None:
            reason = "CREDENTIALS_MISSING"
        violation = (
            []
            if state == "expired"
            else [
                "Vertex call without a Bearer token"
                if token is None
                else "Vertex Bearer token was never issued"
            ]
        )
        raise reject(
            401,
            "Request had invalid authentication credentials. Expected OAuth 2 access token, "
            "login cookie or other valid authentication credential.",
            violation,
            "UNAUTHENTICATED",
            [
                {
                    "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                    "reason": reason,
                    "domain": "googleapis.com",
                    "metadata": {"service": "aiplatform.googleapis.com"},
                }
            ],
        )
    assert issued is not None
    if project != issued.project_id:
        raise reject(
            403,
            f"Permission 'aiplatform.endpoints.predict' denied on resource "
            f"'projects/{project}' (or it may not exist).",
            [f"Vertex project {project!r} is not the service account's project {issued.project_id!r}"],
            "PERMISSION_DENIED",
        )


def parse_body(req: FakeRequest, model_cls: type[GoogleModel]) -> Any:
    data, problem = load_json_object(req)
    if problem:
        raise bad_request([problem])
    try:
        return model_cls.model_validate(data)
    except ValidationError as exc:
        raise bad_request([f"{loc}: {msg}" for loc, msg, _ in pydantic_messages(exc)]) from exc


# --- generateContent ----------------------------------------------------------------------------


def handle_generate(
    fake: FakeUpstream, req: FakeRequest, *, model: str, vertex: bool, stream: bool, project: str | None
) -> Accepted:
    check_auth(fake, req, vertex, project)
    method = "streamGenerateContent" if stream else "generateContent"
    if model in img.GEMINI_SHUT_DOWN:
        raise not_found(model, method, violation=False)
    if model not in img.GEMINI_MODELS:
        raise not_found(model, method, violation=True)
    alt = req.query.get("alt", [None])[0]
    if stream and alt not in (None, "sse", "json"):
        raise bad_request([f"alt must be sse or json, got {alt!r}"])
    body: GenerateContentRequest = parse_body(req, GenerateContentRequest)
    problems: list[str] = []
    texts: list[str] = []
    first_image: bytes | None = None
    n_images = 0
    for i, content in enumerate(body.contents):
        if vertex and content.role is None:
            problems.append(f"contents[{i}].role is required on Vertex")
        for j, part in enumerate(content.parts):
            where = f"contents[{i}].parts[{j}]"
            if part.text is not None:
                texts.append(part.text)
            if part.inline_data is not None:
                data, problem = img.check_image(
                    part.inline_data.data, part.inline_data.mime_type, f"{where}.inlineData"
                )
                if problem:
                    problems.append(problem)
                n_images += 1
                first_image = first_image or data
            if part.file_data is not None:
                n_images += 1
                if not part.file_data.file_uri.startswith(("https://", "http://", "gs://")):
                    problems.append(f"{where}.fileData.fileUri must be an http(s) or gs:// URI")
            if part.thought_signature is not None and img.strict_b64decode(part.thought_signature) is None:
                problems.append(f"{where}.thoughtSignature is not base64")
    if body.system_instruction is not None:
        texts.extend(p.text for p in body.system_instruction.parts)
    if not vertex and body.labels is not None:
        problems.append("labels is only accepted on Vertex AI")
    for k, setting in enumerate(body.safety_settings or []):
        if not vertex and setting.category in VERTEX_ONLY_CATEGORIES:
            problems.append(f"safetySettings[{k}].category {setting.category} is Vertex only")
    config = body.generation_config or GenerationConfig()
    image_config = config.image_config or ImageConfig()
    if not vertex:
        for name in ("person_generation", "prominent_people", "image_output_options"):
            if getattr(image_config, name) is not None:
                problems.append(
                    f"generationConfig.imageConfig.{to_camel(name)} is only accepted on Vertex AI"
                )
    ratios = img.GEMINI_RATIOS[model]
    if image_config.aspect_ratio is not None and image_config.aspect_ratio not in ratios:
        problems.append(
            f"generationConfig.imageConfig.aspectRatio {image_config.aspect_ratio!r} is not "
            f"supported by {model} ({', '.join(ratios)})"
        )
    sizes = img.GEMINI_IMAGE_SIZES[model]
    if image_config.image_size is not None and image_config.image_size not in sizes:
        problems.append(
            f"generationConfig.imageConfig.imageSize {image_config.image_size!r} is not "
            f"accepted by {model}" + (f" ({', '.join(sizes)})" if sizes else "")
        )
    thinking = config.thinking_config or ThinkingConfig()
    if thinking.thinking_level is not None and model != "gemini-3.1-flash-image":
        problems.append(f"generationConfig.thinkingConfig.thinkingLevel is not accepted by {model}")
    if config.candidate_count is not None and config.candidate_count < 1:
        problems.append("generationConfig.candidateCount must be >= 1")
    if problems:
        raise bad_request(problems)
    if config.candidate_count is not None and config.candidate_count > 1:
        raise reject(
            400,
            f"Multiple candidates is not enabled for models/{model}",
            [f"candidateCount {config.candidate_count} > 1 (image models return one candidate)"],
        )

    if image_config.aspect_ratio:
        ratio = image_config.aspect_ratio
    else:
        dims = img.dimensions(first_image) if first_image else None
        ratio = img.nearest_ratio(*dims, ratios) if dims else "1:1"
    tier = image_config.image_size or "1K"
    width, height = img.gemini_size(model, ratio, tier)
    output = image_config.image_output_options or ImageOutputOptions()
    modalities = config.response_modalities or ["TEXT", "IMAGE"]
    prompt = "\n".join(texts)
    plan = _GeminiPlan(
        model=model,
        vertex=vertex,
        width=width,
        height=height,
        fmt="jpeg" if output.mime_type == "image/jpeg" else "png",
        quality=output.compression_quality,
        prompt=prompt,
        prompt_tokens=max(1, prompt_words(prompt)),
        input_images=n_images,
        image_tokens=img.GEMINI_IMAGE_TOKENS[model].get(tier, 1290),
        want_text="TEXT" in modalities,
        want_image="IMAGE" in modalities,
        thinking_level=thinking.thinking_level,
        include_thoughts=bool(thinking.include_thoughts),
    )

    def build(kind: str | None) -> FakeResponse:
        if stream:
            return _stream_response(plan, kind, sse=alt == "sse")
        if kind == "bad_json":
            return raw_json_response(200, '{"candidates": [')
        return json_response(200, plan.response(kind))

    return Accepted(model, prompt, build)


class _GeminiPlan:
    """Everything needed to answer one accepted generateContent call (normally or with a fault)."""

    def __init__(self, **kw: Any) -> None:
        self.model: str = kw["model"]
        self.vertex: bool = kw["vertex"]
        self.width: int = kw["width"]
        self.height: int = kw["height"]
        self.fmt: str = kw["fmt"]
        self.quality: int | None = kw["quality"]
        self.prompt: str = kw["prompt"]
        self.prompt_tokens: int = kw["prompt_tokens"]
        self.input_images: int = kw["input_images"]
        self.image_tokens: int = kw["image_tokens"]
        self.want_text: bool = kw["want_text"]
        self.want_image: bool = kw["want_image"]
        self.thinking_level: str | None = kw["thinking_level"]
        self.include_thoughts: bool = kw["include_thoughts"]
        self.response_id = new_id(n=22)

    @property
    def mime(self) -> str:
        return img.MIME_BY_FORMAT[self.fmt]

    def thoughts_tokens(self) -> int | None:
        if self.model == "gemini-3-pro-image":
            return 150
        if self.model == "gemini-3.1-flash-image" and self.thinking_level == "HIGH":
            return 120
        return None

    def usage(self, text_tokens: int, image_tokens: int) -> dict[str, Any]:
        prompt_details = [{"modality": "TEXT", "tokenCount": self.prompt_tokens}]
        if self.input_images:
            prompt_details.append({"modality": "IMAGE", "tokenCount": 258 * self.input_images})
        prompt_total = self.prompt_tokens + 258 * self.input_images
        details = []
        if image_tokens:
            details.append({"modality": "IMAGE", "tokenCount": image_tokens})
        if text_tokens:
            details.append({"modality": "TEXT", "tokenCount": text_tokens})
        usage: dict[str, Any] = {
            "promptTokenCount": prompt_total,
            "candidatesTokenCount": image_tokens + text_tokens,
        }
        thoughts = self.thoughts_tokens()
        usage["totalTokenCount"] = prompt_total + image_tokens + text_tokens + (thoughts or 0)
        if thoughts:
            usage["thoughtsTokenCount"] = thoughts
        usage["promptTokensDetails"] = prompt_details
        if details:
            usage["candidatesTokensDetails"] = details
        if self.vertex:
            usage["trafficType"] = "ON_DEMAND"
        return usage

    def envelope(self, body: dict[str, Any]) -> dict[str, Any]:
        body["modelVersion"] = self.model
        body["responseId"] = self.response_id
        if self.vertex:
            body["createTime"] = datetime.now(UTC).isoformat().replace("+00:00", "Z")
        return body

    def response(self, kind: str | None) -> dict[str, Any]:
        """The generateContent response body for a fault kind (None = normal)."""
        if kind == "safety_prompt":
            return self.envelope(
                {
                    "promptFeedback": {"blockReason": "SAFETY", "safetyRatings": SAFETY_RATINGS},
                    "usageMetadata": {
                        "promptTokenCount": self.prompt_tokens,
                        "totalTokenCount": self.prompt_tokens,
                    },
                }
            )
        parts: list[dict[str, Any]] = []
        if self.model == "gemini-3-pro-image" or self.include_thoughts:
            parts.append({"text": "**Composing the scene**\n\nI am planning the layout.", "thought": True})
        if self.model == "gemini-3-pro-image" and kind not in ("safety_finish", "no_image"):
            parts.append(
                {
                    "inlineData": {"mimeType": "image/png", "data": img.b64(img.render(256, 256, "png", 7))},
                    "thought": True,
                }
            )
        text = f"Here is your image: {self.prompt[:60]}".strip()
        if kind == "safety_finish":
            text = "I can't create that image because it may violate the content policy."
        elif kind == "no_image":
            text = "I'm unable to generate an image for this request, here is a description instead."
        text_tokens = 0
        if self.want_text or kind in ("safety_finish", "no_image"):
            parts.append({"text": text})
            text_tokens = prompt_words(text)
        image_tokens = 0
        if self.want_image and kind not in ("safety_finish", "no_image"):
            image_tokens = self.image_tokens
            data = img.b64(
                img.render(
                    self.width, self.height, self.fmt, img.colour_for(self.prompt), quality=self.quality
                )
            )
            mime = self.mime
            if kind == "bad_base64":
                data = "!!!not base64!!!"
            elif kind == "wrong_mime":
                data, mime = img.b64(img.gif_bytes()), "image/png"
            part: dict[str, Any] = {"inlineData": {"mimeType": mime, "data": data}}
            if self.model != "gemini-2.5-flash-image":
                part["thoughtSignature"] = img.b64(b"fake-thought-signature:" + self.response_id.encode())
            parts.append(part)
        candidate: dict[str, Any] = {
            "content": {"role": "model", "parts": parts},
            "finishReason": "IMAGE_SAFETY" if kind == "safety_finish" else "STOP",
            "index": 0,
        }
        if kind == "safety_finish":
            candidate["finishMessage"] = "Unable to show the generated image: it was flagged as unsafe."
            candidate["safetyRatings"] = SAFETY_RATINGS
        return self.envelope(
            {"candidates": [candidate], "usageMetadata": self.usage(text_tokens, image_tokens)}
        )


def _stream_response(plan: _GeminiPlan, kind: str | None, sse: bool) -> FakeResponse:
    """streamGenerateContent: a text chunk, then the image chunk with finishReason and usage."""
    if kind == "bad_json":
        chunks_text = ['{"candidates": [']
    else:
        full = plan.response(kind)
        chunks: list[dict[str, Any]] = [full]
        if "candidates" in full:
            candidate = full["candidates"][0]
            parts = candidate["content"]["parts"]
            last = [p for p in parts if "inlineData" in p and not p.get("thought")] or parts[-1:]
            first = [p for p in parts if p not in last]
            if first:
                early = {
                    "candidates": [{"content": {"role": "model", "parts": first}, "index": 0}],
                    "usageMetadata": {
                        "promptTokenCount": full["usageMetadata"]["promptTokenCount"],
                        "totalTokenCount": full["usageMetadata"]["promptTokenCount"],
                    },
                }
                candidate["content"]["parts"] = last
                chunks = [plan.envelope(early), full]
        chunks_text = [json.dumps(c, separators=(",", ":")) for c in chunks]
    if sse:
        body = "".join(f"data: {c}\r\n\r\n" for c in chunks_text)
        return FakeResponse(200, body.encode(), {"content-type": "text/event-stream"})
    return FakeResponse(
        200, ("[" + ",\r\n".join(chunks_text) + "]").encode(), {"content-type": "application/json"}
    )
