"""One trial: an ordinary training run in its own folder, pruned on its per-epoch figures, then scored."""

from __future__ import annotations

import math
import os
import socket
import time
import traceback

from fashion_tf.errors import UserError, one_line
from fashion_tf.sweep.stages import monitor_sign, score_run, train_run, trial_config
from fashion_tf.sweep.options import Setup
from fashion_tf.sweep.study import SURPLUS_ATTR
from fashion_tf.sweep.report import params_text, progress_line, score_text, write_outputs


class SurplusTrial(Exception):
    """Another process claimed the last of --trials at the same moment; this trial stops before it starts."""


class TrialRunner:
    """The Optuna objective: one training run per trial, plus the per-trial progress line (an optimize callback)."""

    def __init__(self, setup: Setup, study):
        self.setup = setup
        self.study = study
        self.host = socket.gethostname()
        self.ran: list[dict] = []  # this process's trials: number, state, seconds, cpu_seconds
        self.consecutive_failures = 0
        self.last_error = ""

    # objective
    def __call__(self, trial) -> float:
        import optuna

        if self._is_surplus(trial):
            self._give_back(trial)
            raise SurplusTrial(f"trial {trial.number}: {self.setup.options.trials} trials were already claimed")
        options, out = self.setup.options, self.setup.out
        run_dir = out / "trials" / f"trial-{trial.number:04d}"
        for name, value in (("run_dir", str(run_dir)), ("host", self.host), ("pid", os.getpid())):
            trial.set_user_attr(name, value)
        started, cpu_started = time.perf_counter(), time.process_time()
        reporter = None
        try:
            params = {dim.key: dim.suggest(trial) for dim in self.setup.dimensions}
            cfg = trial_config(self.setup.base, params, run_dir, f"trial {trial.number} ({params_text(params)})")
            trial.set_user_attr("epochs", cfg.train.epochs)
            reporter = pruning_reporter(trial, self.setup.prune_on, cfg.train.epochs)
            summary = train_run(cfg, [reporter])
            scores = score_run(run_dir, summary, options.cv_folds)
        except optuna.TrialPruned:
            raise
        except KeyboardInterrupt:
            trial.set_user_attr("error", "interrupted")
            self.study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number})  # nothing done is lost
            raise
        except Exception as err:
            trial.set_user_attr("error", f"{type(err).__name__}: {one_line(err)}")
            if not isinstance(err, UserError):  # a crash, not a bad setting: keep its traceback in the log
                traceback.print_exc()
            raise
        finally:
            trial.set_user_attr("seconds", round(time.perf_counter() - started, 1))
            trial.set_user_attr("cpu_seconds", round(time.process_time() - cpu_started, 1))
            trial.set_user_attr("epochs_run", reporter.epochs_run if reporter else 0)
        trial.set_user_attr("metrics", scores)
        value = scores[options.metric]
        if value is None:
            raise UserError(f"trial {trial.number}: {options.metric} could not be computed")
        return value

    def _is_surplus(self, trial) -> bool:
        from optuna.trial import TrialState

        claimed = [t for t in self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED,
                                                                           TrialState.RUNNING))
                   if t.number < trial.number and not t.user_attrs.get(SURPLUS_ATTR)]
        return len(claimed) >= self.setup.options.trials

    def _give_back(self, trial) -> None:
        """A queued trial (baseline or retry) popped as surplus is queued again, for a later, larger --trials."""
        trial.set_user_attr(SURPLUS_ATTR, True)
        frozen = next(t for t in self.study.get_trials(deepcopy=False) if t.number == trial.number)
        queued = frozen.params or frozen.system_attrs.get("fixed_params")
        if queued:
            self.study.enqueue_trial(queued, user_attrs={k: v for k, v in frozen.user_attrs.items() if k != SURPLUS_ATTR})

    # optimize callback
    def after_trial(self, study, frozen) -> None:
        if frozen.user_attrs.get(SURPLUS_ATTR):
            return
        attrs = frozen.user_attrs
        self.ran.append({"number": frozen.number, "state": frozen.state.name,
                         "seconds": attrs.get("seconds", 0.0), "cpu_seconds": attrs.get("cpu_seconds", 0.0)})
        if frozen.state.name == "FAIL":
            self.consecutive_failures += 1
            self.last_error = attrs.get("error", "unknown error")
        else:
            self.consecutive_failures = 0
        print(progress_line(study, frozen, self.setup), flush=True)
        write_outputs(study, self.setup, plots=False)


def pruning_reporter(trial, monitor: str, epochs: int):
    """A Keras callback: each epoch's `monitor` goes to the trial; when the pruner says so, it raises TrialPruned
    (after train's own callbacks wrote that epoch's history row and checkpoint, so the run can be resumed)."""
    import keras
    import optuna

    sign = monitor_sign(monitor)

    class ReportToPruner(keras.callbacks.Callback):
        epochs_run = 0

        def on_epoch_end(self, epoch, logs=None):
            self.epochs_run = epoch + 1
            value = (logs or {}).get(monitor)
            line = f"  trial {trial.number} epoch {epoch + 1}/{epochs}: {monitor} {score_text(value)}"
            if value is None or not math.isfinite(float(value)):
                print(line, flush=True)
                return
            trial.report(sign * float(value), step=epoch + 1)
            if epoch + 1 < epochs and trial.should_prune():  # after the last epoch there is nothing left to save
                print(f"{line} -> pruned", flush=True)
                trial.set_user_attr("pruned_at", f"{monitor} {float(value):.4f}")
                raise optuna.TrialPruned(f"after epoch {epoch + 1}: {monitor} {float(value):.4f}")
            print(line, flush=True)

    return ReportToPruner()
