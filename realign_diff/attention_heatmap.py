"""An object's attention map drawn over the decoded image: a heatmap, its mask's outline and a label."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

from .attention_maps import resize_maps
from .dense_captioner.preview import _font
from .guidance import MASK_THRESHOLD

# a perceptually ordered ramp (dark violet -> red -> yellow), like matplotlib's "inferno"
RAMP = np.array([(0, 0, 4), (87, 16, 110), (188, 55, 84), (249, 142, 9), (252, 255, 164)], dtype=np.float32)
HEAT_ALPHA = 0.75  # opacity of the heatmap where attention peaks; fades to the image where it is low


def colorize(heat: np.ndarray) -> np.ndarray:
    """[H, W] in [0, 1] -> [H, W, 3] colors in 0..255 along ``RAMP``."""
    position = np.clip(heat, 0.0, 1.0) * (len(RAMP) - 1)
    low = np.minimum(position.astype(int), len(RAMP) - 2)
    frac = (position - low)[..., None]
    return RAMP[low] * (1.0 - frac) + RAMP[low + 1] * frac


def mask_outline(mask: torch.Tensor, height: int, width: int) -> np.ndarray:
    """[H', W'] mask -> [height, width] bool: the pixels on its border."""
    inside = F.interpolate((mask > MASK_THRESHOLD).float()[None, None], size=(height, width), mode="nearest")[0, 0]
    line = max(1, round(min(height, width) / 128))
    eroded = -F.max_pool2d(-inside[None, None], 2 * line + 1, stride=1, padding=line)[0, 0]
    return ((inside > 0) & (eroded <= 0)).numpy()


def draw_heatmap(image: torch.Tensor, attention: torch.Tensor, mask: torch.Tensor | None, lines: list[str]):
    """``image`` [H, W, 3] in [0, 1], ``attention`` [h, w] -> [H, W, 3]: the map (scaled to its peak) over the
    image, the mask's outline in white, and ``lines`` of text in the top-left corner."""
    height, width = image.shape[:2]
    heat = resize_maps(attention.float().cpu(), height, width).numpy()
    peak = float(heat.max()) if heat.size else 0.0
    heat = heat / peak if peak > 0 else heat
    alpha = HEAT_ALPHA * np.sqrt(np.clip(heat, 0, 1))[..., None]
    canvas = image.detach().float().clamp(0, 1).cpu().numpy() * 255.0 * (1.0 - alpha) + colorize(heat) * alpha
    if mask is not None:
        canvas[mask_outline(mask.float().cpu(), height, width)] = 255.0
    picture = Image.fromarray(np.clip(canvas, 0, 255).round().astype(np.uint8))
    draw = ImageDraw.Draw(picture)
    font = _font(max(10, min(height, width) // 28))
    y = 2
    for text in lines:
        left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
        draw.rectangle((0, y, right - left + 6, y + bottom - top + 4), fill=(0, 0, 0))
        draw.text((3 - left, y + 2 - top), text, fill=(255, 255, 255), font=font)
        y += bottom - top + 5
    return torch.from_numpy(np.asarray(picture).astype(np.float32) / 255.0)
