"""The model zoo: spiking VGG, ResNet and Spikformer, each with an ANN twin.

>>> from spikelottery.models import create_model, list_models
>>> create_model("vgg_tiny", img_size=16).timesteps
4
"""

from __future__ import annotations

from .blocks import ConvBNAct, LinearBNAct, SpikingModel, encode_input, make_activation
from .registry import MODELS, ModelEntry, create_model, list_models, min_img_size, register_model
from .resnet import RESIDUALS, BasicBlock, SpikingResNet
from .spikformer import (
    ConvPEP,
    Spikformer,
    SpikformerBlock,
    SpikingMLP,
    SpikingSelfAttention,
    default_patch_size,
)
from .vgg import VGG, VGG9_CONFIG

__all__ = [
    "MODELS",
    "RESIDUALS",
    "VGG",
    "VGG9_CONFIG",
    "BasicBlock",
    "ConvBNAct",
    "ConvPEP",
    "LinearBNAct",
    "ModelEntry",
    "Spikformer",
    "SpikformerBlock",
    "SpikingMLP",
    "SpikingModel",
    "SpikingResNet",
    "SpikingSelfAttention",
    "create_model",
    "default_patch_size",
    "encode_input",
    "list_models",
    "make_activation",
    "min_img_size",
    "register_model",
]
