"""One error tree for the whole gateway; each ingress dialect renders it in its own wire shape.

::

    GatewayError                      status  kind (ErrorKind)
     ├── InvalidRequestError            400   INVALID_REQUEST    (param names the field)
     │    └── ContentPolicyError        400   CONTENT_POLICY     (a blocked prompt; never retried)
     ├── AuthenticationError            401   AUTHENTICATION
     ├── PermissionDeniedError          403   PERMISSION
     ├── NotFoundError                  404   NOT_FOUND
     │    └── ModelNotFoundError        404   MODEL_NOT_FOUND
     ├── GoneError                      410   GONE               (a job or file retention deleted)
     ├── ConflictError                  409   CONFLICT
     ├── PayloadTooLargeError           413   PAYLOAD_TOO_LARGE
     ├── RateLimitError                 429   RATE_LIMITED       (retry_after set)
     ├── QuotaExceededError             429   INSUFFICIENT_QUOTA
     ├── UpstreamError                  502   UPSTREAM           (retryable decides retries)
     │    ├── UpstreamTimeoutError      504   UPSTREAM_TIMEOUT
     │    └── UpstreamOverloadedError   503   UNAVAILABLE        (429/503/529 through every retry)
     ├── ServiceUnavailableError        503   UNAVAILABLE
     └── JobWaitTimeoutError            504   JOB_TIMEOUT        (the job goes on; job_id set)

    GatewayError itself                 500   INTERNAL

Every dialect renders every :class:`ErrorKind` (a test checks it). Messages are written for the
caller: they name the field or the job, and never carry a secret, a stack trace or an upstream key.
An error is complete when it is raised and never changed afterwards: :meth:`GatewayError.replace`
makes a new one (a dialect saying a field by its own name, for instance).
"""

from __future__ import annotations

import enum
from typing import Any, ClassVar, Self


class ErrorKind(enum.StrEnum):
    """What went wrong, as every dialect's renderer looks it up."""

    INVALID_REQUEST = "invalid_request"
    CONTENT_POLICY = "content_policy"
    AUTHENTICATION = "authentication"
    PERMISSION = "permission"
    NOT_FOUND = "not_found"
    MODEL_NOT_FOUND = "model_not_found"
    GONE = "gone"
    CONFLICT = "conflict"
    PAYLOAD_TOO_LARGE = "payload_too_large"
    RATE_LIMITED = "rate_limited"
    INSUFFICIENT_QUOTA = "insufficient_quota"
    UPSTREAM = "upstream"
    UPSTREAM_TIMEOUT = "upstream_timeout"
    UNAVAILABLE = "unavailable"
    JOB_TIMEOUT = "job_timeout"
    INTERNAL = "internal"


class GatewayError(Exception):
    """Base of every error imagegate answers with. Subclasses fix ``status`` and ``kind``."""

    status: ClassVar[int] = 500
    kind: ClassVar[ErrorKind] = ErrorKind.INTERNAL
    default_code: ClassVar[str | None] = None
    default_retryable: ClassVar[bool] = False

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        retry_after: float | None = None,
        job_id: str | None = None,
        headers: dict[str, str] | None = None,
        retryable: bool | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code if code is not None else self.default_code
        self.retry_after = retry_after
        self.job_id = job_id
        self.headers = dict(headers or {})
        """Extra response headers (x-ratelimit-* on a 429, the job's headers)."""
        self.retryable = self.default_retryable if retryable is None else retryable
        """Whether trying the same thing again may succeed (upstream retries, route fallbacks)."""

    def _fields(self) -> dict[str, Any]:
        return {"message": self.message, "param": self.param, "code": self.code, "retry_after": self.retry_after,
                "job_id": self.job_id, "headers": dict(self.headers), "retryable": self.retryable}

    def replace(self, **changes: Any) -> Self:
        """A new error of the same class with ``changes`` applied; this one stays as it was."""
        return type(self)(**{**self._fields(), **changes})

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r}, param={self.param!r}, code={self.code!r})"


class InvalidRequestError(GatewayError):
    status = 400
    kind = ErrorKind.INVALID_REQUEST
    default_code = "invalid_value"

    def with_param(self, names: dict[str, str]) -> InvalidRequestError:
        """This error naming its field as the caller's dialect does (``aspect_ratio`` ->
        ``generationConfig.imageConfig.aspectRatio``); itself when the field has no other name."""
        if self.param is None or self.param not in names:
            return self
        wire = names[self.param]
        return self.replace(param=wire, message=self.message.replace(f"'{self.param}'", f"'{wire}'"))


class ContentPolicyError(InvalidRequestError):
    kind = ErrorKind.CONTENT_POLICY
    default_code = "moderation_blocked"


class AuthenticationError(GatewayError):
    status = 401
    kind = ErrorKind.AUTHENTICATION
    default_code = "invalid_api_key"


class PermissionDeniedError(GatewayError):
    status = 403
    kind = ErrorKind.PERMISSION


class NotFoundError(GatewayError):
    status = 404
    kind = ErrorKind.NOT_FOUND
    default_code = "not_found"


class ModelNotFoundError(NotFoundError):
    kind = ErrorKind.MODEL_NOT_FOUND
    default_code = "model_not_found"


class GoneError(GatewayError):
    """A job or file that existed and that retention (``IMAGEGATE_RESULT_TTL_S``) has deleted."""

    status = 410
    kind = ErrorKind.GONE
    default_code = "expired"


class ConflictError(GatewayError):
    status = 409
    kind = ErrorKind.CONFLICT
    default_code = "conflict"


class PayloadTooLargeError(GatewayError):
    status = 413
    kind = ErrorKind.PAYLOAD_TOO_LARGE
    default_code = "request_too_large"


class RateLimitError(GatewayError):
    status = 429
    kind = ErrorKind.RATE_LIMITED
    default_code = "rate_limit_exceeded"
    default_retryable = True


class QuotaExceededError(GatewayError):
    status = 429
    kind = ErrorKind.INSUFFICIENT_QUOTA
    default_code = "insufficient_quota"


class UpstreamError(GatewayError):
    """The upstream failed or answered outside its wire format."""

    status = 502
    kind = ErrorKind.UPSTREAM
    default_code = "upstream_error"

    def __init__(self, message: str, *, upstream_status: int | None = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.upstream_status = upstream_status

    def _fields(self) -> dict[str, Any]:
        return {**super()._fields(), "upstream_status": self.upstream_status}

    @property
    def route_failed(self) -> bool:
        """The route itself failed (retries spent, model gone, credentials or quota refused):
        another route of the fallback chain may still serve the request."""
        return self.retryable or self.upstream_status in (401, 403, 404, 429)


class UpstreamTimeoutError(UpstreamError):
    status = 504
    kind = ErrorKind.UPSTREAM_TIMEOUT
    default_code = "upstream_timeout"


class UpstreamOverloadedError(UpstreamError):
    """The upstream is rate-limiting or overloaded (429/503/529) and stayed so through retries."""

    status = 503
    kind = ErrorKind.UNAVAILABLE
    default_code = "upstream_overloaded"


class ServiceUnavailableError(GatewayError):
    status = 503
    kind = ErrorKind.UNAVAILABLE
    default_code = "service_unavailable"
    default_retryable = True


class JobWaitTimeoutError(GatewayError):
    """A synchronous caller waited ``IMAGEGATE_SYNC_TIMEOUT_S``; the job itself goes on."""

    status = 504
    kind = ErrorKind.JOB_TIMEOUT
    default_code = "job_timeout"


_IMAGE_ERROR_CLASSES: dict[str, type[GatewayError]] = {
    "moderation_blocked": ContentPolicyError,
    "content_policy_violation": ContentPolicyError,
    "upstream_timeout": UpstreamTimeoutError,
    "upstream_overloaded": UpstreamOverloadedError,
    "upstream_unavailable": ServiceUnavailableError,
}


def error_for_failed_job(code: str | None, message: str | None, *, job_id: str,
                         headers: dict[str, str] | None = None) -> GatewayError:
    """The error a synchronous caller gets when none of its job's images was delivered."""
    cls = _IMAGE_ERROR_CLASSES.get(code or "", UpstreamError)
    text = message or "The model returned no image."
    return cls(text, code=code or "no_images_generated", job_id=job_id, headers=headers)
