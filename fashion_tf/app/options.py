"""The app's options: one dataclass, one argument parser, used by the launcher and by the page."""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from fashion_tf.errors import UserError
from fashion_tf.url_fetch import FetchOptions

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8501
DEFAULT_MAX_IMAGE_MB = 20.0
DEFAULT_MAX_ITEMS = 64


@dataclass(frozen=True)
class AppOptions:
    run_dir: Path
    data_dir: Path | None = None  # validation shards for the gallery; None: the run config's data.tfrecords
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    allow_private_urls: bool = False
    urls: bool = True  # False: no URL fetching at all (--no-urls)
    max_image_mb: float = DEFAULT_MAX_IMAGE_MB  # per uploaded or downloaded image
    max_items: int = DEFAULT_MAX_ITEMS  # images labelled per submit

    @property
    def max_image_bytes(self) -> int:
        return int(self.max_image_mb * 2**20)

    @property
    def upload_limit_mb(self) -> int:
        """Streamlit's upload limit (whole megabytes, at least 1): the browser refuses bigger files itself."""
        return max(1, math.ceil(self.max_image_mb))

    def fetch_options(self) -> FetchOptions:
        return FetchOptions(max_bytes=self.max_image_bytes, allow_private=self.allow_private_urls)

    def page_argv(self) -> list[str]:
        """These options as page arguments (what the launcher passes to the Streamlit script)."""
        argv = ["--run-dir", str(self.run_dir), "--host", self.host, "--port", str(self.port),
                "--max-image-mb", repr(self.max_image_mb), "--max-items", str(self.max_items)]
        if self.data_dir is not None:
            argv += ["--data", str(self.data_dir)]
        if self.allow_private_urls:
            argv.append("--allow-private-urls")
        if not self.urls:
            argv.append("--no-urls")
        return argv


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m fashion_tf.app",
        description="A web page to label photos with a trained run and to look inside the run (Streamlit).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--run-dir", required=True, help="run directory written by fashion_tf.train")
    parser.add_argument("--data", default=None,
                        help="shard folder of the validation images shown in the mistakes gallery; None: the run config's data.tfrecords")
    parser.add_argument("--host", default=DEFAULT_HOST, help="address to listen on (0.0.0.0: every interface)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="port to listen on")
    parser.add_argument("--allow-private-urls", action="store_true",
                        help="fetch image URLs on loopback, private and link-local addresses too (refused by default)")
    parser.add_argument("--no-urls", action="store_true", help="no URL field: the server fetches nothing")
    parser.add_argument("--max-image-mb", type=float, default=DEFAULT_MAX_IMAGE_MB,
                        help="largest image accepted, uploaded or downloaded (MiB)")
    parser.add_argument("--max-items", type=int, default=DEFAULT_MAX_ITEMS, help="most images labelled at once")
    return parser


def parse_options(argv: Sequence[str] | None = None) -> AppOptions:
    args = build_parser().parse_args(argv)
    if not 0 < args.port < 65536:
        raise UserError(f"--port must be between 1 and 65535, got {args.port}")
    if not args.max_image_mb > 0:
        raise UserError(f"--max-image-mb must be > 0, got {args.max_image_mb}")
    if args.max_items < 1:
        raise UserError(f"--max-items must be >= 1, got {args.max_items}")
    if args.allow_private_urls and args.no_urls:
        raise UserError("give --allow-private-urls or --no-urls, not both")
    return AppOptions(
        run_dir=Path(args.run_dir), data_dir=Path(args.data) if args.data else None, host=args.host,
        port=args.port, allow_private_urls=args.allow_private_urls, urls=not args.no_urls,
        max_image_mb=args.max_image_mb, max_items=args.max_items,
    )
