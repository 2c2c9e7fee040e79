"""The command line: `python -m fashion_tf.sweep` (arguments -> Options -> run)."""

from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

from fashion_tf.config import add_config_arguments
from fashion_tf.errors import run_cli
from fashion_tf.sweep.options import METRICS, Options, PRUNERS, PRUNE_ON
from fashion_tf.sweep.loop import run


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows defaults, except None ones: their help says what happens when the option is absent."""

    def _get_help_string(self, action):
        return action.help if action.default is None else super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m fashion_tf.sweep",
        description="Hyper-parameter search with Optuna (TPE, pruning) over the config keys of a space file. Each "
                    "trial is a training run in OUT/trials/; the study lives in --storage, so rerunning the command "
                    "continues it and several processes or machines can share it.",
        formatter_class=_HelpFormatter,
    )
    add_config_arguments(parser)
    parser.add_argument("--space", required=True,
                        help='JSON file: config key -> {"uniform"|"log_uniform"|"int"|"log_int": [low, high]} or '
                             '{"choice": [values]}')
    parser.add_argument("--study", default="sweep", help="study name in the storage")
    parser.add_argument("--trials", type=int, default=20,
                        help="target number of finished (complete or pruned) trials in the study, over all processes "
                             "and reruns: a rerun continues to N, not N more; failed trials do not count")
    parser.add_argument("--out", default=None, help="output folder (default: runs/sweeps/<study>)")
    parser.add_argument("--storage", default=None,
                        help="SQLAlchemy URL (sqlite:///f.db, postgresql://..., mysql+pymysql://...) or a journal "
                             "file path (default: OUT/optuna.journal)")
    parser.add_argument("--metric", choices=METRICS, default="cv_micro_f1",
                        help="trial score on the validation split: micro-F1 after the threshold search (5-fold "
                             "held-out, as threshold_search --cv 5 --mode auto), micro-F1 at 0.5 or PR-AUC of the best "
                             "epoch, or mAP")
    parser.add_argument("--prune-on", choices=PRUNE_ON, default=None,
                        help="per-epoch figure the pruner compares (default: the config's train.monitor)")
    parser.add_argument("--pruner", choices=PRUNERS, default="median", help="Optuna pruner")
    parser.add_argument("--prune-startup-trials", type=int, default=3,
                        help="median pruner: trials that must complete before any is pruned")
    parser.add_argument("--prune-warmup-epochs", type=int, default=2,
                        help="no trial is pruned before this many of its epochs have run")
    parser.add_argument("--startup-trials", type=int, default=10, help="TPE: random trials before it models the results")
    parser.add_argument("--seed", type=int, default=None,
                        help="sampler seed (reproducible for one process; give each process sharing a study its own)")
    parser.add_argument("--no-baseline", dest="baseline", action="store_false",
                        help="do not make the base config itself the study's first trial")
    parser.add_argument("--cv", type=int, default=5, help="folds of the threshold search behind cv_micro_f1")
    parser.add_argument("--heartbeat", type=int, default=60, help="seconds between a running trial's heartbeats")
    parser.add_argument("--grace", type=int, default=None,
                        help="seconds without a heartbeat after which a running trial counts as dead (default: "
                             "2 x --heartbeat)")
    parser.add_argument("--max-retries", type=int, default=2, help="times a dead trial's parameters are tried again")
    parser.add_argument("--max-failures", type=int, default=3,
                        help="stop this process after this many failed trials in a row")
    return parser


def options_from_args(args: argparse.Namespace) -> Options:
    return Options(space=args.space, config=args.config, overrides=tuple(args.override), study=args.study,
                   trials=args.trials, out=args.out, storage=args.storage, metric=args.metric, prune_on=args.prune_on,
                   pruner=args.pruner, prune_startup_trials=args.prune_startup_trials,
                   prune_warmup_epochs=args.prune_warmup_epochs, startup_trials=args.startup_trials, seed=args.seed,
                   baseline=args.baseline, cv_folds=args.cv, heartbeat=args.heartbeat, grace=args.grace,
                   max_retries=args.max_retries, max_failures=args.max_failures)


def main(argv: Optional[Sequence[str]] = None) -> int:
    return run(options_from_args(build_parser().parse_args(argv)))


if __name__ == "__main__":
    sys.exit(run_cli(main))
