"""fashion_tf.callbacks: early stopping that resumes like an unbroken run."""

import pytest

keras = pytest.importorskip("keras")

from fashion_tf.callbacks import ResumedEarlyStopping  # noqa: E402


@pytest.mark.parametrize("patience", [1, 2, 3, 5])
def test_resumed_early_stopping_continues_like_an_unbroken_run(patience):
    values = [0.50, 0.60, 0.55, 0.58, 0.61, 0.59, 0.60]
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
    for split in range(1, len(values)):  # killed after `split` epochs, then resumed
        unbroken = keras.callbacks.EarlyStopping(monitor="val_f1", mode="max", patience=patience)
        unbroken.set_model(model)
        model.stop_training = False
        unbroken.on_train_begin()
        stopped_at = None
        for epoch, value in enumerate(values):
            unbroken.on_epoch_end(epoch, {"val_f1": value})
            if model.stop_training:
                stopped_at = epoch
                break
        if stopped_at is not None and split > stopped_at + 1:
            continue  # a history never runs past the epoch where the run stopped
        resumed = ResumedEarlyStopping(values[:split], monitor="val_f1", mode="max", patience=patience)
        resumed.set_model(model)
        model.stop_training = False
        assert resumed.already_stopped() == (split == stopped_at + 1 if stopped_at is not None else False), (patience, split)
        if resumed.already_stopped():
            continue
        resumed_stop = None
        for epoch in range(split, len(values)):
            resumed.on_epoch_end(epoch, {"val_f1": values[epoch]})
            if model.stop_training:
                resumed_stop = epoch
                break
        assert resumed_stop == stopped_at and resumed.best == unbroken.best, (patience, split)
