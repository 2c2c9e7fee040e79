"""Where training runs: the tf.distribute strategy, the Keras precision policy, and each worker's role.

train.strategy auto (MirroredStrategy on >1 GPU, else the default strategy), mirrored (all GPUs, or all logical
CPUs without GPUs), multi_worker (MultiWorkerMirroredStrategy from TF_CONFIG; worker 0 or the chief writes the
run folder, the other workers their checkpoints under output_dir/workers/<task>), one_device.
Keras 3.15 needs two workarounds to fit under MultiWorkerMirroredStrategy (keras-team/keras#20585), here too.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from fashion_tf.errors import UserError


def make_strategy(name: str):
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if name == "auto":
        return tf.distribute.MirroredStrategy() if len(gpus) > 1 else tf.distribute.get_strategy()
    if name == "mirrored":
        kind = "GPU" if gpus else "CPU"
        return tf.distribute.MirroredStrategy([d.name for d in tf.config.list_logical_devices(kind)])
    if name == "multi_worker":
        if not os.environ.get("TF_CONFIG"):
            raise UserError("train.strategy: multi_worker needs the TF_CONFIG environment variable (cluster and task)")
        return tf.distribute.MultiWorkerMirroredStrategy()
    if name == "one_device":
        return tf.distribute.OneDeviceStrategy("/gpu:0" if gpus else "/cpu:0")
    raise UserError(f"train.strategy: unknown strategy {name!r}")


def resolve_precision(setting: str) -> str:
    """The Keras dtype policy: mixed_float16 automatically only on GPUs of compute capability >= 7.0."""
    if setting == "off":
        return "float32"
    if setting == "float16":
        return "mixed_float16"
    if setting == "bfloat16":
        return "mixed_bfloat16"
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    capabilities = [tf.config.experimental.get_device_details(g).get("compute_capability", (0, 0)) for g in gpus]
    if gpus and all(tuple(c) >= (7, 0) for c in capabilities):
        return "mixed_float16"
    return "float32"


@dataclass
class Role:
    is_chief: bool = True
    name: str = "chief"


def worker_role(strategy) -> Role:
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not getattr(resolver, "task_type", None):
        return Role()
    task_type, task_id = resolver.task_type, resolver.task_id
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    is_chief = task_type == "chief" or (task_type == "worker" and task_id == 0 and not has_chief)
    return Role(is_chief, f"{task_type}_{task_id}")


def average_non_trainable(model, strategy) -> None:
    """Average BatchNorm moving statistics over all workers, so every worker ends with the same model.

    Keras 3 updates them from each replica's own batches without synchronising them (aggregation "none");
    the trainable weights are kept equal by the gradient all-reduce.
    """
    import tensorflow as tf

    variables = [v for v in model.non_trainable_variables if "float" in str(v.dtype)]
    if not variables:
        return

    @tf.function
    def averaged():
        local = strategy.run(lambda: [tf.identity(tf.convert_to_tensor(v.value)) * 1.0 for v in variables])
        return [strategy.reduce("MEAN", value, axis=None) for value in local]

    with strategy.scope():
        for variable, value in zip(variables, averaged()):
            variable.assign(value)


def barrier(strategy) -> None:
    """Wait until every worker gets here: one all-reduce across all replicas."""
    import tensorflow as tf

    @tf.function
    def all_reduce_one():
        return strategy.reduce("SUM", strategy.run(lambda: tf.constant(1.0)), axis=None)

    with strategy.scope():
        all_reduce_one()


def multi_worker_workaround(model, image_size: int, num_labels: int) -> None:
    """Keras 3.15 fit() does not run under MultiWorkerMirroredStrategy (keras-team/keras#20585), in two places.

    1. Before training it reduces the first distributed batch with strategy.reduce, which
       CollectiveAllReduceStrategy rejects for a tuple. We build the compiled metrics here instead, from an
       abstract batch, and unset the model's captured strategy, so fit skips that step and takes the strategy
       from the enclosing strategy.scope().
    2. Each step reduces its scalar logs with strategy.reduce("MEAN", v, axis=0), invalid for a scalar. We
       wrap Keras' reduce_per_replica so scalars are averaged over all replicas of all workers (axis=None).
    Both touch Keras internals and apply only to train.strategy=multi_worker.
    """
    _patch_multi_worker_log_reduction()
    batch = (np.zeros((1, image_size, image_size, 3), np.float32), np.zeros((1, num_labels), np.float32))
    model._symbolic_build(data_batch=batch)
    model._distribute_strategy = None


def _patch_multi_worker_log_reduction() -> None:
    from keras.src import tree
    from keras.src.backend.tensorflow import trainer as tf_trainer

    original = tf_trainer.reduce_per_replica
    if getattr(original, "fashion_tf_patched", False):
        return

    def reduce_per_replica(values, strategy, reduction):
        if reduction in ("auto", "mean") and tf_trainer._collective_all_reduce_multi_worker(strategy):
            def reduce(value):
                axis = None if len(getattr(value, "shape", ())) == 0 else 0
                return strategy.reduce("MEAN", value, axis=axis)

            return tree.map_structure(reduce, values)
        return original(values, strategy, reduction)

    reduce_per_replica.fashion_tf_patched = True
    tf_trainer.reduce_per_replica = reduce_per_replica
