"""RAM (Recognize Anything / RAM++) nodes: the loader, and a tagger usable on its own.

Other nodes take the loader's ``REALIGN_RAM`` output (a ComfyUI ModelPatcher around
``realign_diff.dense_captioner.ram.RamTagger``) and call ``loaded_tagger(ram)`` to get the module on its device.
"""

from __future__ import annotations

import json
import re

from ..realign_diff.dense_captioner.scoring import split_tag_list
from ..realign_diff.dtypes import PRECISION_CHOICES, dtype_of
from .common import CATEGORY, RAM, node_id


def loaded_tagger(ram):
    """The RamTagger of a ``REALIGN_RAM`` value, loaded onto ComfyUI's compute device (offloaded again when
    ComfyUI needs the memory)."""
    from . import comfy_runtime

    return comfy_runtime.load_all(ram)[0]


def parse_threshold_overrides(text: str) -> dict[str, float]:
    """``"pen: 0.5, desk=0.8"`` (commas or new lines between entries, ``:`` or ``=`` inside) -> {tag: threshold}."""
    overrides = {}
    for item in re.split(r"[,\n]", text or ""):
        item = item.strip()
        if not item:
            continue
        name, sep, value = item.rpartition(":") if ":" in item else item.rpartition("=")
        try:
            number = float(value)
        except ValueError:
            number = None
        if not sep or not name.strip() or number is None or not 0.0 <= number <= 1.0:
            raise ValueError(f"threshold override {item!r}: write 'tag: threshold' with a threshold between 0 and 1")
        overrides[name.strip()] = number
    return overrides


def _dtype(precision: str, device):
    import torch

    if precision != "auto":
        return dtype_of(precision)
    import comfy.model_management as mm

    return (
        torch.float16
        if device.type != "cpu" and mm.should_use_fp16(device, prioritize_performance=False)
        else torch.float32
    )


class RamLoader:
    @classmethod
    def INPUT_TYPES(cls):
        import folder_paths

        return {
            "required": {
                "ckpt_name": (
                    folder_paths.get_filename_list("ram"),
                    {
                        "tooltip": "RAM (ram_swin_large_14m.pth) or RAM++ (ram_plus_swin_large_14m.pth) checkpoint in "
                        "models/ram. ram_tag_list.txt and ram_tag_list_threshold.txt must sit beside it."
                    },
                ),
                "precision": (
                    list(PRECISION_CHOICES),
                    {
                        "default": "auto",
                        "tooltip": "Weight precision. auto: fp16 on a GPU that supports it, else fp32.",
                    },
                ),
            }
        }

    RETURN_TYPES = (RAM,)
    RETURN_NAMES = ("ram",)
    OUTPUT_TOOLTIPS = (
        "The RAM / RAM++ image tagger (4,585 tags), for the RAM Tagger and Local Dense Captioner nodes.",
    )
    FUNCTION = "load"
    CATEGORY = CATEGORY
    DESCRIPTION = (
        "Loads a Recognize Anything tagger (RAM or RAM++, detected from the file) from models/ram, with its tag "
        "list and per-tag thresholds read from ram_tag_list.txt and ram_tag_list_threshold.txt in the same folder."
    )

    def load(self, ckpt_name, precision="auto"):
        import comfy.model_management as mm

        from ..realign_diff.dense_captioner.ram import RAM_SOURCE, load_ram
        from . import comfy_runtime
        from .model_folders import model_file

        path = model_file(ckpt_name, f"RAM checkpoint named {ckpt_name}", RAM_SOURCE)
        tagger = load_ram(path, dtype=_dtype(precision, mm.get_torch_device()), device=mm.unet_offload_device())
        return (comfy_runtime.managed(tagger),)


class RamTag:
    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "ram": (RAM, {"tooltip": "The tagger from RAM Tagger Loader."}),
                "image": ("IMAGE", {"tooltip": "Images to tag (each is resized to the model's 384x384 input)."}),
                "threshold": (
                    "FLOAT",
                    {
                        "default": 0.0,
                        "min": 0.0,
                        "max": 1.0,
                        "step": 0.01,
                        "tooltip": (
                            "0: each tag's own threshold (ram_tag_list_threshold.txt). Above 0: this threshold for "
                            "every tag."
                        ),
                    },
                ),
                "top_k": (
                    "INT",
                    {
                        "default": 0,
                        "min": 0,
                        "max": 10000,
                        "tooltip": "At most this many tags per image, best first. 0: no limit.",
                    },
                ),
            },
            "optional": {
                "threshold_overrides": (
                    "STRING",
                    {
                        "default": "",
                        "multiline": True,
                        "tooltip": (
                            "Per-tag thresholds that win over the others, e.g. 'person: 0.9, sky: 0.5' "
                            "(commas or lines)."
                        ),
                    },
                ),
                "exclude": (
                    "STRING",
                    {"default": "", "multiline": True, "tooltip": "Tags never returned, separated by commas or lines."},
                ),
            },
        }

    RETURN_TYPES = ("STRING", "STRING")
    RETURN_NAMES = ("tags", "scores_json")
    OUTPUT_TOOLTIPS = (
        "Tags per image, best first, separated by ', '; one line per image of the batch.",
        'JSON: one list per image of {"tag": name, "score": probability}, best first.',
    )
    FUNCTION = "tag"
    CATEGORY = CATEGORY
    DESCRIPTION = "Tags images with RAM / RAM++: every tag whose probability exceeds its threshold, best first."

    def tag(self, ram, image, threshold=0.0, top_k=0, threshold_overrides="", exclude=""):
        tagger = loaded_tagger(ram)
        results = tagger.tag(
            image,
            threshold=threshold if threshold > 0 else None,
            threshold_overrides=parse_threshold_overrides(threshold_overrides),
            top_k=top_k or None,
            exclude=split_tag_list(exclude),
        )
        text = "\n".join(", ".join(t.name for t in tags) for tags in results)
        data = [[{"tag": t.name, "score": round(t.score, 4)} for t in tags] for tags in results]
        return (text, json.dumps(data))


NODE_CLASS_MAPPINGS = {
    node_id("RamLoader"): RamLoader,
    node_id("RamTagger"): RamTag,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    node_id("RamLoader"): "RAM Tagger Loader",
    node_id("RamTagger"): "RAM Tagger",
}
