"""The tf.data input pipeline: TFRecord shards (fashion_tf.schema) -> batches of (images, multi-hot labels).

    make_dataset(data_cfg, split, training) -> tf.data.Dataset of (images, labels) [or (images, labels, ids)]

images: float32 [B, S, S, 3] in [0, 255] (the model does its own preprocessing); labels: float32 multi-hot [B, C];
ids: tf.string [B] (image/source_id).

Batch size: ``data_cfg.batch_size`` is the batch of ONE replica. Without an input_context that is the batch.
With one (``strategy.distribute_datasets_from_function``), the batch is
``input_context.get_per_replica_batch_size(data_cfg.batch_size * input_context.num_replicas_in_sync)``,
i.e. again data_cfg.batch_size; the global batch is batch_size * num_replicas_in_sync.

Training pipeline (training=True), in order:
  shard file names (seeded shuffle each epoch) -> per-pipeline shard (by file; by record when there are fewer
  files than input pipelines) -> repeat forever -> interleaved parallel TFRecord reads -> [cache of the encoded
  records] -> [balance: rejection filter, fashion_tf.data.balance] -> example shuffle buffer -> parallel parse +
  decode + per-example augmentations (fashion_tf.data.augment) -> batch (drop remainder) -> [batch
  augmentations: mixup] -> prefetch. Randomness is stateless (fashion_tf.data.seeds): with a seed and
  data_cfg.deterministic=True the stream is reproducible.
Evaluation pipeline (training=False): one pass, deterministic order, no augmentation, remainder kept (with
  several replicas per pipeline: equal non-empty batches and a sample-weight item, see _equal_batches_for_replicas);
  pixels from fashion_tf.data.decode.decode_for_eval.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional, Sequence

from fashion_tf import schema
from fashion_tf.data import augment as augmentations
from fashion_tf.data import seeds
from fashion_tf.data.balance import balance_filter
from fashion_tf.data.decode import decode_for_eval
from fashion_tf.errors import UserError
from fashion_tf.shard_folder import ShardFolder

if TYPE_CHECKING:
    from fashion_tf.config import DataConfig

MAX_CYCLE_LENGTH = 16


def _read_records(files: list[str], data_cfg: DataConfig, training: bool, input_context, seed):
    """Serialized examples of this input pipeline: shuffled files, repeated forever when training."""
    import tensorflow as tf

    pipelines = input_context.num_input_pipelines if input_context is not None else 1
    pipeline_id = input_context.input_pipeline_id if input_context is not None else 0
    shard_by_record = pipelines > 1 and len(files) < pipelines
    file_ds = tf.data.Dataset.from_tensor_slices(files)
    my_files = len(files)
    if pipelines > 1 and not shard_by_record:
        file_ds = file_ds.shard(pipelines, pipeline_id)
        my_files = len(range(pipeline_id, len(files), pipelines))
    # Shuffling/repeating file names before the read would make a cache hold only one epoch's order and
    # would give the pipelines different record orders when sharding by record; both read files in order.
    shuffle_files = training and not data_cfg.cache and not shard_by_record
    if shuffle_files:
        file_ds = file_ds.shuffle(my_files, seed=seed, reshuffle_each_iteration=True).repeat()
    cycle_length = data_cfg.cycle_length or min(my_files, MAX_CYCLE_LENGTH)
    parallel = data_cfg.num_parallel_calls or tf.data.AUTOTUNE
    records = file_ds.interleave(
        tf.data.TFRecordDataset,
        cycle_length=max(1, min(cycle_length, my_files)),
        block_length=1,
        num_parallel_calls=parallel,
        deterministic=True if (shard_by_record or not training) else None,
    )
    if shard_by_record:
        records = records.shard(pipelines, pipeline_id)
    if data_cfg.cache:
        records = records.cache()
    if training and not shuffle_files:
        records = records.repeat()
    return records


def _example_fn(data_cfg: DataConfig, training: bool, num_labels: int, with_ids: bool, ops):
    """(serialized[, seed]) -> (image, labels[, id]) for one example: parse, then decode_for_eval (evaluation)
    or decode + the per-example augmentations `ops` (training)."""
    features = [schema.ENCODED, schema.LABEL, schema.HEIGHT, schema.WIDTH] + ([schema.SOURCE_ID] if with_ids else [])

    def fn(serialized, seed=None):
        parsed = schema.parse_example(serialized, features)
        encoded, height, width = parsed[schema.ENCODED], parsed[schema.HEIGHT], parsed[schema.WIDTH]
        if training:
            image = augmentations.augment_example(encoded, height, width, data_cfg, ops, seed)
        else:
            image = decode_for_eval(encoded, data_cfg, height, width)
        labels = schema.multi_hot(parsed[schema.LABEL], num_labels)
        if with_ids:
            return image, labels, parsed[schema.SOURCE_ID]
        return image, labels

    return fn


def per_replica_batch_size(data_cfg: DataConfig, input_context=None) -> int:
    if input_context is None:
        return data_cfg.batch_size
    return input_context.get_per_replica_batch_size(data_cfg.batch_size * input_context.num_replicas_in_sync)


def _replicas_per_pipeline(input_context) -> int:
    if input_context is None:
        return 1
    return max(1, input_context.num_replicas_in_sync // max(1, input_context.num_input_pipelines))


def _equal_batches_for_replicas(ds, batch_size: int, replicas: int):
    """Evaluation batches for `replicas` replicas fed by one pipeline, none of them empty.

    The replicas take a pipeline's batches in turn, so a split whose last step has fewer batches than replicas
    would hand some replica an empty batch, which oneDNN's CPU convolution mishandles (TF 2.21 on AVX-512
    machines: "Incompatible shapes: [C] vs. [0,H,W,3]"). Each step's examples (up to batch_size * replicas) are
    padded with at most replicas - 1 copies of its first example and split into `replicas` equal batches;
    elements gain a last item, the sample weight: 1 for real examples, 0 for copies, so metrics are unchanged.
    """
    import tensorflow as tf

    def split(*step):
        count = tf.shape(step[0])[0]
        padded = (count + replicas - 1) // replicas * replicas
        weights = tf.concat([tf.ones([count], tf.float32), tf.zeros([padded - count], tf.float32)], 0)

        def split_over_replicas(tensor):
            return tf.reshape(tensor, [replicas, -1, *tensor.shape[1:]])  # the example shape is static

        padded_step = tuple(tf.concat([t, tf.repeat(t[:1], padded - count, axis=0)], 0) for t in step)
        return tuple(split_over_replicas(t) for t in padded_step + (weights,))

    return ds.batch(batch_size * replicas).map(split).unbatch()


def _checked_num_labels(folder: ShardFolder, num_labels: Optional[int]) -> int:
    """The shard folder's label count; a caller's `num_labels` must be it (schema.multi_hot would silently drop
    labels >= num_labels, or give rows longer than the model's output)."""
    if num_labels is not None and int(num_labels) != folder.num_labels:
        raise UserError(f"{folder.root}: the shards have {folder.num_labels} labels ({folder.label_map_path.name}, "
                        f"{folder.info_path.name}) but {int(num_labels)} were expected; read them with the model "
                        "and label map they were written for")
    return folder.num_labels


def make_dataset(
    data_cfg: DataConfig,
    split: str,
    training: bool,
    num_labels: Optional[int] = None,
    input_context=None,
    with_ids: bool = False,
    seed: Optional[int] = None,
    augment: Optional[Sequence[str]] = None,
):
    """Batches of (images float32 [B,S,S,3] in [0,255], labels float32 [B,C] [, ids string [B]]).

    training=True: infinite, shuffled, augmented (data_cfg.augment, or `augment` when given), drop remainder.
    training=False: one pass, deterministic order, no augmentation, remainder kept; with several replicas per
    pipeline, (images, labels, sample_weights) in equal non-empty batches (_equal_batches_for_replicas).
    B = data_cfg.batch_size, the per-replica batch (see the module docstring for input_context).
    num_labels: C, the shard folder's label count; when given it must be that count (UserError otherwise).
    """
    folder = ShardFolder(data_cfg.tfrecords)
    files = folder.shard_files(split)  # bad folder/split/label count: UserError before TensorFlow loads
    num_labels = _checked_num_labels(folder, num_labels)
    names = data_cfg.augment if augment is None else augment
    augmentations.check_names(names, "data.augment")
    ops = augmentations.active(names, data_cfg) if training else ()
    import tensorflow as tf

    parallel = data_cfg.num_parallel_calls or tf.data.AUTOTUNE
    records = _read_records(files, data_cfg, training, input_context, seed)
    if training and data_cfg.balance == "rejection":
        records = balance_filter(records, folder.label_counts(split), data_cfg.balance_power, seed)
    if training:
        records = records.shuffle(data_cfg.shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    example_fn = _example_fn(data_cfg, training, num_labels, with_ids, ops)
    if training:
        numbered, make_seed = seeds.enumerate_with_seeds(records, seed, seeds.EXAMPLES)
        ds = numbered.map(lambda index, serialized: example_fn(serialized, make_seed(index)), num_parallel_calls=parallel)
    else:
        ds = records.map(example_fn, num_parallel_calls=parallel, deterministic=True)
    batch_size = per_replica_batch_size(data_cfg, input_context)
    replicas = _replicas_per_pipeline(input_context)
    if not training and replicas > 1:
        ds = _equal_batches_for_replicas(ds, batch_size, replicas)
    else:
        ds = ds.batch(batch_size, drop_remainder=training)
    if any(op.stage == augmentations.BATCH for op in ops):
        numbered, make_seed = seeds.enumerate_with_seeds(ds, seed, seeds.BATCHES)
        ds = numbered.map(lambda index, batch: augmentations.augment_batch(batch, data_cfg, ops, make_seed(index)),
                          num_parallel_calls=parallel)
    ds = ds.prefetch(data_cfg.prefetch if data_cfg.prefetch is not None else tf.data.AUTOTUNE)
    options = tf.data.Options()
    options.deterministic = bool(data_cfg.deterministic) if training else True
    return ds.with_options(options)
