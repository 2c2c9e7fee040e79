"""fashion_tf.data.balance: rejection sampling of the training records towards rare labels."""

from __future__ import annotations

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from data_shards import collect, config, write_folder, write_shards  # noqa: E402
from fashion_tf.data import make_dataset  # noqa: E402
from fashion_tf.data.balance import label_weights  # noqa: E402


def rare_share(folder, balance: str, power: float, samples: int = 480) -> float:
    cfg = config(folder, balance=balance, balance_power=power, batch_size=16, shuffle_buffer=128)
    _, labels, _ = collect(make_dataset(cfg, "train", training=True, seed=11), batches=samples // 16)
    return float(labels[:, 0].mean())


def test_rejection_balancing_raises_the_share_of_a_rare_label_as_configured(tmp_path):
    folder = tmp_path / "imbalanced"
    labels = [[0] if i % 20 == 0 else [1] for i in range(200)]  # label 0: 10 of 200 (5%)
    write_folder(folder, {"train": write_shards(folder, "train", labels, num_shards=2)})
    plain = rare_share(folder, "none", 1.0)
    sqrt_balanced = rare_share(folder, "rejection", 0.5)
    balanced = rare_share(folder, "rejection", 1.0)
    # Expected shares: 5%; 10 * sqrt(19) / (10 * sqrt(19) + 190) = 18.7%; power 1 equalises: 50%.
    assert plain == pytest.approx(0.05, abs=0.03)
    assert sqrt_balanced == pytest.approx(0.187, abs=0.07)
    assert balanced == pytest.approx(0.5, abs=0.1)


def test_label_weights():
    np.testing.assert_allclose(label_weights(np.array([100, 25, 0, 4]), 0.5), [1.0, 2.0, 0.0, 5.0])
