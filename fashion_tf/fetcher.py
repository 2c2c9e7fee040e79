"""Many HTTP GETs at once from one thread: libcurl's multi interface (pycurl), keep-alive per host.

    fetcher = Fetcher(options, max_transfers=16)
    fetcher.start("https://host/a.jpg", token)
    for token, result in fetcher.poll(timeout=1.0):   # result: the whole body (bytes) or FetchFailed
        ...

Why libcurl and not a thread per download over urllib3: the transfers run in C, so a download costs
the client about 0.03 ms of CPU instead of 0.3-0.4 ms (measured on the benchmark's 7,168 images
from a loopback server), and no thread has to hand the GIL back and forth for it. That leaves the
CPU to what has to be Python: checking and writing the images.

Redirects are followed (http and https only, at most options.max_redirects); connect and read
timeouts, a deadline for the whole body (4 x the read timeout) and options.max_bytes are enforced.
Proxies come from the environment the way requests reads them (HTTP_PROXY, HTTPS_PROXY, NO_PROXY,
in either case). No TensorFlow here.
"""

from __future__ import annotations

import contextlib
import email.utils
import math
import re
import time
import urllib.parse
import urllib.request
from typing import Any, Iterable, Optional

try:
    import pycurl
except ImportError as err:
    if "link-time version" not in str(err):
        raise
    raise ImportError(f"{err}: TensorFlow was imported before pycurl and exports its own libcurl; import fashion_tf "
                      "(or pycurl) before tensorflow, or run tools/download_images.py in a process of its own") from None

_RETRYABLE_CURL_ERRORS = {
    pycurl.E_COULDNT_RESOLVE_PROXY: "connection",
    pycurl.E_COULDNT_RESOLVE_HOST: "connection",
    pycurl.E_COULDNT_CONNECT: "connection",
    pycurl.E_GOT_NOTHING: "connection",
    pycurl.E_SEND_ERROR: "connection",
    pycurl.E_RECV_ERROR: "connection",
    pycurl.E_OPERATION_TIMEDOUT: "timeout",
    pycurl.E_PARTIAL_FILE: "truncated",  # the body ended before its Content-Length
}
_FINAL_CURL_ERRORS = {  # too_large and redirect_loop: _curl_failure, with their limits in the message
    pycurl.E_UNSUPPORTED_PROTOCOL: "bad_url",
    pycurl.E_URL_MALFORMAT: "bad_url",
    pycurl.E_SSL_CONNECT_ERROR: "ssl",
    pycurl.E_PEER_FAILED_VERIFICATION: "ssl",
    pycurl.E_SSL_CACERT_BADFILE: "ssl",
    pycurl.E_SSL_CERTPROBLEM: "ssl",
    pycurl.E_SSL_CIPHER: "ssl",
    pycurl.E_BAD_CONTENT_ENCODING: "bad_encoding",
}


class FetchFailed(Exception):
    def __init__(self, reason: str, detail: str = "", retryable: bool = False, retry_after: float | None = None):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason, self.detail, self.retryable, self.retry_after = reason, detail, retryable, retry_after


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or HTTP-date); None if absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class Fetcher:
    """Up to max_transfers GETs in flight on one libcurl multi handle; poll() collects finished ones.

    Not thread-safe: one thread starts and polls. Memory: each transfer holds at most max_bytes.
    """

    def __init__(self, options: Any, max_transfers: int):
        """options: anything with timeout, connect_timeout, max_redirects, max_bytes and user_agent
        (fashion_tf.download.Options)."""
        self.options = options
        self.max_transfers = max(1, max_transfers)
        self.multi = pycurl.CurlMulti()
        self.multi.setopt(pycurl.M_MAXCONNECTS, 2 * self.max_transfers)
        self._idle: list[pycurl.Curl] = []
        self._busy: dict[pycurl.Curl, Any] = {}
        self._early: list[tuple[Any, FetchFailed]] = []  # refused before any transfer (bad URL)
        self._proxies = {scheme: url for scheme, url in urllib.request.getproxies().items() if scheme in ("http", "https")}
        self._ca_file = _ca_file()

    @property
    def active(self) -> int:
        return len(self._busy) + len(self._early)

    def start(self, url: str, token: Any) -> None:
        """Begin a GET of url; poll() returns (token, bytes or FetchFailed) when it ends."""
        if not url.lower().startswith(("http://", "https://")):
            self._early.append((token, FetchFailed("bad_url", f"not an http(s) URL: {url[:100]}")))
            return
        handle = self._idle.pop() if self._idle else self._new_handle()
        handle.body, handle.size, handle.headers, handle.too_large = [], 0, [], False
        try:
            handle.setopt(pycurl.URL, _wire_url(url))
        except (pycurl.error, UnicodeEncodeError, ValueError) as err:
            self._idle.append(handle)
            self._early.append((token, FetchFailed("bad_url", one_line(err))))
            return
        if self._proxies:
            handle.setopt(pycurl.PROXY, self._proxy_for(url))
        self._busy[handle] = token
        self.multi.add_handle(handle)

    def poll(self, timeout: float) -> list[tuple[Any, bytes | FetchFailed]]:
        """Move the transfers on, waiting up to `timeout` s for one to end; the (token, result) pairs that ended."""
        done, self._early = self._early, []
        self._perform()
        done += self._collect()
        if not done and self._busy:
            if self.multi.select(timeout) == -1:  # nothing to wait on yet (e.g. a name lookup): curl's own timer
                hint = self.multi.timeout()
                time.sleep(min(timeout, (hint if hint >= 0 else 10) / 1000))
            self._perform()
            done += self._collect()
        return done

    def close(self) -> None:
        for handle in list(self._busy):
            self.multi.remove_handle(handle)
        for handle in [*self._busy, *self._idle]:
            handle.close()
        self._busy.clear()
        self._idle.clear()
        self.multi.close()

    def __enter__(self) -> "Fetcher":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _new_handle(self) -> pycurl.Curl:
        options = self.options
        handle = pycurl.Curl()
        handle.setopt(pycurl.USERAGENT, options.user_agent)
        handle.setopt(pycurl.HTTPHEADER, ["Accept: image/*,*/*;q=0.8"])
        handle.setopt(pycurl.FOLLOWLOCATION, 1)
        handle.setopt(pycurl.MAXREDIRS, options.max_redirects)
        handle.setopt(pycurl.PROTOCOLS, pycurl.PROTO_HTTP | pycurl.PROTO_HTTPS)
        handle.setopt(pycurl.REDIR_PROTOCOLS, pycurl.PROTO_HTTP | pycurl.PROTO_HTTPS)
        handle.setopt(pycurl.CONNECTTIMEOUT_MS, int(options.connect_timeout * 1000))
        # The read timeout: less than 1 byte/s for that long (curl counts whole seconds).
        handle.setopt(pycurl.LOW_SPEED_LIMIT, 1)
        handle.setopt(pycurl.LOW_SPEED_TIME, max(1, math.ceil(options.timeout)))
        handle.setopt(pycurl.TIMEOUT_MS, int((options.connect_timeout + 4 * options.timeout) * 1000))
        handle.setopt(pycurl.MAXFILESIZE_LARGE, options.max_bytes)  # refused from Content-Length before the body
        handle.setopt(pycurl.NOSIGNAL, 1)
        handle.setopt(pycurl.ACCEPT_ENCODING, "")  # gzip/deflate bodies decoded, as urllib3 and requests do
        if self._ca_file:
            handle.setopt(pycurl.CAINFO, self._ca_file)
        if not self._proxies:
            handle.setopt(pycurl.PROXY, "")  # requests' rules, not curl's own reading of the environment
        handle.setopt(pycurl.WRITEFUNCTION, _body_writer(handle, options.max_bytes))
        handle.setopt(pycurl.HEADERFUNCTION, _header_collector(handle))
        return handle

    def _proxy_for(self, url: str) -> str:
        parts = urllib.parse.urlsplit(url)
        proxy = self._proxies.get(parts.scheme.lower(), "")
        if proxy and urllib.request.proxy_bypass(parts.hostname or ""):
            return ""
        return proxy

    def _perform(self) -> None:
        while self.multi.perform()[0] == pycurl.E_CALL_MULTI_PERFORM:
            pass

    def _collect(self) -> list[tuple[Any, bytes | FetchFailed]]:
        done = []
        while True:
            queued, succeeded, failed = self.multi.info_read()
            for handle in succeeded:
                done.append((self._release(handle), _response(handle)))
            for handle, code, message in failed:
                done.append((self._release(handle), _curl_failure(handle, code, message, self.options)))
            if not queued:
                return done

    def _release(self, handle: pycurl.Curl) -> Any:
        self.multi.remove_handle(handle)
        token = self._busy.pop(handle)
        self._idle.append(handle)
        return token


def fetch_once(url: str, options: Any) -> bytes:
    """One GET (redirects followed) on its own: the body, or FetchFailed saying why and whether to retry."""
    with Fetcher(options, max_transfers=1) as fetcher:
        fetcher.start(url, None)
        while True:
            for _, result in fetcher.poll(1.0):
                if isinstance(result, FetchFailed):
                    raise result
                return result


def _wire_url(url: str) -> str:
    """Non-ASCII characters and spaces percent-encoded (UTF-8), as browsers and requests send them."""
    if url.isascii() and " " not in url:
        return url
    return urllib.parse.quote(url, safe="!#$%&'()*+,/:;=?@[]~")


def _body_writer(handle: pycurl.Curl, max_bytes: int):
    def write(chunk: bytes) -> Optional[int]:
        handle.size += len(chunk)
        if handle.size > max_bytes:  # a body without Content-Length (or a lying one)
            handle.too_large = True
            return 0  # curl aborts the transfer with E_WRITE_ERROR
        handle.body.append(chunk)
        return None

    return write


def _header_collector(handle: pycurl.Curl):
    def collect(line: bytes) -> None:
        if line.startswith(b"HTTP/"):
            handle.headers.clear()  # a new response (after a redirect or a 100 Continue)
        handle.headers.append(line)

    return collect


def _response(handle: pycurl.Curl) -> bytes | FetchFailed:
    status = handle.getinfo(pycurl.RESPONSE_CODE)
    if status == 200:
        return b"".join(handle.body)
    if 300 <= status < 400:  # a redirect without a Location header
        return FetchFailed(f"http_{status}", "redirect without a usable Location")
    retryable = status in (408, 429) or status >= 500
    retry_after = parse_retry_after(_header(handle.headers, b"retry-after")) if retryable else None
    return FetchFailed(f"http_{status}", _reason_phrase(handle.headers), retryable, retry_after)


def _curl_failure(handle: pycurl.Curl, code: int, message: str, options: Any) -> FetchFailed:
    if handle.too_large or code == pycurl.E_FILESIZE_EXCEEDED:
        return FetchFailed("too_large", f"body over --max-bytes {options.max_bytes}")
    if code == pycurl.E_TOO_MANY_REDIRECTS:
        return FetchFailed("redirect_loop", f"more than {options.max_redirects} redirects")
    if code in _RETRYABLE_CURL_ERRORS:
        return FetchFailed(_RETRYABLE_CURL_ERRORS[code], one_line(message), retryable=True)
    return FetchFailed(_FINAL_CURL_ERRORS.get(code, f"curl_{code}"), one_line(message))


def _header(lines: Iterable[bytes], name: bytes) -> str | None:
    prefix = name + b":"
    for line in lines:
        if line[: len(prefix)].lower() == prefix:
            return line[len(prefix):].strip().decode("latin-1")
    return None


def _reason_phrase(lines: list[bytes]) -> str:
    if not lines:
        return ""
    parts = lines[0].decode("latin-1").split(None, 2)
    return parts[2].strip() if len(parts) == 3 else ""


def _ca_file() -> str | None:
    with contextlib.suppress(ImportError):
        import certifi  # the CA bundle requests would use

        return certifi.where()
    return None


def one_line(err: BaseException | str) -> str:
    """An error message on one line, at most 200 characters (for manifests and logs)."""
    return re.sub(r"\s+", " ", str(err))[:200]
