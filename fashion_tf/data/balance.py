"""Label balancing of the training stream (data.balance == "rejection"), a filter on the encoded records.

Each label l gets weight (N / count_l) ** balance_power (N = examples in the split, counts from
shard_info.json via ShardFolder), an example gets the max weight over its labels (an example without labels counts as the
most frequent label), and the repeated stream keeps an example with probability weight / max weight. Rare-label
examples are always kept, common ones are thinned, so the share of rare labels in what the model sees rises;
with power 1 every label's examples are seen about equally often when labels don't co-occur. It costs reading
(not decoding) the rejected records; training only.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from fashion_tf import schema
from fashion_tf.data import seeds


def label_weights(counts: np.ndarray, power: float) -> np.ndarray:
    """Per-label sampling weight (N / count) ** power, relative to the most frequent label (weight 1); 0 if unseen."""
    counts = np.asarray(counts, dtype=np.float64)
    weights = np.zeros_like(counts)
    seen = counts > 0
    if seen.any():
        weights[seen] = (counts[seen].max() / counts[seen]) ** power
    return weights


def balance_filter(records, label_counts: np.ndarray, power: float, seed: Optional[int]):
    """Keep each (repeated) record with probability max-label-weight / max weight (see the module docstring);
    label_counts: examples per label in the split, int [C]."""
    import tensorflow as tf

    num_labels = len(label_counts)
    weights = label_weights(label_counts, power)
    if not (weights > 0).any():
        return records
    max_weight = float(weights.max())
    # Unlabelled examples (and labels unseen in the counts) are kept as often as the most frequent label.
    floor = float(weights[weights > 0].min())
    keep_probability = tf.constant(np.maximum(weights, floor) / max_weight, dtype=tf.float32)

    def keep(serialized, element_seed):
        indices = schema.parse_example(serialized, [schema.LABEL])[schema.LABEL]
        indices = tf.boolean_mask(indices, (indices >= 0) & (indices < num_labels))
        probabilities = tf.concat([[floor / max_weight], tf.gather(keep_probability, indices)], axis=0)
        probability = tf.reduce_max(probabilities)
        return seeds.uniform(element_seed) < probability

    numbered, make_seed = seeds.enumerate_with_seeds(records, seed, seeds.BALANCE)
    return numbered.filter(lambda index, serialized: keep(serialized, make_seed(index))).map(lambda _, s: s)
