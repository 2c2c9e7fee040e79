"""Hyper-parameter search over the config tree with Optuna: TPE sampling, pruning on per-epoch validation figures,
a study in a database that a rerun continues and that several processes or machines share.

    python -m fashion_tf.sweep --config configs/fashion_products.json --space configs/sweeps/fashion_products.json \
        --study fp --trials 24 --storage sqlite:///runs/sweeps/fp.db --out runs/sweeps/fp

Space file: a JSON object from config keys (as --override names them) to one distribution each:
    {"train.learning_rate": {"log_uniform": [1e-4, 1e-2]}, "loss.label_smoothing": {"uniform": [0, 0.3]},
     "model.width": {"int": [16, 48], "step": 16}, "data.augment": {"choice": [["flip"], ["crop", "flip"]]}}
Kinds: uniform, log_uniform (float fields), int, log_int (integer fields), choice (any values the field takes);
"step" is optional for uniform and int. The file is checked against the config dataclasses before anything is
written: an unknown key, a value the field does not take or a bad range is one line naming the key.

Each trial is an ordinary training run in OUT/trials/trial-NNNN (its own folder, never reused; config.json there
re-runs it with `python -m fashion_tf.train --config`, or resumes a pruned one with --resume). It is scored on the
validation split by --metric (default cv_micro_f1: micro-F1 after the threshold search, held-out over 5 folds,
as `python -m fashion_tf.threshold_search --cv 5 --mode auto` reports it). Every epoch's --prune-on figure goes
to the pruner, which stops trials that trail the others at the same epoch. Unless --no-baseline, the study's
first trial is the base config itself (when the space contains its values), so the leaderboard shows the recipe.

--trials N is the study's target of finished (complete or pruned) trials, summed over every process and rerun:
a rerun after a kill continues to N, not N more. Processes sharing the study stop starting trials when N are
finished or running; one with nothing to start waits for the running ones, and takes over a trial whose process
died (no heartbeat for --grace seconds): that trial is marked failed and its parameters are tried again in a new
trial (up to --max-retries times). Failed trials do not count towards N.

Storage (--storage): an SQLAlchemy URL (sqlite:///file.db on one machine; postgresql://... or mysql+pymysql://...
for machines sharing a study; drivers installed separately), or a file path for Optuna's journal file (default
OUT/optuna.journal; safe for several processes on one machine or on a shared file system).

Outputs in --out: trials/, leaderboard.md and leaderboard.csv, best_config.json (the best trial's config, output
folder OUT/best: `python -m fashion_tf.train --config OUT/best_config.json`), plots/ (optimisation history,
parameter importances, parallel coordinates, per-epoch values with the pruned trials), sweep.json.

One module per concern, in the order a sweep runs:
    space.py     the space file: Dimension, load_space, checked against the config dataclasses
    stages.py    every call into the rest of fashion_tf (config, shard folder, train, threshold search, metrics)
    storage.py   open_storage: SQLAlchemy URL or journal file, heartbeats, retries of dead trials
    options.py   Options, Setup and prepare(options): everything checked before anything is written
    study.py     open_study (sampler, pruner, the same config and space as before), trial counts
    trial.py     TrialRunner: one training run per trial, pruned per epoch, then scored
    report.py    progress lines, leaderboard.md/.csv, best_config.json, plots/*.png
    loop.py      run(options): trials until --trials are finished, then the summary
    __main__.py  the command line (arguments -> Options -> run)
"""

from fashion_tf.sweep.loop import run
from fashion_tf.sweep.options import Options

__all__ = ["Options", "run"]
