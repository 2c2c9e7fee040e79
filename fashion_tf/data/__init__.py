"""The tf.data input pipeline, one module per concern:

    pipeline.py   make_dataset: shards -> records -> [balance] -> parse, decode, augment -> batches
    decode.py     encoded bytes -> pixels; decode_for_eval, the one definition of evaluation/inference pixels
    augment.py    the ordered table of training augmentations (AUGMENTATIONS), the one list of their names
    balance.py    rejection sampling of the training records towards rare labels
    seeds.py      stateless per-element seeds (reproducible streams)
    benchmark.py  images/s of the pipeline (`python -m fashion_tf.data benchmark --data SHARDS`, __main__.py)

Shard metadata (files, label counts, label map) comes from fashion_tf.shard_folder.ShardFolder.
TensorFlow is imported inside the functions: importing the package does not load it.
"""

from fashion_tf.data.augment import AUGMENTATIONS
from fashion_tf.data.decode import decode_for_eval
from fashion_tf.data.pipeline import make_dataset

__all__ = ["AUGMENTATIONS", "decode_for_eval", "make_dataset"]
