"""Small seeded torch models for examples and tests (nothing is downloaded)."""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn


def classifier(seed: int = 0, in_features: int = 2048, classes: int = 1000) -> nn.Module:
    """The main job's classifier head: features (batch, 2048) -> logits (batch, 1000)."""
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(in_features, classes))
    return model.eval()


def mlp(seed: int = 0, in_features: int = 64, hidden: int = 16, classes: int = 10) -> nn.Module:
    """A small classifier: x (batch, in_features) -> Linear, ReLU, Linear -> logits
    (batch, classes). The digits student of examples/distill (64 -> 16 -> 10)."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(in_features, hidden), nn.ReLU(),
                         nn.Linear(hidden, classes)).eval()


# --- twins of interop_tensorflow.models, for compatibility reports and parameter copies -----

def tiny_mlp(seed: int = 0, in_dim: int = 8, hidden: int = 16, out: int = 4) -> nn.Module:
    """The Keras ``tiny_mlp``: x (batch, in_dim) -> Linear, ReLU -> Linear -> y (batch, out).
    Module names follow the Keras layer names (``hidden``, ``y``)."""
    torch.manual_seed(seed)
    return nn.Sequential(OrderedDict(
        hidden=nn.Linear(in_dim, hidden), relu=nn.ReLU(), y=nn.Linear(hidden, out))).eval()


def tiny_cnn(seed: int = 0, image_size: int = 8, channels: int = 3, classes: int = 5
             ) -> nn.Module:
    """The Keras ``tiny_cnn`` in torch's NCHW: Conv2d 3x3 'same', BatchNorm, ReLU,
    MaxPool 2, Flatten, Linear -> logits. BatchNorm takes Keras' defaults (eps 1e-3,
    momentum 0.99 in Keras terms); its statistics and affine terms are random so that
    every parameter changes the output."""
    torch.manual_seed(seed)
    pooled = image_size // 2
    model = nn.Sequential(OrderedDict(
        conv=nn.Conv2d(channels, 4, 3, padding=1),  # Keras padding="same" for a 3x3 kernel
        bn=nn.BatchNorm2d(4, eps=1e-3, momentum=0.01),
        relu=nn.ReLU(), pool=nn.MaxPool2d(2), flatten=nn.Flatten(),
        logits=nn.Linear(4 * pooled * pooled, classes)))
    bn = model.bn
    with torch.no_grad():
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.normal_(0.0, 0.1)
        bn.running_mean.normal_(0.0, 0.1)
        bn.running_var.uniform_(0.5, 1.5)
    return model.eval()
