"""Small seeded torch models for examples and tests (nothing is downloaded)."""

from __future__ import annotations

import torch
from torch import nn


def classifier(seed: int = 0, in_features: int = 2048, classes: int = 1000) -> nn.Module:
    """The main job's classifier head: features (batch, 2048) -> logits (batch, 1000)."""
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(in_features, classes))
    return model.eval()
