"""The one prediction loop: a model's forward pass compiled once, run over batches.

Training (validation scores for the threshold search), evaluate (scores, embeddings and the worst images) and
predict / the app (a batch of decoded images) all score through `forward`, so a model gives the same scores
to every stage.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import Any, Iterable, Iterator, Sequence

import numpy as np

_compiled: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def forward(model, jit_compile: bool = False):
    """model(images, training=False) as a tf.function, made once per model (retraced only for new batch shapes)."""
    key = (bool(jit_compile),)
    per_model = _compiled.setdefault(model, {})
    if key not in per_model:
        import tensorflow as tf

        per_model[key] = tf.function(lambda images: model(images, training=False), reduce_retracing=True,
                                     jit_compile=jit_compile or None)
    return per_model[key]


@dataclass
class Batch:
    outputs: Any  # the model's outputs as numpy (an array, or a list of arrays for several outputs)
    labels: np.ndarray  # float32 [B, C] multi-hot
    ids: list[str]
    images: Any  # the input tensor, for callers that keep some pixels


def batches(model, dataset: Iterable, jit_compile: bool = False) -> Iterator[Batch]:
    """Score every (images, labels, ids) element of `dataset` in order."""
    step = forward(model, jit_compile)
    for images, labels, ids in dataset:
        outputs = step(images)
        outputs = [np.asarray(o) for o in outputs] if isinstance(outputs, (list, tuple)) else np.asarray(outputs)
        yield Batch(outputs, labels.numpy(), [i.decode("utf-8", "replace") for i in ids.numpy()], images)


def score_split(model, dataset: Iterable, num_labels: int, jit_compile: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(ids [N] str, scores [N, C] float32, labels [N, C] uint8) over one pass of a split's dataset."""
    ids, scores, labels = [], [], []
    for batch in batches(model, dataset, jit_compile):
        scores.append(np.asarray(batch.outputs, dtype=np.float32))
        labels.append(batch.labels.round().astype(np.uint8))
        ids.extend(batch.ids)
    if not scores:
        return np.array([], dtype=str), np.zeros((0, num_labels), np.float32), np.zeros((0, num_labels), np.uint8)
    return np.asarray(ids, dtype=str), np.concatenate(scores), np.concatenate(labels)


def score_images(model, images: Sequence) -> np.ndarray:
    """Scores [B, C] float32 of decoded images (each float32 [S, S, 3] in [0, 255]), as one batch."""
    import tensorflow as tf

    return np.asarray(forward(model)(tf.stack(list(images))), dtype=np.float32)
