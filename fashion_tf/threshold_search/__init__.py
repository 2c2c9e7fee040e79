"""Exact F1-optimal decision thresholds from a run's validation scores: `python -m fashion_tf.threshold_search`.

Reads RUN/val_predictions.npz and RUN/label_map.json (through fashion_tf.run_folder); writes thresholds.json,
threshold_report.{md,json} and plots/*.png in the run folder. A label is predicted positive when
`score >= threshold`. No TensorFlow is imported.

One module per concern, in the order the data flows:
    metrics.py           F1 at given thresholds: apply_thresholds, f1_scores, metrics_from_counts
    sweep.py             every useful cut of one label's scores, exactly (sort once, no grid)
    global_threshold.py  the exact best single threshold for all labels (branch and bound; samples sweep)
    best.py              best_thresholds: per-label cuts, the min-positives fallback, micro coordinate ascent
    cross_validation.py  cv_folds, cross_validate, and the `--mode auto` choice on held-out folds
    report.py            the report dict, its markdown, JSON-ready values
    plots.py             F1 curves and the PNG plots
    search.py            Options and search(options): the whole stage on a run folder
    __main__.py          the command line (arguments -> Options -> search)
"""

from fashion_tf.threshold_search.best import best_thresholds
from fashion_tf.threshold_search.cross_validation import cross_validate
from fashion_tf.threshold_search.metrics import apply_thresholds, f1_scores
from fashion_tf.threshold_search.search import Options, search

__all__ = ["Options", "search", "best_thresholds", "cross_validate", "f1_scores", "apply_thresholds"]
