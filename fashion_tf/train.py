"""Train the multi-label classifier: TFRecord shards + config -> a run folder with the model and its history.

    python -m fashion_tf.train --config configs/imat.json [--override key=value ...] [--resume | --overwrite]

The run folder (config output_dir) is laid out by fashion_tf.run_folder. Everything that can be checked is
checked before it is touched: the config (on load), the shard folder, the model, the loss and any checkpoint to
resume from. A folder holding an earlier run is refused unless --resume continues it or --overwrite replaces it,
and an overwritten run is kept aside until the new one has written its model.

The global batch is data.batch_size x replicas (fashion_tf.distribute); the learning rate scales linearly with
global/base batch (fashion_tf.optimization).

Fine-tuning: for train.freeze_backbone_epochs only the head trains (the frozen backbone's BatchNorm layers run
in inference mode). Then the backbone (all, or its last train.unfreeze layers) trains at
learning_rate x fine_tune_lr_factor; its BatchNorm layers stay frozen (inference mode) when the backbone
started from pretrained weights, as recommended for fine-tuning. One optimizer, built over every variable
that will ever train, carries its state and step counter across both phases and across --resume.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

import numpy as np

from fashion_tf.checkpoints import (load_first_loadable, monitor_history, monitor_mode, read_history,
                                    resume_candidates, trim_history, write_or_fail)
from fashion_tf.config import Config, add_config_arguments, load_config, save_config
from fashion_tf.errors import UserError, run_cli
from fashion_tf.fileio import write_json_atomic
from fashion_tf.run_folder import RunFolder, write_predictions
from fashion_tf.shard_folder import ShardFolder


@dataclass
class Options:
    config: Config
    resume: bool = False  # continue the run in output_dir from its last checkpoint
    overwrite: bool = False  # replace an earlier run in output_dir (kept aside until this one has its model)
    verbose: Optional[int] = None  # Keras fit verbosity; None: a progress bar on a terminal, a line per epoch else
    callbacks: Sequence[Any] = ()  # more Keras callbacks, after ours (e.g. a sweep's pruner)

    def check(self) -> None:
        if self.resume and self.overwrite:
            raise UserError("--resume continues the run in output_dir and --overwrite replaces it: give one of them")


@dataclass
class Plan:
    """Numbers of the run, from the config, the shard folder and the strategy."""

    num_labels: int
    num_train: int
    num_val: int
    replicas: int
    global_batch: int
    learning_rate: float
    steps_per_epoch: int
    freeze_epochs: int
    policy: str
    train_counts: np.ndarray = field(repr=False)
    val_counts: np.ndarray = field(repr=False)


@dataclass
class Trainee:
    """The model and what trains it, built before the run folder is touched."""

    model: Any
    loss: Any
    optimizer: Any
    keep_bn_frozen: bool  # a pretrained backbone's BatchNorm stays in inference mode when fine-tuned


@dataclass
class Session:
    """What training runs on: the strategy, this worker's role and run folder, the precision policy."""

    strategy: Any
    role: Any
    run: RunFolder
    policy: str


# ---- the stage --------------------------------------------------------------------------------
def train(options: Options) -> dict:
    """Train as configured; returns the summary (also written to summary.json)."""
    options.check()
    cfg = options.config
    RunFolder(cfg.output_dir).check_writable()
    shards = ShardFolder(cfg.data.tfrecords)
    check_shards(cfg, shards)
    session = start_session(cfg)
    run = session.run  # the chief's run folder, or this worker's own
    run.check_can_start(options.resume, options.overwrite)  # nothing written yet
    plan = make_plan(cfg, shards, session)
    trainee = build_trainee(cfg, shards, plan, session)
    candidates = resume_candidates(run, cfg.train.monitor) if options.resume else []
    if options.resume and not candidates:
        print(f"--resume: no checkpoint in {run.checkpoints}; starting from epoch 0", flush=True)
    run.begin(options.resume, options.overwrite)  # the first change on disk
    return write_or_fail(run.root, lambda: run_training(cfg, plan, session, shards, trainee, candidates, options))


def run_training(cfg: Config, plan: Plan, session: Session, shards: ShardFolder, trainee: Trainee, candidates,
                 options: Options) -> dict:
    run, model = session.run, trainee.model
    compile_for = make_compiler(cfg, plan, session, trainee)
    start_epoch, best = resume_from(candidates, cfg, plan, trainee, compile_for, run)
    if session.role.is_chief:
        save_config(cfg, run.config)
        shutil.copyfile(shards.label_map_path, run.label_map)
    print_plan(cfg, plan, session, start_epoch)
    timer, started = fit_phases(cfg, plan, session, model, compile_for, start_epoch, best, options)
    train_seconds = time.perf_counter() - started
    restored_best = bool(cfg.train.restore_best and run.best_weights.is_file())
    if restored_best:
        model.load_weights(run.best_weights)
    return finish(cfg, plan, session, model, timer, train_seconds, restored_best, start_epoch)


def check_shards(cfg: Config, shards: ShardFolder) -> None:
    """The splits training needs exist and are not empty (TF-free; ShardFolder checks the label count)."""
    if shards.num_examples(cfg.data.train_split) < 1:
        raise UserError(f"{shards.root}: the {cfg.data.train_split!r} split is empty")
    if shards.num_examples(cfg.data.val_split) < 1:
        raise UserError(f"{shards.root}: the {cfg.data.val_split!r} split is empty "
                        f"(validation is needed for {cfg.train.monitor})")
    shards.shard_files(cfg.data.train_split)
    shards.shard_files(cfg.data.val_split)


def start_session(cfg: Config) -> Session:
    import keras

    from fashion_tf.distribute import make_strategy, resolve_precision, worker_role

    warnings.filterwarnings("ignore", message="Your input ran out of data")  # the finite validation pass
    warnings.filterwarnings("ignore", message=".*shuffle=True.* was passed")
    keras.backend.clear_session()
    strategy = make_strategy(cfg.train.strategy)  # early: MultiWorkerMirroredStrategy must precede other TF ops
    role = worker_role(strategy)
    policy = resolve_precision(cfg.train.mixed_precision)
    keras.mixed_precision.set_global_policy(policy)
    keras.utils.set_random_seed(cfg.train.seed)
    run = RunFolder(cfg.output_dir)
    return Session(strategy, role, run if role.is_chief else run.worker(role.name), policy)


def make_plan(cfg: Config, shards: ShardFolder, session: Session) -> Plan:
    num_train = shards.num_examples(cfg.data.train_split)
    replicas = session.strategy.num_replicas_in_sync
    global_batch = cfg.data.batch_size * replicas
    learning_rate = cfg.train.learning_rate
    if cfg.train.lr_scaling == "linear":
        learning_rate *= global_batch / cfg.train.base_batch_size
    return Plan(
        num_labels=shards.num_labels, num_train=num_train, num_val=shards.num_examples(cfg.data.val_split),
        replicas=replicas, global_batch=global_batch, learning_rate=learning_rate,
        steps_per_epoch=cfg.train.steps_per_epoch or max(1, num_train // global_batch),
        freeze_epochs=min(cfg.train.freeze_backbone_epochs, cfg.train.epochs), policy=session.policy,
        train_counts=shards.label_counts(cfg.data.train_split), val_counts=shards.label_counts(cfg.data.val_split),
    )


def build_trainee(cfg: Config, shards: ShardFolder, plan: Plan, session: Session) -> Trainee:
    """Model, loss and optimizer, every part built: a bad backbone, weights file or group name fails here, before
    the run folder is touched."""
    from fashion_tf.losses import make_group_softmax_loss, make_loss, make_softmax_loss
    from fashion_tf.models import build_model, set_backbone_trainable
    from fashion_tf.optimization import make_optimizer, make_schedule

    softmax_groups = shards.single_choice_groups() if cfg.model.head == "group_softmax" else {}
    if cfg.model.head == "group_softmax":
        print(f"group_softmax: one softmax each for {', '.join(softmax_groups) or 'no group'}; "
              f"{plan.num_labels - sum(map(len, softmax_groups.values()))} labels keep a sigmoid and "
              f"loss.name={cfg.loss.name}", flush=True)
    schedule = make_schedule(cfg, plan.learning_rate, plan.steps_per_epoch, plan.freeze_epochs)
    with session.strategy.scope():
        model = build_model(cfg.model, plan.num_labels, cfg.data.image_size, list(softmax_groups.values()))
        if cfg.model.head == "softmax":
            loss = make_softmax_loss(cfg.loss)
        elif cfg.model.head == "group_softmax":
            loss = make_group_softmax_loss(cfg.loss, softmax_groups, plan.num_labels, plan.train_counts, plan.num_train)
        else:
            loss = make_loss(cfg.loss, plan.train_counts, plan.num_train)
        optimizer = make_optimizer(cfg, schedule, plan.policy)
        # Build the optimizer over every variable that will ever train (the unfrozen state), so its slots
        # and step counter persist through the frozen phase, the unfreeze and --resume.
        set_backbone_trainable(model, cfg.train.unfreeze, keep_batchnorm_frozen=False)
        optimizer.build(model.trainable_variables)
    return Trainee(model, loss, optimizer, keep_bn_frozen=cfg.model.weights is not None and plan.freeze_epochs > 0)


def make_compiler(cfg: Config, plan: Plan, session: Session, trainee: Trainee):
    """compile_for(trainable) -> trainable backbone layers: (re)compiles the model for one phase."""
    from fashion_tf.distribute import multi_worker_workaround
    from fashion_tf.models import set_backbone_trainable

    metrics_weights = auc_label_weights(plan.val_counts, plan.num_labels)

    def compile_for(trainable: str) -> int:
        model = trainee.model
        with session.strategy.scope():
            layers = set_backbone_trainable(model, trainable, keep_batchnorm_frozen=trainee.keep_bn_frozen)
            model.compile(optimizer=trainee.optimizer, loss=trainee.loss, jit_compile=cfg.train.xla,
                          metrics=make_metrics(cfg, plan.num_labels, metrics_weights))
            if cfg.train.strategy == "multi_worker":
                multi_worker_workaround(model, cfg.data.image_size, plan.num_labels)
        return layers

    return compile_for


def auc_label_weights(val_counts: np.ndarray, num_labels: int) -> Optional[np.ndarray]:
    """1 for labels with validation positives: a label without any has no PR curve, which Keras counts as 0."""
    present = np.zeros(num_labels, np.float32)
    present[: min(num_labels, len(val_counts))] = val_counts[:num_labels] > 0
    return present if 0 < present.sum() < num_labels else None


def make_metrics(cfg: Config, num_labels: int, label_weights: Optional[np.ndarray] = None) -> list:
    """micro-F1 at 0.5 and the multi-label PR-AUC (mean of per-label PR-AUCs, over the labels given weight 1)."""
    import keras

    threshold = None if cfg.model.head == "softmax" else 0.5  # softmax: the arg-max class is the prediction
    return [
        keras.metrics.F1Score(average="micro", threshold=threshold, name="micro_f1"),
        keras.metrics.AUC(curve="PR", multi_label=True, num_labels=num_labels, label_weights=label_weights,
                          name="pr_auc"),
    ]


def resume_from(candidates, cfg: Config, plan: Plan, trainee: Trainee, compile_for, run: RunFolder):
    """(start epoch, best monitored value so far): 0 and None for a fresh run."""
    if not candidates:
        compile_for("none" if plan.freeze_epochs > 0 else cfg.train.unfreeze)
        return 0, None
    # Compiled before loading: the checkpoint holds the optimizer state, which loads through model.optimizer.
    compile_for("none" if candidates[0].epoch < plan.freeze_epochs else cfg.train.unfreeze)
    state = load_first_loadable(trainee.model, candidates, run)
    trim_history(run.history, state.epoch)
    print(f"resumed from {state.weights} ({state.source}): epoch {state.epoch}, "
          f"optimizer step {int(trainee.optimizer.iterations.numpy())}", flush=True)
    return state.epoch, state.best


def phases(cfg: Config, plan: Plan, start_epoch: int) -> list[tuple[str, str, int, int]]:
    """(name, trainable backbone layers, first epoch, end epoch) of the phases still to run."""
    epochs, freeze = cfg.train.epochs, plan.freeze_epochs
    todo = []
    if start_epoch < freeze:
        todo.append(("frozen backbone", "none", start_epoch, freeze))
    if max(start_epoch, freeze) < epochs:
        todo.append(("full" if freeze == 0 else "fine-tune", cfg.train.unfreeze, max(start_epoch, freeze), epochs))
    return todo


def fit_phases(cfg: Config, plan: Plan, session: Session, model, compile_for, start_epoch: int,
               best: Optional[float], options: Options):
    """Run every remaining phase; returns (timer, start time)."""
    from fashion_tf import data
    from fashion_tf.callbacks import EpochCheckpoint, EpochTimer, NanGuard

    checkpoint = EpochCheckpoint(session.run, cfg.train.monitor, best)
    nan_guard, timer = NanGuard(), EpochTimer()
    verbose = options.verbose if options.verbose is not None else (1 if sys.stdout.isatty() else 2)
    started = time.perf_counter()
    for index, (name, trainable, first_epoch, end_epoch) in enumerate(phases(cfg, plan, start_epoch)):
        layers = compile_for(trainable)
        print(f"phase {name}: epochs {first_epoch + 1}-{end_epoch}, {layers} trainable backbone layers, "
              f"{count_parameters(model.trainable_variables):,} trainable parameters", flush=True)
        stopping = early_stopping(cfg, plan, session.run, name, first_epoch)
        if stopping is not None and stopping.already_stopped():
            print(f"phase {name}: early stopping had already ended it (no better {cfg.train.monitor} in the "
                  f"last {cfg.train.early_stopping_patience} epochs); nothing to resume", flush=True)
            continue
        seed = cfg.train.seed + 1000 * first_epoch  # a resumed run must not replay the first epochs' batches
        strategy = session.strategy
        train_ds = strategy.distribute_datasets_from_function(
            lambda ctx, seed=seed: data.make_dataset(cfg.data, cfg.data.train_split, True, plan.num_labels, ctx, seed=seed))
        val_ds = strategy.distribute_datasets_from_function(
            lambda ctx: data.make_dataset(cfg.data, cfg.data.val_split, False, plan.num_labels, ctx))
        callbacks = run_callbacks(cfg, session.run, append=start_epoch > 0 or index > 0, checkpoint=checkpoint)
        callbacks += [nan_guard, timer] + ([stopping] if stopping is not None else []) + list(options.callbacks)
        with strategy.scope():  # fit finds the strategy here when the multi-worker workaround unset it
            model.fit(train_ds, validation_data=val_ds, epochs=end_epoch, initial_epoch=first_epoch,
                      steps_per_epoch=plan.steps_per_epoch, callbacks=callbacks, verbose=verbose)
        if nan_guard.message:
            raise UserError(nan_guard.message)
    return timer, started


def run_callbacks(cfg: Config, run: RunFolder, append: bool, checkpoint) -> list:
    """History, then the checkpoints (history first: a kill between the two leaves an extra history row, which
    --resume trims), and TensorBoard when it is installed."""
    import importlib.util

    import keras

    callbacks = [keras.callbacks.CSVLogger(run.history, append=append), checkpoint]
    if importlib.util.find_spec("tensorboard") is not None:
        callbacks.append(keras.callbacks.TensorBoard(run.tensorboard, write_graph=False, profile_batch=0))
    return callbacks


def early_stopping(cfg: Config, plan: Plan, run: RunFolder, phase_name: str, first_epoch: int):
    if cfg.train.early_stopping_patience <= 0:
        return None
    from fashion_tf.callbacks import ResumedEarlyStopping

    phase_start = 0 if phase_name == "frozen backbone" else plan.freeze_epochs
    return ResumedEarlyStopping(monitor_history(run.history, cfg.train.monitor, phase_start, first_epoch),
                                monitor=cfg.train.monitor, mode=monitor_mode(cfg.train.monitor),
                                patience=cfg.train.early_stopping_patience)


def count_parameters(variables) -> int:
    return int(sum(np.prod(v.shape) for v in variables))


def print_plan(cfg: Config, plan: Plan, session: Session, start_epoch: int) -> None:
    print(
        f"training {cfg.model.backbone} on {plan.num_train} images ({plan.num_val} validation), {plan.num_labels} labels, "
        f"{cfg.data.image_size} px; {type(session.strategy).__name__} with {plan.replicas} replica(s), global batch "
        f"{plan.global_batch}, lr {plan.learning_rate:.3g}, {plan.steps_per_epoch} steps/epoch x {cfg.train.epochs} "
        f"epochs, precision {plan.policy}{', XLA' if cfg.train.xla else ''}; run folder {session.run.root}"
        + (f"; resuming after epoch {start_epoch}" if start_epoch else ""),
        flush=True,
    )


# ---- the end of a run ----------------------------------------------------------------------------
def finish(cfg: Config, plan: Plan, session: Session, model, timer, train_seconds: float, restored_best: bool,
           start_epoch: int) -> dict:
    from fashion_tf.distribute import average_non_trainable, barrier

    if cfg.train.strategy == "multi_worker":
        average_non_trainable(model, session.strategy)
    summary = make_summary(cfg, plan, session.run, timer, train_seconds, restored_best, start_epoch)
    if session.role.is_chief:
        save_outputs(cfg, plan, session.run, model, summary)
    else:
        model.save_weights(session.run.worker_weights, overwrite=True)
    if cfg.train.strategy == "multi_worker":
        barrier(session.strategy)  # a worker that exits while the chief still writes makes the chief's runtime abort
    return summary


def save_outputs(cfg: Config, plan: Plan, run: RunFolder, model, summary: dict) -> None:
    """model.keras, saved_model/, val_predictions.npz, plots, summary.json; then an overwritten run can go."""
    from fashion_tf import data
    from fashion_tf.inference import score_split

    tmp_model = run.model.with_name(f".tmp-{run.model.name}")  # model.save insists on the .keras suffix
    model.save(tmp_model)
    os.replace(tmp_model, run.model)
    export_saved_model(model, run)
    run.finish()

    dataset = data.make_dataset(cfg.data, cfg.data.val_split, False, plan.num_labels, with_ids=True)
    ids, scores, labels = score_split(model, dataset, plan.num_labels, jit_compile=cfg.train.xla)
    write_predictions(run, ids, scores, labels)
    summary["val_micro_f1_from_predictions"] = micro_f1(scores, labels) if cfg.model.head != "softmax" else None
    summary["val_examples_predicted"] = int(len(ids))
    summary["plots"] = draw_curves(run)
    write_json_atomic(run.summary, summary)
    print(summary_text(summary, run), flush=True)


def export_saved_model(model, run: RunFolder) -> None:
    """SavedModel export written beside the old one, then swapped in."""
    fresh = run.saved_model.with_name(f".tmp-{run.saved_model.name}")
    shutil.rmtree(fresh, ignore_errors=True)
    model.export(str(fresh), format="tf_saved_model", verbose=False)
    old = run.saved_model.with_name(f".old-{run.saved_model.name}")
    if run.saved_model.exists():
        os.replace(run.saved_model, old)
    os.replace(fresh, run.saved_model)
    shutil.rmtree(old, ignore_errors=True)


def draw_curves(run: RunFolder) -> list[str]:
    try:
        from fashion_tf.plots import plot_history

        return [str(p) for p in plot_history(run.history, run.plots)]
    except Exception as err:  # noqa: BLE001 - a plotting problem must not lose a trained model
        print(f"warning: could not draw the training curves ({type(err).__name__}: {err})", file=sys.stderr)
        return []


def micro_f1(scores: np.ndarray, labels: np.ndarray, threshold: float = 0.5) -> float:
    predicted = scores >= threshold
    truth = labels.astype(bool)
    tp = np.logical_and(predicted, truth).sum()
    denominator = predicted.sum() + truth.sum()
    return float(2 * tp / denominator) if denominator else 0.0


def make_summary(cfg: Config, plan: Plan, run: RunFolder, timer, train_seconds: float, restored_best: bool,
                 start_epoch: int) -> dict:
    history = read_history(run.history)
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
        "run_dir": str(run.root),
    }


def _fmt(value, spec: str) -> str:
    return "n/a" if value is None or (isinstance(value, float) and not np.isfinite(value)) else format(value, spec)


def summary_text(summary: dict, run: RunFolder) -> str:
    return (
        f"Trained {summary['epochs_run']} epoch(s) (now at epoch {summary['epochs_total']}"
        f"{', resumed after epoch ' + str(summary['resumed_from_epoch']) if summary['resumed_from_epoch'] else ''}) "
        f"in {_fmt(summary['wall_seconds'], '.0f')} s: {_fmt(summary['seconds_per_epoch'], '.1f')} s/epoch, "
        f"{_fmt(summary['train_images_per_second'], '.0f')} training images/s on {summary['replicas']} replica(s) "
        f"({summary['precision']}). Validation ({'best' if summary['restored_best'] else 'last'} epoch "
        f"{summary['final_epoch']}): micro-F1@0.5 {_fmt(summary['val_micro_f1'], '.4f')}, "
        f"PR-AUC {_fmt(summary['val_pr_auc'], '.4f')}. Model: {run.model} and {run.saved_model}/; "
        f"validation scores for the threshold search: {run.val_predictions}; curves: {run.plots}/; "
        f"history: {run.history}; checkpoints: {run.checkpoints}/ (continue with --resume)."
    )


# ---- command line --------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m fashion_tf.train",
        description="Train the multi-label classifier on TFRecord shards (see the config file for every option).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add_config_arguments(parser)
    parser.add_argument("--resume", action="store_true",
                        help="continue the run in output_dir from its last checkpoint (epoch and optimizer state)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an earlier run in output_dir (it is kept aside until this run has its model)")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    options = Options(load_config(args.config, args.override), resume=args.resume, overwrite=args.overwrite)
    train(options)
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
