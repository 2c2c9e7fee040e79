"""Loss values against numbers worked out by hand (math.log on the formulas), not by the code under test."""

from __future__ import annotations

import math

import keras
import numpy as np
import pytest

from fashion_tf.config import LossConfig
from fashion_tf.errors import UserError
from fashion_tf.losses import (
    AsymmetricLoss,
    FocalLoss,
    GroupSoftmaxLoss,
    WeightedBinaryCrossentropy,
    inverse_frequency_alpha,
    inverse_frequency_weights,
    make_group_softmax_loss,
    make_loss,
)


def value(loss, y_true, y_pred) -> float:
    return float(loss(np.asarray(y_true, np.float32), np.asarray(y_pred, np.float32)))


def test_focal_loss_worked_example():
    # label 0 positive, p=0.9: p_t=0.9, weight alpha=0.25, modulation (1-0.9)^2
    # label 1 negative, p=0.2: p_t=0.8, weight 1-alpha=0.75, modulation 0.2^2
    expected = (0.25 * 0.1**2 * -math.log(0.9) + 0.75 * 0.2**2 * -math.log(0.8)) / 2
    assert value(FocalLoss(gamma=2.0, alpha=0.25), [[1, 0]], [[0.9, 0.2]]) == pytest.approx(expected, rel=1e-5)
    assert expected == pytest.approx(0.0034789, rel=1e-4)


def test_focal_loss_per_label_alpha_and_batch_mean():
    alpha = [0.9, 0.5]
    example_1 = (0.9 * 0.4**2 * -math.log(0.6) + 0.5 * 0.3**2 * -math.log(0.7)) / 2  # y=[1,0], p=[0.6,0.3]
    example_2 = (0.1 * 0.5**2 * -math.log(0.5) + 0.5 * 0.1**2 * -math.log(0.9)) / 2  # y=[0,1], p=[0.5,0.9]
    got = value(FocalLoss(gamma=2.0, alpha=alpha), [[1, 0], [0, 1]], [[0.6, 0.3], [0.5, 0.9]])
    assert got == pytest.approx((example_1 + example_2) / 2, rel=1e-5)


def test_focal_loss_without_alpha_and_gamma_zero_is_binary_cross_entropy():
    y, p = [[1, 0, 1]], [[0.7, 0.4, 0.2]]
    expected = (-math.log(0.7) - math.log(0.6) - math.log(0.2)) / 3
    assert value(FocalLoss(gamma=0.0, alpha=None), y, p) == pytest.approx(expected, rel=1e-5)


def test_weighted_bce_worked_example():
    # positives weighted 3: labels 0 and 2 are positive
    expected = (3 * -math.log(0.8) + -math.log(0.7) + 3 * -math.log(0.4)) / 3
    assert value(WeightedBinaryCrossentropy(pos_weight=3.0), [[1, 0, 1]], [[0.8, 0.3, 0.4]]) == pytest.approx(
        expected, rel=1e-5
    )
    plain = (-math.log(0.8) - math.log(0.7) - math.log(0.4)) / 3
    assert value(WeightedBinaryCrossentropy(), [[1, 0, 1]], [[0.8, 0.3, 0.4]]) == pytest.approx(plain, rel=1e-5)


def test_asymmetric_loss_worked_example():
    # gamma_pos=1, gamma_neg=4, clip=0.05; y=[1,0,0], p=[0.7,0.6,0.03]
    positive = (1 - 0.7) ** 1 * -math.log(0.7)
    negative_hard = 0.55**4 * -math.log(1 - 0.55)  # p_m = 0.6 - 0.05
    negative_easy = 0.0  # p_m = max(0.03 - 0.05, 0) = 0: discarded
    expected = (positive + negative_hard + negative_easy) / 3
    got = value(AsymmetricLoss(gamma_pos=1.0, gamma_neg=4.0, clip=0.05), [[1, 0, 0]], [[0.7, 0.6, 0.03]])
    assert got == pytest.approx(expected, rel=1e-5)
    assert expected == pytest.approx(0.060024, rel=1e-4)


def test_asymmetric_loss_without_focusing_or_shift_is_binary_cross_entropy():
    expected = (-math.log(0.7) - math.log(0.4)) / 2
    got = value(AsymmetricLoss(gamma_pos=0.0, gamma_neg=0.0, clip=0.0), [[1, 0]], [[0.7, 0.6]])
    assert got == pytest.approx(expected, rel=1e-5)


def test_label_smoothing_moves_targets_towards_one_half():
    # smoothing 0.2: targets 1 -> 0.9, 0 -> 0.1
    expected = (-(0.9 * math.log(0.8) + 0.1 * math.log(0.2)) - (0.1 * math.log(0.3) + 0.9 * math.log(0.7))) / 2
    got = value(WeightedBinaryCrossentropy(label_smoothing=0.2), [[1, 0]], [[0.8, 0.3]])
    assert got == pytest.approx(expected, rel=1e-5)


def test_inverse_frequency_weights_worked_example():
    # raw = 1110 / (count * 3) = [37, 3.7, 0.37]; geometric mean 3.7 -> [10, 1, 0.1]
    np.testing.assert_allclose(inverse_frequency_weights([10, 100, 1000]), [10.0, 1.0, 0.1], rtol=1e-5)
    np.testing.assert_allclose(inverse_frequency_alpha([10, 100, 1000]), [10 / 11, 0.5, 0.1 / 1.1], rtol=1e-5)
    # an unseen label counts as seen once, and weights are capped
    weights = inverse_frequency_weights([0, 1_000_000, 1_000_000])
    assert weights.max() <= 100.0 and weights[0] > weights[1]


def test_make_loss_inverse_frequency_uses_label_counts():
    counts = np.array([10, 100, 1000])
    loss = make_loss(LossConfig(name="bce", pos_weight="inverse_frequency"), label_counts=counts, num_examples=1000)
    expected = (10 * -math.log(0.5) + -math.log(0.5) + 0.1 * -math.log(0.5)) / 3
    assert value(loss, [[1, 1, 1]], [[0.5, 0.5, 0.5]]) == pytest.approx(expected, rel=1e-5)
    focal = make_loss(LossConfig(name="focal", gamma=0.0, alpha="inverse_frequency"), label_counts=counts)
    expected_focal = (10 / 11 * -math.log(0.5) + 0.5 * -math.log(0.5) + (1 - 0.1 / 1.1) * -math.log(0.5)) / 3
    assert value(focal, [[1, 1, 0]], [[0.5, 0.5, 0.5]]) == pytest.approx(expected_focal, rel=1e-5)


def test_make_loss_rejects_bad_settings():
    with pytest.raises(UserError, match="loss.alpha"):
        make_loss(LossConfig(name="focal", alpha="inverse_frequency"))
    with pytest.raises(UserError, match="loss.alpha"):
        make_loss(LossConfig(name="focal", alpha=1.5))
    with pytest.raises(UserError, match="loss.clip"):
        make_loss(LossConfig(name="asl", clip=1.0))


@pytest.mark.parametrize(
    "cfg",
    [LossConfig(name="focal"), LossConfig(name="bce", pos_weight=2.0), LossConfig(name="asl", label_smoothing=0.1)],
)
def test_losses_are_float32_and_survive_serialization(cfg):
    loss = make_loss(cfg)
    y = np.array([[1, 0, 1], [0, 0, 1]], np.float32)
    p16 = keras.ops.cast(np.array([[0.9, 0.2, 0.4], [0.1, 0.3, 0.8]], np.float32), "float16")
    restored = keras.losses.deserialize(keras.losses.serialize(loss))
    assert type(restored) is type(loss)
    assert float(restored(y, p16)) == pytest.approx(float(loss(y, p16)), rel=1e-6)
    assert keras.ops.convert_to_numpy(loss.call(y, p16)).dtype == np.float32


def test_saturated_probabilities_give_finite_loss():
    for loss in (FocalLoss(), WeightedBinaryCrossentropy(pos_weight=5.0), AsymmetricLoss()):
        assert math.isfinite(value(loss, [[1, 0]], [[0.0, 1.0]]))


def test_group_softmax_loss_worked_example():
    # labels 0-1 one group, 2-4 another, 5 independent (BCE)
    loss = make_group_softmax_loss(LossConfig(name="bce"), {"a": [0, 1], "b": [2, 3, 4]}, 6)
    y = [[0, 1, 0, 0, 1, 1]]
    p = [[0.3, 0.7, 0.2, 0.3, 0.5, 0.8]]
    expected = (-math.log(0.7) - math.log(0.5) - math.log(0.8)) / 3
    assert value(loss, y, p) == pytest.approx(expected, rel=1e-5)


def test_group_softmax_loss_weights_groups_by_name():
    cfg = LossConfig(name="bce", group_weights={"b": 3.0})
    loss = make_group_softmax_loss(cfg, {"a": [0, 1], "b": [2, 3, 4]}, 6)
    y = [[0, 1, 0, 0, 1, 1]]
    p = [[0.3, 0.7, 0.2, 0.3, 0.5, 0.8]]
    expected = (-math.log(0.7) - 3 * math.log(0.5) - math.log(0.8)) / (1 + 3 + 1)
    assert value(loss, y, p) == pytest.approx(expected, rel=1e-5)
    restored = keras.losses.deserialize(keras.losses.serialize(loss))
    assert value(restored, y, p) == pytest.approx(expected, rel=1e-5)


def test_group_softmax_loss_rejects_a_weight_for_an_unknown_group():
    with pytest.raises(UserError, match=r"loss.group_weights: 'colour' is not a single-choice group.*groups: a, b"):
        make_group_softmax_loss(LossConfig(name="bce", group_weights={"colour": 2.0}), {"a": [0, 1], "b": [2, 3]}, 4)
    with pytest.raises(UserError, match="every group weighs 0"):
        make_group_softmax_loss(LossConfig(name="bce", group_weights={"a": 0.0}), {"a": [0, 1]}, 2)


def test_group_softmax_loss_skips_a_group_the_image_has_no_label_in():
    loss = GroupSoftmaxLoss([[0, 1], [2, 3]], 4)
    # second group unknown for this image: only the first group's cross-entropy counts
    assert value(loss, [[1, 0, 0, 0]], [[0.25, 0.75, 0.5, 0.5]]) == pytest.approx(-math.log(0.25) / 2, rel=1e-5)


def test_group_softmax_loss_label_smoothing_and_serialization():
    loss = make_group_softmax_loss(LossConfig(name="focal", label_smoothing=0.2), {"a": [0, 1]}, 3, label_counts=[5, 5, 2])
    y = np.array([[1, 0, 1]], np.float32)
    p = np.array([[0.6, 0.4, 0.7]], np.float32)
    restored = keras.losses.deserialize(keras.losses.serialize(loss))
    assert float(restored(y, p)) == pytest.approx(float(loss(y, p)), rel=1e-6)
    focal_part = float(FocalLoss(alpha=0.25, label_smoothing=0.2).call(y[:, 2:], p[:, 2:])[0])
    smoothed = -(0.9 * math.log(0.6) + 0.1 * math.log(0.4))
    assert float(loss(y, p)) == pytest.approx((smoothed + focal_part) / 2, rel=1e-5)
