"""Reading GroundingDINO / SAM checkpoint files and telling users what a wrong file is.

Checkpoints are read tensor-only (``torch.load(..., weights_only=True)`` or safetensors), never by
unpickling arbitrary objects.
"""

from __future__ import annotations

import os
import pickle

import torch

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
    "vit_l": ("sam_vit_l_0b3195.pth", "1.25 GB", "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_l_0b3195.pth"),
    "vit_h": ("sam_vit_h_4b8939.pth", "2.56 GB", "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_h_4b8939.pth"),
}

# key prefixes that identify a model family, and the folder it belongs in
_FAMILIES = (
    ("a SAM checkpoint (it belongs in models/sams)", ("image_encoder.", "prompt_encoder.", "mask_decoder.")),
    ("a GroundingDINO checkpoint (it belongs in models/grounding-dino)", ("backbone.0.", "transformer.", "bert.")),
    ("a Stable Diffusion checkpoint (it belongs in models/checkpoints)", ("model.diffusion_model.",)),
    ("a RAM (Recognize Anything) checkpoint (it belongs in models/ram)", ("label_embed",)),
)


def missing_file_message(what: str, path: str, folder: str, files: str, source: str) -> str:
    return (
        f"{what} not found: {path}. Put {files} in ComfyUI's models/{folder} folder. Get it from: {source}"
    )


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The tensors of a ``.pth`` / ``.safetensors`` checkpoint, unwrapped from ``{"model": ...}`` and ``module.``."""
    path = os.fspath(path)
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        try:
            obj = load_file(path, device="cpu")
        except Exception as error:  # safetensors raises its own error type
            raise ValueError(f"{os.path.basename(path)} is not a readable safetensors file ({error})") from error
    else:
        obj = _torch_load(path)
    for key in ("model", "state_dict"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict):
        raise ValueError(f"{path} does not hold a state dict (found {type(obj).__name__})")
    state = {}
    for key, value in obj.items():
        if not isinstance(value, torch.Tensor):
            continue
        state[key[len("module.") :] if key.startswith("module.") else key] = value
    return state


def _torch_load(path: str):
    try:
        try:
            return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as error:
            if "mmap" not in str(error):
                raise
            return torch.load(path, map_location="cpu", weights_only=True)  # legacy (non-zip) format
    except (pickle.UnpicklingError, EOFError, RuntimeError) as error:
        raise ValueError(
            f"{os.path.basename(path)} could not be read as a tensors-only PyTorch checkpoint "
            f"({str(error).splitlines()[0]}). The file may be truncated or not a checkpoint (download it again), "
            "or hold Python objects other than tensors."
        ) from error


def describe_checkpoint(keys) -> str:
    """What a state dict looks like, for 'this is not the model you think' messages."""
    keys = list(keys)
    for description, prefixes in _FAMILIES:
        if all(any(k.startswith(p) for k in keys) for p in prefixes):
            return description
    sample = ", ".join(sorted(keys)[:3]) or "no tensors"
    return f"an unknown checkpoint (keys such as {sample})"
