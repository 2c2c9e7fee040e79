"""Images/s of the input pipeline as configured: `python -m fashion_tf.data benchmark --data SHARDS`.

    benchmark(data_cfg, Options(...)) -> Result        (the command line is fashion_tf/data/__main__.py)

bench/bench_data.py compares these figures with other pipelines side by side.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional

from fashion_tf.data.pipeline import make_dataset
from fashion_tf.errors import UserError

if TYPE_CHECKING:
    from fashion_tf.config import DataConfig

PIPELINES = ("train", "eval")


@dataclass
class Options:
    split: str = "train"
    pipeline: str = "train"  # train | eval
    augment: Optional[list[str]] = None  # None: data_cfg.augment
    seconds: float = 30.0  # measured time, after the warm-up
    warmup: float = 5.0  # seconds of warm-up excluded from the figure


@dataclass
class Result:
    options: Options
    image_size: int
    batch_size: int
    augment: list[str]  # applied (none for the eval pipeline)
    images: int
    batches: int
    seconds: float
    images_per_s: float
    cpu_ms_per_image: float

    def describe(self) -> str:
        return (
            f"pipeline={self.options.pipeline} split={self.options.split} image_size={self.image_size} "
            f"batch={self.batch_size} augment={','.join(self.augment) or 'none'}: {self.images_per_s:.1f} images/s "
            f"({self.images} images in {self.seconds:.1f} s after {self.options.warmup:g} s warm-up; "
            f"{self.cpu_ms_per_image:.2f} CPU ms/image)"
        )


def measure_throughput(dataset, seconds: float, warmup_seconds: float = 5.0, warmup_batches: int = 3) -> dict:
    """Images per second (and CPU ms per image) of iterating `dataset` (first element's leading dim = batch)
    after a warm-up."""
    iterator = iter(dataset)
    start = time.perf_counter()
    for _ in range(warmup_batches):
        next(iterator)
    while time.perf_counter() - start < warmup_seconds:
        next(iterator)
    images, batches = 0, 0
    start, cpu_start = time.perf_counter(), time.process_time()
    while (elapsed := time.perf_counter() - start) < seconds:
        batch = next(iterator)
        images += int(batch[0].shape[0])
        batches += 1
    cpu = time.process_time() - cpu_start
    return {
        "images": images,
        "batches": batches,
        "seconds": elapsed,
        "images_per_s": images / elapsed,
        # CPU time of this process (all threads) per image: steadier than images/s when others share the cores.
        "cpu_ms_per_image": 1000.0 * cpu / max(images, 1),
    }


def benchmark(data_cfg: DataConfig, options: Options) -> Result:
    """Iterate the training (endless) or evaluation (repeated) pipeline for options.seconds after a warm-up."""
    if options.pipeline not in PIPELINES:
        raise UserError(f"pipeline {options.pipeline!r} is not one of {', '.join(PIPELINES)}")
    training = options.pipeline == "train"
    augment = list(data_cfg.augment if options.augment is None else options.augment)
    dataset = make_dataset(data_cfg, options.split, training=training, augment=augment)
    if not training:
        dataset = dataset.repeat()  # one pass may be shorter than the measured time
    measured = measure_throughput(dataset, options.seconds, options.warmup)
    return Result(options, data_cfg.image_size, data_cfg.batch_size, augment if training else [], **measured)
