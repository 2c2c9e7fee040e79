"""The Keras callbacks of a training run: epoch checkpoints, resumable early stopping, a NaN guard, a timer."""

from __future__ import annotations

import math
import sys
import time
from typing import Optional, Sequence

import keras
import numpy as np

from fashion_tf.checkpoints import monitor_mode, save_epoch, save_weights
from fashion_tf.run_folder import RunFolder


class EpochCheckpoint(keras.callbacks.Callback):
    """After every epoch: the best weights when the monitored value improved, then the epoch's checkpoint
    (fashion_tf.checkpoints: every weights file is written where it fits, under a temporary name)."""

    def __init__(self, run: RunFolder, monitor: str, best: Optional[float]):
        super().__init__()
        self.run = run
        self.monitor = monitor
        self.mode = monitor_mode(monitor)
        self.best = best

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        if value is not None and np.isfinite(value):
            better = self.best is None or (value > self.best if self.mode == "max" else value < self.best)
            if better:
                self.best = float(value)
                save_weights(self.model, self.run.best_weights)
        save_epoch(self.model, self.run, epoch + 1, self.best, self.monitor)


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
