"""Every backbone builds (weights=None, small inputs) with its preprocessing inside the graph and a C-wide head.

The big backbones (EfficientNet B1-B7, V2 S/M/L) take 5-40 s each to build on a busy CPU; they run when
FASHION_TF_SLOW_TESTS=1 (measured: b7 ~25 s, v2_l ~37 s at 32 px on 2 shared cores).
"""

from __future__ import annotations

import os

import keras
import numpy as np
import pytest

from fashion_tf.config import ModelConfig
from fashion_tf.errors import UserError
from fashion_tf.models import BACKBONES, CaffePreprocess, backbone_of, build_model, set_backbone_trainable

C = 5
FAST = ["small_cnn", "efficientnet_b0", "mobilenet_v2", "resnet50", "inception_v3"]
SLOW = [name for name in BACKBONES if name not in FAST]
run_slow = pytest.mark.skipif(not os.environ.get("FASHION_TF_SLOW_TESTS"), reason="set FASHION_TF_SLOW_TESTS=1")


def images(batch: int, size: int) -> np.ndarray:
    return np.random.default_rng(0).uniform(0, 255, (batch, size, size, 3)).astype(np.float32)


def check_builds(name: str) -> keras.Model:
    size = max(32, BACKBONES[name].min_size)
    model = build_model(ModelConfig(backbone=name, weights=None), C, size)
    scores = keras.ops.convert_to_numpy(model(images(2, size), training=False))
    assert scores.shape == (2, C) and scores.dtype == np.float32
    assert np.all(np.isfinite(scores)) and np.all((scores >= 0) & (scores <= 1))  # a random deep net may saturate
    assert backbone_of(model).name == "backbone"
    assert model.get_layer("scores").activation.__name__ == "sigmoid"
    return model


def test_backbone_list_is_complete():
    expected = {"inception_v3", "mobilenet_v2", "resnet50", "small_cnn", "efficientnet_v2_s", "efficientnet_v2_m",
                "efficientnet_v2_l"} | {f"efficientnet_b{i}" for i in range(8)}
    assert set(BACKBONES) == expected


@pytest.mark.parametrize("name", FAST)
def test_backbone_builds_with_sigmoid_head(name):
    model = check_builds(name)
    preprocessing = BACKBONES[name].preprocessing
    if preprocessing == "none":  # EfficientNet rescales inside the backbone
        assert "preprocess" not in [layer.name for layer in model.layers]
        return
    layer = model.get_layer("preprocess")
    pixels = np.array([[[[0.0, 127.5, 255.0]]]], np.float32)
    out = keras.ops.convert_to_numpy(layer(pixels))[0, 0, 0]
    expected = {
        "tf": [-1.0, 0.0, 1.0],
        "unit": [0.0, 0.5, 1.0],
        "caffe": [255.0 - 103.939, 127.5 - 116.779, 0.0 - 123.68],  # RGB -> BGR, minus the BGR means
    }[preprocessing]
    np.testing.assert_allclose(out, expected, atol=1e-4)


@run_slow
@pytest.mark.parametrize("name", SLOW)
def test_big_backbone_builds_with_sigmoid_head(name):
    check_builds(name)


def test_small_cnn_size_and_softmax_head():
    model = build_model(ModelConfig(backbone="small_cnn", weights=None, width=32, head="softmax", dense_units=64), 169, 64)
    assert 500_000 <= model.count_params() <= 1_000_000
    scores = keras.ops.convert_to_numpy(model(images(3, 64)))
    np.testing.assert_allclose(scores.sum(axis=1), 1.0, atol=1e-5)
    assert model.get_layer("dense").units == 64


def test_small_cnn_stages_set_the_channels_of_each_stage():
    model = build_model(ModelConfig(backbone="small_cnn", weights=None, width=8, stages=[1, 2, 4, 8]), 3, 64)
    assert backbone_of(model).output.shape[1:] == (4, 4, 64)  # 64 px / 2 (stem) / 2 / 2 / 2, width 8 * 8
    with pytest.raises(UserError, match="model.stages"):
        build_model(ModelConfig(backbone="small_cnn", weights=None, stages=[1, 0], stage_strides=[1, 2]), 3, 64)
    strided = build_model(ModelConfig(backbone="small_cnn", weights=None, width=8, stage_strides=[2, 2, 2, 2]), 3, 128)
    assert backbone_of(strided).output.shape[1:] == (4, 4, 32)
    with pytest.raises(UserError, match="model.stage_strides"):
        build_model(ModelConfig(backbone="small_cnn", weights=None, stage_strides=[1, 2]), 3, 64)


def test_small_cnn_stage_blocks_add_residual_blocks_without_changing_the_output_shape():
    single = build_model(ModelConfig(backbone="small_cnn", weights=None, width=8), 3, 64)
    deeper = build_model(ModelConfig(backbone="small_cnn", weights=None, width=8, stage_blocks=[1, 1, 2, 3]), 3, 64)
    assert backbone_of(deeper).output.shape == backbone_of(single).output.shape
    names = {layer.name for layer in backbone_of(deeper).layers}
    assert {"stage3_2_add", "stage4_2_add", "stage4_3_add"} <= names and "stage3_3_add" not in names
    assert deeper.count_params() > single.count_params()
    with pytest.raises(UserError, match="model.stage_blocks"):
        build_model(ModelConfig(backbone="small_cnn", weights=None, stage_blocks=[1, 1, 0, 1]), 3, 64)


def test_mixed_precision_keeps_float32_output():
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = build_model(ModelConfig(backbone="small_cnn", weights=None, width=8), C, 32)
        assert backbone_of(model).compute_dtype == "float16"
        assert model.get_layer("scores").compute_dtype == "float32"
        assert keras.ops.convert_to_numpy(model(images(2, 32))).dtype == np.float32
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_frozen_backbone_trains_nothing_and_batchnorm_runs_in_inference_mode():
    model = build_model(ModelConfig(backbone="small_cnn", weights=None, width=8), C, 32)
    backbone = backbone_of(model)
    set_backbone_trainable(model, "none")
    assert backbone.trainable_weights == [] and len(model.trainable_weights) == 2  # output kernel + bias
    bn = next(layer for layer in backbone.layers if isinstance(layer, keras.layers.BatchNormalization))
    before = keras.ops.convert_to_numpy(bn.moving_mean).copy()
    batch = images(4, 32)
    training_mode = keras.ops.convert_to_numpy(backbone(batch, training=True))
    inference_mode = keras.ops.convert_to_numpy(backbone(batch, training=False))
    np.testing.assert_allclose(training_mode, inference_mode, atol=1e-5)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(bn.moving_mean), before)


def test_unfreeze_last_layers_keeps_batchnorm_frozen():
    model = build_model(ModelConfig(backbone="small_cnn", weights=None, width=8), C, 32)
    backbone = backbone_of(model)
    set_backbone_trainable(model, "6")
    trainable = [layer.name for layer in backbone.layers if layer.trainable and layer.weights]
    assert trainable and all(name.startswith("stage4") for name in trainable)
    assert not any(isinstance(backbone.get_layer(n), keras.layers.BatchNormalization) for n in trainable)
    set_backbone_trainable(model, "all", keep_batchnorm_frozen=False)
    assert any(isinstance(layer, keras.layers.BatchNormalization) and layer.trainable for layer in backbone.layers)


def test_weights_from_our_own_file_skip_a_head_of_other_width(tmp_path):
    source = build_model(ModelConfig(backbone="small_cnn", weights=None, width=8), C, 32)
    path = tmp_path / "run.weights.h5"
    source.save_weights(path)
    target = build_model(ModelConfig(backbone="small_cnn", weights=str(path), width=8), C + 2, 32)
    for a, b in zip(backbone_of(source).weights, backbone_of(target).weights):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b))
    assert target.get_layer("scores").kernel.shape == (32, C + 2)


def test_caffe_preprocessing_layer_is_serializable():
    layer = keras.layers.deserialize(keras.layers.serialize(CaffePreprocess(name="preprocess")))
    assert isinstance(layer, CaffePreprocess)


@pytest.mark.parametrize(
    "cfg, size, message",
    [
        (ModelConfig(backbone="vgg16", weights=None), 32, "model.backbone"),
        (ModelConfig(backbone="inception_v3", weights=None), 64, "at least 75"),
        (ModelConfig(backbone="small_cnn", weights="imagenet"), 32, "no ImageNet weights"),
        (ModelConfig(backbone="small_cnn", weights="/nonexistent/w.weights.h5"), 32, "not found"),
    ],
)
def test_bad_model_settings_are_user_errors(cfg, size, message):
    with pytest.raises(UserError, match=message):
        build_model(cfg, C, size)


def test_group_softmax_head_sums_to_one_per_group_and_keeps_sigmoid_elsewhere(tmp_path):
    groups = [[0, 2], [1, 3, 4]]  # interleaved on purpose: the output keeps the label order
    model = build_model(ModelConfig(backbone="small_cnn", weights=None, width=4, head="group_softmax"), 6, 32, groups)
    scores = keras.ops.convert_to_numpy(model(images(3, 32), training=False))
    assert scores.shape == (3, 6)
    np.testing.assert_allclose(scores[:, [0, 2]].sum(axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(scores[:, [1, 3, 4]].sum(axis=1), 1.0, rtol=1e-5)
    logits = keras.ops.convert_to_numpy(keras.Model(model.inputs, model.get_layer("logits").output)(images(3, 32)))
    np.testing.assert_allclose(scores[:, 5], 1 / (1 + np.exp(-logits[:, 5])), rtol=1e-5)
    first = np.exp(logits[:, [1, 3, 4]])
    np.testing.assert_allclose(scores[:, [1, 3, 4]], first / first.sum(axis=1, keepdims=True), rtol=1e-5)

    model.save(tmp_path / "m.keras")
    restored = keras.models.load_model(tmp_path / "m.keras", compile=False)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(restored(images(3, 32))), scores, rtol=1e-5)


def test_group_softmax_rejects_overlapping_groups():
    with pytest.raises(ValueError, match="disjoint"):
        build_model(ModelConfig(backbone="small_cnn", weights=None, width=4, head="group_softmax"), 4, 32, [[0, 1], [1, 2]])
