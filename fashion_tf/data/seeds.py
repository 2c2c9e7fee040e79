"""Stateless randomness of the input pipeline: every random draw takes an explicit seed.

Each stream of elements (records for the balance filter, examples for augmentation, batches for mixup) is
numbered, and element k of a stream gets the seed [seed + stream offset, k]: with a seed and
data.deterministic=True the training stream is reproducible, and parallel maps share no random state.
seed=None draws the base at random (a different stream each run).
"""

from __future__ import annotations

from typing import Optional

import numpy as np

EXAMPLES = 1  # stream offsets: one per stream, so no two streams share seeds
BATCHES = 2
BALANCE = 7919


def uniform(seed, low=0.0, high=1.0, shape=()):
    import tensorflow as tf

    return tf.random.stateless_uniform(shape, seed=seed, minval=low, maxval=high)


def split(seed, count: int):
    """`count` independent seeds [count, 2] from one."""
    import tensorflow as tf

    return tf.random.experimental.stateless_split(seed, count)


def enumerate_with_seeds(dataset, seed: Optional[int], stream: int):
    """(dataset.enumerate(), index -> seed [base + stream, index]); the consumer's own map builds the seed, so
    there is no extra per-element stage."""
    import tensorflow as tf

    base = int(np.random.SeedSequence().generate_state(1)[0] % (2**31)) if seed is None else int(seed)

    def make_seed(index):
        return tf.stack([tf.constant(base + stream, tf.int64), index])

    return dataset.enumerate(), make_seed
