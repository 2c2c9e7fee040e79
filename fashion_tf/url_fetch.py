"""Fetch one image URL the way a server that takes URLs from strangers must: `fetch(url, FetchOptions())`.

- http and https only; at most `max_redirects` redirects, each one checked again like the first URL.
- The host is resolved once per hop and every address it resolves to is checked; the connection then goes
  to a checked address (never a second lookup that a DNS-rebinding server could answer differently).
  Refused unless `allow_private`: loopback, private (RFC 1918, unique local), link-local (169.254.169.254,
  the cloud metadata service, is one), shared (100.64/10), reserved and documentation ranges: every address
  that is not globally routable. Always refused: unspecified (0.0.0.0 reaches the local host on Linux),
  multicast and broadcast. IPv4 addresses inside IPv6 ones (::ffff:a.b.c.d, 6to4, NAT64) are checked as IPv4.
- Connect and read timeouts, and one deadline for the whole fetch (a server dripping bytes is cut off).
- At most `max_bytes` of body: a larger Content-Length is refused before reading, and the count is kept
  while streaming (a body without a length, or longer than it said).

Proxies from the environment are not used: a proxy resolves the name itself, out of reach of the check.
No TensorFlow here.
"""

from __future__ import annotations

import http.client
import ipaddress
import queue
import socket
import ssl
import threading
import time
import urllib.parse
from dataclasses import dataclass

REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
MAX_URL_LENGTH = 4096
READ_CHUNK = 64 * 1024
DEFAULT_USER_AGENT = "fashion_tf (+https://github.com/fashion_tf; image labelling)"
_NAT64_PREFIX = ipaddress.ip_network("64:ff9b::/96")
_BROADCAST = ipaddress.ip_address("255.255.255.255")


@dataclass(frozen=True)
class FetchOptions:
    connect_timeout: float = 5.0  # seconds, per connection attempt (and for the name lookup)
    read_timeout: float = 15.0  # seconds without a byte from the server
    total_timeout: float = 30.0  # seconds for the whole fetch, redirects included
    max_bytes: int = 50 * 1024 * 1024
    max_redirects: int = 3
    allow_private: bool = False  # loopback, private and link-local addresses (tests, an intranet)
    user_agent: str = DEFAULT_USER_AGENT


class FetchError(Exception):
    """A URL that could not be fetched. `reason` is a short code, str(err) a sentence for the user.

    Reasons: bad_url, private_address (allowed by allow_private), refused_address (never allowed), dns, connection, timeout, ssl, http_status, too_large, truncated,
    bad_response, too_many_redirects.
    """

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class _Target:
    scheme: str
    host: str  # as in the URL, IDNA-encoded, without brackets
    port: int
    path: str  # path and query, what goes on the request line
    host_header: str


# ---------------------------------------------------------------------------- addresses
def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip in _NAT64_PREFIX:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def refusal_reason(address: str | ipaddress.IPv4Address | ipaddress.IPv6Address, allow_private: bool = False) -> str | None:
    """Why connecting to `address` is refused ("loopback", "private", ...), or None when it is allowed."""
    ip = ipaddress.ip_address(address) if isinstance(address, str) else address
    if ip.version == 6:
        inner = _embedded_ipv4(ip)
        if inner is not None:
            return refusal_reason(inner, allow_private)
    if ip.is_unspecified:
        return "unspecified"
    if ip.is_multicast:
        return "multicast"
    if ip == _BROADCAST:
        return "broadcast"
    if allow_private:
        return None
    if ip.is_loopback:
        return "loopback"
    if ip.is_link_local:
        return "link-local"
    if ip.is_private:
        return "private"
    if ip.is_reserved:
        return "reserved"
    if not ip.is_global:
        return "non-public"
    return None


def _lookup(host: str, port: int, timeout: float) -> list[tuple]:
    """getaddrinfo with a time limit (the system resolver has none of its own that we control)."""
    answer: queue.SimpleQueue = queue.SimpleQueue()

    def worker() -> None:
        try:
            answer.put(socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP))
        except (OSError, UnicodeError) as err:
            answer.put(err)

    threading.Thread(target=worker, name="url_fetch-dns", daemon=True).start()
    try:
        result = answer.get(timeout=timeout)
    except queue.Empty:
        raise FetchError("dns", f"looking up {host} took longer than {timeout:g}s") from None
    if isinstance(result, Exception):
        raise FetchError("dns", f"cannot resolve {host}") from None
    return result


def resolve_checked(host: str, port: int, allow_private: bool, timeout: float) -> list[tuple]:
    """(family, sockaddr) of every address of `host`, each checked; FetchError when any is refused."""
    infos = _lookup(host, port, timeout)
    checked: list[tuple] = []
    for family, _, _, _, sockaddr in infos:
        address = sockaddr[0].split("%", 1)[0]  # drop an IPv6 zone index
        reason = refusal_reason(address, allow_private)
        if reason is not None:
            named = address if address == host else f"{host} resolves to {address}, which"
            code = "private_address" if refusal_reason(address, allow_private=True) is None else "refused_address"
            raise FetchError(code, f"refused: {named} is a {reason} address")
        if (family, sockaddr) not in checked:
            checked.append((family, sockaddr))
    if not checked:
        raise FetchError("dns", f"cannot resolve {host}")
    return checked


# ---------------------------------------------------------------------------- URLs
def parse_target(url: str) -> _Target:
    if len(url) > MAX_URL_LENGTH:
        raise FetchError("bad_url", f"URL longer than {MAX_URL_LENGTH} characters")
    if any(ch.isspace() or ord(ch) < 32 or ord(ch) == 127 for ch in url):
        raise FetchError("bad_url", "URL with spaces or control characters")
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError as err:
        raise FetchError("bad_url", f"not a valid URL ({err})") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise FetchError("bad_url", f"only http and https URLs are fetched, not {scheme or 'a URL without scheme'}")
    if not parts.hostname:
        raise FetchError("bad_url", "URL without a host")
    try:
        host = parts.hostname.encode("idna").decode("ascii") if not parts.hostname.isascii() else parts.hostname
    except UnicodeError:
        raise FetchError("bad_url", "host name that cannot be encoded") from None
    default_port = 443 if scheme == "https" else 80
    port = port or default_port
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    shown_host = f"[{host}]" if ":" in host else host
    host_header = shown_host if port == default_port else f"{shown_host}:{port}"
    return _Target(scheme, host, port, path, host_header)


# ---------------------------------------------------------------------------- one request
class _Deadline:
    """The whole-fetch time limit: a timer that shuts the socket down when it passes, so that a read blocked
    on a server sending a byte now and then returns."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.end = time.monotonic() + seconds
        self.expired = False

    def remaining(self) -> float:
        left = self.end - time.monotonic()
        if left <= 0:
            self.expired = True
            raise FetchError("timeout", f"took longer than {self.seconds:g}s")
        return left

    def passed(self) -> bool:
        return self.expired or time.monotonic() >= self.end

    def watch(self, sock: socket.socket) -> threading.Timer:
        def cut() -> None:
            self.expired = True
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

        timer = threading.Timer(self.remaining(), cut)
        timer.daemon = True
        timer.start()
        return timer


def _connect(target: _Target, addresses: list[tuple], options: FetchOptions, deadline: _Deadline) -> socket.socket:
    """A connected (and for https, verified) socket to the first checked address that answers."""
    last_error: OSError | None = None
    for family, sockaddr in addresses:
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.settimeout(min(options.connect_timeout, deadline.remaining()))
        try:
            sock.connect(sockaddr)
        except OSError as err:
            sock.close()
            last_error = err
            continue
        if target.scheme == "https":
            try:
                sock = ssl.create_default_context().wrap_socket(sock, server_hostname=target.host)
            except (ssl.SSLError, ssl.CertificateError) as err:
                sock.close()
                raise FetchError("ssl", f"TLS failed ({getattr(err, 'reason', None) or type(err).__name__})") from None
            except OSError as err:
                sock.close()
                last_error = err
                continue
        return sock
    if isinstance(last_error, TimeoutError):
        raise FetchError("timeout", f"connecting to {target.host} timed out after {options.connect_timeout:g}s")
    detail = (last_error.strerror or type(last_error).__name__) if last_error else "no address"
    raise FetchError("connection", f"cannot connect to {target.host} ({detail})")


def _read_body(response: http.client.HTTPResponse, sock: socket.socket, options: FetchOptions, deadline: _Deadline) -> bytes:
    declared = response.getheader("Content-Length", "")
    if declared.strip().isdigit() and int(declared) > options.max_bytes:
        raise FetchError("too_large", f"larger than the {_size(options.max_bytes)} limit ({_size(int(declared))})")
    chunks, total = [], 0
    while True:
        sock.settimeout(min(options.read_timeout, deadline.remaining()))
        chunk = response.read1(READ_CHUNK)  # one read at a time, so the deadline is checked between them
        if not chunk:
            break
        total += len(chunk)
        if total > options.max_bytes:
            raise FetchError("too_large", f"larger than the {_size(options.max_bytes)} limit")
        chunks.append(chunk)
    if deadline.passed():
        raise FetchError("timeout", f"took longer than {deadline.seconds:g}s")
    if response.length:  # read1 ends quietly where the connection closed; the bytes still owed tell
        raise http.client.IncompleteRead(b"".join(chunks), response.length)
    return b"".join(chunks)


def _size(count: int) -> str:
    return f"{count / 2**20:.3g} MiB" if count >= 2**20 else f"{count:,} bytes"


def _one_hop(target: _Target, options: FetchOptions, deadline: _Deadline) -> tuple[int, str | None, bytes]:
    """(status, Location header, body or b"") of one GET to a checked address."""
    addresses = resolve_checked(target.host, target.port, options.allow_private,
                                min(options.connect_timeout, deadline.remaining()))
    sock = _connect(target, addresses, options, deadline)
    connection = http.client.HTTPConnection(target.host, target.port)
    connection.sock = sock  # already connected to the address we checked: http.client does not connect again
    timer = None
    try:
        timer = deadline.watch(sock)
        sock.settimeout(min(options.read_timeout, deadline.remaining()))
        connection.putrequest("GET", target.path, skip_host=True, skip_accept_encoding=True)
        for name, value in (("Host", target.host_header), ("User-Agent", options.user_agent),
                            ("Accept", "image/*,*/*;q=0.5"), ("Accept-Encoding", "identity"), ("Connection", "close")):
            connection.putheader(name, value)
        connection.endheaders()
        response = connection.getresponse()
        if response.status != 200:
            return response.status, response.getheader("Location"), b""
        return 200, None, _read_body(response, sock, options, deadline)
    except FetchError:
        raise
    except http.client.IncompleteRead:
        raise FetchError("truncated", "the body ended before its announced length") from None
    except (TimeoutError, socket.timeout):
        if deadline.passed():
            raise FetchError("timeout", f"took longer than {deadline.seconds:g}s") from None
        raise FetchError("timeout", f"no data for {options.read_timeout:g}s") from None
    except (http.client.HTTPException, ValueError) as err:
        if deadline.passed():
            raise FetchError("timeout", f"took longer than {deadline.seconds:g}s") from None
        raise FetchError("bad_response", f"not a valid HTTP answer ({type(err).__name__})") from None
    except OSError as err:
        if deadline.passed():
            raise FetchError("timeout", f"took longer than {deadline.seconds:g}s") from None
        raise FetchError("connection", f"connection failed ({err.strerror or type(err).__name__})") from None
    finally:
        if timer is not None:
            timer.cancel()
        connection.close()


def fetch(url: str, options: FetchOptions | None = None) -> bytes:
    """The body of a 200 answer to GET `url`; FetchError (one sentence) for anything else."""
    options = options or FetchOptions()
    deadline = _Deadline(options.total_timeout)
    for _ in range(options.max_redirects + 1):
        target = parse_target(url)
        status, location, body = _one_hop(target, options, deadline)
        if status == 200:
            return body
        if status not in REDIRECT_STATUSES:
            raise FetchError("http_status", f"HTTP {status}")
        if not location:
            raise FetchError("bad_response", f"HTTP {status} redirect without a Location")
        url = urllib.parse.urljoin(url, location.strip())
    raise FetchError("too_many_redirects", f"more than {options.max_redirects} redirects")
