"""Model registry: name -> builder. A builder takes the data set's shape and its own config.

    @register("mlp")
    def build(in_channels, image_size, num_classes, **cfg) -> nn.Module

Every name here must also be listed in params.schema.yaml (tests check both agree), with the
model's own config keys, so that a typo fails before any stage does work. Builders raise
ValueError when the input is too small for their pooling; the engine turns that into a
PipelineError that points at `input_size`.

The classifier head of every model is its last nn.Linear: transfer learning replaces it
(`pretrained:`) and `finetune: last_layer` trains only it.
"""
from __future__ import annotations

from pipeline.models import (ablation, basenet, cifarnet, lenet, mlp, resnet,  # noqa: F401 (each registers itself)
                             tv_resnet, vgg)
from pipeline.models._registry import MODELS, build, head_name, register  # noqa: F401 (the interface)
