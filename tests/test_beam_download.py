"""fashion_tf.beam.download: the download as a Beam pipeline, against the loopback fault server; the same rows
and images as the local engine; kills and half-done work shards resumed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

beam = pytest.importorskip("apache_beam")

from conftest import REPO  # noqa: E402
from fashion_tf.beam.download import download as beam_download  # noqa: E402
from fashion_tf.beam.work import WorkFolder, plan_work, read_work_list  # noqa: E402
from fashion_tf.download import download, fetch_records  # noqa: E402
from fashion_tf.errors import UserError  # noqa: E402
from fashion_tf.manifest import read_manifest  # noqa: E402
from fashion_tf.sources import LabelsInRecords  # noqa: E402
from test_download import FAST, site, slow_site, write_input  # noqa: E402,F401  (site: the fault server fixture)

TOOL = REPO / "tools" / "download_images.py"
IN_PROCESS = ["--runner=DirectRunner"]
TWO_WORKER_PROCESSES = ["--runner=DirectRunner", "--direct_num_workers=2", "--direct_running_mode=multi_processing"]
FAULT_MIX = [
    ("plain", "good0.jpg"), ("missing", "nothing_here.jpg"), ("gone", "gone.jpg"), ("flaky", "flaky.jpg"),
    ("cut_once", "cut_once.jpg"), ("page", "page.jpg"), ("noise", "noise.jpg"), ("moved", "moved.jpg"),
    ("alpha", "alpha.png"), ("cmyk", "cmyk.jpg"), ("palette", "palette.gif"), ("bomb", "bomb.png"),
    ("cut_jpeg", "cut_jpeg.jpg"), ("fallback", ["nothing_here.jpg", "page.jpg", "good4.jpg"]),
] + [(f"g{i}", f"good{i % 8}.jpg") for i in range(16)]


def outcome(folder: Path) -> dict:
    """Per image id: what later stages read of the manifest, and the image bytes."""
    rows = {}
    for part in sorted(folder.rglob("*.jsonl")):
        if ".work" in part.parts:
            continue
        for line in part.read_text().splitlines():
            row = json.loads(line)
            rows[row["image_id"]] = row
    return {image_id: (row["status"], row.get("error"), row["labels"], row.get("sha256"), row.get("path"),
                       (folder / row["path"]).read_bytes() if row.get("path") else None)
            for image_id, row in rows.items()}


@pytest.mark.parametrize("runner", [IN_PROCESS, TWO_WORKER_PROCESSES], ids=["in_process", "two_worker_processes"])
def test_the_pipeline_gives_the_local_engines_rows_and_images(site, tmp_path, runner):
    source = write_input(tmp_path / "train.json", site, FAULT_MIX)
    local = download(source, tmp_path / "local", FAST)
    site.reset()
    summary = beam_download(source, tmp_path / "beam", FAST, runner, records_per_shard=7)
    assert outcome(tmp_path / "beam") == outcome(tmp_path / "local")
    assert (summary.ok, summary.failed, dict(summary.failures)) == (local.ok, local.failed, dict(local.failures))
    work = WorkFolder(str(tmp_path / "beam"))
    markers = sorted(Path(work.done_folder()).glob("*.json"))
    assert len(markers) == 5  # 30 records, about 7 a shard
    if runner == TWO_WORKER_PROCESSES:  # in-process, the DoFn shares the test process and what it imported
        assert not any(json.loads(marker.read_text())["tensorflow_loaded"] for marker in markers)
    assert sum(len(read_work_list(work, path.stem)) for path in Path(work.root, "lists").glob("*.jsonl")) == len(FAULT_MIX)
    again = beam_download(source, tmp_path / "beam", FAST, runner, records_per_shard=7)
    assert (again.ok, again.failed, again.skipped_ok, again.skipped_failed) == (0, 0, local.ok, local.failed)


def test_a_half_done_work_shard_is_finished_from_its_manifest_part(site, tmp_path):
    entries = [(f"g{i}", f"good{i % 8}.jpg") for i in range(12)]
    source = write_input(tmp_path / "train.json", site, entries)
    out = tmp_path / "out"
    work = WorkFolder(str(out))
    (name,) = plan_work(source, work, records_per_shard=100)
    records = read_work_list(work, name)
    part = Path(work.manifest_part(name))
    fetch_records(records[:5], LabelsInRecords(), out, part, read_manifest(part), FAST)  # a worker died after 5
    site.reset()
    summary = beam_download(source, out, FAST, IN_PROCESS, records_per_shard=100)
    assert (summary.ok, summary.skipped_ok) == (7, 5)
    rows = [json.loads(line)["image_id"] for line in part.read_text().splitlines()]
    assert sorted(rows) == sorted(image_id for image_id, _ in entries)  # each once
    assert sum(site.request_count(f"/good{i}.jpg") for i in range(8)) == 7  # only the rest was fetched


def test_a_killed_pipeline_rerun_completes_with_nothing_lost_or_duplicated(tmp_path):
    count = 48
    with slow_site(tmp_path, count, (40, 30), delay=0.25) as (server, source):
        out = tmp_path / "out"
        argv = [sys.executable, str(TOOL), "--input", str(source), "--output-dir", str(out), "--workers", "2",
                "--no-progress", "--engine", "beam", "--work-shard-size", "8", "--", *TWO_WORKER_PROCESSES]
        first = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                 start_new_session=True)
        deadline = time.monotonic() + 240
        done = out / ".work" / "done"
        while time.monotonic() < deadline and first.poll() is None and len(list(done.glob("*.json"))) < 1:
            time.sleep(0.1)
        assert first.poll() is None, "the first run should still be running"
        os.killpg(first.pid, signal.SIGKILL)  # the driver and its worker processes
        first.wait(timeout=30)
        finished_before = len(list(done.glob("*.json")))
        assert 1 <= finished_before < count // 8
        second = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=300)
        assert second.returncode == 0, second.stderr[-2000:]
        requests = sum(server.request_count(f"/{i}.jpg") for i in range(count))
    rows = [json.loads(line) for part in sorted((out / "manifest.parts").glob("*.jsonl"))
            for line in part.read_text().splitlines() if line.endswith("}")]
    ids = sorted(row["image_id"] for row in rows if row["status"] == "ok")
    assert ids == sorted(str(i) for i in range(count))  # nothing lost, nothing twice
    assert requests < count + 8  # only downloads in flight at the kill were repeated


def test_another_input_into_the_same_folder_and_bad_options_are_refused(site, tmp_path, capsys):
    from fashion_tf.download import main
    from fashion_tf.errors import run_cli

    first = write_input(tmp_path / "a.json", site, [("a", "good0.jpg")])
    second = write_input(tmp_path / "b.json", site, [("b", "good1.jpg")])
    beam_download(first, tmp_path / "out", FAST, IN_PROCESS)
    with pytest.raises(UserError, match="planned from another input"):
        beam_download(second, tmp_path / "out", FAST, IN_PROCESS)
    capsys.readouterr()
    for argv, message in ([["--", "--runner=DirectRunner"], "give --engine beam as well"],
                          [["--engine", "beam", "--num-shards", "2"], "leave out --shard-index/--num-shards"],
                          [["--engine", "beam", "--work-shard-size", "0"], "--work-shard-size must be >= 1"]):
        code = run_cli(main, ["--input", str(first), "--output-dir", str(tmp_path / "other"), "--no-progress", *argv])
        err = capsys.readouterr().err
        assert code == 2 and err.count("\n") == 1 and message in err, err


def test_a_url_output_gets_the_same_rows_and_images_and_a_rerun_redoes_an_unfinished_shard(site, tmp_path):
    """--output-dir a URL of a Beam file system (here an object store under tmp_path, fttest://): workers stage
    their shard locally and put images, manifest part and done marker in place; a shard without its done
    marker is redone, skipping what its part says is done."""
    from object_store import rooted

    from fashion_tf import storage

    source = write_input(tmp_path / "train.json", site, FAULT_MIX)
    local = download(source, tmp_path / "local", FAST)
    site.reset()
    url = storage.join(rooted(tmp_path / "store"), "imat")
    summary = beam_download(source, url, FAST, IN_PROCESS, records_per_shard=7)
    assert (summary.ok, summary.failed) == (local.ok, local.failed)
    store = tmp_path / "store" / "bucket" / "imat"
    assert outcome(store) == outcome(tmp_path / "local")
    work = WorkFolder(url)
    unfinished = sorted(storage.names(work.done_folder()))[0]
    (Path(work.done_folder().replace("fttest://", str(tmp_path / "store") + "/")) / unfinished).unlink()
    site.reset()
    again = beam_download(source, url, FAST, IN_PROCESS, records_per_shard=7)
    redone = json.loads(storage.read_bytes(work.done_path(unfinished.removesuffix(".json"))))
    assert redone["ok"] == 0 and redone["skipped_ok"] + redone["skipped_failed"] > 0  # its part said all was done
    assert sum(site.request_count(f"/good{i}.jpg") for i in range(8)) == 0
    assert (again.skipped_ok, again.skipped_failed) == (local.ok, local.failed)
    assert outcome(store) == outcome(tmp_path / "local")
