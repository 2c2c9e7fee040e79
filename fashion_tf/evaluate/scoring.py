"""One pass of a model over a split: scores, true labels, ids, embeddings, and the worst images' pixels."""

from __future__ import annotations

import heapq
import itertools
import sys
import time
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from fashion_tf.errors import UserError


@dataclass
class WorstImages:
    """The `size` images with the largest wrong-side threshold margin, kept while streaming (a min-heap)."""

    size: int
    heap: list = field(default_factory=list)
    counter: itertools.count = field(default_factory=itertools.count)

    def offer(self, images: np.ndarray, scores: np.ndarray, positive: np.ndarray, ids: Sequence[str], thresholds: np.ndarray) -> None:
        if self.size <= 0:
            return
        margins = error_margins(scores, positive, thresholds)
        for row in np.flatnonzero(margins > 0):
            item = (float(margins[row]), next(self.counter), ids[row],
                    np.clip(np.rint(images[row]), 0, 255).astype(np.uint8), scores[row].copy(), positive[row].copy())
            if len(self.heap) < self.size:
                heapq.heappush(self.heap, item)
            elif item[0] > self.heap[0][0]:
                heapq.heapreplace(self.heap, item)

    def worst_first(self) -> list:
        return sorted(self.heap, key=lambda item: (-item[0], item[1]))


def error_margins(scores: np.ndarray, positive: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """Per image: sum over wrongly decided labels of how far the score is on the wrong side of the threshold.

    A missed label adds threshold - score, a false one score - threshold; a correct image scores 0.
    """
    predicted = scores >= thresholds
    distance = np.abs(scores - thresholds)
    return np.where(predicted != positive, distance, 0.0).sum(axis=1)


@dataclass
class Predictions:
    ids: list[str]
    scores: np.ndarray  # float32 [N, C]
    positive: np.ndarray  # bool [N, C]
    embeddings: np.ndarray | None  # float32 [N, D], None when the model's embedding could not be found
    worst: list  # WorstImages.worst_first()
    seconds: float


def embedding_tensor(model):
    """The symbolic input of the classifier's last Dense layer (the image embedding), or None.

    Works for our functional models (the head Dense is the last layer) and for a nested head sub-model
    (its input is then the embedding).
    """
    import keras

    last = model.layers[-1]
    if isinstance(last, keras.Model):
        return last.input
    for layer in reversed(model.layers):
        if isinstance(layer, keras.layers.Dense):
            return layer.input
    return None


def scores_and_embeddings_model(model):
    """(model, has_embeddings): a model returning [scores, embeddings], or the model itself when there is none."""
    import keras

    try:
        features = embedding_tensor(model)
        if features is not None:
            return keras.Model(model.inputs, [model.outputs[0], features]), True
    except (ValueError, AttributeError) as err:  # a subclassed model has no graph to cut
        print(f"note: no embedding for the PCA plot ({type(err).__name__}: {err})", file=sys.stderr)
    return model, False


def collect_predictions(model, dataset, thresholds: np.ndarray, gallery_size: int, total_batches: int | None) -> Predictions:
    """One pass over the dataset: scores, true labels, ids, embeddings, and the worst images' pixels."""
    from tqdm import tqdm

    from fashion_tf.inference import batches

    features_model, has_embeddings = scores_and_embeddings_model(model)
    ids: list[str] = []
    scores, positive, embeddings = [], [], []
    worst = WorstImages(gallery_size)
    start = time.perf_counter()
    for batch in tqdm(batches(features_model, dataset), total=total_batches, unit="batch", desc="evaluate",
                      file=sys.stderr, disable=None):
        batch_scores = np.asarray(batch.outputs[0] if has_embeddings else batch.outputs, dtype=np.float32)
        batch_positive = batch.labels > 0.5
        scores.append(batch_scores)
        positive.append(batch_positive)
        ids.extend(batch.ids)
        if has_embeddings:
            embeddings.append(np.asarray(batch.outputs[1], dtype=np.float32).reshape(len(batch_scores), -1))
        worst.offer(batch.images.numpy(), batch_scores, batch_positive, batch.ids, thresholds)
    seconds = time.perf_counter() - start
    if not ids:
        raise UserError("the split has no images to evaluate")
    return Predictions(
        ids=ids,
        scores=np.concatenate(scores),
        positive=np.concatenate(positive),
        embeddings=np.concatenate(embeddings) if has_embeddings else None,
        worst=worst.worst_first(),
        seconds=seconds,
    )
