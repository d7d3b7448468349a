"""Grounded-SAM: tags -> GroundingDINO boxes -> SAM masks -> one object per tag.

The Realign Attention Patch works per tag (each tag owns a set of prompt tokens), so every tag
found in the image becomes exactly one object: all its boxes' masks united, the box around all of
them, its best detection confidence. Tags not found are absent; nothing found is an empty list.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from . import grounding
from .grounding import Detection, GroundingDinoDetector
from .sam import SamSegmenter

GROUND_TAGS_STEPS = 2  # on_step is called after detection and after segmentation


@dataclass
class GroundedObject:
    tag: str
    mask: torch.Tensor  # [H, W] float32 in {0, 1}
    box: tuple[float, float, float, float]  # xyxy pixels, around every detection of the tag
    confidence: float  # the tag's best detection confidence


def box_mask(box: Sequence[float], height: int, width: int) -> torch.Tensor:
    """A filled ``[H, W]`` rectangle: the mask of a box SAM returned nothing for."""
    x0, y0, x1, y1 = box
    mask = torch.zeros((height, width), dtype=torch.float32)
    mask[int(y0) : max(int(y0) + 1, int(round(y1))), int(x0) : max(int(x0) + 1, int(round(x1)))] = 1.0
    return mask


def merge_per_tag(
    detections: Sequence[Detection], masks: torch.Tensor, tags: Sequence[str] | None = None
) -> list[GroundedObject]:
    """One :class:`GroundedObject` per phrase: union of masks, union box, max confidence.

    ``masks[i]`` belongs to ``detections[i]``; an empty mask falls back to its box. Objects come
    in the order of ``tags`` when given, else of first detection.
    """
    if len(detections) != masks.shape[0]:
        raise ValueError(f"{len(detections)} detections but {masks.shape[0]} masks")
    height, width = masks.shape[-2:]
    objects: dict[str, GroundedObject] = {}
    for detection, mask in zip(detections, masks):
        mask = mask.float()
        if not bool((mask > 0).any()):
            mask = box_mask(detection.box, height, width)
        obj = objects.get(detection.phrase)
        if obj is None:
            objects[detection.phrase] = GroundedObject(
                detection.phrase, mask.clone(), tuple(detection.box), detection.confidence
            )
            continue
        obj.mask = torch.maximum(obj.mask, mask)
        obj.box = (
            min(obj.box[0], detection.box[0]),
            min(obj.box[1], detection.box[1]),
            max(obj.box[2], detection.box[2]),
            max(obj.box[3], detection.box[3]),
        )
        obj.confidence = max(obj.confidence, detection.confidence)
    if tags is None:
        return list(objects.values())
    return [objects[tag] for tag in dict.fromkeys(tags) if tag in objects]


def ground_tags(
    detector: GroundingDinoDetector,
    segmenter: SamSegmenter,
    image: torch.Tensor,
    tags: Sequence[str],
    box_threshold: float = grounding.BOX_THRESHOLD,
    text_threshold: float = grounding.TEXT_THRESHOLD,
    nms_threshold: float = 0.5,
    on_step: Callable[[int], None] | None = None,
) -> list[GroundedObject]:
    """Masks for ``tags`` in ``image`` (``[H, W, 3]`` in [0, 1]): one object per tag found.

    ``on_step(1)`` is called :data:`GROUND_TAGS_STEPS` times (after detection, after segmentation),
    so a ComfyUI progress callback can also cancel between the two.
    """
    detections = detector.detect(image, tags, box_threshold, text_threshold, nms_threshold)
    if on_step is not None:
        on_step(1)
    if not detections:
        if on_step is not None:
            on_step(1)
        return []
    boxes = torch.tensor([d.box for d in detections], dtype=torch.float32)
    masks = segmenter.segment(image, boxes)
    if on_step is not None:
        on_step(1)
    return merge_per_tag(detections, masks, tags)
