"""One error tree for the whole gateway; each ingress dialect renders it in its own wire shape.

::

    GatewayError                      status  kind
     ├── InvalidRequestError            400   invalid_request   (param names the field)
     │    └── ContentPolicyError        400   content_policy    (a blocked prompt; never retried)
     ├── AuthenticationError            401   authentication
     ├── PermissionDeniedError          403   permission
     ├── NotFoundError                  404   not_found
     │    └── ModelNotFoundError        404   model_not_found
     ├── ConflictError                  409   conflict
     ├── PayloadTooLargeError           413   payload_too_large
     ├── RateLimitError                 429   rate_limited      (retry_after set)
     ├── QuotaExceededError             429   insufficient_quota
     ├── UpstreamError                  502   upstream          (retryable decides retries)
     │    ├── UpstreamTimeoutError      504   upstream_timeout
     │    └── UpstreamOverloadedError   503   unavailable       (429/503/529 through every retry)
     ├── ServiceUnavailableError        503   unavailable
     └── JobWaitTimeoutError            504   job_timeout       (the job goes on; job_id set)

Messages are written for the caller: they name the field or the job, and never carry a secret,
a stack trace or an upstream key.
"""

from __future__ import annotations

from typing import ClassVar


class GatewayError(Exception):
    """Base of every error imagegate answers with. Subclasses fix ``status`` and ``kind``."""

    status: ClassVar[int] = 500
    kind: ClassVar[str] = "internal"
    default_code: ClassVar[str | None] = None
    retryable: ClassVar[bool] = False

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        retry_after: float | None = None,
        job_id: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code if code is not None else self.default_code
        self.retry_after = retry_after
        self.job_id = job_id
        self.headers = dict(headers or {})
        """Extra response headers (x-ratelimit-* on a 429)."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r}, param={self.param!r}, code={self.code!r})"


class InvalidRequestError(GatewayError):
    status = 400
    kind = "invalid_request"
    default_code = "invalid_value"


class ContentPolicyError(InvalidRequestError):
    kind = "content_policy"
    default_code = "moderation_blocked"


class AuthenticationError(GatewayError):
    status = 401
    kind = "authentication"
    default_code = "invalid_api_key"


class PermissionDeniedError(GatewayError):
    status = 403
    kind = "permission"


class NotFoundError(GatewayError):
    status = 404
    kind = "not_found"
    default_code = "not_found"


class ModelNotFoundError(NotFoundError):
    kind = "model_not_found"
    default_code = "model_not_found"


class ConflictError(GatewayError):
    status = 409
    kind = "conflict"
    default_code = "conflict"


class PayloadTooLargeError(GatewayError):
    status = 413
    kind = "payload_too_large"
    default_code = "request_too_large"


class RateLimitError(GatewayError):
    status = 429
    kind = "rate_limited"
    default_code = "rate_limit_exceeded"
    retryable = True


class QuotaExceededError(GatewayError):
    status = 429
    kind = "insufficient_quota"
    default_code = "insufficient_quota"


class UpstreamError(GatewayError):
    """The upstream failed or answered outside its wire format."""

    status = 502
    kind = "upstream"
    default_code = "upstream_error"

    def __init__(
        self, message: str, *, retryable: bool = False, upstream_status: int | None = None,
        **kwargs: object,
    ) -> None:
        super().__init__(message, **kwargs)  # type: ignore[arg-type]
        self.retryable = retryable  # type: ignore[misc]
        self.upstream_status = upstream_status

    @property
    def route_failed(self) -> bool:
        """The route itself failed (retries spent, model gone, credentials or quota refused):
        another route of the fallback chain may still serve the request."""
        return self.retryable or self.upstream_status in (401, 403, 404, 429)


class UpstreamTimeoutError(UpstreamError):
    status = 504
    kind = "upstream_timeout"
    default_code = "upstream_timeout"


class UpstreamOverloadedError(UpstreamError):
    """The upstream is rate-limiting or overloaded (429/503/529) and stayed so through retries."""

    status = 503
    kind = "unavailable"
    default_code = "upstream_overloaded"


class ServiceUnavailableError(GatewayError):
    status = 503
    kind = "unavailable"
    default_code = "service_unavailable"
    retryable = True


class JobWaitTimeoutError(GatewayError):
    """A synchronous caller waited ``IMAGEGATE_SYNC_TIMEOUT_S``; the job itself goes on."""

    status = 504
    kind = "job_timeout"
    default_code = "job_timeout"


_IMAGE_ERROR_CLASSES: dict[str, type[GatewayError]] = {
    "moderation_blocked": ContentPolicyError,
    "content_policy_violation": ContentPolicyError,
    "upstream_timeout": UpstreamTimeoutError,
    "upstream_overloaded": UpstreamOverloadedError,
}


def error_for_failed_job(code: str | None, message: str | None, *, job_id: str) -> GatewayError:
    """The error a synchronous caller gets when none of its job's images was delivered."""
    cls = _IMAGE_ERROR_CLASSES.get(code or "", UpstreamError)
    text = message or "The model returned no image."
    return cls(text, code=code or "no_images_generated", job_id=job_id)
