"""Every ErrorKind is rendered by every dialect, in a shape that dialect's own clients parse: the
error tables are complete, the status is the one the kind stands for, and the body validates
against the dialect's error model (and, for Gemini, the google-genai SDK reads it back)."""

from __future__ import annotations

import httpx
import pytest
from google.genai import errors as genai_errors

from api.dialects import DialectPackage
from api.dialects.anthropic_messages.schemas import ErrorResponse as AnthropicError
from api.dialects.anthropic_messages.translate import ERRORS as ANTHROPIC_ERRORS
from api.dialects.gemini.errors import STATUSES as GOOGLE_STATUSES
from api.dialects.gemini.schemas import ErrorResponse as GoogleError
from api.dialects.openai_images.schemas import ErrorResponse as OpenAIError
from api.dialects.openai_images.translate import ERROR_TYPES as OPENAI_TYPES
from api.main import DIALECTS
from core import errors
from core.errors import ErrorKind, GatewayError
from core.generation import Dialect


def _classes(base: type[GatewayError]) -> list[type[GatewayError]]:
    found = [base]
    for sub in base.__subclasses__():
        found += _classes(sub)
    return found


# one error class per kind: the most general class of that kind in the tree
KIND_CLASSES: dict[ErrorKind, type[GatewayError]] = {}
for cls in _classes(GatewayError):
    KIND_CLASSES.setdefault(cls.kind, cls)


def test_every_kind_has_a_class_in_the_tree() -> None:
    assert set(KIND_CLASSES) == set(ErrorKind)
    assert all(c.__module__ == errors.__name__ for c in KIND_CLASSES.values())


@pytest.mark.parametrize("table", [OPENAI_TYPES, ANTHROPIC_ERRORS, GOOGLE_STATUSES],
                         ids=["openai", "anthropic", "google"])
def test_every_error_table_covers_every_kind(table: dict[ErrorKind, object]) -> None:
    assert set(table) == set(ErrorKind)


def test_every_dialect_is_listed() -> None:
    assert {p.dialect for p in DIALECTS} == set(Dialect) - {Dialect.JOBS}


def _error(kind: ErrorKind) -> GatewayError:
    return KIND_CLASSES[kind]("Something about 'n'.", param="n", code="some_code", retry_after=2.5,
                              job_id="job_0123")


@pytest.mark.parametrize("kind", list(ErrorKind))
@pytest.mark.parametrize("package", DIALECTS, ids=[p.dialect.value for p in DIALECTS])
def test_every_dialect_renders_every_kind(package: DialectPackage, kind: ErrorKind) -> None:
    error = _error(kind)
    wire = package.render_error(error)
    assert 400 <= wire.status < 600
    if package.dialect in (Dialect.OPENAI_IMAGES, Dialect.OPENAI_CHAT):
        body = OpenAIError.model_validate(wire.body)
        assert wire.status == error.status
        assert body.error.type == OPENAI_TYPES[kind] and body.error.param == "n" and body.error.code == "some_code"
        assert body.error.message.startswith("Something about 'n'.")
    elif package.dialect in (Dialect.ANTHROPIC_MESSAGES, Dialect.SIMPLE):
        body_a = AnthropicError.model_validate(wire.body)
        assert (wire.status, body_a.error.type) == ANTHROPIC_ERRORS[kind]
        assert wire.headers["request-id"].startswith("req_")
    else:
        GoogleError.model_validate(wire.body)
        assert wire.status == wire.body["error"]["code"]  # type: ignore[index]
        response = httpx.Response(wire.status, json=wire.body)
        with pytest.raises(genai_errors.APIError) as info:
            genai_errors.APIError.raise_for_response(response)
        assert info.value.code == wire.status
        assert info.value.status == GOOGLE_STATUSES[kind][1] or kind is ErrorKind.AUTHENTICATION


def test_an_error_is_never_changed_by_renaming_its_field() -> None:
    original = errors.InvalidRequestError("Invalid value for 'aspect_ratio': '7:1'.", param="aspect_ratio")
    renamed = original.with_param({"aspect_ratio": "image_config.aspect_ratio"})
    assert (original.param, original.message) == ("aspect_ratio", "Invalid value for 'aspect_ratio': '7:1'.")
    assert (renamed.param, renamed.message) == ("image_config.aspect_ratio",
                                                "Invalid value for 'image_config.aspect_ratio': '7:1'.")
    assert type(renamed) is type(original) and renamed is not original


def test_retryable_is_an_instance_field() -> None:
    assert errors.UpstreamError("x").retryable is False
    assert errors.UpstreamError("x", retryable=True).retryable is True
    assert errors.ServiceUnavailableError("x").retryable is True
    upstream = errors.UpstreamOverloadedError("busy", upstream_status=503, retryable=True)
    copy = upstream.replace(message="still busy")
    assert (copy.retryable, copy.upstream_status, copy.message) == (True, 503, "still busy")
