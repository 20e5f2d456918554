"""The SSRF guard: which addresses a delivery may connect to.

Every address a target's host name resolves to is checked, and only checked addresses are
connected to (an aiohttp resolver that drops the refused ones), so a name that resolves to
a public and a private address cannot be used to reach the private one. Refused unless
the allow-list (``SIGNALBOX_DELIVERY_ALLOW``: networks, comma-separated) covers them:
loopback, private, link-local (cloud metadata at 169.254.169.254), CGNAT (100.64/10),
unique-local, multicast, unspecified and reserved addresses, and IPv4-mapped/-compatible
IPv6 forms of any of them.
"""

from __future__ import annotations

import functools
import ipaddress
import socket
from collections.abc import Sequence

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

CGNAT = ipaddress.ip_network("100.64.0.0/10")
UNIQUE_LOCAL = ipaddress.ip_network("fc00::/7")


class RefusedTarget(Exception):
    """The target's addresses are all refused by the guard (not retried: permanent)."""


@functools.cache
def parse_allow(text: str) -> tuple[Network, ...]:
    """``10.0.0.0/8, 127.0.0.1`` -> networks; a host address is a /32 or /128. Cached: the
    setting is read for every delivery."""
    return tuple(ipaddress.ip_network(part.strip(), strict=False) for part in text.split(",") if part.strip())


def refusal(address: str, allow: Sequence[Network]) -> str | None:
    """Why ``address`` may not be connected to, or None when it may."""
    ip: Address = ipaddress.ip_address(address.split("%", 1)[0])
    if any(ip in net for net in allow if net.version == ip.version):
        return None
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = ip.ipv4_mapped or (ip.sixtofour if ip.sixtofour else None)
        if embedded is None and ip.packed[:12] == bytes(12) and int(ip) > 1:  # ::a.b.c.d (IPv4-compatible)
            embedded = ipaddress.IPv4Address(ip.packed[12:])
        if embedded is not None:
            inner = refusal(str(embedded), allow)
            return f"IPv4 {embedded} inside {ip}: {inner}" if inner else None
    v6 = isinstance(ip, ipaddress.IPv6Address)
    for label, bad in (("loopback", ip.is_loopback), ("link-local", ip.is_link_local),
                       ("carrier-grade NAT", not v6 and ip in CGNAT), ("unique-local", v6 and ip in UNIQUE_LOCAL),
                       ("private", ip.is_private), ("multicast", ip.is_multicast),
                       ("unspecified", ip.is_unspecified), ("reserved", ip.is_reserved),
                       ("site-local", v6 and ip.is_site_local)):
        if bad:
            return f"{ip} is a {label} address"
    return None


class GuardedResolver(AbstractResolver):
    """Resolves with aiohttp's default resolver and keeps only the allowed addresses."""

    def __init__(self, allow: Sequence[Network], inner: AbstractResolver | None = None) -> None:
        self.allow = allow
        self.inner = inner or DefaultResolver()

    async def resolve(self, host: str, port: int = 0,
                      family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        answers = await self.inner.resolve(host, port, family)
        kept: list[ResolveResult] = []
        refused: list[str] = []
        for answer in answers:
            why = refusal(answer["host"], self.allow)
            if why:
                refused.append(why)
            else:
                kept.append(answer)
        if not kept:
            raise RefusedTarget(f"target {host} refused: {'; '.join(refused) or 'no address'}")
        return kept

    async def close(self) -> None:
        await self.inner.close()


def check_literal(host: str, allow: Sequence[Network]) -> None:
    """A URL whose host is an IP literal: checked here (aiohttp does not resolve those)."""
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return
    why = refusal(host.strip("[]"), allow)
    if why:
        raise RefusedTarget(f"target {host} refused: {why}")

