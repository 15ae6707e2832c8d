"""The one image fetcher for every URL a caller sends (edits, chat ``image_url``, Anthropic url
sources, Gemini ``fileData``), safe against server-side request forgery.

- http and https only, default ports or explicit ones, no credentials in the URL;
- the host is resolved once, every address it resolves to is checked, and the connection is
  pinned to the checked address (the URL's host goes in the Host header and TLS SNI), so a DNS
  answer cannot change between the check and the connection;
- loopback, private, link-local, multicast, reserved, unspecified, CGNAT (100.64/10), benchmark,
  documentation and cloud-metadata addresses are refused, IPv4 and IPv6 alike (IPv4-mapped and
  6to4/Teredo-embedded IPv4 included), unless the operator allow-lists the host or network;
- each redirect is followed by hand and checked again (at most 5);
- the body is streamed with a size cap, under a total timeout, and must be an image by its magic
  bytes (the Content-Type, when given, must be an image type too) of at most ``max_pixels``
  pixels by its header.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import SplitResult, urljoin, urlsplit

import httpx

from core.config import DEFAULT_MAX_INPUT_PIXELS
from core.errors import InvalidRequestError
from core.imaging import ImageInfo, ImageTooLargeError, NotAnImageError, probe
from core.text import ascii_int, refused_character

MAX_REDIRECTS = 5
_BLOCKED_NETWORKS = [ipaddress.ip_network(n) for n in (
    "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16", "172.16.0.0/12",
    "192.0.0.0/24", "192.0.2.0/24", "192.88.99.0/24", "192.168.0.0/16", "198.18.0.0/15",
    "198.51.100.0/24", "203.0.113.0/24", "224.0.0.0/4", "240.0.0.0/4", "255.255.255.255/32",
    "::/128", "::1/128", "64:ff9b::/96", "64:ff9b:1::/48", "100::/64", "2001::/23", "2001:db8::/32",
    "fc00::/7", "fe80::/10", "ff00::/8", "fd00:ec2::254/128",
)]


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


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    return None


def address_is_public(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """Whether an address may be fetched from (not internal, special-purpose or metadata)."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:  # ::ffff:a.b.c.d is a.b.c.d
            return address_is_public(address.ipv4_mapped)
        embedded = _embedded_ipv4(address)
        if embedded is not None and not address_is_public(embedded):
            return False
    if any(address in network for network in _BLOCKED_NETWORKS if network.version == address.version):
        return False
    return not (address.is_private or address.is_loopback or address.is_link_local or address.is_multicast
                or address.is_reserved or address.is_unspecified or not address.is_global)


def _allowed(host: str, address: ipaddress.IPv4Address | ipaddress.IPv6Address, allow: Iterable[str]) -> bool:
    for entry in allow:
        entry = entry.strip().lower()
        if not entry:
            continue
        if entry == host.lower():
            return True
        try:
            if address in ipaddress.ip_network(entry, strict=False):
                return True
        except ValueError:
            continue
    return False


def _bad(param: str, message: str) -> InvalidRequestError:
    return InvalidRequestError(f"Could not fetch {param}: {message}", param=param, code="invalid_image_url")


async def _resolve(host: str, port: int) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    try:
        return [ipaddress.ip_address(host)]
    except ValueError:
        pass
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, ValueError):  # ValueError: a name the resolver cannot even encode
        return []
    return list(dict.fromkeys(ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos))


async def fetch_image(url: str, *, param: str, policy: FetchPolicy,
                      transport: httpx.AsyncBaseTransport | None = None) -> Fetched:
    """Download an image from a caller's URL under every rule of the module docstring."""
    try:
        async with asyncio.timeout(policy.timeout_s):
            return await _fetch(url, param=param, policy=policy, transport=transport)
    except TimeoutError:
        raise _bad(param, f"the server did not answer within {policy.timeout_s:g} s.") from None


@dataclass(frozen=True)
class Target:
    """A URL as the fetcher connects to it: checked, its host in ASCII (IDNA) form."""

    parts: SplitResult
    host: str
    """The host as it goes in the Host header and TLS SNI (IDNA-encoded; an IPv6 literal bare)."""
    port: int
    explicit_port: bool

    def pinned(self, address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
        """The URL with its host replaced by ``address`` (the checked address connected to)."""
        ip_host = f"[{address}]" if address.version == 6 else str(address)
        return self.parts._replace(netloc=f"{ip_host}:{self.port}").geturl()

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}" if self.explicit_port else host


def parse_target(url: str, *, param: str) -> Target:
    """Check a URL the fetcher is given (or redirected to): any URL that cannot be fetched under
    the module's rules is an :class:`InvalidRequestError` naming ``param``, never another error."""
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError:  # a bracketed host that is not an IPv6 address, for one
        raise _bad(param, "the URL is not a valid URL.") from None
    try:
        port = parts.port
    except ValueError:
        raise _bad(param, "the URL's port is not a number from 0 to 65535.") from None
    if parts.scheme not in ("http", "https"):
        raise _bad(param, "only http and https URLs are fetched.")
    if parts.username or parts.password:
        raise _bad(param, "URLs with credentials are not fetched.")
    if not host:
        raise _bad(param, "the URL has no host.")
    try:
        ascii_host = host.encode("idna").decode("ascii")
    except UnicodeError:
        raise _bad(param, "the URL's host is not a valid host name.") from None
    if refused_character(ascii_host) or any(c in ascii_host for c in " /\\"):
        raise _bad(param, "the URL's host is not a valid host name.")
    default_port = 443 if parts.scheme == "https" else 80
    return Target(parts=parts, host=ascii_host, port=port or default_port, explicit_port=bool(port))


async def _fetch(url: str, *, param: str, policy: FetchPolicy,
                 transport: httpx.AsyncBaseTransport | None) -> Fetched:
    async with httpx.AsyncClient(transport=transport, follow_redirects=False, trust_env=False,
                                 timeout=httpx.Timeout(policy.timeout_s, connect=5.0)) as client:
        for _ in range(MAX_REDIRECTS + 1):
            target = parse_target(url, param=param)
            host = target.host
            addresses = await _resolve(host, target.port)
            if not addresses:
                raise _bad(param, f"the host '{host}' does not resolve.")
            for address in addresses:
                if not address_is_public(address) and not _allowed(host, address, policy.allow):
                    raise _bad(param, f"the host '{host}' is not a public address.")
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
