"""PNG screenshots of both pages of the app, served for real and driven in headless Chromium (the README's).

    python -m fashion_tf.app.screenshots --run-dir demo_out/run --images demo_out/download/images --out docs/app

Labels the first --count images of --images plus one file that is not an image (to show its message), then
opens "Look inside the run". Writes OUT/label_photos.png and OUT/look_inside.png.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from fashion_tf.app import browser
from fashion_tf.app.options import AppOptions
from fashion_tf.errors import UserError, run_cli
from fashion_tf.fileio import write_bytes_atomic
from fashion_tf.predict import IMAGE_EXTENSIONS

LABEL_PNG = "label_photos.png"
INSIDE_PNG = "look_inside.png"


@dataclass(frozen=True)
class Options:
    run_dir: Path
    images: Path  # a folder of images to label
    out_dir: Path = Path("docs/app")
    data_dir: Path | None = None
    count: int = 2
    width: int = 1400


def sample_images(folder: Path, count: int) -> list[Path]:
    found = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS) if folder.is_dir() else []
    if len(found) < count:
        raise UserError(f"{folder}: fewer than {count} images ({', '.join(IMAGE_EXTENSIONS)})")
    return found[:count]


def take(options: Options) -> list[Path]:
    problem = browser.browser_problem()
    if problem:
        raise UserError(f"cannot take screenshots: {problem}")
    images = sample_images(options.images, options.count)
    app = AppOptions(run_dir=options.run_dir, data_dir=options.data_dir, port=0)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as scratch, browser.serve_app(app) as (url, _), \
            browser.chromium(options.width, 1200) as driver:
        not_an_image = Path(scratch) / "holiday-notes.jpg"
        not_an_image.write_text("Packing list: sunglasses, hat, two dresses.\n")
        driver.get(url)
        browser.upload_files(driver, [*images, not_an_image])
        browser.click_text(driver, "Label images", "button")
        browser.wait_for_text(driver, "Results table")
        label_png = browser.full_page_screenshot(driver, options.out_dir / LABEL_PNG, options.width)

        driver.set_window_size(options.width, 1200)
        browser.click_text(driver, "Look inside the run", "label")
        browser.wait_for_text(driver, "validation images have a wrong decision")
        inside_png = browser.full_page_screenshot(driver, options.out_dir / INSIDE_PNG, options.width)
    for path in (label_png, inside_png):
        shrink_png(path)
    print(f"wrote {label_png} and {inside_png} in {time.perf_counter() - started:.0f}s", file=sys.stderr)
    return [label_png, inside_png]


def shrink_png(path: Path) -> None:
    """A 256-colour palette PNG: a third of the size for a page of flat colours and text, no visible change."""
    import io

    from PIL import Image

    with Image.open(path) as image:
        palette = image.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    buffer = io.BytesIO()
    palette.save(buffer, format="PNG", optimize=True)
    write_bytes_atomic(path, buffer.getvalue())


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fashion_tf.app.screenshots", description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--run-dir", required=True, help="run directory to serve")
    parser.add_argument("--images", required=True, help="folder of images; the first --count are labelled")
    parser.add_argument("--out", default="docs/app", help="folder for the PNGs")
    parser.add_argument("--data", default=None, help="shard folder; None: the run config's data.tfrecords")
    parser.add_argument("--count", type=int, default=2, help="images to label")
    parser.add_argument("--width", type=int, default=1400, help="browser window width in pixels")
    args = parser.parse_args(argv)
    if args.count < 1:
        raise UserError(f"--count must be >= 1, got {args.count}")
    take(Options(Path(args.run_dir), Path(args.images), Path(args.out), Path(args.data) if args.data else None,
                 args.count, args.width))
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
