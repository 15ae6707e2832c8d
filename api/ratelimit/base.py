"""The rate limiter's shared vocabulary: limits, decisions, admissions, headers (the algorithm is
described in :mod:`api.ratelimit`)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

DEFAULT_WINDOW_S = 60.0
DIMENSIONS = ("requests", "images")


@dataclass(frozen=True)
class RateLimits:
    """Limits of one API key; ``None`` means unlimited."""

    rpm: int | None = None
    images_per_minute: int | None = None

    def __post_init__(self) -> None:
        for name in ("rpm", "images_per_minute"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ValueError(f"{name} must be >= 0 or None, not {value}")

    @property
    def unlimited(self) -> bool:
        return self.rpm is None and self.images_per_minute is None


@dataclass(frozen=True)
class Admission:
    """What an admitted request counted, so that it can be given back."""

    key_id: str
    uid: str
    images: int
    limits: RateLimits
    entries: tuple[tuple[str, tuple[float, int]], ...] = ()
    """In-process logs: (dimension, the entry appended)."""
    via: object = None
    """The limiter that admitted it."""


@dataclass(frozen=True)
class RateDecision:
    allowed: bool
    retry_after_s: float | None = None
    """When refused: seconds until the request would fit; ``None`` if allowed, or if it never can
    (it asks for more than the limit)."""
    headers: dict[str, str] = field(default_factory=dict)
    admission: Admission | None = None
    """Set when the request was admitted and counted."""


@runtime_checkable
class RateLimiter(Protocol):
    async def check(self, key_id: str, *, images: int, limits: RateLimits) -> RateDecision:
        """Count the request (1) and its ``images`` against ``key_id``'s limits — both, or nothing."""
        ...

    async def refund(self, admission: Admission) -> None:
        """Give back what an admitted request counted (it was refused after all)."""
        ...


def format_duration(seconds: float) -> str:
    """A duration as OpenAI's rate-limit headers write it (Go's ``time.Duration``), rounded up to ms.

    >>> [format_duration(s) for s in (0, 0.02, 1, 12.5, 60, 360, 3723.25)]
    ['0s', '20ms', '1s', '12.5s', '1m0s', '6m0s', '1h2m3.25s']
    """
    ms = max(0, math.ceil(round(seconds * 1000, 6)))
    if ms == 0:
        return "0s"
    if ms < 1000:
        return f"{ms}ms"
    hours, rest = divmod(ms, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs, frac = divmod(rest, 1000)
    text = f"{secs}.{frac:03d}".rstrip("0") + "s" if frac else f"{secs}s"
    if hours:
        return f"{hours}h{minutes}m{text}"
    if minutes:
        return f"{minutes}m{text}"
    return text


def check_images(images: int) -> None:
    if images < 0:
        raise ValueError(f"images must be >= 0, not {images}")


def limits_of(limits: RateLimits) -> tuple[int | None, int | None]:
    return limits.rpm, limits.images_per_minute


def headers(limits: RateLimits, remaining: tuple[int, int], reset_s: tuple[float, float]) -> dict[str, str]:
    headers: dict[str, str] = {}
    for i, (dimension, limit) in enumerate(zip(DIMENSIONS, limits_of(limits), strict=True)):
        if limit is None:
            continue
        headers[f"x-ratelimit-limit-{dimension}"] = str(limit)
        headers[f"x-ratelimit-remaining-{dimension}"] = str(max(0, remaining[i]))
        headers[f"x-ratelimit-reset-{dimension}"] = format_duration(reset_s[i])
    return headers
