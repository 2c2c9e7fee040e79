"""Classifier = preprocessing (inside the graph) + backbone + pooling/dropout/dense head.

Every model takes float32 images in [0, 255] and does its own input scaling, so the input pipeline and
the exported SavedModel never need to know which backbone was trained. The backbone is one nested
sub-model named "backbone", so freezing and unfreezing it is one attribute away.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import keras

from fashion_tf.backbones import BACKBONES, BackboneSpec
from fashion_tf.config import ModelConfig, check_model_config, check_small_cnn_shape
from fashion_tf.errors import UserError
from fashion_tf.labels import labels_outside_groups

BACKBONE_LAYER = "backbone"
OUTPUT_LAYER = "scores"
# ImageNet channel means in BGR order, from keras.applications.imagenet_utils ("caffe" mode).
CAFFE_BGR_MEAN = (103.939, 116.779, 123.68)


@keras.saving.register_keras_serializable(package="fashion_tf")
class CaffePreprocess(keras.layers.Layer):
    """RGB [0, 255] -> BGR minus the ImageNet channel means (ResNet50's "caffe" preprocessing)."""

    def call(self, images):
        bgr = keras.ops.flip(images, axis=-1)
        return bgr - keras.ops.convert_to_tensor(CAFFE_BGR_MEAN, dtype=bgr.dtype)


@keras.saving.register_keras_serializable(package="fashion_tf")
class GroupSoftmax(keras.layers.Layer):
    """Logits [B, C] -> probabilities: a softmax across the labels of each single-choice group, a sigmoid for the rest.

    The output keeps the label order, so thresholds, evaluation and prediction read it like a sigmoid head.
    """

    def __init__(self, groups, num_labels: int, **kwargs):
        super().__init__(**kwargs)
        self.groups = [[int(i) for i in group] for group in groups]
        self.num_labels = int(num_labels)
        grouped = [i for group in self.groups for i in group]
        if len(set(grouped)) != len(grouped) or any(not 0 <= i < self.num_labels for i in grouped):
            raise ValueError("group_softmax: groups must be disjoint label indices below num_labels")
        self.independent = labels_outside_groups(self.groups, self.num_labels)
        order = grouped + self.independent
        self.restore_order = [0] * self.num_labels
        for position, label in enumerate(order):
            self.restore_order[label] = position

    def call(self, logits):
        ops = keras.ops
        logits = ops.cast(logits, "float32")
        parts = [ops.softmax(ops.take(logits, group, axis=-1), axis=-1) for group in self.groups]
        if self.independent:
            parts.append(ops.sigmoid(ops.take(logits, self.independent, axis=-1)))
        return ops.take(ops.concatenate(parts, axis=-1), self.restore_order, axis=-1)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "groups": self.groups, "num_labels": self.num_labels}


def _preprocessing_layer(kind: str) -> Optional[keras.layers.Layer]:
    if kind == "tf":
        return keras.layers.Rescaling(1.0 / 127.5, offset=-1.0, name="preprocess")
    if kind == "unit":
        return keras.layers.Rescaling(1.0 / 255.0, name="preprocess")
    if kind == "caffe":
        return CaffePreprocess(name="preprocess")
    return None


# ---- small_cnn --------------------------------------------------------------------------
# Keras' default BN momentum (0.99) lets the running statistics lag far behind in the few hundred steps
# of a short CPU run (validation F1 0.21 vs 0.67 on the synthetic set); 0.9 settles in time.
BN_MOMENTUM = 0.9


def _bn(name: str, **kwargs):
    return keras.layers.BatchNormalization(momentum=BN_MOMENTUM, name=name, **kwargs)


def _conv_bn_relu(x, filters: int, stride: int, name: str):
    x = keras.layers.Conv2D(filters, 3, strides=stride, padding="same", use_bias=False, name=f"{name}_conv")(x)
    x = _bn(f"{name}_bn")(x)
    return keras.layers.ReLU(name=f"{name}_relu")(x)


def _residual_block(x, filters: int, stride: int, name: str):
    shortcut = x
    y = _conv_bn_relu(x, filters, stride, f"{name}_a")
    y = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"{name}_b_conv")(y)
    # Zero-init the last BN scale: each block starts as identity, which trains faster from scratch.
    y = _bn(f"{name}_b_bn", gamma_initializer="zeros")(y)
    if stride != 1 or shortcut.shape[-1] != filters:
        shortcut = keras.layers.Conv2D(filters, 1, strides=stride, use_bias=False, name=f"{name}_proj_conv")(x)
        shortcut = _bn(f"{name}_proj_bn")(shortcut)
    return keras.layers.ReLU(name=f"{name}_out")(keras.layers.Add(name=f"{name}_add")([shortcut, y]))


def small_cnn(input_shape: tuple, width: int = 32, stages: tuple = (1, 2, 4, 4), strides: tuple = (1, 2, 2, 2),
              blocks: tuple = (1, 1, 1, 1)) -> keras.Model:
    """Compact residual CNN: a stride-2 stem, then per stage blocks[i] residual blocks with width * stages[i]
    channels, the first of them with stride strides[i].

    About 0.6M parameters at width 32 with the defaults; meant for CPU training at 64-128 px. A stride-2 first
    stage ((2, 2, 2, 2)) runs twice the input size at about the cost of the defaults.
    """
    check_small_cnn_shape(width, stages, strides, blocks, where="small_cnn")
    inputs = keras.Input(shape=input_shape, name="backbone_input")
    x = _conv_bn_relu(inputs, width, 2, "stem")
    for stage, (multiplier, stride, count) in enumerate(zip(stages, strides, blocks), start=1):
        for block in range(int(count)):
            # The first block of a stage keeps the one-block layer names, so older weights files still load.
            name = f"stage{stage}" if block == 0 else f"stage{stage}_{block + 1}"
            x = _residual_block(x, width * int(multiplier), int(stride) if block == 0 else 1, name)
    return keras.Model(inputs, x, name=BACKBONE_LAYER)


# ---- backbones --------------------------------------------------------------------------
def _application_backbone(spec: BackboneSpec, input_shape: tuple, weights: Optional[str]):
    constructor = getattr(keras.applications, spec.application)
    # No `name=` argument: EfficientNetV2 looks its block table up by that name. Rename afterwards.
    backbone = constructor(include_top=False, weights=weights, input_shape=input_shape)
    backbone.name = BACKBONE_LAYER
    return backbone


def _build_backbone(model_cfg: ModelConfig, spec: BackboneSpec, input_shape: tuple, weights: Optional[str]):
    if spec.application is None:
        return small_cnn(input_shape, model_cfg.width, tuple(model_cfg.stages), tuple(model_cfg.stage_strides),
                         tuple(model_cfg.stage_blocks))
    try:
        return _application_backbone(spec, input_shape, weights)
    except Exception as err:  # noqa: BLE001 - download failure, unreadable file, shape mismatch
        if weights is None:
            raise
        what = "ImageNet weights" if weights == "imagenet" else f"backbone weights from {weights}"
        raise UserError(
            f"model.weights: could not load {what} for {model_cfg.backbone} "
            f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}); "
            "use model.weights=null to train from scratch or a local weights file"
        ) from None


def build_model(
    model_cfg: ModelConfig, num_labels: int, image_size: int, softmax_groups: Optional[list] = None
) -> keras.Model:
    """Preprocessing + backbone + head, output `scores` [B, num_labels] float32 (sigmoid, softmax or group_softmax).

    softmax_groups (head "group_softmax"): label-index lists of the single-choice groups, each given one
    softmax; labels outside them keep a sigmoid.

    model_cfg.weights: "imagenet" (backbone only), None, or a local file: a keras-applications backbone
    weights file (.h5, given to the application) or a full-model file of ours (.keras / .weights.h5,
    loaded into the whole model with skip_mismatch so a head of another width is skipped).
    """
    if num_labels < 1:
        raise UserError(f"the label map has no labels (num_labels={num_labels})")
    check_model_config(model_cfg, image_size, "model")  # built without load_config (tests, notebooks): same checks
    spec = BACKBONES[model_cfg.backbone]
    weights = model_cfg.weights
    if weights is not None and weights != "imagenet" and not Path(weights).is_file():
        raise UserError(f"model.weights: weights file not found: {weights}")
    full_model_file = weights is not None and weights != "imagenet" and _is_full_model_file(weights)
    backbone_weights = None if (full_model_file or spec.application is None) else weights
    if spec.application is None and weights not in (None, "imagenet"):
        full_model_file = True

    input_shape = (image_size, image_size, 3)
    inputs = keras.Input(shape=input_shape, name="image")
    x = inputs
    preprocess = _preprocessing_layer(spec.preprocessing)
    if preprocess is not None:
        x = preprocess(x)
    backbone = _build_backbone(model_cfg, spec, input_shape, backbone_weights)
    x = backbone(x)
    pool = keras.layers.GlobalAveragePooling2D if model_cfg.pooling == "avg" else keras.layers.GlobalMaxPooling2D
    x = pool(name="pool")(x)
    if model_cfg.dropout > 0:
        x = keras.layers.Dropout(model_cfg.dropout, name="dropout")(x)
    if model_cfg.dense_units > 0:
        x = keras.layers.Dense(model_cfg.dense_units, activation="relu", name="dense")(x)
        if model_cfg.dropout > 0:
            x = keras.layers.Dropout(model_cfg.dropout, name="dense_dropout")(x)
    # float32 output even under a mixed policy: losses and metrics need full precision probabilities.
    if model_cfg.head == "group_softmax":
        logits = keras.layers.Dense(num_labels, dtype="float32", name="logits")(x)
        outputs = GroupSoftmax(softmax_groups or [], num_labels, dtype="float32", name=OUTPUT_LAYER)(logits)
    else:
        activation = "softmax" if model_cfg.head == "softmax" else "sigmoid"
        outputs = keras.layers.Dense(num_labels, activation=activation, dtype="float32", name=OUTPUT_LAYER)(x)
    model = keras.Model(inputs, outputs, name=f"fashion_{model_cfg.backbone}")
    if full_model_file:
        _load_full_model_weights(model, weights)
    return model


def _is_full_model_file(path: str) -> bool:
    """Our own saved models/weights carry the whole classifier; keras-applications files only a backbone."""
    if path.endswith(".keras"):
        return True
    if path.endswith(".weights.h5"):
        import h5py

        with h5py.File(path, "r") as handle:
            return "layers" in handle  # Keras 3 weights layout (ours); legacy applications files lack it
    return False


def _load_full_model_weights(model: keras.Model, path: str) -> None:
    try:
        model.load_weights(path, skip_mismatch=True)
    except Exception as err:  # noqa: BLE001 - any reading failure is the user's file
        raise UserError(f"model.weights: cannot load {path} into {model.name} ({type(err).__name__}: {err})") from None


def backbone_of(model: keras.Model) -> keras.Model:
    return model.get_layer(BACKBONE_LAYER)


def set_backbone_trainable(model: keras.Model, mode: str, keep_batchnorm_frozen: bool = True) -> int:
    """Freeze ("none"), or unfreeze "all" or the last N layers of the backbone; head layers stay trainable.

    With keep_batchnorm_frozen, BatchNormalization layers stay frozen, which in Keras 3 also keeps them in
    inference mode (moving statistics used and not updated), as recommended when fine-tuning pretrained
    weights. Returns the number of backbone layers left trainable.
    """
    backbone = backbone_of(model)
    if mode == "none":
        backbone.trainable = False
        return 0
    backbone.trainable = True
    layers = backbone.layers
    for layer in layers:  # explicitly: an earlier partial unfreeze may have left inner layers frozen
        layer.trainable = True
    if mode != "all":
        count = int(mode)
        for layer in layers[: max(len(layers) - count, 0)]:
            layer.trainable = False
    if keep_batchnorm_frozen:
        for layer in layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.trainable = False
    return sum(1 for layer in layers if layer.trainable and layer.weights)
