"""The Local Dense Captioner's three tiny models, loaded through the pack's real loaders."""

from __future__ import annotations

from pathlib import Path

from .grounding import TINY_GROUNDING_DINO, write_tiny_grounding_dino
from .ram import write_tiny_ram
from .sam import write_tiny_sam


def tiny_captioner_models(folder: Path, image_size: int = 96):
    """(tagger, detector, segmenter): RAM always tags book, desk and banana, the others never; GroundingDINO
    reads images at ``image_size`` (larger: slower detections)."""
    from realign_diff.dense_captioner.grounding import load_grounding_dino
    from realign_diff.dense_captioner.ram import load_ram
    from realign_diff.dense_captioner.sam import load_sam

    tagger = load_ram(str(write_tiny_ram(folder / "ram", present=["book", "desk", "banana"])))
    checkpoint, bert_dir = write_tiny_grounding_dino(folder / "grounding-dino")
    detector = load_grounding_dino(checkpoint, bert_dir, config=TINY_GROUNDING_DINO, image_size=image_size)
    return tagger, detector, load_sam(write_tiny_sam(folder / "sams"))
