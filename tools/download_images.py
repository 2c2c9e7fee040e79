#!/usr/bin/env python
"""Download the images of an iMaterialist JSON (or CSV) into RGB JPEGs + manifest.jsonl.

    python tools/download_images.py --input train.json --output-dir data/train --workers 32

See `--help` and fashion_tf/download.py.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fashion_tf.download import main  # noqa: E402
from fashion_tf.errors import run_cli  # noqa: E402

if __name__ == "__main__":
    sys.exit(run_cli(main))
