"""fashion_tf.url_fetch against the real loopback test server (and a raw socket peer for what it cannot do):
address checks before connecting, schemes, redirects checked again, timeouts, the byte cap."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import threading
import time

import pytest

from fashion_tf.testserver import Fault, serve_folder
from fashion_tf.url_fetch import FetchError, FetchOptions, fetch, refusal_reason

PRIVATE = FetchOptions(allow_private=True)
BODY = bytes(range(256)) * 40  # 10,240 bytes


@pytest.fixture()
def server(tmp_path):
    (tmp_path / "img.png").write_bytes(BODY)
    with serve_folder(tmp_path) as running:
        yield running


def _fails(url: str, options: FetchOptions, reason: str) -> str:
    with pytest.raises(FetchError) as caught:
        fetch(url, options)
    assert caught.value.reason == reason, str(caught.value)
    return str(caught.value)


@pytest.mark.parametrize("address, reason", [
    ("127.0.0.1", "loopback"), ("127.8.9.10", "loopback"), ("::1", "loopback"),
    ("10.1.2.3", "private"), ("172.16.0.1", "private"), ("192.168.1.1", "private"), ("fd00::1", "private"),
    ("169.254.169.254", "link-local"), ("fe80::1", "link-local"),
    ("100.64.0.1", "non-public"), ("192.0.2.1", "private"), ("240.0.0.1", "private"),
    ("::ffff:127.0.0.1", "loopback"), ("::ffff:10.0.0.1", "private"), ("2002:7f00:1::", "loopback"),
    ("64:ff9b::a9fe:a9fe", "link-local"),
    ("0.0.0.0", "unspecified"), ("::", "unspecified"), ("224.0.0.1", "multicast"), ("255.255.255.255", "broadcast"),
    ("93.184.216.34", None), ("2606:4700::1111", None), ("::ffff:8.8.8.8", None),
])
def test_refusal_reason_of_each_address_range(address, reason):
    assert refusal_reason(address) == reason
    always_refused = reason in ("unspecified", "multicast", "broadcast")
    assert refusal_reason(address, allow_private=True) == (reason if always_refused else None)


def test_loopback_is_refused_before_connecting_and_fetched_when_allowed(server):
    url = server.url("img.png")
    message = _fails(url, FetchOptions(), "private_address")
    assert message == "refused: 127.0.0.1 is a loopback address"
    assert server.request_count("/img.png") == 0
    assert fetch(url, PRIVATE) == BODY
    assert server.request_count("/img.png") == 1


def test_a_host_name_is_resolved_and_every_address_checked(server):
    message = _fails(f"http://localhost:{server.server_address[1]}/img.png", FetchOptions(), "private_address")
    assert message.startswith("refused: localhost resolves to ") and "loopback address" in message
    decimal = _fails(f"http://2130706433:{server.server_address[1]}/img.png", FetchOptions(), "private_address")
    assert "resolves to 127.0.0.1" in decimal  # the integer spelling of 127.0.0.1
    assert server.request_count("/img.png") == 0


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://127.0.0.1/a.png", "gopher://x/", "javascript:alert(1)",
                                 "/relative/path.png", "http:///no-host", "http://exa mple.com/a.png"])
def test_only_well_formed_http_and_https_urls(url):
    _fails(url, PRIVATE, "bad_url")


def test_redirects_are_followed_and_checked_again(server):
    port = server.server_address[1]
    server.add_fault("/moved", Fault(redirect_to="/img.png"))
    server.add_fault("/to-unspecified", Fault(redirect_to=f"http://0.0.0.0:{port}/img.png"))
    server.add_fault("/to-file", Fault(redirect_to="file:///etc/passwd"))
    server.add_fault("/loop", Fault(redirect_to="/loop"))
    assert fetch(server.url("moved"), PRIVATE) == BODY
    # 0.0.0.0 would reach this very server on Linux: only a check of the redirect's target stops it
    assert "0.0.0.0 is a unspecified address" in _fails(server.url("to-unspecified"), PRIVATE, "refused_address")
    _fails(server.url("to-file"), PRIVATE, "bad_url")
    assert server.request_count("/img.png") == 1
    _fails(server.url("loop"), FetchOptions(allow_private=True, max_redirects=2), "too_many_redirects")
    assert server.request_count("/loop") == 3


def test_http_errors_truncation_and_refused_connections(server):
    server.add_fault("/gone.png", Fault(status=404))
    server.add_fault("/cut.png", Fault(body=BODY, truncate="always"))
    assert _fails(server.url("gone.png"), PRIVATE, "http_status") == "HTTP 404"
    _fails(server.url("cut.png"), PRIVATE, "truncated")
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    _fails(f"http://127.0.0.1:{closed_port}/a.png", PRIVATE, "connection")


def test_a_declared_length_over_the_cap_is_refused_before_reading(server):
    message = _fails(server.url("img.png"), FetchOptions(allow_private=True, max_bytes=10_000), "too_large")
    assert "10,000 bytes limit" in message and "10,240 bytes" in message
    assert fetch(server.url("img.png"), FetchOptions(allow_private=True, max_bytes=len(BODY))) == BODY


def test_a_silent_server_times_out(server):
    server.add_fault("/slow.png", Fault(delay=3))
    start = time.monotonic()
    message = _fails(server.url("slow.png"), FetchOptions(allow_private=True, read_timeout=0.5), "timeout")
    assert time.monotonic() - start < 2.5 and "0.5s" in message


@contextlib.contextmanager
def raw_peer(send_body):
    """A one-connection HTTP peer that answers 200 without a Content-Length, then calls send_body(conn)."""
    listener = socket.create_server(("127.0.0.1", 0))

    def serve():
        conn, _ = listener.accept()
        with conn:
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nConnection: close\r\n\r\n")
            with contextlib.suppress(OSError):
                send_body(conn)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}/x.png"
    finally:
        listener.close()
        thread.join(timeout=10)


def test_a_body_without_length_is_cut_at_the_cap():
    with raw_peer(lambda conn: conn.sendall(b"x" * 300_000)) as url:
        message = _fails(url, FetchOptions(allow_private=True, max_bytes=100_000), "too_large")
    assert "100,000 bytes limit" in message


def test_a_server_dripping_bytes_is_cut_off_at_the_deadline():
    def drip(conn):
        for _ in range(50):
            conn.sendall(b"x")
            time.sleep(0.1)

    start = time.monotonic()
    with raw_peer(drip) as url:
        message = _fails(url, FetchOptions(allow_private=True, read_timeout=1.0, total_timeout=1.0), "timeout")
        elapsed = time.monotonic() - start
    assert elapsed < 2.0 and "longer than 1s" in message


def test_url_fetch_does_not_import_tensorflow():
    code = "import sys, fashion_tf.url_fetch; sys.exit('tensorflow' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
