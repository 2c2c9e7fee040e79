"""Procedural fashion images with multi-label annotations, in the iMaterialist Fashion 2018 layout.

The project's embedded default data set: garments drawn from polygons (8 categories) in 8 colours and
4 patterns on varied backgrounds, each image with 0-4 small accessories beside the garment.
Every image has one label from each exclusive group (category, colour, pattern) plus one per accessory
present, so images carry 3 to 7 labels. Same seed -> byte-identical files.

    python -m fashion_tf.synthetic --out DIR [--n 1200] [--seed 0] [--size 96] [--base-url URL]

writes DIR/train.json, DIR/label_map.csv, DIR/images/<id>.jpg and DIR/README.md.
Numpy and Pillow only (no TensorFlow), so it runs before anything heavy is imported.
"""

from __future__ import annotations

import argparse
import csv
import functools
import io
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image, ImageChops, ImageDraw, ImageFilter

from fashion_tf.errors import UserError, run_cli
from fashion_tf.fileio import atomic_open, atomic_path, write_bytes_atomic, write_json_atomic

DEFAULT_BASE_URL = "http://127.0.0.1:8765"
# 1200 rather than 600: a 4-conv-layer CNN at 64 px reaches micro-F1 ~0.92 on a held-out 20% after
# 20 epochs on 960 images, but only ~0.69 on 480 (too few steps and examples per category).
DEFAULT_N = 1200
JPEG_QUALITY = 90
SCALE_RANGE = (0.68, 0.82)  # garment's unit square as a fraction of the image side
MAX_SHIFT = 0.06  # garment centre offset, fraction of the image side
MAX_ROTATION_DEG = 8
SUPERSAMPLE = 2  # draw at 2x and downscale: smooth edges at no real cost
MIN_SIZE, MAX_SIZE = 32, 1024
MAX_N = 1_000_000

Point = tuple[float, float]


def _ellipse(cx: float, cy: float, rx: float, ry: float, start: float = 0.0, end: float = 360.0,
             steps: int = 40) -> list[Point]:
    """An ellipse (or arc from `start` to `end` degrees, y down) as polygon points in unit coordinates."""
    angles = np.radians(np.linspace(start, end, steps, endpoint=end - start < 360))
    return [(cx + rx * float(np.cos(a)), cy + ry * float(np.sin(a))) for a in angles]


def _rect(x0: float, y0: float, x1: float, y1: float) -> list[Point]:
    return [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]


# Each garment: a list of (polygon, fill) painted in order on the garment mask (fill 0 cuts a hole),
# and polygons of darker "trim" (soles, seams, bands) painted over it. Unit square, y down.
GARMENTS: dict[str, dict[str, list]] = {
    "t-shirt": {
        "shape": [([(0.35, 0.12), (0.42, 0.12), (0.5, 0.2), (0.58, 0.12), (0.65, 0.12), (0.92, 0.3),
                    (0.82, 0.46), (0.72, 0.38), (0.72, 0.9), (0.28, 0.9), (0.28, 0.38), (0.18, 0.46),
                    (0.08, 0.3)], 255)],
        "trim": [],
    },
    "jacket": {
        "shape": [([(0.35, 0.08), (0.43, 0.08), (0.5, 0.28), (0.57, 0.08), (0.65, 0.08), (0.84, 0.22),
                    (0.95, 0.88), (0.84, 0.9), (0.74, 0.42), (0.74, 0.93), (0.26, 0.93), (0.26, 0.42),
                    (0.16, 0.9), (0.05, 0.88), (0.16, 0.22)], 255)],
        "trim": [_rect(0.485, 0.28, 0.515, 0.93),
                 [(0.43, 0.08), (0.5, 0.28), (0.44, 0.34), (0.38, 0.1)],
                 [(0.57, 0.08), (0.5, 0.28), (0.56, 0.34), (0.62, 0.1)]],
    },
    "dress": {
        "shape": [([(0.38, 0.06), (0.43, 0.06), (0.45, 0.2), (0.55, 0.2), (0.57, 0.06), (0.62, 0.06),
                    (0.64, 0.3), (0.6, 0.44), (0.86, 0.96), (0.14, 0.96), (0.4, 0.44), (0.36, 0.3)], 255)],
        "trim": [[(0.4, 0.41), (0.6, 0.41), (0.61, 0.46), (0.39, 0.46)]],
    },
    "trousers": {
        "shape": [([(0.3, 0.04), (0.7, 0.04), (0.76, 0.96), (0.56, 0.96), (0.5, 0.36), (0.44, 0.96),
                    (0.24, 0.96)], 255)],
        "trim": [_rect(0.3, 0.04, 0.7, 0.1)],
    },
    "skirt": {
        "shape": [([(0.34, 0.24), (0.66, 0.24), (0.9, 0.78), (0.1, 0.78)], 255)],
        "trim": [_rect(0.34, 0.24, 0.66, 0.31)],
    },
    "shoe": {
        "shape": [([(0.1, 0.36), (0.3, 0.36), (0.4, 0.5), (0.68, 0.54), (0.88, 0.62), (0.92, 0.72),
                    (0.08, 0.72)], 255)],
        "trim": [_rect(0.06, 0.7, 0.94, 0.8), _rect(0.06, 0.6, 0.2, 0.8)],
    },
    "bag": {
        "shape": [(_ellipse(0.5, 0.42, 0.22, 0.3), 255), (_ellipse(0.5, 0.42, 0.15, 0.23), 0),
                  ([(0.18, 0.42), (0.82, 0.42), (0.88, 0.88), (0.12, 0.88)], 255)],
        "trim": [_rect(0.16, 0.42, 0.84, 0.5)],
    },
    "hat": {
        "shape": [(_ellipse(0.5, 0.62, 0.27, 0.34, 180, 360), 255), (_ellipse(0.5, 0.63, 0.46, 0.09), 255)],
        "trim": [_rect(0.23, 0.52, 0.77, 0.6)],
    },
}

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (205, 30, 35),
    "orange": (245, 135, 20),
    "yellow": (240, 210, 25),
    "green": (35, 150, 55),
    "blue": (30, 70, 205),
    "purple": (120, 40, 165),
    "pink": (245, 125, 185),
    "black": (28, 28, 30),
}

PATTERNS = ("solid", "stripes", "dots", "checks")
ACCESSORIES = ("sunglasses", "watch", "necklace", "belt")
ACCESSORY_PROBABILITY = 0.3

GROUPS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("category", tuple(GARMENTS)),
    ("colour", tuple(COLOURS)),
    ("pattern", PATTERNS),
    ("accessory", ACCESSORIES),
)


@dataclass(frozen=True)
class Label:
    label_id: str  # 1-based, as in iMaterialist
    task_id: str
    name: str
    group: str


def label_table() -> list[Label]:
    """All labels, ids 1..C in group order; taskId 1..4 (category, colour, pattern, accessory)."""
    labels = []
    for task_index, (group, names) in enumerate(GROUPS, start=1):
        for name in names:
            labels.append(Label(str(len(labels) + 1), str(task_index), name, group))
    return labels


@dataclass(frozen=True)
class Spec:
    """What one image shows; everything else about it is drawn from its own random stream."""
    category: str
    colour: str
    pattern: str
    accessories: tuple[str, ...]

    def label_names(self) -> list[tuple[str, str]]:
        return [("category", self.category), ("colour", self.colour), ("pattern", self.pattern)] + [
            ("accessory", name) for name in self.accessories]


def balanced_choices(rng: np.random.Generator, options: Sequence[str], n: int) -> list[str]:
    """n picks cycling through every option (so each appears once n >= len(options)), shuffled."""
    picks = np.resize(np.arange(len(options)), n)
    rng.shuffle(picks)
    return [options[i] for i in picks]


def draw_specs(n: int, seed: int) -> list[Spec]:
    rng = np.random.default_rng([seed, 0])
    categories = balanced_choices(rng, tuple(GARMENTS), n)
    colours = balanced_choices(rng, tuple(COLOURS), n)
    patterns = balanced_choices(rng, PATTERNS, n)
    present = rng.random((n, len(ACCESSORIES))) < ACCESSORY_PROBABILITY
    return [Spec(categories[i], colours[i], patterns[i],
                 tuple(a for a, keep in zip(ACCESSORIES, present[i]) if keep)) for i in range(n)]


# ---------------------------------------------------------------- drawing

def _mix(colour: np.ndarray, other: Sequence[float], amount: float) -> np.ndarray:
    return colour * (1.0 - amount) + np.asarray(other, dtype=np.float32) * amount


def _muted_colour(rng: np.random.Generator) -> np.ndarray:
    """A light, low-saturation background colour, far from every garment colour."""
    grey = rng.uniform(165, 240)
    return np.clip(grey + rng.uniform(-18, 18, 3), 0, 255).astype(np.float32)


@functools.lru_cache(maxsize=4)
def _pixel_grid(side: int) -> tuple[np.ndarray, np.ndarray]:
    """Canvas pixel centres (xs, ys), float32, shared by every image of one size."""
    ys, xs = np.mgrid[0:side, 0:side].astype(np.float32) + 0.5
    return xs, ys


def draw_background(rng: np.random.Generator, side: int) -> Image.Image:
    kind = rng.integers(3)
    if kind == 0:  # plain
        return Image.new("RGB", (side, side), tuple(int(c) for c in _muted_colour(rng)))
    if kind == 1:  # linear gradient in a random direction
        a, b = _muted_colour(rng), _muted_colour(rng)
        angle = rng.uniform(0, 2 * np.pi)
        xs, ys = _pixel_grid(side)
        t = (xs - side / 2) * np.float32(np.cos(angle) / side) + (ys - side / 2) * np.float32(np.sin(angle) / side)
        t = np.clip(t + np.float32(0.5), 0, 1)[..., None]
        pixels = a + (b - a) * t
    else:  # noise: coarse blobs (upsampled random grid) plus fine grain
        coarse = rng.normal(0, 10, (6, 6)).astype(np.float32)
        coarse = np.asarray(Image.fromarray(coarse).resize((side, side), Image.BICUBIC))[..., None]
        grain = rng.normal(0, 5, (side, side, 1)).astype(np.float32)
        pixels = _muted_colour(rng) + coarse + grain
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")


class Placement:
    """Unit-square garment coordinates <-> canvas pixels: scale, small rotation, offset."""

    def __init__(self, rng: np.random.Generator, side: int):
        self.scale = side * rng.uniform(*SCALE_RANGE)
        self.angle = np.radians(rng.uniform(-MAX_ROTATION_DEG, MAX_ROTATION_DEG))
        self.centre = side / 2 + rng.uniform(-MAX_SHIFT, MAX_SHIFT, 2) * side
        c, s = np.cos(self.angle), np.sin(self.angle)
        self.rotation = np.array([[c, -s], [s, c]])

    def to_canvas(self, points: Sequence[Point]) -> list[Point]:
        unit = np.asarray(points, dtype=np.float64) - 0.5
        xy = unit @ self.rotation.T * self.scale + self.centre
        return [tuple(p) for p in xy]

    def to_unit(self, xs: np.ndarray, ys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Garment coordinates of canvas pixels (so a pattern turns with its garment)."""
        c, s = np.float32(np.cos(self.angle) / self.scale), np.float32(np.sin(self.angle) / self.scale)
        dx, dy = xs - np.float32(self.centre[0]), ys - np.float32(self.centre[1])
        return c * dx + s * dy, c * dy - s * dx


def _polygon_mask(side: int, placement: Placement, fills: Sequence[tuple[list[Point], int]]) -> Image.Image:
    mask = Image.new("L", (side, side), 0)
    draw = ImageDraw.Draw(mask)
    for polygon, fill in fills:
        draw.polygon(placement.to_canvas(polygon), fill=fill)
    return mask


def _rgb(colour: np.ndarray) -> tuple[int, int, int]:
    return tuple(int(round(c)) for c in np.clip(colour, 0, 255))


def pattern_layer(rng: np.random.Generator, pattern: str, main: np.ndarray, placement: Placement,
                  side: int) -> Image.Image:
    """The garment's cloth over the whole canvas: main colour with a pattern in a lighter/darker shade."""
    if pattern == "solid":
        return Image.new("RGB", (side, side), _rgb(main))
    luminance = float(main @ np.array([0.299, 0.587, 0.114]))
    second = _mix(main, (245, 245, 245), 0.62) if luminance < 150 else _mix(main, (0, 0, 0), 0.55)
    u, v = placement.to_unit(*_pixel_grid(side))
    period = rng.uniform(0.18, 0.24)
    phase = rng.uniform(0, 1, 2)
    fu, fv = u / np.float32(period) + np.float32(phase[0]), v / np.float32(period) + np.float32(phase[1])
    if pattern == "stripes":
        along = fu if rng.random() < 0.5 else fv
        on = (along % 1.0) < 0.42
    elif pattern == "dots":
        du, dv = fu % 1.0 - 0.5, fv % 1.0 - 0.5
        on = du * du + dv * dv < 0.3 ** 2
    elif pattern == "checks":
        on = (np.floor(fu) + np.floor(fv)) % 2 == 0
    else:
        raise ValueError(f"unknown pattern {pattern!r}")
    cloth = Image.new("RGB", (side, side), _rgb(main))
    cloth.paste(_rgb(second), mask=Image.fromarray(on.astype(np.uint8) * 255, "L"))
    return cloth


def _accessory_boxes(rng: np.random.Generator, side: int, count: int) -> list[tuple[float, float, float]]:
    """(x0, y0, box side) in distinct canvas corners, so accessories never pile on each other."""
    corners = rng.permutation(4)[:count]
    boxes = []
    for corner in corners:
        box = side * rng.uniform(0.27, 0.32)
        margin = side * rng.uniform(0.01, 0.03)
        x0 = margin if corner % 2 == 0 else side - margin - box
        y0 = margin if corner < 2 else side - margin - box
        boxes.append((x0, y0, box))
    return boxes


def draw_accessory(draw: ImageDraw.ImageDraw, name: str, x0: float, y0: float, box: float) -> None:
    def at(px: float, py: float) -> tuple[float, float]:
        return x0 + px * box, y0 + py * box

    def ellipse(cx, cy, rx, ry, **kw):
        draw.ellipse([at(cx - rx, cy - ry), at(cx + rx, cy + ry)], **kw)

    line_width = max(1, round(box * 0.07))
    if name == "sunglasses":
        ellipse(0.26, 0.5, 0.2, 0.15, fill=(25, 25, 35))
        ellipse(0.74, 0.5, 0.2, 0.15, fill=(25, 25, 35))
        draw.line([at(0.42, 0.45), at(0.58, 0.45)], fill=(25, 25, 35), width=line_width)
        draw.line([at(0.06, 0.45), at(0.0, 0.32)], fill=(25, 25, 35), width=line_width)
        draw.line([at(0.94, 0.45), at(1.0, 0.32)], fill=(25, 25, 35), width=line_width)
    elif name == "watch":
        draw.rectangle([at(0.38, 0.0), at(0.62, 1.0)], fill=(110, 70, 35))
        ellipse(0.5, 0.5, 0.3, 0.3, fill=(150, 150, 160))
        ellipse(0.5, 0.5, 0.22, 0.22, fill=(250, 250, 250))
        draw.line([at(0.5, 0.5), at(0.5, 0.33)], fill=(20, 20, 20), width=max(1, line_width // 2))
        draw.line([at(0.5, 0.5), at(0.63, 0.5)], fill=(20, 20, 20), width=max(1, line_width // 2))
    elif name == "necklace":
        for angle in np.radians(np.linspace(15, 165, 9)):
            ellipse(0.5 + 0.4 * np.cos(angle), 0.2 + 0.5 * np.sin(angle), 0.06, 0.06, fill=(215, 170, 40))
        draw.polygon([at(0.5, 0.72), at(0.6, 0.85), at(0.5, 0.98), at(0.4, 0.85)], fill=(60, 160, 200))
    elif name == "belt":
        draw.rectangle([at(0.0, 0.38), at(1.0, 0.62)], fill=(95, 55, 25))
        draw.rectangle([at(0.3, 0.3), at(0.52, 0.7)], outline=(225, 185, 50), width=line_width)
        for hole in (0.68, 0.78, 0.88):
            ellipse(hole, 0.5, 0.025, 0.025, fill=(40, 25, 10))
    else:
        raise ValueError(f"unknown accessory {name!r}")


_ANY_INK = [0] + [255] * 255


def _dilate(mask: Image.Image, radius: int) -> Image.Image:
    """Square dilation: a box blur is non-zero wherever the mask is within `radius` (MaxFilter is 10x slower)."""
    return mask.filter(ImageFilter.BoxBlur(radius)).point(_ANY_INK)


def render(spec: Spec, seed: int, index: int, size: int) -> Image.Image:
    """One image; its own random stream (seed, index) keeps images independent of each other."""
    rng = np.random.default_rng([seed, 1, index])
    side = size * SUPERSAMPLE
    garment = GARMENTS[spec.category]
    main = np.clip(np.asarray(COLOURS[spec.colour], np.float32) + rng.uniform(-15, 15, 3), 0, 255)
    placement = Placement(rng, side)

    image = draw_background(rng, side)
    mask = _polygon_mask(side, placement, garment["shape"])
    image.paste(pattern_layer(rng, spec.pattern, main, placement, side), mask=mask)
    if garment["trim"]:
        trim = _polygon_mask(side, placement, [(polygon, 255) for polygon in garment["trim"]])
        trim = ImageChops.multiply(trim, mask)  # trim only where the garment is
        image.paste(_rgb(_mix(main, (0, 0, 0), 0.45)), mask=trim)
    # A dark outline (a ring just outside the mask) keeps the silhouette readable when a light
    # pattern meets a light background.
    ring = ImageChops.subtract(_dilate(mask, SUPERSAMPLE), mask)
    image.paste(_rgb(_mix(main, (0, 0, 0), 0.6)), mask=ring)

    draw = ImageDraw.Draw(image)
    for name, box in zip(spec.accessories, _accessory_boxes(rng, side, len(spec.accessories))):
        draw_accessory(draw, name, *box)
    return image.resize((size, size), Image.BOX)


def encode_jpeg(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=JPEG_QUALITY)
    return buffer.getvalue()


# ---------------------------------------------------------------- files

def _write_image(path: Path, data: bytes) -> None:
    # Atomic rename without an fsync per image: hundreds of small fsyncs would dominate the run time.
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def remove_stale_images(images_dir: Path, n: int) -> int:
    """Delete <id>.jpg left by an earlier, larger run in the same folder, so the folder is the set."""
    removed = 0
    for path in images_dir.glob("*.jpg"):
        if path.stem.isdigit() and not 1 <= int(path.stem) <= n:
            path.unlink()
            removed += 1
    return removed


def write_label_map(path: Path, labels: Sequence[Label]) -> None:
    with atomic_open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["labelId", "taskId", "labelName", "taskName"])
        for label in labels:
            writer.writerow([label.label_id, label.task_id, label.name, label.group])


def readme_text(n: int, seed: int, size: int, base_url: str, labels: Sequence[Label],
                counts: dict[str, int]) -> str:
    rows = "\n".join(f"| {l.label_id} | {l.group} | {l.name} | {counts[l.label_id]} |" for l in labels)
    return f"""# Synthetic fashion images (fashion_tf default data set)

{n} procedurally drawn {size}x{size} RGB JPEGs (quality {JPEG_QUALITY}), made by
`python -m fashion_tf.synthetic --n {n} --seed {seed} --size {size} --base-url {base_url}`.
The same command gives byte-identical files. Nothing here is real: it exists so the pipeline
can be run end to end without downloading anything.

Each image shows one garment (a polygon silhouette with a dark outline, its unit square scaled to
{SCALE_RANGE[0]:.0%}-{SCALE_RANGE[1]:.0%} of the image, shifted up to {MAX_SHIFT:.0%}, rotated up to {MAX_ROTATION_DEG} degrees) on a light, low-saturation background (plain, gradient or noise),
and sometimes small accessories in the corners. Labels, {len(labels)} in {len(GROUPS)} groups:

- `category` (exactly one): {", ".join(GARMENTS)}
- `colour` (exactly one, the garment's main colour): {", ".join(COLOURS)}
- `pattern` (exactly one): {", ".join(PATTERNS)}
- `accessory` (zero or more, each present with probability {ACCESSORY_PROBABILITY}): {", ".join(ACCESSORIES)}

So every image has 3 to 7 labels. Category, colour and pattern are balanced (each value
appears n/8 or n/4 times, shuffled independently).

Files (the iMaterialist Fashion 2018 layout):
- `train.json`: `{{"images": [{{"url": "{base_url}/images/<id>.jpg", "imageId": "<id>"}}],
  "annotations": [{{"labelId": ["3", "12"], "imageId": "<id>"}}]}}`, ids "1".."{n}".
  Serve this folder with `python -m http.server <port> --bind 127.0.0.1` for the URLs to resolve.
- `label_map.csv`: `labelId,taskId,labelName,taskName`, 1-based ids.
- `images/<id>.jpg`.

| labelId | group | name | images |
| --- | --- | --- | --- |
{rows}
"""


def _validate(n: int, seed: int, size: int, base_url: str) -> None:
    if seed < 0:
        raise UserError(f"--seed: must be >= 0, got {seed}")
    if not 1 <= n <= MAX_N:
        raise UserError(f"--n: must be between 1 and {MAX_N}, got {n}")
    if not MIN_SIZE <= size <= MAX_SIZE:
        raise UserError(f"--size: must be between {MIN_SIZE} and {MAX_SIZE} pixels, got {size}")
    if not base_url.startswith(("http://", "https://")):
        raise UserError(f"--base-url: must start with http:// or https://, got {base_url!r}")


def generate(out_dir: str | Path, n: int = DEFAULT_N, seed: int = 0, size: int = 96,
             base_url: str = DEFAULT_BASE_URL, progress: bool = False) -> dict:
    """Write the data set to `out_dir`; return a summary (counts per label, paths, timing)."""
    _validate(n, seed, size, base_url)
    started = time.perf_counter()
    out_dir = Path(out_dir)
    images_dir = out_dir / "images"
    for folder in (out_dir, images_dir):
        if folder.exists() and not folder.is_dir():
            raise UserError(f"--out: {folder} exists and is not a folder")
    images_dir.mkdir(parents=True, exist_ok=True)
    base_url = base_url.rstrip("/")

    labels = label_table()
    id_of = {(l.group, l.name): l.label_id for l in labels}
    counts = {l.label_id: 0 for l in labels}
    specs = draw_specs(n, seed)
    images, annotations = [], []
    indices = range(n)
    if progress:
        from tqdm import tqdm
        indices = tqdm(indices, desc="drawing", unit="img")
    for index in indices:
        image_id = str(index + 1)
        spec = specs[index]
        _write_image(images_dir / f"{image_id}.jpg", encode_jpeg(render(spec, seed, index, size)))
        label_ids = sorted((id_of[key] for key in spec.label_names()), key=int)
        for label_id in label_ids:
            counts[label_id] += 1
        images.append({"url": f"{base_url}/images/{image_id}.jpg", "imageId": image_id})
        annotations.append({"labelId": label_ids, "imageId": image_id})

    removed = remove_stale_images(images_dir, n)
    write_json_atomic(out_dir / "train.json", {"images": images, "annotations": annotations}, indent=None)
    write_label_map(out_dir / "label_map.csv", labels)
    write_bytes_atomic(out_dir / "README.md",
                       readme_text(n, seed, size, base_url, labels, counts).encode("utf-8"))
    seconds = time.perf_counter() - started
    n_labels = sum(counts.values())
    return {
        "out_dir": str(out_dir),
        "n_images": n,
        "seed": seed,
        "size": size,
        "n_label_ids": len(labels),
        "groups": [group for group, _ in GROUPS],
        "label_counts": counts,
        "stale_images_removed": removed,
        "labels_per_image": n_labels / n,
        "seconds": seconds,
        "images_per_second": n / seconds if seconds > 0 else float("inf"),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m fashion_tf.synthetic",
        description="Draw a synthetic multi-label fashion data set in the iMaterialist Fashion 2018 layout.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--out", required=True, type=Path, help="output folder (created if absent)")
    parser.add_argument("--n", type=int, default=DEFAULT_N, help="number of images")
    parser.add_argument("--seed", type=int, default=0, help="random seed; same seed -> same bytes")
    parser.add_argument("--size", type=int, default=96, help="image side in pixels")
    parser.add_argument("--base-url", default=DEFAULT_BASE_URL, help="URL prefix written into train.json")
    args = parser.parse_args(argv)
    summary = generate(args.out, n=args.n, seed=args.seed, size=args.size, base_url=args.base_url,
                       progress=sys.stderr.isatty())
    counts = summary["label_counts"]
    print(f"wrote {summary['n_images']} images ({summary['size']}x{summary['size']} JPEG) with "
          f"{summary['labels_per_image']:.2f} labels each on average ({summary['n_label_ids']} label ids in "
          f"{len(summary['groups'])} groups, rarest label on {min(counts.values())} images) to "
          f"{summary['out_dir']} in {summary['seconds']:.1f} s ({summary['images_per_second']:.0f} images/s); "
          f"0 failures.")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
