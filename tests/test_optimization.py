"""fashion_tf.optimization: the learning-rate schedule as a function of the optimizer step."""

import numpy as np
import pytest

pytest.importorskip("keras")

from fashion_tf.optimization import WarmupSchedule  # noqa: E402


def test_warmup_cosine_schedule_and_fine_tune_factor():
    schedule = WarmupSchedule(base_lr=1.0, total_steps=110, warmup_steps=10, kind="cosine",
                              fine_tune_step=60, fine_tune_factor=0.1)
    lr = lambda step: float(schedule(step))  # noqa: E731
    assert lr(0) == pytest.approx(0.1) and lr(9) == pytest.approx(1.0)
    assert lr(10) == pytest.approx(1.0)
    assert lr(59) == pytest.approx(0.5 * (1 + np.cos(np.pi * 49 / 100)), rel=1e-5)
    assert lr(60) == pytest.approx(0.1 * 0.5 * (1 + np.cos(np.pi * 50 / 100)), rel=1e-5, abs=1e-7)
    step = WarmupSchedule(base_lr=1.0, total_steps=100, warmup_steps=0, kind="step", step_every=30, step_factor=0.5)
    assert [float(step(s)) for s in (0, 29, 30, 61)] == pytest.approx([1.0, 1.0, 0.5, 0.25])
