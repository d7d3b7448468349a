"""The fine-stage guidance: per object a tag, a likelihood score, a local caption and a mask.

This is what the Local Dense Captioner produces and the Realign Attention Patch consumes
(ComfyUI type ``REALIGN_GUIDANCE``: a list of ``RealignGuidance``, one per image).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from .tokens import split_words

VALID_SCORES = (0.0, 0.5, 2.0)
MASK_THRESHOLD = 0.5  # the patch counts a pixel as inside the object when its mask value is above this


EMPTY_PROMPT = (
    "The prompt is empty: the second pass would be sampled from an empty prompt. Write the prompt the coarse image "
    "was generated from (its positive prompt) in the {where}."
)


def require_prompt(prompt: str, where: str) -> str:
    """The prompt, stripped; a clear error naming the node to fill when it is empty or whitespace."""
    if not isinstance(prompt, str) or not prompt.strip():
        raise ValueError(EMPTY_PROMPT.format(where=where))
    return prompt.strip()


def mask_problem(mask: torch.Tensor, tag: str) -> str | None:
    """Why the patch would see no pixel of this mask (empty, or painted too faint), with the fix; None if usable."""
    peak = float(mask.max()) if mask.numel() else 0.0
    if peak > MASK_THRESHOLD:
        return None
    paint = "Paint it in the Load Image node's mask editor (right-click > Open in MaskEditor)"
    if peak <= 0:
        return f"The mask for {tag!r} is empty. {paint} or feed a non-empty MASK."
    return (
        f"The mask for {tag!r} is too faint: its largest value is {peak:.2f}, and the patch counts only pixels above "
        f"{MASK_THRESHOLD:g}. {paint} at full opacity and hardness, or threshold it (a ThresholdMask node with a value "
        f"below {peak:.2f})."
    )


@dataclass
class GuidedObject:
    tag: str
    score: float  # likelihood the object belongs in the scene: 2 certainly, 0.5 maybe, 0 unlikely
    caption: str  # local caption: the object as the prompt wants it, e.g. "a yellow pen"
    mask: torch.Tensor  # [H, W] float32 in [0, 1] at the image's resolution
    box: tuple[float, float, float, float] | None = None  # xyxy, pixels
    confidence: float | None = None  # detector confidence, when detected

    def __post_init__(self):
        if self.mask.dim() != 2:
            raise ValueError(f"object {self.tag!r}: mask must be [H, W], got shape {tuple(self.mask.shape)}")
        self.mask = self.mask.detach().float().clamp(0, 1).cpu()
        self.score = float(self.score)

    @property
    def mask_area(self) -> float:
        """Fraction of the image the mask covers."""
        return float((self.mask > MASK_THRESHOLD).float().mean()) if self.mask.numel() else 0.0


@dataclass
class RealignGuidance:
    prompt: str
    width: int
    height: int
    objects: list[GuidedObject] = field(default_factory=list)
    source: str = ""  # what produced the scores and captions, e.g. "manual", "offline", "llm:gpt-4o"

    def __post_init__(self):
        for obj in self.objects:
            if tuple(obj.mask.shape) != (self.height, self.width):
                raise ValueError(
                    f"object {obj.tag!r}: mask is {tuple(obj.mask.shape)} but the guidance is for a "
                    f"{self.height}x{self.width} image"
                )

    def to_dict(self) -> dict:
        """JSON-ready description (masks summarised by their area; the MASK output carries them)."""
        return {
            "prompt": self.prompt,
            "width": self.width,
            "height": self.height,
            "source": self.source,
            "objects": [
                {
                    "tag": o.tag,
                    "score": o.score,
                    "caption": o.caption,
                    "box": list(o.box) if o.box is not None else None,
                    "confidence": o.confidence,
                    "mask_area": round(o.mask_area, 4),
                }
                for o in self.objects
            ],
        }

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)


def guidance_list(value) -> list[RealignGuidance]:
    """A REALIGN_GUIDANCE value as a list (one guidance per image), checking its type."""
    items = [value] if isinstance(value, RealignGuidance) else value
    if not isinstance(items, (list, tuple)) or not all(isinstance(g, RealignGuidance) for g in items):
        raise TypeError(
            "Expected a REALIGN_GUIDANCE (from the Local Dense Captioner or Realign Guidance From Mask), "
            f"got {type(value).__name__}."
        )
    return list(items)


def _mask_2d(mask: torch.Tensor, label: str) -> torch.Tensor:
    if mask.dim() == 3:
        if mask.shape[0] != 1:
            raise ValueError(f"{label}: one mask per object, got a batch of {mask.shape[0]}; use one node per object.")
        mask = mask[0]
    if mask.dim() != 2:
        raise ValueError(f"{label}: expected a MASK, got a tensor of shape {tuple(mask.shape)}")
    return mask.float()


def _resized(mask: torch.Tensor, height: int, width: int) -> torch.Tensor:
    if tuple(mask.shape) == (height, width):
        return mask
    return F.interpolate(mask[None, None], size=(height, width), mode="bilinear", align_corners=False)[0, 0]


def guidance_from_mask(mask, caption, tag, score, prompt, guidance=None) -> list[RealignGuidance]:
    caption = caption.strip()
    tag = tag.strip() or (split_words(caption)[-1] if split_words(caption) else "")
    if not tag:
        raise ValueError("Give the object a caption (e.g. 'a yellow pen') or a tag (e.g. 'pen').")
    mask = _mask_2d(mask, f"object {tag!r}")
    if (problem := mask_problem(mask, tag)) is not None:
        raise ValueError(problem)
    prompt = prompt.strip()
    entries = (
        guidance_list(guidance) if guidance is not None else [RealignGuidance(prompt, mask.shape[1], mask.shape[0])]
    )
    out = []
    for entry in entries:
        if prompt and entry.prompt.strip() and prompt != entry.prompt.strip():
            raise ValueError(
                f"This node's prompt differs from the chained guidance's prompt {entry.prompt!r}: leave one empty."
            )
        entry_prompt = entry.prompt.strip() or prompt
        if not entry_prompt:
            raise ValueError("Write the prompt of the second pass (on this node or the first node of the chain).")
        obj = GuidedObject(tag=tag, score=score, caption=caption or tag, mask=_resized(mask, entry.height, entry.width))
        out.append(
            RealignGuidance(entry_prompt, entry.width, entry.height, [*entry.objects, obj], entry.source or "manual")
        )
    return out
