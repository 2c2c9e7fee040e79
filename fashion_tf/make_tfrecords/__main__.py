"""python -m fashion_tf.make_tfrecords: the same command as tools/make_tfrecords.py."""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TensorFlow's start-up chatter out of the summary

from fashion_tf.errors import run_cli  # noqa: E402
from fashion_tf.make_tfrecords.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(run_cli(main))
