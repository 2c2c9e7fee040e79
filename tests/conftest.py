import os
import struct
import subprocess
import sys
import zlib
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


def png_bomb(width: int = 20_000, height: int = 20_000) -> bytes:
    """A complete, valid 1-bit greyscale PNG of width x height black pixels: ~50 KB at 20000x20000 that
    decodes to 400 M pixels (1.2 GB as RGB). The decompression bomb every stage must refuse from its header."""
    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    row = b"\0" * (1 + (width + 7) // 8)  # filter byte + packed bits
    packer = zlib.compressobj(9)
    idat = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


@pytest.fixture
def small_disk(tmp_path):
    """A 1 MiB tmpfs: a real full disk (mounting needs root; elsewhere the test skips)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)],
                                           capture_output=True).returncode != 0:
        pytest.skip("mounting a small tmpfs needs root")
    yield mount
    subprocess.run(["umount", str(mount)], check=False)


@pytest.fixture(scope="session")
def app_run(tmp_path_factory):
    """A tiny real run folder with what train and evaluate leave for fashion_tf.app (shared by the app's tests)."""
    from test_app import build_app_run

    return build_app_run(tmp_path_factory.mktemp("tiny_app"))
