"""The learning-rate schedule and the optimizer.

The schedule is a function of the optimizer step only, so a resumed run continues on the same curve; the
learning rate scales linearly with the global batch (train.lr_scaling) and drops by train.fine_tune_lr_factor
once the backbone is unfrozen.
"""

from __future__ import annotations

import math

import keras

from fashion_tf.config import Config


@keras.saving.register_keras_serializable(package="fashion_tf")
class WarmupSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warmup to base_lr, then cosine to 0 / step decay / constant; x fine_tune_factor from fine_tune_step.

    A function of the optimizer step only, so a resumed run continues on the same curve. (Importing this
    module registers it: needed to load a model.keras with compile=True.)
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


def make_schedule(cfg: Config, learning_rate: float, steps_per_epoch: int, freeze_epochs: int) -> WarmupSchedule:
    """The configured schedule over the whole run, in optimizer steps."""
    return WarmupSchedule(
        base_lr=learning_rate,
        total_steps=cfg.train.epochs * steps_per_epoch,
        warmup_steps=int(round(cfg.train.warmup_epochs * steps_per_epoch)),
        kind=cfg.train.schedule,
        step_every=cfg.train.step_epochs * steps_per_epoch,
        step_factor=cfg.train.step_factor,
        fine_tune_step=freeze_epochs * steps_per_epoch if freeze_epochs > 0 else 0,
        fine_tune_factor=cfg.train.fine_tune_lr_factor,
    )
