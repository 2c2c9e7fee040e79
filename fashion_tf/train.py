"""Train the multi-label classifier: TFRecord shards + config -> run folder with the model and its history.

    python -m fashion_tf.train --config configs/imat.json [--override key=value ...] [--resume]

Run folder (config output_dir):
    config.json            resolved config
    label_map.json         copied from the shard folder
    model.keras            final model (best epoch by train.monitor when train.restore_best) + optimizer
    saved_model/           SavedModel export (serving signature: images float32 [B,S,S,3] in [0,255])
    history.csv            one row per epoch (Keras CSVLogger)
    plots/                 loss.png, micro_f1.png, pr_auc.png
    checkpoints/           last epoch's full state (weights + optimizer, epoch-NNNN.weights.h5 and last.json)
                           and best.weights.h5; --resume continues from last.json
    tensorboard/           TensorBoard logs
    val_predictions.npz    ids (N, str), scores (N x C float32), labels (N x C uint8) on the validation split
    summary.json           the figures printed at the end

Distribution: train.strategy auto (MirroredStrategy on >1 GPU, else the default strategy), mirrored (all GPUs,
or all logical CPUs without GPUs), multi_worker (MultiWorkerMirroredStrategy from TF_CONFIG; worker 0 or the
chief writes the run folder, the other workers write checkpoints under output_dir/workers/<task>), one_device.
The global batch is data.batch_size x replicas; the learning rate scales linearly with global/base batch.

Fine-tuning: for train.freeze_backbone_epochs only the head trains (the frozen backbone's BatchNorm layers run
in inference mode). Then the backbone (all, or its last train.unfreeze layers) trains at
learning_rate x fine_tune_lr_factor; its BatchNorm layers stay frozen (inference mode) when the backbone
started from pretrained weights, as recommended for fine-tuning. One optimizer, built over every variable
that will ever train, carries its state and step counter across both phases and across --resume.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import keras
import numpy as np

from fashion_tf.config import Config, load_config, save_config
from fashion_tf.errors import UserError, run_cli
from fashion_tf.fileio import atomic_path, write_json_atomic
from fashion_tf.run_folder import RunFolder
from fashion_tf.shard_folder import ShardFolder

CHECKPOINTS = "checkpoints"
LAST_STATE = "last.json"
BEST_WEIGHTS = "best.weights.h5"
KEEP_EPOCH_CHECKPOINTS = 2
HISTORY = "history.csv"
PREDICTIONS = "val_predictions.npz"
SAVED_MODEL = "saved_model"
MODEL_FILE = "model.keras"
WORKER_WEIGHTS = "final.weights.h5"  # what non-chief workers keep of the final model


# ---- environment: strategy, precision ---------------------------------------------------
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


# ---- learning rate ----------------------------------------------------------------------
@keras.saving.register_keras_serializable(package="fashion_tf")
class WarmupSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warmup to base_lr, then cosine to 0 / step decay / constant; x fine_tune_factor from fine_tune_step.

    A function of the optimizer step only, so a resumed run continues on the same curve. (Importing
    fashion_tf.train registers it: needed to load a model.keras with compile=True.)
    """

    def __init__(self, base_lr, total_steps, warmup_steps=0, kind="cosine", step_every=1, step_factor=0.1,
                 fine_tune_step=0, fine_tune_factor=1.0):
        self.base_lr = float(base_lr)
        self.total_steps = int(total_steps)
        self.warmup_steps = int(warmup_steps)
        self.kind = kind
        self.step_every = max(int(step_every), 1)
        self.step_factor = float(step_factor)
        self.fine_tune_step = int(fine_tune_step)
        self.fine_tune_factor = float(fine_tune_factor)

    def __call__(self, step):
        ops = keras.ops
        step = ops.cast(step, "float32")
        after_warmup = ops.maximum(step - self.warmup_steps, 0.0)
        if self.kind == "cosine":
            progress = ops.minimum(after_warmup / max(self.total_steps - self.warmup_steps, 1), 1.0)
            lr = 0.5 * self.base_lr * (1.0 + ops.cos(math.pi * progress))
        elif self.kind == "step":
            lr = self.base_lr * ops.power(self.step_factor, ops.floor(after_warmup / self.step_every))
        else:
            lr = self.base_lr * ops.ones_like(step)
        if self.warmup_steps > 0:
            warm = self.base_lr * (step + 1.0) / self.warmup_steps
            lr = ops.where(step < self.warmup_steps, warm, lr)
        if self.fine_tune_step > 0:
            lr = ops.where(step >= self.fine_tune_step, lr * self.fine_tune_factor, lr)
        return lr

    def get_config(self):
        return {
            "base_lr": self.base_lr, "total_steps": self.total_steps, "warmup_steps": self.warmup_steps,
            "kind": self.kind, "step_every": self.step_every, "step_factor": self.step_factor,
            "fine_tune_step": self.fine_tune_step, "fine_tune_factor": self.fine_tune_factor,
        }


def make_optimizer(cfg: Config, schedule, policy: str):
    t = cfg.train
    if t.optimizer == "adamw":
        optimizer = keras.optimizers.AdamW(learning_rate=schedule, weight_decay=t.weight_decay)
    else:
        optimizer = keras.optimizers.SGD(learning_rate=schedule, momentum=t.momentum, weight_decay=t.weight_decay or None)
    if t.weight_decay:
        # Decay only kernels: decaying biases and BatchNorm scales/offsets only hurts (standard practice).
        optimizer.exclude_from_weight_decay(var_names=["bias", "gamma", "beta"])
    if policy == "mixed_float16":
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    return optimizer


# ---- callbacks ---------------------------------------------------------------------------
class EpochCheckpoint(keras.callbacks.Callback):
    """After every epoch: weights + optimizer state to epoch-NNNN.weights.h5, then last.json points at it.

    The pointer is written after the weights file is complete, so a kill at any moment leaves a
    consistent pair; the two newest epoch files are kept.
    """

    def __init__(self, folder: Path, monitor: str, mode: str, best: Optional[float]):
        super().__init__()
        self.folder = folder
        self.monitor = monitor
        self.mode = mode
        self.best = best

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        if value is not None and np.isfinite(value):
            better = self.best is None or (value > self.best if self.mode == "max" else value < self.best)
            if better:
                self.best = float(value)
        self.folder.mkdir(parents=True, exist_ok=True)
        name = f"epoch-{epoch + 1:04d}.weights.h5"
        tmp = self.folder / f".tmp-{name}"
        self.model.save_weights(tmp, overwrite=True)
        os.replace(tmp, self.folder / name)
        state = {
            "epoch": epoch + 1,
            "iterations": int(self.model.optimizer.iterations.numpy()),
            "weights": name,
            "best": self.best,
            "monitor": self.monitor,
        }
        write_json_atomic(self.folder / LAST_STATE, state)
        for old in sorted(self.folder.glob("epoch-*.weights.h5"))[:-KEEP_EPOCH_CHECKPOINTS]:
            old.unlink(missing_ok=True)


class ResumedEarlyStopping(keras.callbacks.EarlyStopping):
    """EarlyStopping that, on --resume, goes on from the monitored values of the epochs already run in this
    phase (from history.csv) instead of starting its patience and its best value afresh."""

    def __init__(self, earlier_values: Sequence[float], **kwargs):
        super().__init__(**kwargs)
        self.earlier_values = [float(v) for v in earlier_values if math.isfinite(float(v))]

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        if self.monitor_op is None:
            self._set_monitor_op()
        for value in self.earlier_values:  # the same bookkeeping as on_epoch_end
            self.wait += 1
            if self._is_improvement(value, self.best):
                self.best, self.wait = value, 0

    def already_stopped(self) -> bool:
        self.on_train_begin()
        return bool(self.earlier_values) and self.wait >= self.patience


def _monitor_history(path: Path, monitor: str, first_epoch: int, end_epoch: int) -> list[float]:
    """The monitored value of epochs [first_epoch, end_epoch) from history.csv (absent ones are skipped)."""
    return [row[monitor] for row in _read_history(path)
            if monitor in row and first_epoch <= int(row.get("epoch", -1)) < end_epoch]


class NanGuard(keras.callbacks.TerminateOnNaN):
    """Stop at the first NaN/inf loss and remember where, so training ends with a clear message."""

    def __init__(self):
        super().__init__()
        self.epoch = 0
        self.message: Optional[str] = None

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not np.isfinite(float(loss)):
            self.message = (
                f"training stopped: the loss became {float(loss)} at epoch {self.epoch + 1}, batch {batch + 1} "
                "(try a lower train.learning_rate, train.mixed_precision=off, or check the data)"
            )
            print(f"\n{self.message}", file=sys.stderr, flush=True)
            self.model.stop_training = True

class EpochTimer(keras.callbacks.Callback):
    """Seconds per epoch, and training throughput measured between batch ends.

    The first batch of each fit() call is left out of the throughput: it includes tracing the step function.
    """

    def __init__(self):
        super().__init__()
        self.epoch_seconds: list[float] = []
        self.measured_seconds = 0.0
        self.measured_steps = 0
        self._epoch_start = None
        self._last = None
        self._fresh_fit = True

    def on_train_begin(self, logs=None):
        self._fresh_fit = True

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_start = time.perf_counter()
        self._last = None if self._fresh_fit else self._epoch_start
        self._fresh_fit = False

    def on_train_batch_end(self, batch, logs=None):
        now = time.perf_counter()
        if self._last is not None:
            self.measured_seconds += now - self._last
            self.measured_steps += 1
        self._last = now

    def on_test_begin(self, logs=None):
        self._last = None

    def on_epoch_end(self, epoch, logs=None):
        self.epoch_seconds.append(time.perf_counter() - self._epoch_start)


def monitor_mode(monitor: str) -> str:
    return "min" if monitor.endswith("loss") else "max"


# ---- run state ----------------------------------------------------------------------------
@dataclass
class Plan:
    num_labels: int
    num_train: int
    num_val: int
    replicas: int
    global_batch: int
    learning_rate: float
    steps_per_epoch: int
    freeze_epochs: int
    policy: str
    run_dir: Path
    role: Role
    label_counts: np.ndarray = field(repr=False, default=None)


def _read_last_state(checkpoints: Path) -> Optional[dict]:
    path = checkpoints / LAST_STATE
    if not path.is_file():
        return None
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
        if not (checkpoints / state["weights"]).is_file():
            raise UserError(f"{path}: names {state['weights']}, which is missing")
        return state
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise UserError(f"{path}: unreadable checkpoint state ({err}); start without --resume") from None


def _prepare_run_dir(run_dir: Path, resume: bool) -> Optional[dict]:
    """Returns the checkpoint state to resume from (or None). A fresh start clears old checkpoints/history."""
    checkpoints = run_dir / CHECKPOINTS
    state = _read_last_state(checkpoints) if resume else None
    if resume and state is None:
        print(f"--resume: no checkpoint in {checkpoints}; starting from epoch 0", flush=True)
    if not resume:
        if checkpoints.exists():
            print(f"note: {run_dir} held an earlier run; starting over (use --resume to continue one)", flush=True)
            shutil.rmtree(checkpoints)
        (run_dir / HISTORY).unlink(missing_ok=True)
    run_dir.mkdir(parents=True, exist_ok=True)
    return state


def _trim_history(path: Path, epochs: int) -> None:
    """Keep the history rows of the first `epochs` epochs (rows logged after the last checkpoint are redone)."""
    if not path.is_file():
        return
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    if not lines:
        return
    header, rows = lines[0], lines[1:]
    column = header.strip().split(",").index("epoch") if "epoch" in header.split(",") else 0
    kept = [row for row in rows if row.strip() and int(float(row.split(",")[column])) < epochs]
    if len(kept) != len(rows):
        with atomic_path(path) as tmp:
            tmp.write_text(header + "".join(kept), encoding="utf-8")


# ---- training -------------------------------------------------------------------------------
def train(cfg: Config, resume: bool = False, verbose: Optional[int] = None) -> dict:
    """Train as configured; returns the summary dict (also written to summary.json)."""
    from fashion_tf import data
    from fashion_tf.losses import make_group_softmax_loss, make_loss, make_softmax_loss
    from fashion_tf.models import build_model, set_backbone_trainable

    warnings.filterwarnings("ignore", message="Your input ran out of data")  # the finite validation pass
    warnings.filterwarnings("ignore", message=".*shuffle=True.* was passed")
    keras.backend.clear_session()
    strategy = make_strategy(cfg.train.strategy)  # early: MultiWorkerMirroredStrategy must precede other TF ops
    role = worker_role(strategy)
    policy = resolve_precision(cfg.train.mixed_precision)
    keras.mixed_precision.set_global_policy(policy)
    keras.utils.set_random_seed(cfg.train.seed)

    shards = ShardFolder(cfg.data.tfrecords)
    num_labels = shards.num_labels
    tfrecords = cfg.data.tfrecords
    num_train = shards.num_examples(cfg.data.train_split)
    num_val = shards.num_examples(cfg.data.val_split)
    if num_train < 1:
        raise UserError(f"{tfrecords}: the {cfg.data.train_split!r} split is empty")
    if num_val < 1:
        raise UserError(f"{tfrecords}: the {cfg.data.val_split!r} split is empty (validation is needed for {cfg.train.monitor})")
    replicas = strategy.num_replicas_in_sync
    global_batch = cfg.data.batch_size * replicas
    learning_rate = cfg.train.learning_rate
    if cfg.train.lr_scaling == "linear":
        learning_rate *= global_batch / cfg.train.base_batch_size
    steps_per_epoch = cfg.train.steps_per_epoch or max(1, num_train // global_batch)
    epochs = cfg.train.epochs
    freeze_epochs = min(cfg.train.freeze_backbone_epochs, epochs)

    base_dir = Path(cfg.output_dir)
    run_dir = base_dir if role.is_chief else base_dir / "workers" / role.name
    state = _prepare_run_dir(run_dir, resume)
    if role.is_chief:
        save_config(cfg, run_dir / "config.json")
        shutil.copyfile(shards.label_map_path, RunFolder(run_dir).label_map)
    plan = Plan(num_labels, num_train, num_val, replicas, global_batch, learning_rate, steps_per_epoch,
                freeze_epochs, policy, run_dir, role, shards.label_counts(cfg.data.train_split))
    _print_plan(cfg, plan, strategy, state)
    softmax_groups = {}
    if cfg.model.head == "group_softmax":
        softmax_groups = shards.single_choice_groups()
        print(f"group_softmax: one softmax each for {', '.join(softmax_groups) or 'no group'}; "
              f"{num_labels - sum(map(len, softmax_groups.values()))} labels keep a sigmoid and loss.name={cfg.loss.name}",
              flush=True)

    total_steps = epochs * steps_per_epoch
    schedule = WarmupSchedule(
        base_lr=learning_rate,
        total_steps=total_steps,
        warmup_steps=int(round(cfg.train.warmup_epochs * steps_per_epoch)),
        kind=cfg.train.schedule,
        step_every=cfg.train.step_epochs * steps_per_epoch,
        step_factor=cfg.train.step_factor,
        fine_tune_step=freeze_epochs * steps_per_epoch if freeze_epochs > 0 else 0,
        fine_tune_factor=cfg.train.fine_tune_lr_factor,
    )
    # BatchNorm of a pretrained backbone stays frozen (inference mode) when fine-tuning after a frozen phase.
    keep_bn_frozen = cfg.model.weights is not None and freeze_epochs > 0
    with strategy.scope():
        model = build_model(cfg.model, num_labels, cfg.data.image_size, list(softmax_groups.values()))
        if cfg.model.head == "softmax":
            loss = make_softmax_loss(cfg.loss)
        elif cfg.model.head == "group_softmax":
            loss = make_group_softmax_loss(cfg.loss, softmax_groups, num_labels, plan.label_counts, num_train)
        else:
            loss = make_loss(cfg.loss, plan.label_counts, num_train)
        optimizer = make_optimizer(cfg, schedule, policy)
        # Build the optimizer over every variable that will ever train (the unfrozen state), so its slots
        # and step counter persist through the frozen phase, the unfreeze and --resume.
        set_backbone_trainable(model, cfg.train.unfreeze, keep_batchnorm_frozen=False)
        optimizer.build(model.trainable_variables)
    start_epoch = int(state["epoch"]) if state else 0
    if state is not None:
        _trim_history(run_dir / HISTORY, start_epoch)

    # A label without validation positives has no PR curve; Keras would count it as AUC 0 in the mean.
    val_counts = shards.label_counts(cfg.data.val_split)
    present = np.zeros(num_labels, np.float32)
    present[: min(num_labels, len(val_counts))] = val_counts[:num_labels] > 0
    auc_label_weights = present if 0 < present.sum() < num_labels else None

    def compile_for(trainable: str) -> int:
        with strategy.scope():
            layers = set_backbone_trainable(model, trainable, keep_batchnorm_frozen=keep_bn_frozen)
            model.compile(optimizer=optimizer, loss=loss, metrics=_metrics(cfg, num_labels, auc_label_weights),
                          jit_compile=cfg.train.xla)
            if cfg.train.strategy == "multi_worker":
                _multi_worker_workaround(model, cfg.data.image_size, num_labels)
        return layers

    # Compiled before loading: the checkpoint holds the optimizer state, which loads through model.optimizer.
    compile_for("none" if start_epoch < freeze_epochs else cfg.train.unfreeze)
    if state is not None:
        model.load_weights(run_dir / CHECKPOINTS / state["weights"])
        print(f"resumed from {run_dir / CHECKPOINTS / state['weights']}: epoch {state['epoch']}, "
              f"optimizer step {int(optimizer.iterations.numpy())}", flush=True)

    mode = monitor_mode(cfg.train.monitor)
    best_so_far = state.get("best") if state else None
    checkpoint = EpochCheckpoint(run_dir / CHECKPOINTS, cfg.train.monitor, mode, best_so_far)
    nan_guard, timer = NanGuard(), EpochTimer()
    if verbose is None:
        verbose = 1 if sys.stdout.isatty() else 2

    phases = []
    if start_epoch < freeze_epochs:
        phases.append(("frozen backbone", "none", start_epoch, freeze_epochs))
    if max(start_epoch, freeze_epochs) < epochs:
        phases.append(("full" if freeze_epochs == 0 else "fine-tune", cfg.train.unfreeze, max(start_epoch, freeze_epochs), epochs))
    started = time.perf_counter()
    for phase_index, (phase_name, trainable, first_epoch, end_epoch) in enumerate(phases):
        trainable_layers = compile_for(trainable)
        print(f"phase {phase_name}: epochs {first_epoch + 1}-{end_epoch}, "
              f"{trainable_layers} trainable backbone layers, {_count(model.trainable_variables):,} trainable parameters",
              flush=True)
        seed = cfg.train.seed + 1000 * first_epoch  # a resumed run must not replay the first epochs' batches
        train_ds = strategy.distribute_datasets_from_function(
            lambda ctx, seed=seed: data.make_dataset(cfg.data, cfg.data.train_split, True, num_labels, ctx, seed=seed)
        )
        val_ds = strategy.distribute_datasets_from_function(
            lambda ctx: data.make_dataset(cfg.data, cfg.data.val_split, False, num_labels, ctx)
        )
        append = resume or phase_index > 0
        # History before the checkpoint: a kill between the two leaves an extra row, which --resume trims.
        callbacks = [
            keras.callbacks.CSVLogger(run_dir / HISTORY, append=append),
            keras.callbacks.ModelCheckpoint(
                run_dir / CHECKPOINTS / BEST_WEIGHTS, monitor=cfg.train.monitor, mode=mode, save_best_only=True,
                save_weights_only=True, initial_value_threshold=checkpoint.best,
            ),
            checkpoint,
            nan_guard,
            timer,
        ]
        if _tensorboard_available():
            callbacks.append(keras.callbacks.TensorBoard(run_dir / "tensorboard", write_graph=False, profile_batch=0))
        if cfg.train.early_stopping_patience > 0:
            phase_start = 0 if phase_name == "frozen backbone" else freeze_epochs
            stopping = ResumedEarlyStopping(
                _monitor_history(run_dir / HISTORY, cfg.train.monitor, phase_start, first_epoch),
                monitor=cfg.train.monitor, mode=mode, patience=cfg.train.early_stopping_patience)
            if stopping.already_stopped():
                print(f"phase {phase_name}: early stopping had already ended it (no better {cfg.train.monitor} in the "
                      f"last {cfg.train.early_stopping_patience} epochs); nothing to resume", flush=True)
                continue
            callbacks.append(stopping)
        with strategy.scope():  # fit finds the strategy here when the multi-worker workaround unset it
            model.fit(
                train_ds,
                validation_data=val_ds,
                epochs=end_epoch,
                initial_epoch=first_epoch,
                steps_per_epoch=steps_per_epoch,
                callbacks=callbacks,
                verbose=verbose,
            )
        if nan_guard.message:
            raise UserError(nan_guard.message)
    train_seconds = time.perf_counter() - started

    best_path = run_dir / CHECKPOINTS / BEST_WEIGHTS
    restored_best = bool(cfg.train.restore_best and best_path.is_file())
    if restored_best:
        model.load_weights(best_path)
    if cfg.train.strategy == "multi_worker":
        _average_non_trainable(model, strategy)
    summary = _summary(cfg, plan, timer, train_seconds, restored_best, start_epoch)
    if role.is_chief:
        _save_outputs(cfg, model, plan, summary)
    else:
        model.save_weights(run_dir / WORKER_WEIGHTS, overwrite=True)
    if cfg.train.strategy == "multi_worker":
        _barrier(strategy)  # a worker that exits while the chief still writes makes the chief's runtime abort
    return summary


def _average_non_trainable(model, strategy) -> None:
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


def _barrier(strategy) -> None:
    """Wait until every worker gets here: one all-reduce across all replicas."""
    import tensorflow as tf

    @tf.function
    def all_reduce_one():
        return strategy.reduce("SUM", strategy.run(lambda: tf.constant(1.0)), axis=None)

    with strategy.scope():
        all_reduce_one()


def _multi_worker_workaround(model, image_size: int, num_labels: int) -> None:
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


def _tensorboard_available() -> bool:
    import importlib.util

    if importlib.util.find_spec("tensorboard") is None:
        print("note: tensorboard is not installed; no TensorBoard logs (pip install tensorboard)", flush=True)
        return False
    return True


def _metrics(cfg: Config, num_labels: int, label_weights: Optional[np.ndarray] = None) -> list:
    """micro-F1 at 0.5 and the multi-label PR-AUC (mean of per-label PR-AUCs, over the labels given weight 1)."""
    threshold = None if cfg.model.head == "softmax" else 0.5  # softmax: the arg-max class is the prediction
    return [
        keras.metrics.F1Score(average="micro", threshold=threshold, name="micro_f1"),
        keras.metrics.AUC(curve="PR", multi_label=True, num_labels=num_labels, label_weights=label_weights,
                          name="pr_auc"),
    ]


def _count(variables) -> int:
    return int(sum(np.prod(v.shape) for v in variables))


def _print_plan(cfg: Config, plan: Plan, strategy, state: Optional[dict]) -> None:
    print(
        f"training {cfg.model.backbone} on {plan.num_train} images ({plan.num_val} validation), {plan.num_labels} labels, "
        f"{cfg.data.image_size} px; {type(strategy).__name__} with {plan.replicas} replica(s), global batch "
        f"{plan.global_batch}, lr {plan.learning_rate:.3g}, {plan.steps_per_epoch} steps/epoch x {cfg.train.epochs} epochs, "
        f"precision {plan.policy}{', XLA' if cfg.train.xla else ''}; run folder {plan.run_dir}"
        + (f"; resuming after epoch {state['epoch']}" if state else ""),
        flush=True,
    )


def _read_history(path: Path) -> list[dict]:
    import csv

    if not path.is_file():
        return []
    with open(path, newline="", encoding="utf-8") as handle:
        return [{k: float(v) if v not in ("", None) else float("nan") for k, v in row.items()} for row in csv.DictReader(handle)]


def _summary(cfg: Config, plan: Plan, timer, train_seconds: float, restored_best: bool, start_epoch: int) -> dict:
    history = _read_history(plan.run_dir / HISTORY)
    monitor = cfg.train.monitor
    chosen = None
    if history:
        if restored_best and any(monitor in row for row in history):
            pick = max if monitor_mode(monitor) == "max" else min
            chosen = pick((row for row in history if np.isfinite(row.get(monitor, np.nan))),
                          key=lambda row: row[monitor], default=history[-1])
        else:
            chosen = history[-1]
    return {
        "epochs_run": len(timer.epoch_seconds),
        "epochs_total": int(history[-1]["epoch"]) + 1 if history else start_epoch,
        "resumed_from_epoch": start_epoch,
        "seconds_per_epoch": float(np.mean(timer.epoch_seconds)) if timer.epoch_seconds else None,
        "train_images_per_second": (timer.measured_steps * plan.global_batch / timer.measured_seconds
                                    if timer.measured_seconds > 0 else None),
        "wall_seconds": train_seconds,
        "final_epoch": int(chosen["epoch"]) + 1 if chosen else None,
        "val_micro_f1": chosen.get("val_micro_f1") if chosen else None,
        "val_pr_auc": chosen.get("val_pr_auc") if chosen else None,
        "val_loss": chosen.get("val_loss") if chosen else None,
        "restored_best": restored_best,
        "replicas": plan.replicas,
        "global_batch": plan.global_batch,
        "precision": plan.policy,
        "run_dir": str(plan.run_dir),
    }


# ---- outputs -------------------------------------------------------------------------------
def predict_split(model, cfg: Config, split: str, num_labels: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(ids [N] str, scores [N, C] float32, labels [N, C] uint8) over one deterministic pass of a split."""
    import tensorflow as tf

    from fashion_tf import data

    dataset = data.make_dataset(cfg.data, split, False, num_labels, with_ids=True)

    @tf.function(jit_compile=cfg.train.xla or None)
    def forward(images):
        return model(images, training=False)

    ids, scores, labels = [], [], []
    for images, batch_labels, batch_ids in dataset:
        scores.append(np.asarray(forward(images), dtype=np.float32))
        labels.append(batch_labels.numpy().round().astype(np.uint8))
        ids.extend(i.decode("utf-8") for i in batch_ids.numpy())
    if not scores:
        return np.array([], dtype=str), np.zeros((0, num_labels), np.float32), np.zeros((0, num_labels), np.uint8)
    return np.asarray(ids, dtype=str), np.concatenate(scores), np.concatenate(labels)


def micro_f1(scores: np.ndarray, labels: np.ndarray, threshold: float = 0.5) -> float:
    predicted = scores >= threshold
    truth = labels.astype(bool)
    tp = np.logical_and(predicted, truth).sum()
    denominator = predicted.sum() + truth.sum()
    return float(2 * tp / denominator) if denominator else 0.0


def _save_outputs(cfg: Config, model, plan: Plan, summary: dict) -> None:
    run_dir = plan.run_dir
    tmp_model = run_dir / f".tmp-{MODEL_FILE}"  # model.save insists on the .keras suffix
    model.save(tmp_model)
    os.replace(tmp_model, run_dir / MODEL_FILE)
    export_dir = run_dir / SAVED_MODEL
    if export_dir.exists():
        shutil.rmtree(export_dir)
    model.export(str(export_dir), format="tf_saved_model", verbose=False)

    ids, scores, labels = predict_split(model, cfg, cfg.data.val_split, plan.num_labels)
    with atomic_path(run_dir / PREDICTIONS) as tmp:
        with open(tmp, "wb") as handle:
            np.savez_compressed(handle, ids=ids, scores=scores, labels=labels)
    summary["val_micro_f1_from_predictions"] = micro_f1(scores, labels) if cfg.model.head != "softmax" else None
    summary["val_examples_predicted"] = int(len(ids))
    plot_files = []
    try:
        from fashion_tf.plots import plot_history

        plot_files = [str(p) for p in plot_history(run_dir / HISTORY, run_dir / "plots")]
    except Exception as err:  # noqa: BLE001 - a plotting problem must not lose a trained model
        print(f"warning: could not draw the training curves ({type(err).__name__}: {err})", file=sys.stderr)
    summary["plots"] = plot_files
    write_json_atomic(run_dir / "summary.json", summary)
    print(summary_text(summary), flush=True)


def _fmt(value, spec: str) -> str:
    return "n/a" if value is None or (isinstance(value, float) and not np.isfinite(value)) else format(value, spec)


def summary_text(summary: dict) -> str:
    run = summary["run_dir"]
    return (
        f"Trained {summary['epochs_run']} epoch(s) (now at epoch {summary['epochs_total']}"
        f"{', resumed after epoch ' + str(summary['resumed_from_epoch']) if summary['resumed_from_epoch'] else ''}) "
        f"in {_fmt(summary['wall_seconds'], '.0f')} s: {_fmt(summary['seconds_per_epoch'], '.1f')} s/epoch, "
        f"{_fmt(summary['train_images_per_second'], '.0f')} training images/s on {summary['replicas']} replica(s) "
        f"({summary['precision']}). Validation ({'best' if summary['restored_best'] else 'last'} epoch "
        f"{summary['final_epoch']}): micro-F1@0.5 {_fmt(summary['val_micro_f1'], '.4f')}, "
        f"PR-AUC {_fmt(summary['val_pr_auc'], '.4f')}. Model: {run}/{MODEL_FILE} and {run}/{SAVED_MODEL}/; "
        f"validation scores for the threshold search: {run}/{PREDICTIONS}; curves: {run}/plots/; "
        f"history: {run}/{HISTORY}; checkpoints: {run}/{CHECKPOINTS}/ (continue with --resume)."
    )


# ---- CLI -------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m fashion_tf.train",
        description="Train the multi-label classifier on TFRecord shards (see the config file for every option).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--config", help="JSON config file (defaults are used for keys it leaves out)")
    parser.add_argument("--override", action="append", default=[], metavar="KEY=VALUE",
                        help="set one config key, e.g. train.epochs=3 (repeatable)")
    parser.add_argument("--resume", action="store_true",
                        help="continue the run in output_dir from its last checkpoint (epoch and optimizer state)")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    cfg = load_config(args.config, args.override)
    train(cfg, resume=args.resume)
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
