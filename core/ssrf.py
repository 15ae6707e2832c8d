"""The rules every URL imagegate connects to on a caller's behalf must pass (server-side request
forgery): image URLs (``api/fetch.py``) and webhook URLs (``core/webhooks``), at submit and again
at each connection.

- http and https only, default ports or explicit ones, no credentials in the URL;
- the host is resolved once, every address it resolves to is checked, and the caller connects to
  the checked address (the URL's host goes in the Host header and TLS SNI), so a DNS answer cannot
  change between the check and the connection;
- loopback, private, link-local, multicast, reserved, unspecified, CGNAT (100.64/10), benchmark,
  documentation and cloud-metadata addresses are refused, IPv4 and IPv6 alike (IPv4-mapped and
  6to4/Teredo-embedded IPv4 included), unless the operator allow-lists the host or network
  (``IMAGEGATE_FETCH_ALLOW_HOSTS``).

Every refusal is an :class:`UnsafeUrl` whose message says why, for the caller to put in its own
error.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import SplitResult, urlsplit

from core.text import refused_character

Address = ipaddress.IPv4Address | ipaddress.IPv6Address

_BLOCKED_NETWORKS = [ipaddress.ip_network(n) for n in (
    "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16", "172.16.0.0/12",
    "192.0.0.0/24", "192.0.2.0/24", "192.88.99.0/24", "192.168.0.0/16", "198.18.0.0/15",
    "198.51.100.0/24", "203.0.113.0/24", "224.0.0.0/4", "240.0.0.0/4", "255.255.255.255/32",
    "::/128", "::1/128", "64:ff9b::/96", "64:ff9b:1::/48", "100::/64", "2001::/23", "2001:db8::/32",
    "fc00::/7", "fe80::/10", "ff00::/8", "fd00:ec2::254/128",
)]


class UnsafeUrl(ValueError):
    """A URL that may not be connected to; the message says why, in words for the caller."""


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    return None


def address_is_public(address: Address) -> bool:
    """Whether an address may be connected to (not internal, special-purpose or metadata)."""
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


def allowed(host: str, address: Address, allow: Iterable[str]) -> bool:
    """Whether the operator allow-lists the host by name, or a network holding the address."""
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


async def resolve(host: str, port: int) -> list[Address]:
    """Every address the host resolves to (itself, for an IP literal); empty when none."""
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


@dataclass(frozen=True)
class Target:
    """A URL as it is connected to: checked, its host in ASCII (IDNA) form."""

    parts: SplitResult
    host: str
    """The host as it goes in the Host header and TLS SNI (IDNA-encoded; an IPv6 literal bare)."""
    port: int
    explicit_port: bool

    def pinned(self, address: Address) -> str:
        """The URL with its host replaced by ``address`` (the checked address connected to)."""
        ip_host = f"[{address}]" if address.version == 6 else str(address)
        return self.parts._replace(netloc=f"{ip_host}:{self.port}").geturl()

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}" if self.explicit_port else host


def parse_target(url: str) -> Target:
    """Check a URL's form (scheme, credentials, host, port): any URL that cannot be connected to
    under the module's rules is an :class:`UnsafeUrl`, never another error."""
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError:  # a bracketed host that is not an IPv6 address, for one
        raise UnsafeUrl("the URL is not a valid URL.") from None
    try:
        port = parts.port
    except ValueError:
        raise UnsafeUrl("the URL's port is not a number from 0 to 65535.") from None
    if parts.scheme not in ("http", "https"):
        raise UnsafeUrl("only http and https URLs are fetched.")
    if parts.username or parts.password:
        raise UnsafeUrl("URLs with credentials are not fetched.")
    if not host:
        raise UnsafeUrl("the URL has no host.")
    try:
        ascii_host = host.encode("idna").decode("ascii")
    except UnicodeError:
        raise UnsafeUrl("the URL's host is not a valid host name.") from None
    if refused_character(ascii_host) or any(c in ascii_host for c in " /\\"):
        raise UnsafeUrl("the URL's host is not a valid host name.")
    default_port = 443 if parts.scheme == "https" else 80
    return Target(parts=parts, host=ascii_host, port=port or default_port, explicit_port=bool(port))


async def checked_addresses(target: Target, allow: Iterable[str]) -> list[Address]:
    """The addresses of the target's host, every one of them public or allow-listed."""
    addresses = await resolve(target.host, target.port)
    if not addresses:
        raise UnsafeUrl(f"the host '{target.host}' does not resolve.")
    allow = list(allow)
    for address in addresses:
        if not address_is_public(address) and not allowed(target.host, address, allow):
            raise UnsafeUrl(f"the host '{target.host}' is not a public address.")
    return addresses
