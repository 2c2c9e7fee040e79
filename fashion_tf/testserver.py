"""A loopback HTTP server for tests, benchmarks and the demo, with injectable faults.

    with serve_folder(root, faults={"/a.jpg": Fault(fail_times=2, fail_status=503, retry_after="1")}) as server:
        requests.get(server.base_url + "/a.jpg")   # 503, 503, then the file
        server.add_fault("/b.jpg", Fault(status=404))
        server.add_file("/virtual.png", png_bytes, content_type=None)   # no Content-Type header
        server.request_count("/a.jpg")

Serves files under `root` (and virtual files added at run time) on 127.0.0.1, HTTP/1.1
keep-alive, one thread per connection. Command line:

    python -m fashion_tf.testserver --root DIR --port 8765 [--faults faults.json]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import mimetypes
import os
import posixpath
import queue
import socket
import socketserver
import sys
import threading
import time
import urllib.parse
from collections import Counter
from dataclasses import dataclass, fields
from http import HTTPStatus
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Iterator, Mapping

KEEP = "keep"  # Fault.content_type: send the usual type for the file
FILE_CACHE_BYTES = 256 << 20
MAX_LINE = 65536  # longest request or header line accepted
MAX_HEADERS = 100
HTML_PAGE = b"<!DOCTYPE html><html><head><title>Not here</title></head><body><h1>Image moved</h1></body></html>\n"


@dataclass
class Fault:
    """What goes wrong when a path is requested. Fields combine; unset fields change nothing.

    status: always answer this status (empty body, or `body`).
    fail_times/fail_status/retry_after: answer fail_status for the first fail_times requests, then normally.
    delay: seconds to wait before answering (a slow server).
    truncate: "once" or "always": announce the full Content-Length, send about half, close.
    content_type: KEEP (default), None (no header) or a value to send instead.
    body: bytes to send instead of the file (e.g. an HTML page, random bytes).
    redirect_to: answer 302 with this Location (a path or URL); to itself for a loop.
    """

    status: int | None = None
    fail_times: int = 0
    fail_status: int = 503
    retry_after: str | None = None
    delay: float = 0.0
    truncate: str | None = None
    content_type: str | None = KEEP
    body: bytes | None = None
    redirect_to: str | None = None

    @classmethod
    def html(cls) -> "Fault":
        return cls(body=HTML_PAGE, content_type="text/html; charset=utf-8")

    @classmethod
    def random_bytes(cls, size: int = 4096, seed: int = 0) -> "Fault":
        import random

        return cls(body=random.Random(seed).randbytes(size), content_type="image/jpeg")

    @classmethod
    def from_json(cls, obj: Mapping) -> "Fault":
        """From a JSON object; `"html": true` and `"random_bytes": N` are shorthands."""
        obj = dict(obj)
        if obj.pop("html", False):
            base = cls.html()
        elif "random_bytes" in obj:
            base = cls.random_bytes(int(obj.pop("random_bytes")))
        else:
            base = cls()
        known = {f.name for f in fields(cls)}
        unknown = set(obj) - known
        if unknown:
            raise ValueError(f"unknown fault field(s): {', '.join(sorted(unknown))}")
        if isinstance(obj.get("body"), str):
            obj["body"] = obj["body"].encode("utf-8")
        for key, value in obj.items():
            setattr(base, key, value)
        return base


@dataclass
class _PathState:
    fault: Fault | None = None
    failures_sent: int = 0
    truncations_sent: int = 0


class FaultServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    # Benchmarks open many keep-alive connections at once; the default backlog of 5 resets some.
    request_queue_size = 256

    def __init__(self, root: str | os.PathLike | None, address: tuple[str, int] = ("127.0.0.1", 0)):
        # Before binding: a failed bind calls server_close(), which needs these (else an AttributeError hides
        # "Address already in use").
        self.connections: queue.SimpleQueue[tuple[socket.socket, tuple] | None] = queue.SimpleQueue()
        self.idle_connection_threads = threading.Semaphore(0)
        self.connection_threads = 0
        super().__init__(address, _Handler)
        self.root = Path(root).resolve() if root is not None else None
        self.lock = threading.Lock()
        self.counts: Counter[str] = Counter()
        self.states: dict[str, _PathState] = {}
        self.virtual_files: dict[str, tuple[bytes, str | None]] = {}
        self.file_cache: dict[str, tuple[bytes, str]] = {}  # URL path -> (bytes, Content-Type)
        self.file_cache_bytes = 0

    def process_request(self, request, client_address) -> None:
        """Each connection gets a thread of its own, as with ThreadingHTTPServer, but an idle thread is
        reused before a new one is started: that halves the server's cost of a new connection
        (0.45 -> 0.2 ms measured), which a client without keep-alive pays on every request."""
        if not self.idle_connection_threads.acquire(blocking=False):
            self.connection_threads += 1
            threading.Thread(target=self._serve_connections, name="testserver-connection", daemon=True).start()
        self.connections.put((request, client_address))

    def _serve_connections(self) -> None:
        while (connection := self.connections.get()) is not None:
            self.process_request_thread(*connection)  # handles the connection until it closes, then closes it
            self.idle_connection_threads.release()

    def server_close(self) -> None:
        super().server_close()
        for _ in range(self.connection_threads):  # each thread ends once its current connection has
            self.connections.put(None)

    def handle_error(self, request, client_address) -> None:
        """A client that hangs up mid-answer (timeouts, tests) is normal here, not worth a traceback."""
        error = sys.exc_info()[1]
        if not isinstance(error, (ConnectionError, TimeoutError)):
            super().handle_error(request, client_address)

    @property
    def base_url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"

    def url(self, path: str) -> str:
        return self.base_url + "/" + path.lstrip("/")

    def add_fault(self, path: str, fault: Fault) -> None:
        with self.lock:
            self.states[_norm(path)] = _PathState(fault)

    def add_faults(self, faults: Mapping[str, Fault]) -> None:
        for path, fault in faults.items():
            self.add_fault(path, fault)

    def clear_faults(self) -> None:
        with self.lock:
            self.states.clear()

    def add_file(self, path: str, data: bytes, content_type: str | None = KEEP) -> None:
        """Serve `data` at `path` (no file on disk needed)."""
        with self.lock:
            self.virtual_files[_norm(path)] = (bytes(data), content_type)

    def request_count(self, path: str) -> int:
        with self.lock:
            return self.counts[_norm(path)]

    def reset(self) -> None:
        """Forget request counts and restart every "fail N times"/"truncate once" countdown."""
        with self.lock:
            self.counts.clear()
            for state in self.states.values():
                state.failures_sent = state.truncations_sent = 0


def _norm(path: str) -> str:
    path = urllib.parse.urlsplit(path).path if "://" in path else path.split("?", 1)[0]
    return "/" + urllib.parse.unquote(path).lstrip("/")


class _Handler(socketserver.StreamRequestHandler):
    """HTTP/1.1 keep-alive, GET and HEAD only, parsed lean.

    http.server's BaseHTTPRequestHandler parses every header through the email package and sends
    headers and body in separate writes; here the request line and headers are read directly (only
    Connection matters) and each answer goes out in one write. That halves the server's CPU per
    request (0.35 -> 0.1-0.15 ms measured; the client, reading one packet instead of two, saves
    too), so a benchmark's loopback server stays far from being its limit. No Nagle: a small answer must not wait for the client's delayed ACK.
    """

    disable_nagle_algorithm = True
    server: FaultServer

    def handle(self) -> None:
        self.close_connection = False
        while not self.close_connection:
            self.handle_one_request()

    def handle_one_request(self) -> None:
        request = self._read_request()
        if request is None:
            self.close_connection = True
            return
        method, self.path, keep_alive = request
        self.close_connection = not keep_alive
        if method in ("GET", "HEAD"):
            self._answer(send_body=method == "GET")
        else:
            self._send(501, b"only GET and HEAD\n", "text/plain", {}, send_body=True)

    def _read_request(self) -> tuple[str, str, bool] | None:
        """(method, target, keep-alive) of the next request; None at end of stream or after a 400."""
        line = self.rfile.readline(MAX_LINE + 1)
        if not line:
            return None
        parts = line.decode("latin-1").split()
        connection, headers_complete = self._read_connection_header()
        if len(parts) != 3 or not parts[2].startswith("HTTP/1.") or len(line) > MAX_LINE or not headers_complete:
            self.close_connection = True
            self._send(400, b"bad request\n", "text/plain", {}, send_body=True)
            return None
        method, target, version = parts
        keep_alive = connection == "keep-alive" if version == "HTTP/1.0" else connection != "close"
        return method, target, keep_alive

    def _read_connection_header(self) -> tuple[str, bool]:
        """Read the header lines up to the blank line: (the Connection header lowercased, whether the
        blank line came within MAX_HEADERS lines). No other header changes an answer here."""
        connection = ""
        for _ in range(MAX_HEADERS + 1):
            header = self.rfile.readline(MAX_LINE + 1)
            if header in (b"\r\n", b"\n"):
                return connection, True
            if not header:
                return connection, False
            name, _, value = header.decode("latin-1").partition(":")
            if name.strip().lower() == "connection":
                connection = value.strip().lower()
        return connection, False

    def _answer(self, send_body: bool) -> None:
        path = _norm(self.path)
        server = self.server
        with server.lock:
            server.counts[path] += 1
            state = server.states.get(path)
            fault = state.fault if state else None
            fail_now = bool(fault and state.failures_sent < fault.fail_times)
            if fail_now:
                state.failures_sent += 1
            cut_now = bool(fault and (fault.truncate == "always" or (fault.truncate == "once" and state.truncations_sent == 0)))
            if cut_now:
                state.truncations_sent += 1
            virtual = server.virtual_files.get(path)
        if fault and fault.delay:
            time.sleep(fault.delay)
        if fail_now:
            headers = {"Retry-After": fault.retry_after} if fault.retry_after is not None else {}
            return self._send(fault.fail_status, b"temporarily unavailable\n", "text/plain", headers, send_body)
        if fault and fault.status is not None:
            return self._send(fault.status, fault.body or f"status {fault.status}\n".encode(), "text/plain", {}, send_body)
        if fault and fault.redirect_to is not None:
            return self._send(302, b"", None, {"Location": fault.redirect_to}, send_body)
        if fault and fault.body is not None:  # served whether or not a file exists there
            body, content_type = fault.body, "application/octet-stream"
        else:
            body, content_type = self._content(path, virtual)
        if body is None:
            return self._send(404, b"not found\n", "text/plain", {}, send_body)
        if fault and fault.content_type != KEEP:
            content_type = fault.content_type
        if cut_now:
            return self._send_cut(body, content_type, send_body)
        self._send(200, body, content_type, {}, send_body)

    def _content(self, path: str, virtual: tuple[bytes, str | None] | None) -> tuple[bytes | None, str | None]:
        if virtual is not None:
            data, content_type = virtual
            return data, _guess_type(path) if content_type == KEEP else content_type
        cached = self.server.file_cache.get(path)
        if cached is not None:
            return cached
        root = self.server.root
        if root is None:
            return None, None
        target = (root / posixpath.normpath(path).lstrip("/")).resolve()
        if root != target and root not in target.parents or not target.is_file():
            return None, None
        content = target.read_bytes(), _guess_type(path)
        with self.server.lock:  # small files are kept in memory: benchmarks measure clients, not this disk
            if len(content[0]) <= 1 << 20 and self.server.file_cache_bytes + len(content[0]) <= FILE_CACHE_BYTES:
                self.server.file_cache[path] = content
                self.server.file_cache_bytes += len(content[0])
        return content

    def _send(self, status: int, body: bytes, content_type: str | None, headers: Mapping[str, str], send_body: bool) -> None:
        if self.close_connection:
            headers = {**headers, "Connection": "close"}
        self.wfile.write(_head(status, content_type, len(body), headers) + (body if send_body else b""))

    def _send_cut(self, body: bytes, content_type: str | None, send_body: bool) -> None:
        """Promise the whole body, send about half, then close: a connection dropped mid-transfer."""
        self.close_connection = True
        head = _head(200, content_type, len(body), {"Connection": "close"})
        self.wfile.write(head + (body[: max(1, len(body) // 2)] if send_body else b""))
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)


def _head(status: int, content_type: str | None, length: int, headers: Mapping[str, str]) -> bytes:
    """Status line and headers of an answer, ready to send."""
    lines = [f"HTTP/1.1 {status} {_reason(status)}"]
    if content_type:
        lines.append(f"Content-Type: {content_type}")
    lines += [f"{key}: {value}" for key, value in headers.items()]
    lines += [f"Content-Length: {length}", "", ""]
    return "\r\n".join(lines).encode("latin-1")


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


def _guess_type(path: str) -> str:
    return mimetypes.guess_type(path)[0] or "application/octet-stream"


@contextlib.contextmanager
def serve_folder(root: str | os.PathLike | None, faults: Mapping[str, Fault] | None = None, port: int = 0) -> Iterator[FaultServer]:
    """Serve `root` on 127.0.0.1 (a free port unless `port`) in a background thread."""
    server = FaultServer(root, ("127.0.0.1", port))
    server.add_faults(faults or {})
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="testserver", daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def load_faults(path: str | os.PathLike) -> dict[str, Fault]:
    """{"/path": {"status": 404}, "/b": {"fail_times": 2, "retry_after": "1"}, "/c": {"html": true}}"""
    from fashion_tf.errors import UserError

    try:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
        return {key: Fault.from_json(value) for key, value in raw.items()}
    except (OSError, ValueError, TypeError, AttributeError) as err:
        raise UserError(f"{path}: bad faults file: {err}") from None


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description="Serve a folder over HTTP on 127.0.0.1 (keep-alive, optional injected faults).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--root", required=True, help="folder to serve")
    parser.add_argument("--port", type=int, default=8765, help="port (0 picks a free one)")
    parser.add_argument("--faults", help='JSON file {"/path": {"status": 404}, ...} (fields of fashion_tf.testserver.Fault)')
    args = parser.parse_args(argv)
    from fashion_tf.errors import UserError

    if not Path(args.root).is_dir():
        raise UserError(f"{args.root}: no such folder")
    faults = load_faults(args.faults) if args.faults else {}
    try:
        server = FaultServer(args.root, ("127.0.0.1", args.port))
    except OSError as err:
        raise UserError(f"cannot listen on 127.0.0.1:{args.port}: {err.strerror}") from None
    server.add_faults(faults)
    print(f"serving {Path(args.root).resolve()} at {server.base_url}/ ({len(faults)} faults); Ctrl-C stops", flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    from fashion_tf.errors import run_cli

    sys.exit(run_cli(main))
