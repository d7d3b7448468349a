"""Keep ``import torchvision`` working when its compiled ops cannot load.

A torchvision built for another torch (or for CUDA on a CPU-only torch) fails to load its
``_C`` library, and then ``import torchvision`` itself dies with
``RuntimeError: operator torchvision::nms does not exist``: its fake-tensor registrations
need the ``nms``/``qnms`` schemas. transformers imports torchvision whenever it is
installed, so the whole model stack dies with it. When (and only when) the compiled
library fails to load, we define those two schemas with pure-torch kernels.
"""

from __future__ import annotations

import glob
import importlib.util
import logging
import os
import sys

import torch

log = logging.getLogger(__name__)

_state = {"checked": False, "fallback": False}
_fallback_lib = None


def box_iou(boxes_a: torch.Tensor, boxes_b: torch.Tensor) -> torch.Tensor:
    """IoU between two sets of xyxy boxes: [N, 4] x [M, 4] -> [N, M]."""
    area_a = (boxes_a[:, 2] - boxes_a[:, 0]).clamp(min=0) * (boxes_a[:, 3] - boxes_a[:, 1]).clamp(min=0)
    area_b = (boxes_b[:, 2] - boxes_b[:, 0]).clamp(min=0) * (boxes_b[:, 3] - boxes_b[:, 1]).clamp(min=0)
    top_left = torch.maximum(boxes_a[:, None, :2], boxes_b[None, :, :2])
    bottom_right = torch.minimum(boxes_a[:, None, 2:], boxes_b[None, :, 2:])
    inter = (bottom_right - top_left).clamp(min=0).prod(dim=-1)
    union = area_a[:, None] + area_b[None, :] - inter
    return inter / union.clamp(min=torch.finfo(inter.dtype).tiny)


def nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Greedy non-maximum suppression; same contract as ``torchvision.ops.nms``."""
    if boxes.numel() == 0:
        return torch.empty(0, dtype=torch.long, device=boxes.device)
    order = torch.argsort(scores, descending=True)
    iou = box_iou(boxes[order].float(), boxes[order].float())
    suppressed = torch.zeros(len(order), dtype=torch.bool)
    keep = []
    for i in range(len(order)):
        if suppressed[i]:
            continue
        keep.append(i)
        suppressed |= iou[i].cpu() > iou_threshold
    return order[torch.tensor(keep, dtype=torch.long, device=boxes.device)]


def _compiled_ops_load() -> bool:
    spec = importlib.util.find_spec("torchvision")
    if spec is None or spec.origin is None:
        return True  # not installed: nothing to protect
    libraries = glob.glob(os.path.join(os.path.dirname(spec.origin), "_C*.so")) + glob.glob(
        os.path.join(os.path.dirname(spec.origin), "_C*.pyd")
    )
    if not libraries:
        return False
    try:
        torch.ops.load_library(libraries[0])
        return True
    except (OSError, RuntimeError, ImportError):
        return False


def ensure_torchvision_importable() -> bool:
    """Make ``import torchvision`` safe. Returns True when pure-torch fallbacks were installed.

    Call before anything that may import torchvision (transformers, segment-anything,
    groundingdino). Cheap after the first call.
    """
    global _fallback_lib
    if _state["checked"]:
        return _state["fallback"]
    _state["checked"] = True
    if "torchvision" in sys.modules or hasattr(torch.ops.torchvision, "nms"):
        return False
    try:
        torch.ops.torchvision.nms  # noqa: B018 - raises when the schema is missing
        return False
    except (AttributeError, RuntimeError):
        pass
    if _compiled_ops_load():
        return False
    lib = torch.library.Library("torchvision", "DEF")
    for name in ("nms", "qnms"):
        lib.define(f"{name}(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        lib.impl(name, nms, "CompositeExplicitAutograd")
    _fallback_lib = lib  # the registration lives as long as this object
    _state["fallback"] = True
    log.warning(
        "torchvision's compiled ops do not load with torch %s (torchvision and torch versions do not "
        "match); using pure-torch fallbacks for nms. Reinstall the torchvision that matches your torch "
        "to silence this.",
        torch.__version__,
    )
    return True
