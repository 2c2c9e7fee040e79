"""make_tfrecords.cli: the command's options and defaults, and bad input: one line, exit 2, nothing changed."""

from __future__ import annotations

import shutil
import subprocess
import sys
from types import SimpleNamespace

import pytest
from conftest import run_module
from make_tfrecords_fixtures import TOOL, make_download_folder, one_line_error, run, tree

from fashion_tf.make_tfrecords.cli import build_parser, options_from_args
from fashion_tf.make_tfrecords.options import Options
from fashion_tf.manifest import images_dir, manifest_path


def test_cli_help_shows_defaults_the_same_from_the_tool_and_the_module():
    tool = subprocess.run([sys.executable, str(TOOL), "--help"], capture_output=True, text=True, timeout=120)
    module = run_module("fashion_tf.make_tfrecords", "--help", timeout=120)
    assert tool.returncode == module.returncode == 0
    assert "--shard-size-mb" in tool.stdout and "(default: 128.0)" in tool.stdout
    assert module.stdout == tool.stdout


def test_flags_become_options_with_the_same_defaults(tmp_path):
    args = build_parser().parse_args(["--input", str(tmp_path), "--output-dir", str(tmp_path / "o")])
    assert options_from_args(args) == Options(input=tmp_path, output_dir=tmp_path / "o")
    args = build_parser().parse_args(["--input", "x", "--output-dir", "o", "--groups", "a, b,", "--no-tfds"])
    options = options_from_args(args)
    assert options.groups == ("a", "b") and options.tfds is False


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """Good and bad inputs, and the output folder of an earlier complete run that a failing command must not touch."""
    root = tmp_path_factory.mktemp("inputs")
    make_download_folder(root / "dl", n=8, failed=0)
    assert run(["--input", root / "dl", "--output-dir", root / "earlier", "--no-tfds"]) == 0
    (root / "empty.json").write_text("")
    (root / "a file").write_text("not a folder")
    (root / "no_rows").mkdir()
    manifest_path(root / "no_rows").write_text("")
    (root / "torn").mkdir()
    manifest_path(root / "torn").write_text('{"image_id": "1", "sta\n')
    (root / "empty_dir").mkdir()
    (root / "map.csv").write_text("labelId,taskId,labelName,taskName\n1,1,a,t\n2,1,b,t\n3,1,c,t\n")
    (root / "other_ids.txt").write_text("9998\n9999\n")
    (root / "header_only.txt").write_text("id\n")
    (root / "styles.csv").write_text("id,gender,usage\n1000,Men,Casual\n1001,Women\n")
    (root / "broken.json").write_text('{"images": [{"imageId": "1", "url": "http://x/1.jpg"},')
    return root


def dl(p):
    return ["--input", p.root / "dl"]


CASES = [  # (id, argv from paths, part of the message)
    ("missing input", lambda p: ["--input", p.root / "nope.json", "--output-dir", p.out], "no such file or directory"),
    ("empty file", lambda p: ["--input", p.root / "empty.json", "--output-dir", p.out], "file is empty"),
    ("empty manifest", lambda p: ["--input", p.root / "no_rows", "--output-dir", p.out], "no rows"),
    ("only a torn manifest line", lambda p: ["--input", p.root / "torn", "--output-dir", p.out],
     "no rows (1 unreadable lines)"),
    ("empty folder", lambda p: ["--input", p.root / "empty_dir", "--output-dir", p.out], "nor class subfolders"),
    ("no --input", lambda p: ["--output-dir", p.out], "--input is required"),
    ("--verify a folder without shards", lambda p: ["--output-dir", p.root / "empty_dir", "--verify"], "not found"),
    ("val fraction 1.5", lambda p: dl(p) + ["--output-dir", p.out, "--val-fraction", "1.5"], "must be in [0, 1)"),
    ("fractions sum to 1", lambda p: dl(p) + ["--output-dir", p.out, "--val-fraction", "0.6", "--test-fraction",
                                              "0.4"], "must be < 1"),
    ("--shard-size-mb 0", lambda p: dl(p) + ["--output-dir", p.out, "--shard-size-mb", "0"], "--shard-size-mb must be > 0"),
    ("--workers 0", lambda p: dl(p) + ["--output-dir", p.out, "--workers", "0"], "--workers must be >= 1"),
    ("--max-size 2", lambda p: dl(p) + ["--output-dir", p.out, "--max-size", "2"], "--max-size must be >= 8"),
    ("unknown label id", lambda p: dl(p) + ["--output-dir", p.out, "--label-map", p.root / "map.csv"],
     "dl: image 1002: unknown label id '4'"),
    ("missing label map", lambda p: dl(p) + ["--output-dir", p.out, "--label-map", p.root / "nope.csv"],
     "label map file not found"),
    ("output dir is a file", lambda p: dl(p) + ["--output-dir", p.root / "a file"], "is a file, not a folder"),
    ("output dir below a file", lambda p: dl(p) + ["--output-dir", p.root / "a file" / "out"], "is a file, not a folder"),
    ("missing --split-from", lambda p: dl(p) + ["--output-dir", p.out, "--split-from", p.root / "nope.txt"],
     "--split-from file not found"),
    ("--split-from with other ids", lambda p: dl(p) + ["--output-dir", p.out, "--split-from", p.root / "other_ids.txt"],
     "none of its 2 ids is among the input images"),
    ("--split-from without ids", lambda p: dl(p) + ["--output-dir", p.out, "--split-from", p.root / "header_only.txt"],
     "--split-from lists no image ids"),
    ("broken CSV row", lambda p: ["--input", p.root / "styles.csv", "--images", images_dir(p.root / "dl"),
                                  "--output-dir", p.out], "styles.csv: line 3: 2 fields, header has 3"),
    ("unknown --groups column", lambda p: ["--input", p.root / "styles.csv", "--images", images_dir(p.root / "dl"),
                                           "--groups", "colour", "--output-dir", p.out], "'colour' not in the header"),
    ("missing --images", lambda p: ["--input", p.root / "styles.csv", "--images", p.root / "nope", "--output-dir",
                                    p.out], "images folder not found"),
    ("broken JSON", lambda p: ["--input", p.root / "broken.json", "--images", images_dir(p.root / "dl"),
                               "--output-dir", p.out], "broken.json"),
    ("a URL for the output", lambda p: dl(p) + ["--output-dir", p.out, "--output-dir", "gs://bucket/shards"],
     "must be a file system path"),
    ("a URL for the input", lambda p: ["--input", "gs://bucket/imat", "--output-dir", p.out],
     "copy it to a disk the writers see first"),
]


@pytest.mark.parametrize("argv, message", [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_bad_input_is_one_line_exit_2_and_changes_nothing(inputs, tmp_path, capsys, argv, message):
    out = tmp_path / "out"
    shutil.copytree(inputs / "earlier", out)  # an earlier output that a failing command must leave as it is
    args = argv(SimpleNamespace(root=inputs, out=out))
    target = args[args.index("--output-dir") + 1]  # the first one: the folder a command must not touch
    before = tree(target)
    assert message in one_line_error(capsys, args)
    assert tree(target) == before


def test_bad_input_from_the_module_command_is_one_line(tmp_path):
    done = run_module("fashion_tf.make_tfrecords", "--input", str(tmp_path / "nope"), "--output-dir",
                      str(tmp_path / "out"), timeout=120)
    assert done.returncode == 2 and done.stderr == f"error: {tmp_path / 'nope'}: no such file or directory\n"
    assert not (tmp_path / "out").exists()

