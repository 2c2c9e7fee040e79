import os
import sys
from pathlib import Path

import pytest

import fashion_tf  # noqa: F401  first, so pycurl loads before any test imports TensorFlow (see fashion_tf/__init__.py)

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("FASHION_PRODUCTS_DIR", REPO.parent / "shared" / "data" / "fashion-products"))


@pytest.fixture
def fashion_products() -> Path:
    """The real 7,168-image catalogue beside the checkout; tests using it skip where it is absent."""
    if not (SHARED_DATA / "train.json").is_file():
        pytest.skip(f"real data set not found at {SHARED_DATA}")
    return SHARED_DATA


def run_module(module: str, *args: str, **kwargs):
    """Run `python -m module args` as a user would; returns the CompletedProcess."""
    import subprocess

    return subprocess.run(
        [sys.executable, "-m", module, *args], capture_output=True, text=True, cwd=kwargs.pop("cwd", REPO), **kwargs
    )
