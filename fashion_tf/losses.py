"""Multi-label losses on sigmoid probabilities, computed in float32: focal, weighted BCE and ASL.

    make_loss(loss_cfg, label_counts=None, num_examples=None) -> keras.losses.Loss
    make_group_softmax_loss(...)   per-group cross-entropy for the group_softmax head

Every loss takes y_true multi-hot [B, C] and y_pred probabilities [B, C] (the model's float32 sigmoid
output), returns one value per example (the mean over the C labels) and Keras averages over the batch.
Probabilities are clipped to [EPSILON, 1 - EPSILON] before the logs.

Per-label weights from label frequencies ("inverse_frequency", for focal alpha and bce pos_weight):
    raw_c = total / (count_c * C)      total = sum of counts, count_c clipped to >= 1
    w_c   = raw_c / geometric_mean(raw)   then clipped to [1/MAX_WEIGHT, MAX_WEIGHT]
Dividing by the geometric mean makes a label of typical (geometric-mean) frequency weigh 1, whatever
`total` is, so the overall loss scale matches the unweighted loss; the geometric mean (not the arithmetic
one) keeps a handful of labels seen once from shrinking every other weight. bce uses w_c as pos_weight;
focal needs alpha in (0, 1) (positives weigh alpha, negatives 1 - alpha), so alpha_c = w_c / (1 + w_c):
the positive:negative weight ratio of label c is w_c, a typical label gets alpha 0.5, rare labels -> 1.
"""

from __future__ import annotations

from typing import Mapping, Optional, Sequence, Union

import keras
import numpy as np

from fashion_tf.config import LossConfig
from fashion_tf.errors import UserError
from fashion_tf.labels import labels_outside_groups

EPSILON = 1e-7
MAX_WEIGHT = 100.0
INVERSE_FREQUENCY = "inverse_frequency"


def inverse_frequency_weights(label_counts: Sequence[float]) -> np.ndarray:
    """Per-label weights w_c (see the module docstring), float32 [C]."""
    counts = np.maximum(np.asarray(label_counts, dtype=np.float64), 1.0)
    if counts.ndim != 1 or counts.size == 0:
        raise UserError("label counts for inverse_frequency weights must be a non-empty vector")
    raw = counts.sum() / (counts * counts.size)
    weights = raw / np.exp(np.mean(np.log(raw)))
    return np.clip(weights, 1.0 / MAX_WEIGHT, MAX_WEIGHT).astype(np.float32)


def inverse_frequency_alpha(label_counts: Sequence[float]) -> np.ndarray:
    weights = inverse_frequency_weights(label_counts).astype(np.float64)
    return (weights / (1.0 + weights)).astype(np.float32)


def _as_weight(value, name: str):
    """A scalar stays a float; a list/array becomes a float32 vector; None stays None."""
    if value is None or isinstance(value, (int, float)):
        return None if value is None else float(value)
    return np.asarray(value, dtype=np.float32)


def _config_value(value):
    return value.tolist() if isinstance(value, np.ndarray) else value


class _MultiLabelLoss(keras.losses.Loss):
    def __init__(self, label_smoothing: float = 0.0, name=None, reduction="sum_over_batch_size", dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.label_smoothing = float(label_smoothing)

    def _prepare(self, y_true, y_pred):
        ops = keras.ops
        y_pred = ops.clip(ops.cast(y_pred, "float32"), EPSILON, 1.0 - EPSILON)
        y_true = ops.cast(y_true, "float32")
        if self.label_smoothing > 0:
            y_true = y_true * (1.0 - self.label_smoothing) + 0.5 * self.label_smoothing
        return y_true, y_pred

    def get_config(self):
        config = super().get_config()
        config["label_smoothing"] = self.label_smoothing
        return config


@keras.saving.register_keras_serializable(package="fashion_tf")
class FocalLoss(_MultiLabelLoss):
    """Binary focal loss (Lin et al. 2017): -alpha_t (1 - p_t)^gamma log(p_t), per label.

    alpha: None (no class weighting), a scalar in [0, 1] or a per-label vector; positives are weighted
    by alpha, negatives by 1 - alpha.
    """

    def __init__(self, gamma: float = 2.0, alpha: Union[None, float, Sequence[float]] = 0.25, **kwargs):
        kwargs.setdefault("name", "focal_loss")
        super().__init__(**kwargs)
        self.gamma = float(gamma)
        self.alpha = _as_weight(alpha, "alpha")

    def call(self, y_true, y_pred):
        ops = keras.ops
        y_true, p = self._prepare(y_true, y_pred)
        cross_entropy = -(y_true * ops.log(p) + (1.0 - y_true) * ops.log(1.0 - p))
        p_t = y_true * p + (1.0 - y_true) * (1.0 - p)
        loss = ops.power(1.0 - p_t, self.gamma) * cross_entropy
        if self.alpha is not None:
            alpha = ops.convert_to_tensor(self.alpha, dtype="float32")
            loss = (y_true * alpha + (1.0 - y_true) * (1.0 - alpha)) * loss
        return ops.mean(loss, axis=-1)

    def get_config(self):
        return {**super().get_config(), "gamma": self.gamma, "alpha": _config_value(self.alpha)}


@keras.saving.register_keras_serializable(package="fashion_tf")
class WeightedBinaryCrossentropy(_MultiLabelLoss):
    """-(pos_weight * y log p + (1 - y) log(1 - p)); pos_weight None, a scalar or a per-label vector."""

    def __init__(self, pos_weight: Union[None, float, Sequence[float]] = None, **kwargs):
        kwargs.setdefault("name", "bce_loss")
        super().__init__(**kwargs)
        self.pos_weight = _as_weight(pos_weight, "pos_weight")

    def call(self, y_true, y_pred):
        ops = keras.ops
        y_true, p = self._prepare(y_true, y_pred)
        positive = y_true * ops.log(p)
        if self.pos_weight is not None:
            positive = positive * ops.convert_to_tensor(self.pos_weight, dtype="float32")
        return ops.mean(-(positive + (1.0 - y_true) * ops.log(1.0 - p)), axis=-1)

    def get_config(self):
        return {**super().get_config(), "pos_weight": _config_value(self.pos_weight)}


@keras.saving.register_keras_serializable(package="fashion_tf")
class AsymmetricLoss(_MultiLabelLoss):
    """ASL (Ridnik et al. 2021, "Asymmetric Loss For Multi-Label Classification"), per label:

        positives: -(1 - p)^gamma_pos log(p)
        negatives: -p_m^gamma_neg log(1 - p_m),   p_m = max(p - clip, 0)   (probability shifting)

    The shift discards easy negatives (p < clip) entirely and gamma_neg > gamma_pos down-weights the
    remaining negatives more than the positives.
    """

    def __init__(self, gamma_pos: float = 0.0, gamma_neg: float = 4.0, clip: float = 0.05, **kwargs):
        kwargs.setdefault("name", "asymmetric_loss")
        super().__init__(**kwargs)
        self.gamma_pos = float(gamma_pos)
        self.gamma_neg = float(gamma_neg)
        self.clip = float(clip)

    def call(self, y_true, y_pred):
        ops = keras.ops
        y_true, p = self._prepare(y_true, y_pred)
        p_shifted = ops.maximum(p - self.clip, 0.0) if self.clip > 0 else p
        positive = ops.power(1.0 - p, self.gamma_pos) * ops.log(p)
        negative = ops.power(p_shifted, self.gamma_neg) * ops.log(ops.maximum(1.0 - p_shifted, EPSILON))
        return ops.mean(-(y_true * positive + (1.0 - y_true) * negative), axis=-1)

    def get_config(self):
        return {
            **super().get_config(),
            "gamma_pos": self.gamma_pos,
            "gamma_neg": self.gamma_neg,
            "clip": self.clip,
        }


def _resolve_weight(value, key: str, label_counts, transform):
    if value != INVERSE_FREQUENCY:
        return value
    if label_counts is None:
        raise UserError(f"{key}: \"inverse_frequency\" needs the training split's label counts (shard_info.json)")
    return transform(label_counts)


def make_loss(
    loss_cfg: LossConfig,
    label_counts: Optional[Sequence[float]] = None,
    num_examples: Optional[int] = None,
) -> keras.losses.Loss:
    """The configured loss. label_counts (examples per label in the training split) feed "inverse_frequency".

    num_examples is only used to check the counts (no label can occur in more examples than there are);
    the weights are normalised, so their scale does not depend on it.
    """
    if label_counts is not None and num_examples is not None and np.max(label_counts, initial=0) > num_examples:
        raise UserError(f"label counts exceed the number of training examples ({num_examples})")
    if loss_cfg.name == "focal":
        alpha = _resolve_weight(loss_cfg.alpha, "loss.alpha", label_counts, inverse_frequency_alpha)
        if isinstance(alpha, float) and not 0.0 <= alpha <= 1.0:
            raise UserError(f"loss.alpha: must be in [0, 1], got {alpha}")
        return FocalLoss(gamma=loss_cfg.gamma, alpha=alpha, label_smoothing=loss_cfg.label_smoothing)
    if loss_cfg.name == "bce":
        pos_weight = _resolve_weight(loss_cfg.pos_weight, "loss.pos_weight", label_counts, inverse_frequency_weights)
        if isinstance(pos_weight, float) and pos_weight <= 0:
            raise UserError(f"loss.pos_weight: must be positive, got {pos_weight}")
        return WeightedBinaryCrossentropy(pos_weight=pos_weight, label_smoothing=loss_cfg.label_smoothing)
    if loss_cfg.name == "asl":
        if not 0.0 <= loss_cfg.clip < 1.0:
            raise UserError(f"loss.clip: must be in [0, 1), got {loss_cfg.clip}")
        return AsymmetricLoss(
            gamma_pos=loss_cfg.gamma_pos,
            gamma_neg=loss_cfg.gamma_neg,
            clip=loss_cfg.clip,
            label_smoothing=loss_cfg.label_smoothing,
        )
    raise UserError(f"loss.name: unknown loss {loss_cfg.name!r} (known: focal, bce, asl)")


@keras.saving.register_keras_serializable(package="fashion_tf")
class GroupSoftmaxLoss(keras.losses.Loss):
    """For a group_softmax head: cross-entropy within each single-choice group, a multi-label loss for the rest.

    Per example: (sum over groups the image has a label in of w_g * -sum_i y_i log p_i
                  + the independent labels' loss summed over them) / (sum of w_g + independent labels).
    An image without a label in a group (the attribute is unknown) adds nothing for that group. The group
    weights w_g default to 1.
    """

    def __init__(self, groups, num_labels: int, independent_loss=None, label_smoothing: float = 0.0,
                 group_weights=None, **kwargs):
        kwargs.setdefault("name", "group_softmax_loss")
        super().__init__(**kwargs)
        self.groups = [[int(i) for i in group] for group in groups]
        self.num_labels = int(num_labels)
        self.independent = labels_outside_groups(self.groups, self.num_labels)
        if isinstance(independent_loss, dict):
            independent_loss = keras.saving.deserialize_keras_object(independent_loss)
        if self.independent and independent_loss is None:
            raise ValueError("group_softmax: labels outside the groups need an independent (multi-label) loss")
        self.independent_loss = independent_loss
        self.label_smoothing = float(label_smoothing)
        self.group_weights = [1.0] * len(self.groups) if group_weights is None else [float(w) for w in group_weights]
        if len(self.group_weights) != len(self.groups) or any(w < 0 for w in self.group_weights):
            raise ValueError("group_softmax: one non-negative weight per group needed")

    def call(self, y_true, y_pred):
        ops = keras.ops
        y_true = ops.cast(y_true, "float32")
        p = ops.clip(ops.cast(y_pred, "float32"), EPSILON, 1.0)
        total = 0.0
        for group, weight in zip(self.groups, self.group_weights):
            target = ops.take(y_true, group, axis=-1)
            has_label = ops.cast(ops.sum(target, axis=-1) > 0, "float32")
            if self.label_smoothing > 0:
                target = target * (1.0 - self.label_smoothing) + self.label_smoothing / len(group)
            cross_entropy = -ops.sum(target * ops.log(ops.take(p, group, axis=-1)), axis=-1)
            total = total + weight * has_label * cross_entropy
        if self.independent:
            independent = self.independent_loss.call(
                ops.take(y_true, self.independent, axis=-1), ops.take(y_pred, self.independent, axis=-1)
            )
            total = total + independent * len(self.independent)
        return total / (sum(self.group_weights) + len(self.independent))

    def get_config(self):
        config = super().get_config()
        inner = None if self.independent_loss is None else keras.saving.serialize_keras_object(self.independent_loss)
        return {**config, "groups": self.groups, "num_labels": self.num_labels, "independent_loss": inner,
                "label_smoothing": self.label_smoothing, "group_weights": self.group_weights}


def make_group_softmax_loss(
    loss_cfg: LossConfig, groups: Mapping[str, Sequence[int]], num_labels: int,
    label_counts: Optional[Sequence[float]] = None, num_examples: Optional[int] = None,
) -> GroupSoftmaxLoss:
    """Cross-entropy per single-choice group (name -> label indices), weighted by loss.group_weights, plus the
    configured loss (loss.name) on the other labels."""
    unknown = sorted(set(loss_cfg.group_weights) - set(groups))
    if unknown:
        raise UserError(f"loss.group_weights: {', '.join(map(repr, unknown))} is not a single-choice group of the data "
                        f"(groups: {', '.join(groups) or 'none'})")
    weights = [loss_cfg.group_weights.get(name, 1.0) for name in groups]
    independent = labels_outside_groups(list(groups.values()), num_labels)
    if sum(weights) + len(independent) == 0:
        raise UserError("loss.group_weights: every group weighs 0 and no other label has a loss: nothing to train")
    inner = None
    if independent:
        counts = None if label_counts is None else np.asarray(label_counts)[independent]
        inner = make_loss(loss_cfg, counts, num_examples)
    return GroupSoftmaxLoss(list(groups.values()), num_labels, inner, label_smoothing=loss_cfg.label_smoothing,
                            group_weights=weights)


def make_softmax_loss(loss_cfg: LossConfig) -> keras.losses.Loss:
    """Categorical cross-entropy for model.head == "softmax" (one label per image)."""
    return keras.losses.CategoricalCrossentropy(label_smoothing=loss_cfg.label_smoothing, name="categorical_crossentropy")
