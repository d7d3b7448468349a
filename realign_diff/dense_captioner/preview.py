"""A preview of a guidance: masks tinted over the image, boxes, and "tag score confidence" labels."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from ..guidance import RealignGuidance

PALETTE = [
    (230, 25, 75),
    (60, 180, 75),
    (255, 225, 25),
    (0, 130, 200),
    (245, 130, 48),
    (145, 30, 180),
    (70, 240, 240),
    (240, 50, 230),
    (210, 245, 60),
    (250, 190, 212),
    (0, 128, 128),
    (220, 190, 255),
    (170, 110, 40),
    (128, 0, 0),
    (170, 255, 195),
    (128, 128, 0),
]
MASK_ALPHA = 0.45


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)  # Pillow >= 10.1: a scalable font
    except TypeError:
        return ImageFont.load_default()


def label_of(obj) -> str:
    score = f"{obj.score:g}"
    return f"{obj.tag} {score}" + (f" ({obj.confidence:.2f})" if obj.confidence is not None else "")


def draw_guidance(image: torch.Tensor, guidance: RealignGuidance) -> torch.Tensor:
    """``image`` [H, W, 3] in [0, 1] -> the same size with every object drawn on it."""
    height, width = image.shape[:2]
    canvas = image.detach().float().clamp(0, 1).cpu().numpy() * 255.0
    colors = [PALETTE[i % len(PALETTE)] for i in range(len(guidance.objects))]
    for obj, color in zip(guidance.objects, colors):
        alpha = MASK_ALPHA * obj.mask.numpy()[..., None]
        canvas = canvas * (1.0 - alpha) + np.asarray(color, dtype=np.float32) * alpha
    picture = Image.fromarray(np.clip(canvas, 0, 255).round().astype(np.uint8))
    draw = ImageDraw.Draw(picture)
    font = _font(max(10, min(height, width) // 32))
    line = max(1, round(min(height, width) / 256))
    for obj, color in zip(guidance.objects, colors):
        box = obj.box or _mask_box(obj.mask)
        if box is None:
            continue
        x0, y0, x1, y1 = (float(v) for v in box)
        draw.rectangle((x0, y0, x1, y1), outline=color, width=line)
        text = label_of(obj)
        left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
        tw, th = right - left, bottom - top
        tx = min(max(0.0, x0), max(0.0, width - tw - 4))
        ty = y0 - th - 4 if y0 - th - 4 >= 0 else min(y0 + line, max(0.0, height - th - 4))
        draw.rectangle((tx, ty, tx + tw + 4, ty + th + 4), fill=color)
        ink = (0, 0, 0) if sum(color) > 380 else (255, 255, 255)
        draw.text((tx + 2 - left, ty + 2 - top), text, fill=ink, font=font)
    if guidance.source:
        footer = f"scores: {guidance.source}" if guidance.objects else f"no object found; scores: {guidance.source}"
        left, top, right, bottom = draw.textbbox((0, 0), footer, font=font)
        y = height - (bottom - top) - 4
        draw.rectangle((0, y - 2, right - left + 4, height), fill=(0, 0, 0))
        draw.text((2 - left, y - top), footer, fill=(255, 255, 255), font=font)
    return torch.from_numpy(np.asarray(picture).astype(np.float32) / 255.0)


def _mask_box(mask: torch.Tensor):
    ys, xs = torch.nonzero(mask > 0.5, as_tuple=True)
    if ys.numel() == 0:
        return None
    return (float(xs.min()), float(ys.min()), float(xs.max()) + 1, float(ys.max()) + 1)


def draw_batch(images: torch.Tensor, guidances: list[RealignGuidance]) -> torch.Tensor:
    """[B, H, W, 3] previews, one per image and guidance."""
    return torch.stack([draw_guidance(img, g) for img, g in zip(images, guidances)])
