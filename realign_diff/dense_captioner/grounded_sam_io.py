"""GroundingDINO / SAM model files: names, sizes, sources, and telling users what a wrong file is
(the files themselves are read by ``realign_diff.checkpoint_file``)."""

from __future__ import annotations

import os

from ..checkpoint_file import ModelSource

# file name, size, where to get it
GROUNDING_DINO_FILES = {
    "swint_ogc": (
        "groundingdino_swint_ogc.pth",
        "694 MB",
        "https://github.com/IDEA-Research/GroundingDINO/releases/download/v0.1.0-alpha/groundingdino_swint_ogc.pth",
    ),
    "swinb": (
        "groundingdino_swinb_cogcoor.pth",
        "938 MB",
        "https://github.com/IDEA-Research/GroundingDINO/releases/download/v0.1.0-alpha2/groundingdino_swinb_cogcoor.pth",
    ),
}
BERT_SOURCE = "https://huggingface.co/google-bert/bert-base-uncased (config.json and vocab.txt)"
SAM_FILES = {
    "vit_b": ("sam_vit_b_01ec64.pth", "375 MB", "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_b_01ec64.pth"),
    "vit_l": (
        "sam_vit_l_0b3195.pth",
        "1.25 GB",
        "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_l_0b3195.pth",
    ),
    "vit_h": (
        "sam_vit_h_4b8939.pth",
        "2.56 GB",
        "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_h_4b8939.pth",
    ),
}
GROUNDING_DINO_SOURCE = ModelSource(
    "GroundingDINO checkpoint",
    "grounding-dino",
    f"{GROUNDING_DINO_FILES['swint_ogc'][2]} (SwinB: {GROUNDING_DINO_FILES['swinb'][2]})",
)
SAM_SOURCE = ModelSource("SAM checkpoint", "sams", SAM_FILES["vit_b"][2] + " (vit_l, vit_h: same place)")

# key prefixes that identify a model family, and the folder it belongs in
_FAMILIES = (
    ("a SAM checkpoint (it belongs in models/sams)", ("image_encoder.", "prompt_encoder.", "mask_decoder.")),
    ("a GroundingDINO checkpoint (it belongs in models/grounding-dino)", ("backbone.0.", "transformer.", "bert.")),
    ("a Stable Diffusion checkpoint (it belongs in models/checkpoints)", ("model.diffusion_model.",)),
    ("a RAM (Recognize Anything) checkpoint (it belongs in models/ram)", ("label_embed",)),
)


def missing_file_message(what: str, path: str, folder: str, files: str, source: str) -> str:
    return f"{what} not found: {path}. Put {files} in ComfyUI's models/{folder} folder. Get it from: {source}"


def wrong_checkpoint_message(path: str, keys, expected: ModelSource, files: str) -> str:
    """The one 'this file is another model' message: what it looks like, where it belongs, what goes here."""
    return (
        f"{os.path.basename(path)} is not a {expected.what}: it looks like {describe_checkpoint(keys)}. "
        f"Put {files} in ComfyUI's models/{expected.folder} folder. Get it from: {expected.source}"
    )


def describe_checkpoint(keys) -> str:
    """What a state dict looks like, for 'this is not the model you think' messages."""
    keys = list(keys)
    for description, prefixes in _FAMILIES:
        if all(any(k.startswith(p) for k in keys) for p in prefixes):
            return description
    sample = ", ".join(sorted(keys)[:3]) or "no tensors"
    return f"an unknown checkpoint (keys such as {sample})"
