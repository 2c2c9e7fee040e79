"""Opening the study (sampler, pruner, the same base config and space as before) and counting its trials."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

from fashion_tf.errors import UserError
from fashion_tf.sweep.space import base_values
from fashion_tf.sweep.stages import config_from
from fashion_tf.sweep.storage import open_storage
from fashion_tf.sweep.options import Options, Setup


STUDY_ATTR = "fashion_tf_sweep"
SURPLUS_ATTR = "surplus"


def open_study(setup: Setup):
    """Create or load the study; the process that creates it records what the others must agree on and queues the
    baseline trial."""
    import optuna

    options = setup.options
    storage = open_storage(options.storage_spec, options.heartbeat, options.grace, options.max_retries)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        sampler = optuna.samplers.TPESampler(seed=options.seed, n_startup_trials=options.startup_trials)
    pruner = make_pruner(options, setup.base["train"]["epochs"])
    try:
        study = optuna.create_study(study_name=options.study, storage=storage, sampler=sampler, pruner=pruner,
                                    direction="maximize")
    except optuna.exceptions.DuplicatedStudyError:
        study = optuna.load_study(study_name=options.study, storage=storage, sampler=sampler, pruner=pruner)
        check_same_study(study, setup)
        return study
    study.set_user_attr(STUDY_ATTR, setup.study_record())
    if options.baseline:
        params, why_not = base_values(setup.dimensions, config_from(setup.base, "the base config"))
        if params is None:
            print(f"note: no baseline trial: {why_not}", flush=True)
        else:
            study.enqueue_trial(params, user_attrs={"baseline": True})
    return study


def make_pruner(options: Options, epochs: int):
    import optuna

    if options.pruner == "none":
        return optuna.pruners.NopPruner()
    if options.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=max(1, options.prune_warmup_epochs),
                                              max_resource=max(epochs, 1))
    return optuna.pruners.MedianPruner(n_startup_trials=options.prune_startup_trials,
                                       n_warmup_steps=options.prune_warmup_epochs)


def check_same_study(study, setup: Setup) -> None:
    from optuna.study import StudyDirection

    where = f"study {setup.options.study!r} in {setup.options.storage_spec}"
    if study.direction != StudyDirection.MAXIMIZE or len(study.directions) != 1:
        raise UserError(f"{where}: not a fashion_tf.sweep study (it does not maximise one value); use another --study")
    recorded = study.user_attrs.get(STUDY_ATTR)
    if recorded is None:
        return  # its creator is about to record it
    ours = setup.study_record()
    for part, flag in (("metric", "--metric"), ("prune_on", "--prune-on"), ("space", "--space"),
                       ("base_config", "--config/--override")):
        if recorded.get(part) != ours[part]:
            raise UserError(f"{where} was started with another {part.replace('_', ' ')} "
                            f"({_first_difference(recorded.get(part), ours[part])}); use the same {flag} or "
                            "another --study")


def _first_difference(theirs: Any, ours: Any, prefix: str = "") -> str:
    if isinstance(theirs, dict) and isinstance(ours, dict):
        for key in sorted(set(theirs) | set(ours)):
            if theirs.get(key) != ours.get(key):
                return _first_difference(theirs.get(key), ours.get(key), f"{prefix}{key}.")
    return f"{prefix.rstrip('.') or 'value'}: {json.dumps(theirs)} there, {json.dumps(ours)} here"


def check_trial_folders(study, out: Path) -> None:
    """A trial folder beyond the study's trials means --out belonged to another storage; its runs must not be reused."""
    known = len(study.get_trials(deepcopy=False))
    for folder in sorted((out / "trials").glob("trial-*")):
        number = folder.name.removeprefix("trial-")
        if number.isdigit() and int(number) >= known:
            raise UserError(f"{folder}: study {study.study_name!r} has no trial {int(number)} (was the storage "
                            "replaced?); use another --out")


def state_counts(study) -> dict[str, int]:
    counts: dict[str, int] = {}
    for trial in study.get_trials(deepcopy=False):
        if not trial.user_attrs.get(SURPLUS_ATTR):
            counts[trial.state.name] = counts.get(trial.state.name, 0) + 1
    return counts


def finished(counts: dict[str, int]) -> int:
    return counts.get("COMPLETE", 0) + counts.get("PRUNED", 0)
