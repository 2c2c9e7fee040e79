"""run(options): start or continue the study and run trials until it has --trials finished ones."""

from __future__ import annotations

import time
import warnings

from fashion_tf.errors import one_line
from fashion_tf.fileio import write_json_atomic
from fashion_tf.sweep.space import config_params
from fashion_tf.sweep.options import OUT_RECORD, Options, Setup, prepare
from fashion_tf.sweep.study import check_trial_folders, finished, open_study, state_counts
from fashion_tf.sweep.trial import TrialRunner
from fashion_tf.sweep.report import best_trial, params_text, write_outputs


MAX_WAIT_POLL_SECONDS = 30


def run(options: Options) -> int:
    """Run trials until the study has options.trials finished ones; 0 when it has, 1 when this process gave up."""
    setup = prepare(options)
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)  # the sweep prints its own line per trial
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    started = time.perf_counter()
    study = open_study(setup)
    check_trial_folders(study, setup.out)
    write_json_atomic(setup.out / OUT_RECORD, {"study": options.study, "storage": options.storage_spec,
                                               "space": options.space, "config": options.config,
                                               "overrides": list(options.overrides)})
    runner = TrialRunner(setup, study)
    counts = state_counts(study)
    print(f"[sweep {options.study}] {len(setup.dimensions)} parameters ({', '.join(d.key for d in setup.dimensions)}); "
          f"{finished(counts)} of {options.trials} trials finished so far, scored by {options.metric}, pruned on "
          f"{setup.prune_on} ({options.pruner}); storage {options.storage_spec}; trials in {setup.out / 'trials'}",
          flush=True)
    stopped = run_trials(study, runner, setup)
    written = write_outputs(study, setup)
    print(summary_text(study, setup, runner, time.perf_counter() - started, written, stopped), flush=True)
    if stopped or best_trial(study) is None:
        return 1
    return 0


def run_trials(study, runner: TrialRunner, setup: Setup) -> str:
    """Start trials until the study has enough finished ones; '' or why this process stopped early."""
    import optuna

    options = setup.options
    poll = min(options.heartbeat, MAX_WAIT_POLL_SECONDS)
    waiting_said = False
    while True:
        optuna.storages.fail_stale_trials(study)  # a dead process's trial: failed, its parameters queued again
        counts = state_counts(study)
        if finished(counts) >= options.trials:
            return ""
        if runner.consecutive_failures >= options.max_failures:
            return f"the last {runner.consecutive_failures} trials of this process failed (last: {runner.last_error})"
        if finished(counts) + counts.get("RUNNING", 0) >= options.trials:
            if not waiting_said:
                print(f"[sweep {options.study}] waiting for {counts.get('RUNNING', 0)} running trial(s) of other "
                      f"processes (one without a heartbeat for {options.grace or 2 * options.heartbeat} s is taken "
                      "over)", flush=True)
                waiting_said = True
            time.sleep(poll)
            continue
        waiting_said = False
        try:
            study.optimize(runner, n_trials=1, catch=(Exception,), callbacks=[runner.after_trial], gc_after_trial=True)
        except (optuna.exceptions.UpdateFinishedTrialError, ValueError) as err:
            if not isinstance(err, optuna.exceptions.UpdateFinishedTrialError) and "Cannot tell" not in str(err):
                raise
            # another process failed this trial as dead while it ran (its heartbeats came late): it was retried
            print(f"[sweep {options.study}] note: another process declared this process's trial dead "
                  f"({one_line(err)}); if this repeats, raise --grace", flush=True)


def summary_text(study, setup: Setup, runner: TrialRunner, seconds: float, written: dict, stopped: str) -> str:
    counts = state_counts(study)
    options = setup.options
    ran = runner.ran
    cpu = sum(r["cpu_seconds"] or 0 for r in ran)
    best = best_trial(study)
    baseline = next((t for t in study.get_trials(deepcopy=False) if t.user_attrs.get("baseline")
                     and t.state.name == "COMPLETE"), None)
    parts = [
        f"Sweep {study.study_name!r} ({options.metric}, higher is better): {finished(counts)} of {options.trials} "
        f"trials finished ({counts.get('COMPLETE', 0)} complete, {counts.get('PRUNED', 0)} pruned), "
        f"{counts.get('FAIL', 0)} failed, {counts.get('RUNNING', 0)} running elsewhere.",
        f"This process ran {len(ran)} trial(s) ({sum(r['state'] == 'FAIL' for r in ran)} failed) in {seconds:.0f} s "
        f"({cpu:.0f} CPU-s in trials" + (f", {3600 * len(ran) / seconds:.1f} trials/h)." if seconds > 0 else ")."),
    ]
    if best is not None:
        gain = ""
        if baseline is not None and baseline.number != best.number:
            gain = f", {best.value - baseline.value:+.4f} over the baseline trial {baseline.number} ({baseline.value:.4f})"
        elif baseline is not None:
            gain = " (the baseline: the base config)"
        parts.append(f"Best: trial {best.number}, {options.metric} {best.value:.4f}{gain}: "
                     f"{params_text(config_params(setup.dimensions, best.params))}.")
        parts.append(f"Best config: {written.get('best_config')} "
                     f"(python -m fashion_tf.train --config {written.get('best_config')}).")
    parts.append(f"Leaderboard: {written['leaderboard']} and .csv; plots: {len(written.get('plots', []))} in "
                 f"{setup.out / 'plots'}; storage: {options.storage_spec}.")
    if stopped:
        parts.append(f"Stopped early: {stopped}")
    return " ".join(parts)
