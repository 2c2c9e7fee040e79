"""What a sweep writes and prints: progress lines, the leaderboard (markdown, CSV), best_config.json, PNG plots."""

from __future__ import annotations

import csv
import io
import json
import math
import warnings
from pathlib import Path
from typing import Any, Sequence

from fashion_tf.errors import one_line
from fashion_tf.fileio import write_bytes_atomic
from fashion_tf.sweep.space import Dimension, config_params
from fashion_tf.sweep.stages import save_best_config, save_png, trial_config
from fashion_tf.sweep.options import METRICS, Setup
from fashion_tf.sweep.study import SURPLUS_ATTR, finished, state_counts


def progress_line(study, frozen, setup: Setup) -> str:
    attrs = frozen.user_attrs
    metric = setup.options.metric
    state = frozen.state.name
    if state == "COMPLETE":
        what = f"complete: {metric} {frozen.value:.4f}"
    elif state == "PRUNED":
        what = f"pruned after epoch {attrs.get('epochs_run')}/{attrs.get('epochs')} ({attrs.get('pruned_at', '')})"
    else:
        what = f"failed: {attrs.get('error', 'unknown error')}"
    counts = state_counts(study)
    best = best_trial(study)
    best_text = f"best {best.value:.4f} (trial {best.number})" if best else "no complete trial yet"
    return (f"[sweep {study.study_name}] trial {frozen.number} {what} | {attrs.get('epochs_run', 0)} epochs, "
            f"{attrs.get('seconds', 0):.0f} s, {attrs.get('cpu_seconds', 0):.0f} CPU-s | {best_text} | "
            f"{finished(counts)}/{setup.options.trials} finished, {counts.get('RUNNING', 0)} running, "
            f"{counts.get('FAIL', 0)} failed")


def best_trial(study):
    from optuna.trial import TrialState

    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    return max(complete, key=lambda t: (t.value, -t.number), default=None)


def leaderboard_rows(study, setup: Setup) -> list[dict]:
    """Finished and failed trials: complete ones ranked by score, then pruned, then failed."""
    order = {"COMPLETE": 0, "PRUNED": 1, "FAIL": 2}
    trials = [t for t in study.get_trials(deepcopy=False)
              if t.state.name in order and not t.user_attrs.get(SURPLUS_ATTR)]
    trials.sort(key=lambda t: (order[t.state.name], -(t.value if t.value is not None else 0), t.number))
    rows = []
    for rank, trial in enumerate(trials, start=1):
        attrs, metrics = trial.user_attrs, trial.user_attrs.get("metrics", {})
        row = {
            "rank": rank if trial.state.name == "COMPLETE" else "",
            "trial": trial.number,
            "state": trial.state.name.lower(),
            "score": trial.value if trial.state.name == "COMPLETE" else None,
            **{name: metrics.get(name) for name in METRICS},
            "cv_thresholds": metrics.get("cv_thresholds", ""),
            "epochs_run": attrs.get("epochs_run"),
            "epochs": attrs.get("epochs"),
            "seconds": attrs.get("seconds"),
            "cpu_seconds": attrs.get("cpu_seconds"),
            **{dim.key: value for dim, value in zip(setup.dimensions, _trial_values(setup.dimensions, trial))},
            "note": _note(trial),
            "host": attrs.get("host", ""),
            "run_dir": attrs.get("run_dir", ""),
        }
        rows.append(row)
    return rows


def _trial_values(dimensions: Sequence[Dimension], trial) -> list:
    params = config_params(dimensions, trial.params)
    return [params.get(dim.key) for dim in dimensions]


def _note(trial) -> str:
    attrs, notes = trial.user_attrs, []
    if attrs.get("baseline"):
        notes.append("baseline (the base config)")
    retried = trial.system_attrs.get("failed_trial", attrs.get("retry_of"))
    if retried is not None:
        notes.append(f"retry of trial {retried}")
    if trial.state.name == "PRUNED":
        notes.append(f"pruned after epoch {attrs.get('epochs_run')} ({attrs.get('pruned_at', '')})")
    if trial.state.name == "FAIL":
        notes.append(attrs.get("error") or "process died (no heartbeat)")
    return "; ".join(notes)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e-2 or abs(value) >= 1e4 else f"{value:.4f}".rstrip("0").rstrip(".")
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    return str(value)


def leaderboard_markdown(rows: list[dict], study, setup: Setup) -> str:
    counts = state_counts(study)
    options = setup.options
    lines = [f"# Sweep `{study.study_name}`: {options.metric} (higher is better)", "",
             f"{finished(counts)} of {options.trials} trials finished ({counts.get('COMPLETE', 0)} complete, "
             f"{counts.get('PRUNED', 0)} pruned on {setup.prune_on}), {counts.get('FAIL', 0)} failed, "
             f"{counts.get('RUNNING', 0)} running. Base config: `{options.config or 'defaults'}`"
             + "".join(f" `--override {o}`" for o in options.overrides) + f"; space: `{options.space}`.", ""]
    columns = ["rank", "trial", "state", "score", *METRICS, "cv_thresholds", "epochs_run", "seconds", "cpu_seconds",
               *(d.key for d in setup.dimensions), "note", "run_dir"]
    lines.append("| " + " | ".join(columns) + " |")
    lines.append("|" + "---|" * len(columns))
    for row in rows:
        cells = [_cell(row[c]).replace("|", "\\|") for c in columns]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Plots: [history](plots/optimization_history.png), [importances](plots/param_importances.png), "
                  "[parallel coordinates](plots/parallel_coordinate.png), "
                  "[per-epoch values](plots/intermediate_values.png).", ""]
    return "\n".join(lines)


def write_outputs(study, setup: Setup, plots: bool = True) -> dict:
    """Leaderboard (md, csv), best config and (with plots) the PNGs; returns what was written."""
    out = setup.out
    rows = leaderboard_rows(study, setup)
    written = {"leaderboard": out / "leaderboard.md"}
    buffer = io.StringIO()
    if rows:
        writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows({k: json.dumps(v) if isinstance(v, (list, dict)) else v for k, v in r.items()} for r in rows)
    write_bytes_atomic(out / "leaderboard.csv", buffer.getvalue().encode("utf-8"))
    write_bytes_atomic(out / "leaderboard.md", leaderboard_markdown(rows, study, setup).encode("utf-8"))
    best = best_trial(study)
    if best is not None:
        best_cfg = trial_config(setup.base, config_params(setup.dimensions, best.params), out / "best",
                                f"trial {best.number}")
        save_best_config(best_cfg, out / "best_config.json")
        written["best_config"] = out / "best_config.json"
    if plots:
        written["plots"] = write_plots(study, out / "plots", setup.prune_on)
    return written


def write_plots(study, folder: Path, prune_on: str) -> list[Path]:
    """Optuna's matplotlib views; one that cannot be drawn yet (e.g. importances before two complete trials) is
    skipped with a note."""
    import matplotlib

    matplotlib.use("Agg")
    from optuna.visualization import matplotlib as views

    written = []
    for name, draw in (("optimization_history", views.plot_optimization_history),
                       ("param_importances", views.plot_param_importances),
                       ("parallel_coordinate", views.plot_parallel_coordinate),
                       ("intermediate_values", views.plot_intermediate_values)):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # experimental-API and few-trials notes, not problems
                axes = draw(study)
            if name == "intermediate_values":
                axes.set_xlabel("epoch")
                axes.set_ylabel(prune_on + (" (negated)" if prune_on.endswith("loss") else ""))
            figure = getattr(axes, "figure", None) or axes.flat[0].figure
            figure.set_size_inches(max(figure.get_size_inches()[0], 9), max(figure.get_size_inches()[1], 5))
            written.append(save_png(figure, folder / f"{name}.png"))
        except Exception as err:  # noqa: BLE001 - a plot that cannot be drawn yet must not end the sweep
            print(f"note: no {name} plot yet ({type(err).__name__}: {one_line(err)})", flush=True)
    return written


def params_text(params: dict) -> str:
    return ", ".join(f"{key}={_cell(value)}" for key, value in params.items())


def score_text(value: Any) -> str:
    return "n/a" if value is None or not math.isfinite(float(value)) else f"{float(value):.4f}"
