"""The backbones a model can have: name -> keras.applications class, input preprocessing, smallest input.

A table without TensorFlow, so the config is checked (names, image size, ImageNet weights) before TensorFlow
is imported; fashion_tf.models builds from it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional


@dataclass(frozen=True)
class BackboneSpec:
    application: Optional[str]  # keras.applications attribute; None for our own small_cnn
    preprocessing: str  # none (rescales itself) | tf ([-1, 1]) | caffe (BGR minus mean) | unit ([0, 1])
    min_size: int = 32

    @property
    def has_imagenet_weights(self) -> bool:
        return self.application is not None


BACKBONES: dict[str, BackboneSpec] = {
    "inception_v3": BackboneSpec("InceptionV3", "tf", min_size=75),
    **{f"efficientnet_b{i}": BackboneSpec(f"EfficientNetB{i}", "none") for i in range(8)},
    "efficientnet_v2_s": BackboneSpec("EfficientNetV2S", "none"),
    "efficientnet_v2_m": BackboneSpec("EfficientNetV2M", "none"),
    "efficientnet_v2_l": BackboneSpec("EfficientNetV2L", "none"),
    "mobilenet_v2": BackboneSpec("MobileNetV2", "tf"),
    "resnet50": BackboneSpec("ResNet50", "caffe"),
    "small_cnn": BackboneSpec(None, "unit", min_size=16),
}
