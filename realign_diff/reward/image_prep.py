"""Differentiable BLIP-2 image preprocessing in torch: resize, then normalize with the processor's statistics.

The Hugging Face ``BlipImageProcessor`` resizes a PIL image (bicubic), rescales to [0, 1] and normalizes with
the CLIP mean/std. Here the same steps run on a float tensor already in [0, 1] (anti-aliased bicubic resize,
clamp to [0, 1] as the 8-bit round trip does, normalize), so gradients reach the pixels. Scoring and the
log-probability use this one path, so both see exactly the same model input.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

_RESAMPLE = {0: "nearest", 2: "bilinear", 3: "bicubic"}  # PIL.Image.Resampling values


@dataclass(frozen=True)
class ImageStats:
    height: int
    width: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    mode: str = "bicubic"
    normalize: bool = True

    @classmethod
    def from_image_processor(cls, processor) -> ImageStats:
        size = getattr(processor, "size", None) or {"height": 224, "width": 224}
        get = size.get if isinstance(size, dict) else (lambda key, default=None: getattr(size, key, default))
        height = get("height") or get("shortest_edge") or 224
        width = get("width") or get("shortest_edge") or height
        resample = getattr(processor, "resample", 3)
        mode = _RESAMPLE.get(int(getattr(resample, "value", resample) if resample is not None else 3), "bicubic")
        mean = tuple(float(x) for x in (getattr(processor, "image_mean", None) or (0.48145466, 0.4578275, 0.40821073)))
        std = tuple(float(x) for x in (getattr(processor, "image_std", None) or (0.26862954, 0.26130258, 0.27577711)))
        return cls(int(height), int(width), mean, std, mode, bool(getattr(processor, "do_normalize", True)))


def to_bchw(images: torch.Tensor) -> torch.Tensor:
    """[B, H, W, 3] (ComfyUI IMAGE) or [B, 3, H, W] float in [0, 1] -> [B, 3, H, W]; a single image gains a batch dim.

    A tensor whose last dim is 3 is read as channels-last (ComfyUI's layout), otherwise dim 1 must be 3.
    Four-channel (RGBA) ComfyUI images lose their alpha.
    """
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"images must be a torch.Tensor, got {type(images).__name__}")
    if images.dim() == 3:
        images = images.unsqueeze(0)
    if images.dim() != 4:
        raise ValueError(f"images must be [B, H, W, 3] or [B, 3, H, W], got shape {tuple(images.shape)}")
    if images.shape[-1] in (3, 4) and images.shape[1] not in (3, 4):
        return images[..., :3].permute(0, 3, 1, 2)
    if images.shape[-1] == 3:  # ambiguous (3 x 3 images...): ComfyUI's channels-last
        return images.permute(0, 3, 1, 2)
    if images.shape[1] in (3, 4):
        return images[:, :3]
    raise ValueError(f"images must be [B, H, W, 3] or [B, 3, H, W], got shape {tuple(images.shape)}")


def preprocess(pixels: torch.Tensor, stats: ImageStats, dtype: torch.dtype | None = None) -> torch.Tensor:
    """[B, 3, H, W] in [0, 1] -> BLIP-2 ``pixel_values`` [B, 3, h, w]; differentiable w.r.t. ``pixels``."""
    x = pixels.float()
    if (x.shape[-2], x.shape[-1]) != (stats.height, stats.width):
        antialias = stats.mode in ("bilinear", "bicubic")
        x = F.interpolate(
            x,
            size=(stats.height, stats.width),
            mode=stats.mode,
            antialias=antialias,
            **({} if stats.mode == "nearest" else {"align_corners": False}),
        )
    x = x.clamp(0.0, 1.0)
    if stats.normalize:
        mean = torch.tensor(stats.mean, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
        std = torch.tensor(stats.std, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
        x = (x - mean) / std
    return x if dtype is None else x.to(dtype)
