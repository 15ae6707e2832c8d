"""The one image fetcher for every URL a caller sends (edits, chat ``image_url``, Anthropic url
sources, Gemini ``fileData``), safe against server-side request forgery.

- the URL, and every address its host resolves to, pass the rules of :mod:`core.ssrf` (public
  addresses only, unless allow-listed), and the connection is pinned to the checked address;
- each redirect is followed by hand and checked again (at most 5);
- the body is streamed with a size cap, under a total timeout, and must be an image by its magic
  bytes (the Content-Type, when given, must be an image type too) of at most ``max_pixels``
  pixels by its header.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from urllib.parse import urljoin

import httpx

from core import ssrf
from core.config import DEFAULT_MAX_INPUT_PIXELS
from core.errors import InvalidRequestError
from core.imaging import ImageInfo, ImageTooLargeError, NotAnImageError, probe
from core.ssrf import Target, UnsafeUrl, checked_addresses
from core.text import ascii_int

MAX_REDIRECTS = 5


@dataclass(frozen=True)
class FetchPolicy:
    max_bytes: int = 50 * 1024 * 1024
    timeout_s: float = 20.0
    allow: tuple[str, ...] = ()
    """Hosts (``images.internal``) or networks (``10.1.0.0/16``, ``127.0.0.1``) allowed anyway."""
    max_pixels: int = DEFAULT_MAX_INPUT_PIXELS
    """The most pixels the image may have (read from its header; nothing is decoded)."""


@dataclass(frozen=True)
class Fetched:
    data: bytes
    info: ImageInfo


def _bad(param: str, message: str) -> InvalidRequestError:
    return InvalidRequestError(f"Could not fetch {param}: {message}", param=param, code="invalid_image_url")


async def fetch_image(url: str, *, param: str, policy: FetchPolicy,
                      transport: httpx.AsyncBaseTransport | None = None) -> Fetched:
    """Download an image from a caller's URL under every rule of the module docstring."""
    try:
        async with asyncio.timeout(policy.timeout_s):
            return await _fetch(url, param=param, policy=policy, transport=transport)
    except TimeoutError:
        raise _bad(param, f"the server did not answer within {policy.timeout_s:g} s.") from None


def parse_target(url: str, *, param: str) -> Target:
    """Check a URL the fetcher is given (or redirected to) by :func:`core.ssrf.parse_target`; a
    refusal is an :class:`InvalidRequestError` naming ``param``."""
    try:
        return ssrf.parse_target(url)
    except UnsafeUrl as exc:
        raise _bad(param, str(exc)) from None


async def _fetch(url: str, *, param: str, policy: FetchPolicy,
                 transport: httpx.AsyncBaseTransport | None) -> Fetched:
    async with httpx.AsyncClient(transport=transport, follow_redirects=False, trust_env=False,
                                 timeout=httpx.Timeout(policy.timeout_s, connect=5.0)) as client:
        for _ in range(MAX_REDIRECTS + 1):
            target = parse_target(url, param=param)
            host = target.host
            try:
                addresses = await checked_addresses(target, policy.allow)
            except UnsafeUrl as exc:
                raise _bad(param, str(exc)) from None
            try:
                request = client.build_request("GET", target.pinned(addresses[0]),
                                               headers={"Host": target.host_header, "Accept": "image/*"},
                                               extensions={"sni_hostname": host})
                response = await client.send(request, stream=True)
            except httpx.InvalidURL:  # a path or query httpx refuses to send (control characters)
                raise _bad(param, "the URL is not a valid URL.") from None
            except httpx.HTTPError as exc:
                raise _bad(param, f"the server could not be reached ({type(exc).__name__}).") from None
            try:
                if response.is_redirect:
                    location = response.headers.get("location")
                    if not location:
                        raise _bad(param, "a redirect without a Location.")
                    try:
                        url = urljoin(url, location)
                    except ValueError:
                        raise _bad(param, "a redirect to an invalid URL.") from None
                    continue
                if response.status_code != 200:
                    raise _bad(param, f"the server answered HTTP {response.status_code}.")
                declared = response.headers.get("content-type", "").split(";")[0].strip().lower()
                if declared and not (declared.startswith("image/") or declared == "application/octet-stream"):
                    raise _bad(param, f"the server sent {declared}, not an image.")
                length = ascii_int(response.headers.get("content-length", ""), max_digits=30)
                if length is not None and length > policy.max_bytes:
                    raise _bad(param, f"the image is larger than {policy.max_bytes // (1024 * 1024)} MiB.")
                chunks: list[bytes] = []
                size = 0
                async for chunk in response.aiter_bytes():
                    size += len(chunk)
                    if size > policy.max_bytes:
                        raise _bad(param, f"the image is larger than {policy.max_bytes // (1024 * 1024)} MiB.")
                    chunks.append(chunk)
            except httpx.HTTPError as exc:
                raise _bad(param, f"{type(exc).__name__}.") from None
            finally:
                await response.aclose()
            data = b"".join(chunks)
            try:
                return Fetched(data=data, info=probe(data, max_pixels=policy.max_pixels))
            except ImageTooLargeError as error:
                raise _bad(param, f"{error}.") from None
            except NotAnImageError:
                raise _bad(param, "the content is not a PNG, JPEG, WebP or GIF image.") from None
        raise _bad(param, f"more than {MAX_REDIRECTS} redirects.")
