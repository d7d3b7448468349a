"""GroundingDINO and SAM loaders, and a Grounded-SAM masks node (tags -> one mask per tag).

The loaders return ComfyUI ``ModelPatcher``s (types ``REALIGN_GROUNDING_DINO`` / ``REALIGN_SAM``)
wrapping a :class:`GroundingDinoDetector` / :class:`SamSegmenter`, so ComfyUI moves them to the GPU
when used and offloads them under memory pressure. Nodes that consume them call :func:`loaded`.
"""

from __future__ import annotations

import json
import os

import torch

from ..realign_diff.checkpoint_file import ModelSource
from ..realign_diff.dense_captioner import grounded_sam, grounding, sam
from ..realign_diff.dense_captioner.grounded_sam_io import (
    BERT_SOURCE,
    GROUNDING_DINO_FILES,
    GROUNDING_DINO_SOURCE,
    SAM_FILES,
    SAM_SOURCE,
)
from ..realign_diff.dense_captioner.grounding import BOX_THRESHOLD, TEXT_THRESHOLD
from ..realign_diff.dense_captioner.scoring import split_tag_list
from . import model_folders
from .common import CATEGORY, GROUNDING_DINO, SAM, node_id

BERT_FOLDER = "bert-base-uncased"  # the folder itself (where other packs put it) or one sub-folder of it
BERT = ModelSource("bert-base-uncased folder (config.json and vocab.txt)", BERT_FOLDER, BERT_SOURCE)
# Imported only when a model loads; without them these nodes are hidden and the log says what to install.
REQUIRES = {
    "groundingdino": "groundingdino-py>=0.4.0",
    "segment_anything": "segment-anything>=1.0",
    "transformers": "transformers>=4.51",
}


def bert_choices() -> list[str]:
    """``bert-base-uncased`` (the models/bert-base-uncased folder itself, when it holds config.json)
    and every sub-folder that holds a config.json."""
    choices = []
    if any(os.path.isfile(os.path.join(root, "config.json")) for root in model_folders.folder_paths_for(BERT_FOLDER)):
        choices.append(BERT_FOLDER)
    choices += [d for d in model_folders.list_model_dirs(BERT_FOLDER) if d not in choices]
    return choices or [BERT_FOLDER]


def resolve_bert_dir(choice: str) -> str:
    found = model_folders.find_model_dir(BERT_FOLDER, choice)
    if found and os.path.isfile(os.path.join(found, "config.json")):
        return found
    if choice == BERT_FOLDER:
        for root in model_folders.folder_paths_for(BERT_FOLDER):
            if os.path.isfile(os.path.join(root, "config.json")):
                return root
    raise FileNotFoundError(model_folders.missing_model_message(f"bert-base-uncased folder ({choice})", BERT))


def masks_and_labels(
    per_image: list[list[grounded_sam.GroundedObject]], height: int, width: int
) -> tuple[torch.Tensor, list[dict]]:
    """All objects' masks as one MASK batch (a single empty mask when nothing was found) and their labels."""
    masks, labels = [], []
    for index, objects in enumerate(per_image):
        for obj in objects:
            labels.append(
                {
                    "image": index,
                    "mask": len(masks),
                    "tag": obj.tag,
                    "box": [round(v, 2) for v in obj.box],
                    "confidence": round(obj.confidence, 4),
                }
            )
            masks.append(obj.mask)
    if not masks:
        return torch.zeros((1, height, width), dtype=torch.float32), labels
    return torch.stack(masks).float(), labels


class GroundingDinoLoader:
    DESCRIPTION = (
        "Loads an original GroundingDINO checkpoint (groundingdino_swint_ogc.pth or groundingdino_swinb_cogcoor.pth "
        "from models/grounding-dino) with bert-base-uncased from models/bert-base-uncased (config.json and vocab.txt; "
        "nothing is downloaded)."
    )
    CATEGORY = CATEGORY
    FUNCTION = "load"
    RETURN_TYPES = (GROUNDING_DINO,)
    RETURN_NAMES = ("grounding_dino",)
    OUTPUT_TOOLTIPS = ("The GroundingDINO detector, for the Local Dense Captioner or Grounded-SAM Masks.",)

    @classmethod
    def INPUT_TYPES(cls):
        import folder_paths

        return {
            "required": {
                "model_name": (
                    folder_paths.get_filename_list("grounding-dino"),
                    {
                        "tooltip": (
                            f"Checkpoint in models/grounding-dino. Get {GROUNDING_DINO_FILES['swint_ogc'][0]} from "
                            f"{GROUNDING_DINO_FILES['swint_ogc'][2]}"
                        )
                    },
                ),
                "bert": (
                    bert_choices(),
                    {
                        "tooltip": (
                            "The bert-base-uncased folder (config.json + vocab.txt): models/bert-base-uncased itself "
                            f"or a sub-folder of it. Get it from {BERT_SOURCE}"
                        )
                    },
                ),
                "config": (
                    ["auto", *grounding.CONFIGS],
                    {
                        "default": "auto",
                        "tooltip": "Architecture: auto reads it from the checkpoint (SwinT OGC or SwinB).",
                    },
                ),
            }
        }

    def load(self, model_name, bert, config):

        from .comfy_runtime import managed

        path = model_folders.model_file(model_name, f"GroundingDINO checkpoint {model_name!r}", GROUNDING_DINO_SOURCE)
        detector = grounding.load_grounding_dino(path, resolve_bert_dir(bert), config=config)
        return (managed(detector),)


class SamLoader:
    DESCRIPTION = (
        "Loads an original Segment Anything checkpoint (sam_vit_b_01ec64.pth, sam_vit_l_0b3195.pth or "
        "sam_vit_h_4b8939.pth from models/sams); the model type is read from the file."
    )
    CATEGORY = CATEGORY
    FUNCTION = "load"
    RETURN_TYPES = (SAM,)
    RETURN_NAMES = ("sam",)
    OUTPUT_TOOLTIPS = ("The SAM segmenter, for the Local Dense Captioner or Grounded-SAM Masks.",)

    @classmethod
    def INPUT_TYPES(cls):
        import folder_paths

        return {
            "required": {
                "model_name": (
                    folder_paths.get_filename_list("sams"),
                    {"tooltip": f"Checkpoint in models/sams. Get {SAM_FILES['vit_b'][0]} from {SAM_FILES['vit_b'][2]}"},
                ),
                "model_type": (
                    ["auto", *sam.SAM_CONFIGS],
                    {
                        "default": "auto",
                        "tooltip": "auto reads the model type from the checkpoint; a fixed type must match the file.",
                    },
                ),
            }
        }

    def load(self, model_name, model_type):

        from .comfy_runtime import managed

        path = model_folders.model_file(model_name, f"SAM checkpoint {model_name!r}", SAM_SOURCE)
        return (managed(sam.load_sam(path, model_type=model_type)),)


class GroundedSamMasks:
    DESCRIPTION = (
        "Finds each tag in the image with GroundingDINO and segments it with SAM: one mask per tag found (all its "
        "boxes merged). Tags not found are left out; nothing found gives one empty mask and an empty label list."
    )
    CATEGORY = CATEGORY
    FUNCTION = "segment"
    RETURN_TYPES = ("MASK", "STRING")
    RETURN_NAMES = ("masks", "labels")
    OUTPUT_TOOLTIPS = (
        "One mask per tag found, for every image of the batch in turn.",
        "JSON list, one entry per mask: image index, mask index, tag, box (x0, y0, x1, y1 pixels), confidence.",
    )

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "grounding_dino": (GROUNDING_DINO, {"tooltip": "From GroundingDINO Loader."}),
                "sam": (SAM, {"tooltip": "From SAM Loader."}),
                "image": ("IMAGE", {"tooltip": "Image(s) to segment."}),
                "tags": (
                    "STRING",
                    {
                        "default": "",
                        "multiline": True,
                        "tooltip": "Objects to find, separated by commas or new lines, e.g. 'book, pen'.",
                    },
                ),
                "box_threshold": (
                    "FLOAT",
                    {
                        "default": BOX_THRESHOLD,
                        "min": 0.0,
                        "max": 1.0,
                        "step": 0.01,
                        "tooltip": "Minimum detection confidence of a box.",
                    },
                ),
                "text_threshold": (
                    "FLOAT",
                    {
                        "default": TEXT_THRESHOLD,
                        "min": 0.0,
                        "max": 1.0,
                        "step": 0.01,
                        "tooltip": "Minimum score of the tag's words for a box to count as that tag.",
                    },
                ),
                "nms_threshold": (
                    "FLOAT",
                    {
                        "default": 0.5,
                        "min": 0.0,
                        "max": 1.0,
                        "step": 0.01,
                        "tooltip": "Boxes of the same tag overlapping more than this (IoU) are merged.",
                    },
                ),
            }
        }

    def segment(self, grounding_dino, sam, image, tags, box_threshold, text_threshold, nms_threshold):
        from .comfy_runtime import load_all, progress

        tag_list = split_tag_list(tags)
        detector, segmenter = load_all(grounding_dino, sam)
        step = progress(grounded_sam.GROUND_TAGS_STEPS * image.shape[0])
        per_image = [
            grounded_sam.ground_tags(
                detector, segmenter, frame, tag_list, box_threshold, text_threshold, nms_threshold, on_step=step
            )
            for frame in image
        ]
        masks, labels = masks_and_labels(per_image, image.shape[1], image.shape[2])
        return (masks, json.dumps(labels))


NODE_CLASS_MAPPINGS = {
    node_id("GroundingDinoLoader"): GroundingDinoLoader,
    node_id("SamLoader"): SamLoader,
    node_id("GroundedSamMasks"): GroundedSamMasks,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    node_id("GroundingDinoLoader"): "GroundingDINO Loader",
    node_id("SamLoader"): "SAM Loader",
    node_id("GroundedSamMasks"): "Grounded-SAM Masks",
}
