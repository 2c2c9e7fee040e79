"""fashion_tf.download against the real loopback server with injected faults, and its CLI."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

from conftest import png_bomb
from fashion_tf.download import BadImage, Options, download, process_shares, safe_file_stem, to_rgb_jpeg
from fashion_tf.manifest import read_manifest
from fashion_tf.sources import shard_of
from fashion_tf.testserver import Fault, serve_folder

REPO = Path(__file__).resolve().parents[1]
TOOL = REPO / "tools" / "download_images.py"
FAST = Options(workers=4, timeout=2.0, connect_timeout=2.0, retries=2, backoff=0.01, max_retry_after=0.2, progress=False)


def jpeg_bytes(size=(32, 24), color=(200, 30, 30), mode="RGB", **save) -> bytes:
    out = io.BytesIO()
    Image.new(mode, size, color).save(out, "JPEG", quality=90, **save)
    return out.getvalue()


def png_bytes(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def half_transparent_png() -> bytes:
    image = Image.new("RGBA", (20, 10), (0, 0, 255, 255))
    image.paste((0, 0, 0, 0), (10, 0, 20, 10))  # right half fully transparent black
    return png_bytes(image)


GOOD = {f"good{i}.jpg": jpeg_bytes(color=(10 * i, 100, 50)) for i in range(8)}


@pytest.fixture()
def site(tmp_path):
    root = tmp_path / "site"
    root.mkdir()
    for name, data in GOOD.items():
        (root / name).write_bytes(data)
    (root / "alpha.png").write_bytes(half_transparent_png())
    (root / "cmyk.jpg").write_bytes(jpeg_bytes(mode="CMYK", color=(0, 255, 255, 0)))
    (root / "grey.png").write_bytes(png_bytes(Image.new("L", (8, 8), 77)))
    (root / "palette.gif").write_bytes(_gif())
    (root / "big.jpg").write_bytes(jpeg_bytes(size=(400, 200)))
    (root / "bomb.png").write_bytes(png_bomb())
    noisy = io.BytesIO()
    Image.effect_noise((64, 64), 60).convert("RGB").save(noisy, "JPEG", quality=90)
    (root / "cut_jpeg.jpg").write_bytes(noisy.getvalue()[: len(noisy.getvalue()) * 2 // 3])  # the file itself is cut
    faults = {
        "/flaky.jpg": Fault(fail_times=2, fail_status=503, retry_after="0"),
        "/slow.jpg": Fault(delay=1.5),
        "/cut_once.jpg": Fault(truncate="once"),
        "/cut_always.jpg": Fault(truncate="always"),
        "/no_type.jpg": Fault(content_type=None),
        "/wrong_type.jpg": Fault(content_type="text/html"),
        "/page.jpg": Fault.html(),
        "/noise.jpg": Fault.random_bytes(5000),
        "/moved.jpg": Fault(redirect_to="/good3.jpg"),
        "/loop.jpg": Fault(redirect_to="/loop.jpg"),
        "/gone.jpg": Fault(status=410),
    }
    for name in ("flaky.jpg", "slow.jpg", "cut_once.jpg", "cut_always.jpg", "no_type.jpg", "wrong_type.jpg"):
        (root / name).write_bytes(GOOD["good1.jpg"])
    with serve_folder(root, faults) as server:
        server.add_file("/extensionless", GOOD["good2.jpg"], content_type=None)
        yield server


def _gif() -> bytes:
    out = io.BytesIO()
    Image.new("P", (6, 6), 3).save(out, "GIF")
    return out.getvalue()


def write_input(path: Path, server, entries: list[tuple[str, list[str] | str]], labels=None) -> Path:
    images = [{"url": [server.url(u) for u in urls] if isinstance(urls, list) else server.url(urls), "imageId": image_id}
              for image_id, urls in entries]
    annotations = [{"labelId": labels.get(image_id, ["1", "2", "1"]) if labels else ["1", "2", "1"], "imageId": image_id}
                   for image_id, _ in entries]
    path.write_text(json.dumps({"images": images, "annotations": annotations}), encoding="utf-8")
    return path


def manifest_rows(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "manifest.jsonl").read_text(encoding="utf-8").splitlines() if line.strip()]


def last_rows(out: Path) -> dict[str, dict]:
    return {row["image_id"]: row for row in manifest_rows(out)}


def test_every_fault_ends_as_ok_or_a_named_failure(site, tmp_path):
    entries = [
        ("plain", "good0.jpg"), ("missing", "nothing_here.jpg"), ("gone", "gone.jpg"), ("flaky", "flaky.jpg"),
        ("slow", "slow.jpg"), ("cut_once", "cut_once.jpg"), ("cut_always", "cut_always.jpg"),
        ("no_type", "no_type.jpg"), ("wrong_type", "wrong_type.jpg"), ("extensionless", "extensionless"),
        ("page", "page.jpg"), ("noise", "noise.jpg"), ("moved", "moved.jpg"), ("loop", "loop.jpg"),
        ("alpha", "alpha.png"), ("cmyk", "cmyk.jpg"), ("grey", "grey.png"), ("palette", "palette.gif"),
        ("bomb", "bomb.png"), ("cut_jpeg", "cut_jpeg.jpg"), ("fallback", ["nothing_here.jpg", "page.jpg", "good4.jpg"]),
    ]
    source = write_input(tmp_path / "train.json", site, entries)
    out = tmp_path / "out"
    started = time.monotonic()
    summary = download(source, out, Options(**{**FAST.__dict__, "timeout": 0.5}))
    elapsed = time.monotonic() - started
    rows = last_rows(out)
    assert len(manifest_rows(out)) == len(entries) == len(rows)
    expected_failures = {
        "missing": "http_404", "gone": "http_410", "slow": "timeout", "cut_always": "truncated", "page": "html",
        "noise": "not_image", "loop": "redirect_loop", "bomb": "too_many_pixels", "cut_jpeg": "corrupt",
    }
    for image_id, reason in expected_failures.items():
        assert rows[image_id]["status"] == "failed" and rows[image_id]["error"] == reason, rows[image_id]
        assert "path" not in rows[image_id] and not (out / "images" / f"{image_id}.jpg").exists()
    ok = {image_id for image_id, row in rows.items() if row["status"] == "ok"}
    assert ok == {image_id for image_id, _ in entries} - set(expected_failures)
    for image_id in ok:
        row = rows[image_id]
        data = (out / row["path"]).read_bytes()
        assert row["path"] == f"images/{image_id}.jpg" and row["labels"] == ["1", "2"]
        assert row["sha256"] == hashlib.sha256(data).hexdigest() and row["bytes"] == len(data)
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            assert (image.format, image.mode, image.size) == ("JPEG", "RGB", (row["width"], row["height"]))
    assert rows["fallback"]["url"] == site.url("good4.jpg")
    # 404 and 410 are never retried; 503 twice then 200; a cut body is fetched again.
    assert site.request_count("/nothing_here.jpg") == 2 and site.request_count("/gone.jpg") == 1
    assert site.request_count("/flaky.jpg") == 3 and site.request_count("/cut_once.jpg") == 2
    assert site.request_count("/cut_always.jpg") == 3 and site.request_count("/slow.jpg") == 3
    # Baseline RGB JPEGs are kept byte for byte; others converted.
    assert (out / "images/plain.jpg").read_bytes() == GOOD["good0.jpg"] and rows["plain"]["kept_original"]
    with Image.open(out / "images/alpha.jpg") as alpha:
        assert alpha.size == (20, 10)
        assert all(abs(a - b) < 12 for a, b in zip(alpha.getpixel((2, 5)), (0, 0, 255)))
        assert all(channel > 240 for channel in alpha.getpixel((17, 5)))  # transparent -> white, not black
    with Image.open(out / "images/cmyk.jpg") as cmyk:
        red, green, blue = cmyk.getpixel((5, 5))
        assert red > 200 and green < 60 and blue < 60
    assert summary.ok == len(ok) and summary.failed == len(expected_failures)
    assert summary.failures["http_404"] == 1 and summary.failures["too_many_pixels"] == 1
    assert elapsed < 30  # retries of the slow and cut URLs run beside the rest, not one after another


def test_retry_after_is_honoured_without_holding_a_worker(site, tmp_path):
    site.add_fault("/flaky.jpg", Fault(fail_times=2, fail_status=429, retry_after="1"))
    entries = [("flaky", "flaky.jpg")] + [(f"g{i}", f"good{i}.jpg") for i in range(5)]
    source = write_input(tmp_path / "train.json", site, entries)
    started = time.monotonic()
    summary = download(source, tmp_path / "out", Options(**{**FAST.__dict__, "workers": 1, "max_retry_after": 5}))
    assert summary.ok == 6 and time.monotonic() - started >= 2.0  # two waits of Retry-After: 1
    order = [row["image_id"] for row in manifest_rows(tmp_path / "out")]
    assert order[-1] == "flaky" and sorted(order[:-1]) == [f"g{i}" for i in range(5)]  # the one worker went on


def test_bomb_is_rejected_from_its_header_before_decoding():
    import resource

    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(BadImage) as caught:
        to_rgb_jpeg(png_bomb(), Options())  # 20000 x 20000: 400 MB of pixels if it were decoded
    assert caught.value.reason == "too_many_pixels"
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak_before < 100_000  # KiB
    with pytest.raises(BadImage, match="too_many_pixels: 400x200 declared"):
        to_rgb_jpeg(jpeg_bytes(size=(400, 200)), Options(max_pixels=50_000))


def test_exif_orientation_is_applied_to_the_pixels_and_dropped():
    sideways = Image.new("RGB", (40, 20), (255, 0, 0))
    sideways.paste((0, 0, 255), (20, 0, 40, 20))  # left half red, right half blue, as stored
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 clockwise to display"
    stored = io.BytesIO()
    sideways.save(stored, "JPEG", quality=95, exif=exif)
    converted = to_rgb_jpeg(stored.getvalue(), Options())
    assert not converted.kept_original and (converted.width, converted.height) == (20, 40)
    with Image.open(io.BytesIO(converted.data)) as upright:
        assert upright.size == (20, 40) and upright.getexif().get(0x0112) is None
        top, bottom = upright.getpixel((10, 5)), upright.getpixel((10, 35))
    assert top[0] > 200 and top[2] < 60 and bottom[2] > 200 and bottom[0] < 60  # left (red) turned to the top
    camera_only = Image.Exif()
    camera_only[0x010F] = "maker"  # an EXIF block without Orientation: the bytes are kept
    plain = jpeg_bytes(exif=camera_only)
    assert Image.open(io.BytesIO(plain)).info.get("exif") and to_rgb_jpeg(plain, Options()).kept_original


def test_kept_jpeg_verified_at_small_scale_still_rejects_every_cut_and_keeps_size():
    noisy = io.BytesIO()
    Image.effect_noise((96, 64), 60).convert("RGB").save(noisy, "JPEG", quality=90)
    data = noisy.getvalue()
    converted = to_rgb_jpeg(data, Options())
    assert converted.kept_original and converted.data == data and (converted.width, converted.height) == (96, 64)
    for cut in range(1, len(data) - 1, 97):  # every cut point class: headers, tables, entropy-coded data, EOI
        with pytest.raises(BadImage) as caught:
            to_rgb_jpeg(data[:cut], Options())
        assert caught.value.reason in ("not_image", "corrupt"), cut


def test_max_size_resizes_keeping_aspect_and_max_bytes_guards(site, tmp_path):
    source = write_input(tmp_path / "train.json", site, [("big", "big.jpg"), ("small", "good0.jpg")])
    out = tmp_path / "out"
    download(source, out, Options(**{**FAST.__dict__, "max_size": 100}))
    rows = last_rows(out)
    assert (rows["big"]["width"], rows["big"]["height"]) == (100, 50) and not rows["big"]["kept_original"]
    with Image.open(out / "images/big.jpg") as image:
        assert image.size == (100, 50)
    assert rows["small"]["kept_original"] and (rows["small"]["width"], rows["small"]["height"]) == (32, 24)
    out2 = tmp_path / "out2"
    download(source, out2, Options(**{**FAST.__dict__, "max_bytes": len(GOOD["good0.jpg"])}))
    rows = last_rows(out2)
    assert rows["small"]["status"] == "ok" and rows["big"]["error"] == "too_large"


def test_ids_cannot_write_outside_the_images_folder(site, tmp_path):
    ids = ["../../x", "/etc/passwd", "a/b", ".hidden", "ok-id_1.2"]
    source = write_input(tmp_path / "train.json", site, [(image_id, "good0.jpg") for image_id in ids])
    out = tmp_path / "out"
    download(source, out, FAST)
    rows = last_rows(out)
    assert set(rows) == set(ids) and all(row["status"] == "ok" for row in rows.values())
    images = (out / "images").resolve()
    paths = {(out / row["path"]).resolve() for row in rows.values()}
    assert len(paths) == len(ids) and all(path.parent == images and path.is_file() for path in paths)
    assert rows["ok-id_1.2"]["path"] == "images/ok-id_1.2.jpg"
    assert not (tmp_path / "x.jpg").exists() and not list(tmp_path.glob("*.jpg"))
    assert safe_file_stem("../../x") != safe_file_stem("__x") and "/" not in safe_file_stem("../../x")


def test_rerun_skips_done_ids_and_retry_failed_retries_only_failures(site, tmp_path):
    source = write_input(tmp_path / "train.json", site, [("a", "good0.jpg"), ("b", "later.jpg"), ("c", "good1.jpg")])
    out = tmp_path / "out"
    first = download(source, out, FAST)
    assert (first.ok, first.failed) == (2, 1)
    site.add_file("/later.jpg", GOOD["good5.jpg"])  # the missing image appears
    site.reset()
    second = download(source, out, FAST)
    assert (second.ok, second.failed, second.skipped_ok, second.skipped_failed) == (0, 0, 2, 1)
    assert site.request_count("/good0.jpg") == 0 and site.request_count("/later.jpg") == 0
    third = download(source, out, Options(**{**FAST.__dict__, "retry_failed": True}))
    assert (third.ok, third.failed, third.skipped_ok) == (1, 0, 2)
    assert site.request_count("/later.jpg") == 1 and site.request_count("/good0.jpg") == 0
    rows = manifest_rows(out)
    assert [row["status"] for row in rows if row["image_id"] == "b"] == ["failed", "ok"]  # last row wins
    entry = read_manifest(out).entries["b"]
    assert (entry.status, entry.path) == ("ok", "images/b.jpg")
    (out / "images/a.jpg").unlink()  # an ok row whose file vanished is downloaded again
    fourth = download(source, out, FAST)
    assert fourth.ok == 1 and (out / "images/a.jpg").read_bytes() == GOOD["good0.jpg"]


def test_torn_manifest_line_and_temp_files_are_tolerated(site, tmp_path):
    source = write_input(tmp_path / "train.json", site, [("a", "good0.jpg"), ("b", "good1.jpg")])
    out = tmp_path / "out"
    download(source, out, Options(**{**FAST.__dict__, "limit": 1}))
    with open(out / "manifest.jsonl", "a", encoding="utf-8") as handle:
        handle.write('{"image_id": "b", "status": "o')  # killed mid-line
    (out / "images/.b.jpg.abc123.tmp").write_bytes(b"partial")
    summary = download(source, out, FAST)
    assert (summary.ok, summary.skipped_ok, summary.bad_manifest_lines, summary.stale_temp_removed) == (1, 1, 1, 1)
    manifest = read_manifest(out)
    assert {k: (e.status, e.path) for k, e in manifest.entries.items()} == {
        "a": ("ok", "images/a.jpg"), "b": ("ok", "images/b.jpg")}
    assert manifest.torn_lines == 1
    assert sorted(p.name for p in (out / "images").iterdir()) == ["a.jpg", "b.jpg"]


def test_shards_into_one_folder_download_every_image_exactly_once(site, tmp_path):
    entries = [(str(i), f"good{i % 8}.jpg") for i in range(40)]
    source = write_input(tmp_path / "train.json", site, entries)
    out = tmp_path / "out"
    for shard in range(3):
        download(source, out, Options(**{**FAST.__dict__, "shard_index": shard, "num_shards": 3}))
    ids = [row["image_id"] for row in manifest_rows(out)]
    assert sorted(ids, key=int) == [str(i) for i in range(40)]
    assert sum(site.request_count(f"/good{i}.jpg") for i in range(8)) == 40


def test_processes_share_the_work_and_their_summaries_add_up(site, tmp_path):
    entries = [(str(i), f"good{i % 8}.jpg") for i in range(40)] + [("missing", "nothing_here.jpg"), ("page", "page.jpg")]
    source = write_input(tmp_path / "train.json", site, entries)
    out = tmp_path / "out"
    summary = download(source, out, Options(**{**FAST.__dict__, "processes": 3, "workers": 4}))
    rows = manifest_rows(out)
    assert sorted(row["image_id"] for row in rows) == sorted(image_id for image_id, _ in entries)
    assert all(row["labels"] == ["1", "2"] for row in rows)
    assert (summary.ok, summary.failed, dict(summary.failures)) == (40, 2, {"http_404": 1, "html": 1})
    assert sum(site.request_count(f"/good{i}.jpg") for i in range(8)) == 40
    again = download(source, out, Options(**{**FAST.__dict__, "processes": 2}))
    assert (again.ok, again.skipped_ok, again.skipped_failed) == (0, 40, 2)


def test_limit_counts_the_whole_shard_not_each_process(site, tmp_path):
    entries = [(str(i), f"good{i % 8}.jpg") for i in range(40)]
    source = write_input(tmp_path / "train.json", site, entries)
    out = tmp_path / "out"
    summary = download(source, out, Options(**{**FAST.__dict__, "processes": 2, "workers": 4, "limit": 10}))
    assert summary.ok == 10
    assert sorted(int(row["image_id"]) for row in manifest_rows(out)) == list(range(10))  # the first 10 of the input


def test_process_shares_split_shard_and_threads():
    shares = process_shares(Options(workers=16, processes=3, shard_index=1, num_shards=2))
    assert [(share.shard_index, share.num_shards, share.workers, share.processes) for share in shares] == [
        (1, 6, 6, 1), (3, 6, 5, 1), (5, 6, 5, 1)]
    ids = [str(i) for i in range(500)]
    assert sorted(i for share in shares for i in ids if shard_of(i, share.num_shards) == share.shard_index) == \
        sorted(i for i in ids if shard_of(i, 2) == 1)


def test_furniture_json_and_csv_inputs(site, tmp_path):
    furniture = tmp_path / "furniture.json"
    furniture.write_text(json.dumps({
        "images": [{"image_id": 7, "url": [site.url("nothing.jpg"), site.url("good6.jpg")]}],
        "annotations": [{"image_id": 7, "label_id": [3, 3, 9]}]}))
    download(furniture, tmp_path / "f", FAST)
    row = last_rows(tmp_path / "f")["7"]
    assert (row["status"], row["labels"], row["url"]) == ("ok", ["3", "9"], site.url("good6.jpg"))
    table = tmp_path / "list.csv"
    table.write_text(f"id,url,labels\nx1,{site.url('good7.jpg')},5 6\nx2,{site.url('page.jpg')},\n")
    download(table, tmp_path / "c", FAST)
    rows = last_rows(tmp_path / "c")
    assert (rows["x1"]["status"], rows["x1"]["labels"]) == ("ok", ["5", "6"])
    assert (rows["x2"]["status"], rows["x2"]["error"], rows["x2"]["labels"]) == ("failed", "html", [])


@contextlib.contextmanager
def slow_site(tmp_path: Path, count: int, size: tuple[int, int], delay: float):
    """`count` distinct JPEGs served with `delay` seconds each (time to kill a run mid-way), and their input JSON."""
    root = tmp_path / "site"
    root.mkdir()
    for i in range(count):
        (root / f"{i}.jpg").write_bytes(jpeg_bytes(size=size, color=(i * 4 % 256, 90, 200 - i * 3)))
    with serve_folder(root, {f"/{i}.jpg": Fault(delay=delay) for i in range(count)}) as server:
        yield server, write_input(tmp_path / "train.json", server, [(str(i), f"{i}.jpg") for i in range(count)])


def run_tool(*args, timeout=60, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(TOOL), *map(str, args)], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout, **kwargs)


@pytest.mark.parametrize("processes", [1, 2])
def test_resume_after_sigkill_mid_run(tmp_path, processes):
    count = 60
    with slow_site(tmp_path, count, (64, 48), delay=0.15) as (server, source):
        out = tmp_path / "out"
        args = [TOOL, "--input", source, "--output-dir", out, "--workers", "4", "--no-progress", "--max-size", "32",
                "--processes", processes]
        process = subprocess.Popen([sys.executable, *map(str, args)], cwd=REPO, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        manifest = out / "manifest.jsonl"
        while time.monotonic() < deadline and (not manifest.exists() or manifest.read_text().count("\n") < 8):
            time.sleep(0.05)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
        done_before = len(read_manifest(manifest).entries)
        time.sleep(0.6)  # worker processes die with the killed parent: nothing is added after it
        assert len(read_manifest(manifest).entries) == done_before
        assert 8 <= done_before < count, "the run should have been killed midway"
        for path in (out / "images").glob("*.jpg"):  # whatever is under a final name is a whole image
            with Image.open(path) as image:
                image.load()
        finished = run_tool("--input", source, "--output-dir", out, "--workers", "8", "--no-progress", "--max-size", "32",
                            "--processes", str(processes))
        assert finished.returncode == 0, finished.stderr
        assert f"Skipped from earlier runs: {done_before} ok" in finished.stdout
    state = read_manifest(manifest)
    assert set(state.entries) == {str(i) for i in range(count)} and all(e.status == "ok" for e in state.entries.values())
    assert len(manifest_rows(out)) == count and state.torn_lines == 0
    images = sorted((out / "images").iterdir())
    assert [p.name for p in images] == sorted(f"{i}.jpg" for i in range(count))  # no temp files left
    for path in images:
        with Image.open(path) as image:
            image.load()
            assert image.size == (32, 24) and image.mode == "RGB"


@pytest.mark.parametrize("content, message", [
    ('{"images": [{"url": "http://127.0.0.1:9/a.jpg", "imageId": "1"}, {"imageId": "2"}]}',
     'error: bad.json: images[1]: missing "url"'),
    ('{"images": [{"url": "a" "imageId": "1"}]}', "error: bad.json: invalid JSON at byte "),
    ('{"images": [{"url": "a", "imageId": "1"}], "annotations": [{"labelId": ["1"], "imageId": "1"}', "error: bad.json: invalid JSON: unexpected end of file"),
])
@pytest.mark.parametrize("processes", [1, 2])
def test_malformed_input_is_one_line_error_exit_2(tmp_path, content, message, processes):
    bad = tmp_path / "bad.json"
    bad.write_text(content, encoding="utf-8")
    result = run_tool("--input", bad, "--output-dir", tmp_path / "out", "--no-progress", "--timeout", "0.5", "--retries", "0",
                      "--processes", processes)
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith(message) and result.stderr.count("\n") == 1, result.stderr
    assert "Traceback" not in result.stderr


def test_cli_argument_errors_and_help(tmp_path):
    missing = run_tool("--input", tmp_path / "absent.json", "--output-dir", tmp_path / "out")
    assert missing.returncode == 2 and missing.stderr.strip().endswith("absent.json: no such file")
    source = tmp_path / "a.csv"
    source.write_text("1,http://127.0.0.1:9/x.jpg\n")
    bad_shard = run_tool("--input", source, "--output-dir", tmp_path / "out", "--shard-index", "4", "--num-shards", "4")
    assert bad_shard.returncode == 2 and "--shard-index must be in [0, 3]" in bad_shard.stderr
    helped = run_tool("--help")
    assert helped.returncode == 0
    for text in ("--retry-failed", "--max-pixels", "--user-agent", "(default: 16)", "(default: 89478485)"):
        assert text in helped.stdout


def test_cli_downloads_real_fashion_products_sample(tmp_path):
    data = Path(os.environ.get("FASHION_PRODUCTS_DIR", REPO.parent / "shared/data/fashion-products"))
    if not (data / "train.json").is_file():
        pytest.skip(f"{data} not present")
    with serve_folder(data) as server:
        train = json.loads((data / "train.json").read_text())
        images = [dict(entry, url=entry["url"].replace("http://127.0.0.1:8765", server.base_url)) for entry in train["images"]]
        source = tmp_path / "train.json"
        source.write_text(json.dumps({"images": images, "annotations": train["annotations"]}))
        result = run_tool("--input", source, "--output-dir", tmp_path / "out", "--limit", "30", "--no-progress")
    assert result.returncode == 0, result.stderr
    assert "Downloaded 30 images ok and 0 failed" in result.stdout
    rows = manifest_rows(tmp_path / "out")
    annotated = {a["imageId"]: a["labelId"] for a in train["annotations"]}
    for row in rows:
        assert row["labels"] == list(dict.fromkeys(annotated[row["image_id"]]))
        assert (tmp_path / "out" / row["path"]).read_bytes() == (data / "images" / f"{row['image_id']}.jpg").read_bytes()


def test_a_second_download_into_the_same_folder_is_refused_while_the_first_runs(tmp_path):
    """Defect: two downloads into one folder at once both downloaded everything and duplicated the manifest."""
    root = tmp_path / "site"
    root.mkdir()
    for i in range(20):
        (root / f"{i}.jpg").write_bytes(jpeg_bytes(color=(i * 10, 90, 90)))
    with serve_folder(root, {f"/{i}.jpg": Fault(delay=0.2) for i in range(20)}) as server:
        source = write_input(tmp_path / "train.json", server, [(str(i), f"{i}.jpg") for i in range(20)])
        out = tmp_path / "out"
        args = [TOOL, "--input", source, "--output-dir", out, "--workers", "2", "--processes", "1", "--no-progress"]
        first = subprocess.Popen([sys.executable, *map(str, args)], cwd=REPO, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True)
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and not (out / "manifest.jsonl").exists():
                time.sleep(0.05)
            second = run_tool(*args[1:])
            assert second.returncode == 2, second.stderr
            assert second.stderr.count("\n") == 1 and "another download is writing this folder (pid" in second.stderr
            other_share = run_tool(*args[1:], "--shard-index", "1", "--num-shards", "2")
            assert other_share.returncode == 2 and "another download" in other_share.stderr  # the whole job holds it
        finally:
            first.wait(timeout=120)
    assert first.returncode == 0, first.stderr
    ids = [row["image_id"] for row in manifest_rows(out)]
    assert sorted(ids, key=int) == [str(i) for i in range(20)]  # each image once
    assert sum(server.request_count(f"/{i}.jpg") for i in range(20)) == 20


def test_shares_of_one_job_may_write_one_folder_at_once(site, tmp_path):
    from fashion_tf.manifest import lock_for_writing

    source = write_input(tmp_path / "train.json", site, [(str(i), f"good{i % 8}.jpg") for i in range(12)])
    out = tmp_path / "out"
    with lock_for_writing(out, 0, 2):  # share 0 of 2 is running (here: held by this test)
        summary = download(source, out, Options(**{**FAST.__dict__, "shard_index": 1, "num_shards": 2}))
        assert summary.ok > 0
        with pytest.raises(Exception, match="another download is writing this folder"):
            download(source, out, Options(**{**FAST.__dict__, "shard_index": 0, "num_shards": 2}))


def test_a_job_where_every_image_failed_does_not_exit_0(site, tmp_path):
    """Defect: the downloader exited 0 when every image failed."""
    source = write_input(tmp_path / "train.json", site, [("a", "nothing_here.jpg"), ("b", "page.jpg")])
    result = run_tool("--input", source, "--output-dir", tmp_path / "out", "--no-progress", "--retries", "0")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Downloaded 0 images ok and 2 failed" in result.stdout and "every image failed" in result.stderr
    again = run_tool("--input", source, "--output-dir", tmp_path / "out", "--no-progress")  # nothing left to try
    assert again.returncode == 1


@pytest.mark.parametrize("case", ["output_is_a_file", "output_under_a_file", "workers_0", "quality_0", "limit_negative",
                                  "missing_input", "empty_input", "url_without_beam"])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, case):
    source = tmp_path / "a.csv"
    source.write_text("1,http://127.0.0.1:9/x.jpg\n")
    blocker = tmp_path / "blocker"
    blocker.write_text("not a folder")
    out = tmp_path / "out"
    args = {"output_is_a_file": ["--output-dir", blocker], "output_under_a_file": ["--output-dir", blocker / "sub"],
            "workers_0": ["--workers", "0"], "quality_0": ["--quality", "0"], "limit_negative": ["--limit", "-1"],
            "missing_input": ["--input", tmp_path / "absent.json"], "empty_input": ["--input", tmp_path / "empty.json"],
            "url_without_beam": ["--output-dir", "gs://bucket/imat"]}[case]
    (tmp_path / "empty.json").write_text("")
    argv = ["--input", source, "--output-dir", out, "--no-progress"] + args
    result = run_tool(*argv)
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: ") and "Traceback" not in result.stderr
    assert not out.exists() and blocker.read_text() == "not a folder"
