"""Reading request bodies: size-capped, parsed straight into a wire model, errors naming the field."""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.errors import error_response
from core.errors import InvalidRequestError, PayloadTooLargeError
from core.text import refused_character

ModelT = TypeVar("ModelT", bound=BaseModel)

_JSON_HINT = (
    "We could not parse the JSON body of your request. (HINT: This likely means you aren't "
    "using your HTTP library correctly. The API expects a JSON payload.)"
)


def _param(loc: tuple[Any, ...]) -> str | None:
    parts = [str(p) for p in loc]
    if not parts:
        return None
    out = parts[0]
    for part in parts[1:]:
        out += f"[{part}]" if part.isdigit() else f".{part}"
    return out


def validation_to_error(exc: ValidationError) -> InvalidRequestError:
    """The first validation problem, phrased as OpenAI does, naming the field."""
    first = exc.errors(include_url=False)[0]
    param = _param(tuple(first.get("loc", ())))
    kind = first.get("type", "")
    ctx = first.get("ctx") or {}
    if kind == "missing":
        return InvalidRequestError(
            f"Missing required parameter: '{param}'.", param=param, code="missing_required_parameter"
        )
    if kind == "json_invalid":
        return InvalidRequestError(_JSON_HINT, code="invalid_json")
    if param is None and (kind == "model_type" or kind.endswith("_type")):
        return InvalidRequestError(
            "The request body must be a JSON object.", code="invalid_type"
        )
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return InvalidRequestError(
            f"Invalid type for '{param}': it must be an object.", param=param, code="invalid_type"
        )
    if kind in ("less_than_equal", "less_than"):
        limit = ctx.get("le", ctx.get("lt"))
        return InvalidRequestError(
            f"Invalid value for '{param}': must be at most {limit}.",
            param=param, code="integer_above_max_value",
        )
    if kind in ("greater_than_equal", "greater_than"):
        limit = ctx.get("ge", ctx.get("gt"))
        return InvalidRequestError(
            f"Invalid value for '{param}': must be at least {limit}.",
            param=param, code="integer_below_min_value",
        )
    if kind == "literal_error":
        return InvalidRequestError(
            f"Invalid value for '{param}': {first.get('input')!r}. Supported values are: "
            f"{ctx.get('expected', '')}.",
            param=param, code="invalid_value",
        )
    if kind.endswith("_type") or kind.endswith("_parsing"):
        return InvalidRequestError(
            f"Invalid type for '{param}': {first.get('msg', 'wrong type')}.",
            param=param, code="invalid_type",
        )
    return InvalidRequestError(
        f"Invalid value for '{param}': {first.get('msg', 'invalid')}.", param=param
    )


def parse_json(body: bytes, model: type[ModelT]) -> ModelT:
    """A JSON body as ``model``, validated strictly: a number field takes a JSON number only
    (``"n": "3"`` and ``"n": true`` are refused), a boolean field ``true`` or ``false`` only; and
    no text in it holds a character a database refuses (:func:`refuse_unstorable`). Multipart
    form fields, text by nature, go through :func:`parse_form` instead."""
    if not body.strip():
        raise InvalidRequestError(_JSON_HINT, code="invalid_json")
    try:
        parsed = model.model_validate_json(body, strict=True)
    except ValidationError as exc:
        raise validation_to_error(exc) from None
    return refuse_unstorable(parsed)


def parse_form(fields: dict[str, str], model: type[ModelT]) -> ModelT:
    """The text fields of a multipart form as ``model``: numbers and booleans are parsed from
    their text (``"3"``, ``"true"``), as every form field is text; no text may hold a character
    a database refuses."""
    try:
        parsed = model.model_validate(fields)
    except ValidationError as exc:
        raise validation_to_error(exc) from None
    return refuse_unstorable(parsed)


def _first_unstorable(value: Any, loc: tuple[Any, ...]) -> tuple[tuple[Any, ...], str] | None:
    """Where the first refused character of ``value`` is, and which one it is."""
    if isinstance(value, str):
        found = refused_character(value)
        return (loc, found) if found else None
    children: list[tuple[Any, Any]] = []
    if isinstance(value, BaseModel):
        children = [(field.alias or name, getattr(value, name)) for name, field in type(value).model_fields.items()]
    elif isinstance(value, list | tuple):
        children = list(enumerate(value))
    elif isinstance(value, dict):
        children = [pair for key, item in value.items() for pair in ((key, key), (key, item))]  # keys too
    for part, child in children:
        hit = _first_unstorable(child, (*loc, part))
        if hit is not None:
            return hit
    return None


def refuse_unstorable(model: ModelT) -> ModelT:
    """``model`` itself, when none of its text (fields, list items, mapping keys and values,
    nested) holds a character a database refuses (:mod:`core.text`: NUL, lone surrogates);
    otherwise a 400 naming the first field that does, as the caller wrote it."""
    hit = _first_unstorable(model, ())
    if hit is None:
        return model
    loc, found = hit
    param = _param(loc)
    raise InvalidRequestError(
        f"Invalid value for '{param}': it contains {found}; text may not hold NUL characters or lone surrogates.",
        param=param, code="invalid_value")


class BodySizeLimit:
    """ASGI middleware: a body over the limit is refused (413) before it is read into memory."""

    def __init__(self, app: ASGIApp, *, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = 0
                if declared > self.max_bytes:
                    await self._too_large(scope, receive, send)
                    return
        received = 0
        max_bytes = self.max_bytes

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > max_bytes:
                    raise self.error()
            return message

        await self.app(scope, limited_receive, send)

    def error(self) -> PayloadTooLargeError:
        limit_mb = self.max_bytes / (1024 * 1024)
        return PayloadTooLargeError(
            f"The request body exceeds the limit of {limit_mb:g} MiB.", code="request_too_large"
        )

    async def _too_large(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = error_response(Request(scope, receive), self.error())
        response.headers["Connection"] = "close"
        await response(scope, receive, send)
