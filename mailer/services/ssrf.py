"""The SSRF guard: subscriber URLs must not reach loopback, private or cloud-metadata addresses."""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import ipaddress
import socket
import threading
import urllib.parse

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

MAX_URL_LENGTH = 2048

# Instance-metadata services that answer with credentials. Refused even with
# MAILER_WEBHOOK_ALLOW_PRIVATE=1: no development set-up needs to post to them.
# (169.254.169.254: AWS, GCP, Azure, OpenStack; fd00:ec2::254: AWS over IPv6; 100.100.100.200:
# Alibaba Cloud; 168.63.129.16: Azure's WireServer, a public address.)
METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(text) for text in ("169.254.169.254", "fd00:ec2::254", "100.100.100.200", "168.63.129.16")
)
# Without MAILER_WEBHOOK_ALLOW_PRIVATE only the web's own ports: no probing of other services' ports.
ALLOWED_PORTS = (80, 443)
# Name lookups run here, each waited for at most a timeout: getaddrinfo itself cannot be given one, and a
# lookup that hangs must not hold a request thread. A lookup that times out keeps its thread until the
# resolver gives up, so the threads are counted: a lookup never queues behind others (its timeout would be
# spent waiting for a thread, and blamed on its name); with no free thread, or when its owner (an app)
# already holds its share of them, it is refused at once with ResolverBusy.
MAX_RESOLVER_THREADS = 64
_RESOLVERS = concurrent.futures.ThreadPoolExecutor(MAX_RESOLVER_THREADS, thread_name_prefix="resolve")
_resolving_lock = threading.Lock()
_resolving: collections.Counter[object] = collections.Counter()  # lookups running, per owner (and in all: None)
# IPv6 prefixes that carry an IPv4 address inside (RFC 6052 NAT64 well-known prefix).
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


class UnsafeURL(ValueError):
    """A subscriber URL that must not be called; the message says why."""


class Unresolvable(UnsafeURL):
    """A subscriber URL whose host name does not resolve (in time)."""


class ResolverBusy(Exception):
    """No resolver thread for this lookup now (all busy, or its owner's share is): not the name's fault."""


@dataclasses.dataclass(frozen=True)
class Target:
    """A checked URL: its host and port."""

    url: str
    host: str
    port: int


def parse(url: str) -> Target:
    """Check the form of a subscriber URL: http or https, a host, no control characters."""
    if len(url) > MAX_URL_LENGTH:
        raise UnsafeURL(f"must be at most {MAX_URL_LENGTH} characters")
    if any(ord(char) < 33 or ord(char) == 127 for char in url):
        raise UnsafeURL("must not contain spaces or control characters")
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise UnsafeURL(f"is not a valid URL ({exc})") from None
    if parts.scheme not in ("http", "https"):
        raise UnsafeURL("must be an http or https URL")
    if not parts.hostname:
        raise UnsafeURL("must name a host")
    return Target(url=url, host=parts.hostname, port=port or (443 if parts.scheme == "https" else 80))


def check_port(target: Target, allow_private: bool) -> None:
    """Only ports 80 and 443, unless private addresses are allowed (development and tests)."""
    if not allow_private and target.port not in ALLOWED_PORTS:
        raise UnsafeURL(f"must use port 80 or 443, not {target.port} (MAILER_WEBHOOK_ALLOW_PRIVATE=1 allows any)")


def forbidden_reason(address: IPAddress, allow_private: bool) -> str | None:
    """Why `address` must not be called, or None when it may be."""
    embedded = _embedded_ipv4(address)
    if embedded is not None:
        return forbidden_reason(embedded, allow_private)
    if address in METADATA_ADDRESSES:
        return f"{address} is a cloud metadata address"
    if allow_private:
        return None
    for kind in ("loopback", "private", "link_local", "multicast", "reserved", "unspecified"):
        if getattr(address, f"is_{kind}"):
            return f"{address} is a {kind.replace('_', '-')} address"
    if not address.is_global:
        return f"{address} is not a public address"  # e.g. 100.64.0.0/10 (carrier-grade NAT)
    return None


def _embedded_ipv4(address: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address stands for (mapped, 6to4, Teredo, NAT64), if any."""
    if not isinstance(address, ipaddress.IPv6Address):
        return None
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def owner_share(threads: int) -> int:
    """Resolver threads one owner (an app) may hold at once: a quarter of them."""
    return max(1, threads // 4)


def _start_lookup(host: str, port: int, owner: object, threads: int) -> concurrent.futures.Future:
    threads = min(threads, MAX_RESOLVER_THREADS)
    with _resolving_lock:
        if _resolving[None] >= threads:
            raise ResolverBusy(f"all {threads} resolver threads are busy")
        if owner is not None and _resolving[owner] >= owner_share(threads):
            raise ResolverBusy(f"this app already has {owner_share(threads)} host name lookups in progress")
        _resolving[None] += 1
        if owner is not None:
            _resolving[owner] += 1

    def lookup() -> list:
        try:
            return socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        finally:
            with _resolving_lock:
                for key in (None, owner) if owner is not None else (None,):
                    _resolving[key] -= 1
                    if not _resolving[key]:
                        del _resolving[key]

    return _RESOLVERS.submit(lookup)


def resolve(
    host: str, port: int, timeout_s: float, owner: object = None, threads: int = 16
) -> list[IPAddress]:
    """Every address `host` resolves to (an IP literal is itself) within `timeout_s`; UnsafeURL when none.

    ResolverBusy, at once, when no thread is free for the lookup or `owner` holds its share of `threads`."""
    try:
        return [ipaddress.ip_address(host)]  # a literal needs no lookup (nor a thread)
    except ValueError:
        pass
    try:
        infos = _start_lookup(host, port, owner, threads).result(timeout_s)
    except concurrent.futures.TimeoutError:
        raise Unresolvable(f"host {host} did not resolve within {timeout_s:g} s") from None
    except (OSError, UnicodeError) as exc:
        raise Unresolvable(f"host {host} does not resolve ({exc})") from None
    addresses: list[IPAddress] = []
    for *_, sockaddr in infos:
        address = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])  # drop an IPv6 zone id
        if address not in addresses:
            addresses.append(address)
    if not addresses:
        raise Unresolvable(f"host {host} does not resolve")
    return addresses


def check_url(
    url: str, allow_private: bool, timeout_s: float, owner: object = None, threads: int = 16
) -> tuple[Target, list[IPAddress]]:
    """Check a URL, its port and every address its host resolves to now; the target and those addresses."""
    # They are the only addresses a delivery may connect to; UnsafeURL if any of them is forbidden.
    target = parse(url)
    addresses = resolve(target.host, target.port, timeout_s, owner, threads)
    for address in addresses:
        reason = forbidden_reason(address, allow_private)
        if reason is not None:
            raise UnsafeURL(f"resolves to a forbidden address: {reason}")
    check_port(target, allow_private)
    return target, addresses


def check_peer(sockaddr: tuple[object, ...], allow_private: bool) -> None:
    """Check the address a socket actually connected to (a second guard behind the pinned address)."""
    address = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
    reason = forbidden_reason(address, allow_private)
    if reason is not None:
        raise UnsafeURL(f"connected to a forbidden address: {reason}")
