"""Images + labels -> sharded TFRecords with a stratified validation split, resumable and verifiable.

    from fashion_tf.make_tfrecords import Options, make_tfrecords
    info = make_tfrecords(Options(input=Path("downloads"), output_dir=Path("tfrecords/fashion")))

or, for an engine that writes shards on many workers (see `pipeline`):

    with prepare(options) as plan:                       # inputs, split, plan file; holds the folder's lock
        receipts = [write_shard(plan.target, job) for job in plan.pending()]   # anywhere, in any order
        info = finalize(plan, receipts)                  # label_map.json, TFDS metadata, shard_info.json

The command line (`python tools/make_tfrecords.py`, `python -m fashion_tf.make_tfrecords`) is `cli`; the output
layout is fashion_tf.shard_folder's, described in tfrecords/README.md. Modules, in the order data flows through
them: options, inputs, catalog, split, plan, writer, metadata, pipeline (the three steps), verify, cli.
"""

from fashion_tf.make_tfrecords.options import Options
from fashion_tf.make_tfrecords.pipeline import finalize, make_tfrecords, prepare
from fashion_tf.make_tfrecords.plan import Plan, ShardJob, ShardTarget
from fashion_tf.make_tfrecords.verify import verify_output
from fashion_tf.make_tfrecords.writer import write_shard

__all__ = ["Options", "Plan", "ShardJob", "ShardTarget", "prepare", "write_shard", "finalize", "make_tfrecords",
           "verify_output"]
