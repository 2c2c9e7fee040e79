"""fashion_tf.testserver: a real loopback server, each fault seen through a real HTTP client."""

from __future__ import annotations

import http.client
import json
import socket
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path

import pytest
import requests

from fashion_tf.testserver import HTML_PAGE, Fault, serve_folder

REPO = Path(__file__).resolve().parents[1]
BODY = bytes(range(256)) * 40  # 10,240 bytes


@pytest.fixture()
def server(tmp_path):
    (tmp_path / "a.jpg").write_bytes(BODY)
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.png").write_bytes(b"png-ish")
    with serve_folder(tmp_path) as running:
        yield running


def connect(server) -> http.client.HTTPConnection:
    host, port = urllib.parse.urlsplit(server.base_url).netloc.split(":")
    return http.client.HTTPConnection(host, int(port), timeout=5)


def test_serves_files_with_type_and_keeps_the_connection_alive(server):
    assert server.base_url.startswith("http://127.0.0.1:")
    conn = connect(server)
    for path, body, content_type in [("/a.jpg", BODY, "image/jpeg"), ("/sub/b.png", b"png-ish", "image/png")]:
        conn.request("GET", path)
        response = conn.getresponse()
        assert (response.status, response.read(), response.getheader("Content-Type")) == (200, body, content_type)
        assert response.version == 11 and not response.will_close
    conn.close()
    assert server.request_count("/a.jpg") == 1 and server.request_count("/sub/b.png") == 1


def test_unknown_paths_and_escapes_are_404(server, tmp_path):
    (tmp_path.parent / "secret.txt").write_text("no")
    conn = connect(server)
    for path in ["/nothing.jpg", "/../secret.txt", "/%2e%2e/secret.txt"]:
        conn.request("GET", path)
        response = conn.getresponse()
        response.read()
        assert response.status == 404, path


def test_fail_n_times_then_succeed_with_retry_after(server):
    server.add_fault("/a.jpg", Fault(fail_times=2, fail_status=503, retry_after="7"))
    answers = [requests.get(server.url("a.jpg"), timeout=5) for _ in range(3)]
    assert [a.status_code for a in answers] == [503, 503, 200]
    assert answers[0].headers["Retry-After"] == "7" and answers[2].content == BODY
    assert server.request_count("/a.jpg") == 3
    server.reset()
    assert requests.get(server.url("a.jpg"), timeout=5).status_code == 503  # countdown restarted


def test_status_html_random_and_content_type_faults(server):
    server.add_fault("/gone.jpg", Fault(status=410))
    server.add_fault("/page.jpg", Fault.html())
    server.add_fault("/noise.jpg", Fault.random_bytes(100))
    server.add_fault("/a.jpg", Fault(content_type=None))
    server.add_file("/extensionless", BODY, content_type="text/plain")
    assert requests.get(server.url("gone.jpg"), timeout=5).status_code == 410
    page = requests.get(server.url("page.jpg"), timeout=5)
    assert page.content == HTML_PAGE and page.headers["Content-Type"].startswith("text/html")
    noise = requests.get(server.url("noise.jpg"), timeout=5)
    assert len(noise.content) == 100 and noise.content[:2] != b"\xff\xd8"
    plain = requests.get(server.url("a.jpg"), timeout=5)
    assert plain.content == BODY and "Content-Type" not in plain.headers
    wrong = requests.get(server.url("extensionless"), timeout=5)
    assert wrong.content == BODY and wrong.headers["Content-Type"] == "text/plain"


def test_body_cut_short_once_then_whole(server):
    server.add_fault("/a.jpg", Fault(truncate="once"))
    conn = connect(server)
    conn.request("GET", "/a.jpg")
    response = conn.getresponse()
    assert response.getheader("Content-Length") == str(len(BODY))
    with pytest.raises(http.client.IncompleteRead) as cut:
        response.read()
    assert 0 < len(cut.value.partial) < len(BODY)
    conn.close()
    assert requests.get(server.url("a.jpg"), timeout=5).content == BODY


def test_delay_redirect_and_redirect_loop(server):
    server.add_fault("/a.jpg", Fault(delay=0.3))
    started = time.monotonic()
    assert requests.get(server.url("a.jpg"), timeout=5).content == BODY
    assert time.monotonic() - started >= 0.3
    with pytest.raises(requests.Timeout):
        requests.get(server.url("a.jpg"), timeout=0.1)
    server.add_fault("/moved.jpg", Fault(redirect_to="/sub/b.png"))
    moved = requests.get(server.url("moved.jpg"), timeout=5)
    assert moved.content == b"png-ish" and moved.history[0].status_code == 302
    server.add_fault("/loop.jpg", Fault(redirect_to="/loop.jpg"))
    with pytest.raises(requests.TooManyRedirects):
        requests.get(server.url("loop.jpg"), timeout=5)


def test_head_close_and_http_1_0_follow_the_protocol(server):
    conn = connect(server)
    conn.request("HEAD", "/a.jpg")
    head = conn.getresponse()
    assert (head.status, head.getheader("Content-Length"), head.read()) == (200, str(len(BODY)), b"")
    conn.request("GET", "/a.jpg", headers={"Connection": "close"})
    closing = conn.getresponse()
    assert closing.read() == BODY and closing.getheader("Connection") == "close" and closing.will_close
    conn.close()
    for request, stays_open in [(b"GET /a.jpg HTTP/1.0\r\n\r\n", False),
                                (b"GET /a.jpg HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", True)]:
        with socket.create_connection(_address(server), timeout=5) as raw:
            raw.sendall(request)
            answer = _read_answer(raw)
            assert answer.startswith(b"HTTP/1.1 200 OK\r\n") and answer.endswith(BODY)
            assert (b"Connection: close" not in answer) == stays_open


def test_malformed_requests_get_400_and_unknown_methods_501(server):
    for request, status in [(b"NONSENSE\r\n\r\n", b"400"), (b"GET /a.jpg SPDY/3\r\n\r\n", b"400"),
                            (b"GET /" + b"x" * 70_000 + b" HTTP/1.1\r\n\r\n", b"400"), (b"POST /a.jpg HTTP/1.1\r\n\r\n", b"501")]:
        with socket.create_connection(_address(server), timeout=5) as raw:
            raw.sendall(request)
            assert _read_answer(raw).split(b" ")[1] == status, request[:30]
    assert requests.get(server.url("a.jpg"), timeout=5).content == BODY  # the server carries on


def _address(server) -> tuple[str, int]:
    host, port = urllib.parse.urlsplit(server.base_url).netloc.split(":")
    return host, int(port)


def _read_answer(raw: socket.socket) -> bytes:
    """One whole answer: headers, then Content-Length bytes of body."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += raw.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(next(line.split(b":")[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")))
    while len(body) < length:
        body += raw.recv(65536)
    return data[: len(head) + 4] + body


def test_command_line_serves_a_folder_with_faults_file(tmp_path):
    (tmp_path / "a.jpg").write_bytes(BODY)
    faults = tmp_path / "faults.json"
    faults.write_text(json.dumps({"/b.jpg": {"status": 404}, "/c.jpg": {"html": True}, "/a.jpg": {"fail_times": 1}}))
    process = subprocess.Popen([sys.executable, "-m", "fashion_tf.testserver", "--root", str(tmp_path), "--port", "0",
                                "--faults", str(faults)], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        line = process.stdout.readline()
        base_url = line.split(" at ")[1].split("/ ")[0]
        assert requests.get(base_url + "/a.jpg", timeout=5).status_code == 503
        assert requests.get(base_url + "/a.jpg", timeout=5).content == BODY
        assert requests.get(base_url + "/b.jpg", timeout=5).status_code == 404
        assert requests.get(base_url + "/c.jpg", timeout=5).content == HTML_PAGE
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_command_line_rejects_bad_faults_file_in_one_line(tmp_path):
    faults = tmp_path / "faults.json"
    faults.write_text(json.dumps({"/b.jpg": {"colour": "red"}}))
    result = subprocess.run([sys.executable, "-m", "fashion_tf.testserver", "--root", str(tmp_path), "--faults", str(faults)],
                            cwd=REPO, capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert result.stderr.startswith("error: ") and "unknown fault field(s): colour" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_port_in_use_is_one_line_naming_the_port(tmp_path):
    """Defect: an AttributeError from server_close hid "Address already in use" behind a traceback."""
    import socket
    import subprocess
    import sys

    from conftest import REPO

    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    try:
        done = subprocess.run([sys.executable, "-m", "fashion_tf.testserver", "--root", str(tmp_path), "--port",
                               str(port)], cwd=REPO, capture_output=True, text=True, timeout=60)
    finally:
        taken.close()
    assert done.returncode == 2
    assert done.stderr.splitlines() == [f"error: cannot listen on 127.0.0.1:{port}: Address already in use"]
