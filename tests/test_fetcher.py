"""fashion_tf.fetcher against a real loopback HTTP server (faults are covered end to end in test_download)."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from fashion_tf.download import Options
from fashion_tf.fetcher import Fetcher, FetchFailed, fetch_once, parse_retry_after
from fashion_tf.testserver import Fault, serve_folder

FAST = Options(workers=4, timeout=2.0, connect_timeout=2.0, max_redirects=3, progress=False)


def test_many_transfers_each_token_comes_back_once_with_its_own_body(tmp_path):
    bodies = {f"f{i}.bin": bytes([i]) * (1000 + 997 * i) for i in range(40)}
    for name, body in bodies.items():
        (tmp_path / name).write_bytes(body)
    with serve_folder(tmp_path) as server, Fetcher(FAST, max_transfers=8) as fetcher:
        waiting, results = list(bodies), {}
        while waiting or fetcher.active:
            while waiting and fetcher.active < fetcher.max_transfers:
                name = waiting.pop()
                fetcher.start(server.url(name), name)
            for token, result in fetcher.poll(1.0):
                assert token not in results
                results[token] = result
    assert results == bodies


def test_urls_with_spaces_and_non_ascii_characters_are_sent_percent_encoded(tmp_path):
    (tmp_path / "robe d'été 1.jpg").write_bytes(b"dress")
    with serve_folder(tmp_path) as server:
        assert fetch_once(server.base_url + "/robe d'été 1.jpg", FAST) == b"dress"
        assert fetch_once(server.base_url + "/robe%20d'%C3%A9t%C3%A9%201.jpg", FAST) == b"dress"


def test_failures_say_why_and_whether_to_retry(tmp_path):
    (tmp_path / "a.jpg").write_bytes(b"x" * 5000)
    faults = {"/busy": Fault(fail_times=9, fail_status=503, retry_after="7"), "/gone": Fault(status=404),
              "/loop": Fault(redirect_to="/loop"), "/cut": Fault(truncate="always")}
    with serve_folder(tmp_path, faults=faults) as server:
        (tmp_path / "cut").write_bytes(b"y" * 50_000)
        busy = _failure(server.base_url + "/busy")
        assert (busy.reason, busy.retryable, busy.retry_after) == ("http_503", True, 7.0)
        gone = _failure(server.base_url + "/gone")
        assert (gone.reason, gone.retryable) == ("http_404", False)
        assert _failure(server.base_url + "/loop").reason == "redirect_loop"
        cut = _failure(server.base_url + "/cut")
        assert (cut.reason, cut.retryable) == ("truncated", True)
        small = Options(**{**FAST.__dict__, "max_bytes": 4999})
        assert _failure(server.url("a.jpg"), small).reason == "too_large"
        assert fetch_once(server.url("a.jpg"), FAST) == b"x" * 5000
    assert _failure("ftp://example.com/a.jpg").reason == "bad_url"
    refused = _failure(server.url("a.jpg"))  # the server is gone: nothing listens on its port
    assert (refused.reason, refused.retryable) == ("connection", True)


def test_a_silent_server_times_out_after_the_read_timeout(tmp_path):
    (tmp_path / "slow.jpg").write_bytes(b"z" * 100)
    options = Options(**{**FAST.__dict__, "timeout": 1.0})
    with serve_folder(tmp_path, faults={"/slow.jpg": Fault(delay=4.0)}) as server:
        started = time.monotonic()
        failure = _failure(server.url("slow.jpg"), options)
        assert (failure.reason, failure.retryable) == ("timeout", True)
        assert time.monotonic() - started < 3.5


def test_http_proxy_from_the_environment_is_used_unless_no_proxy(tmp_path, monkeypatch):
    (tmp_path / "a.jpg").write_bytes(b"image bytes")
    # The test server answers absolute-form requests ("GET http://host/a.jpg") for its own files, as a proxy would.
    with serve_folder(tmp_path) as proxy, serve_folder(tmp_path) as direct:
        monkeypatch.setenv("HTTP_PROXY", proxy.base_url)
        monkeypatch.setenv("NO_PROXY", "127.0.0.1")
        assert fetch_once("http://images.invalid/a.jpg", FAST) == b"image bytes"
        assert fetch_once(direct.url("a.jpg"), FAST) == b"image bytes"
        assert proxy.request_count("/a.jpg") == 1 and direct.request_count("/a.jpg") == 1


def test_downloads_work_in_a_process_that_imports_tensorflow_after_fashion_tf(tmp_path):
    # TensorFlow exports its own older libcurl; fashion_tf/__init__ loads pycurl first so both can live in one process.
    (tmp_path / "a.jpg").write_bytes(b"image bytes")
    script = ("import sys, fashion_tf, tensorflow; from fashion_tf.download import Options; "
              "from fashion_tf.fetcher import fetch_once; sys.stdout.write(fetch_once(sys.argv[1], Options()).decode())")
    with serve_folder(tmp_path) as server:
        result = subprocess.run([sys.executable, "-c", script, server.url("a.jpg")], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout == "image bytes"


@pytest.mark.parametrize("value, expected", [("3", 3.0), (None, None), ("soon", None), ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0)])
def test_parse_retry_after(value, expected):
    assert parse_retry_after(value) == expected


def _failure(url: str, options: Options = FAST) -> FetchFailed:
    with pytest.raises(FetchFailed) as caught:
        fetch_once(url, options)
    return caught.value
