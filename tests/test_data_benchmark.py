"""fashion_tf.data.benchmark and its command line, `python -m fashion_tf.data benchmark`."""

from __future__ import annotations

import pytest

tf = pytest.importorskip("tensorflow")

from conftest import run_module  # noqa: E402
from data_shards import write_standard_folder  # noqa: E402
from fashion_tf.data.__main__ import main  # noqa: E402
from fashion_tf.errors import run_cli  # noqa: E402


def test_benchmark_prints_images_per_second(tmp_path, capsys):
    shards = write_standard_folder(tmp_path / "shards")
    code = main(["benchmark", "--data", str(shards), "--image-size", "32", "--batch-size", "8", "--augment", "crop,flip",
                 "--seconds", "1", "--warmup", "0.2"])
    out = capsys.readouterr().out
    assert code == 0 and out.startswith("pipeline=train split=train image_size=32 batch=8 augment=crop,flip: ")
    assert float(out.split(": ")[-1].split(" images/s")[0]) > 0


@pytest.mark.parametrize("args, named", [
    (["--data", "{tmp}/nope"], "nope"),
    (["--data", "{tmp}", "--augment", "crop,blur"], "--augment: unknown augmentation 'blur'"),
])
def test_bad_input_is_one_line_and_exit_code_2(tmp_path, capsys, args, named):
    code = run_cli(main, ["benchmark", *(a.format(tmp=tmp_path) for a in args), "--seconds", "1"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1 and named in err


def test_help_shows_the_defaults():
    done = run_module("fashion_tf.data", "benchmark", "--help")
    assert done.returncode == 0 and "(default: 30.0)" in done.stdout and "--augment" in done.stdout
