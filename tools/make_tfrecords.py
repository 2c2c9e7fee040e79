#!/usr/bin/env python
"""Images + labels -> sharded TFRecords. See `python tools/make_tfrecords.py --help` and tfrecords/README.md."""

import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TensorFlow's start-up chatter out of the summary
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fashion_tf.errors import run_cli  # noqa: E402
from fashion_tf.make_tfrecords.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(run_cli(main))
