"""ImageNet normalization, as RAM's and GroundingDINO's own transforms apply it after resizing."""

from __future__ import annotations

import torch

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def imagenet_normalize(pixels: torch.Tensor) -> torch.Tensor:
    """[B, 3, H, W] in [0, 1] -> (x - mean) / std per channel, on the input's device, float32."""
    mean = torch.tensor(IMAGENET_MEAN, device=pixels.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=pixels.device).view(1, 3, 1, 1)
    return (pixels.float() - mean) / std
