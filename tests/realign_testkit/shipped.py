"""Run the shipped workflows (``workflows/*.json``) in a real ComfyUI on random-weight models.

``prepare_inputs`` writes, for every loader node of a converted prompt, a random-weight model in the real
file format under the name the workflow asks for (into the temp ComfyUI's models folder), and the images a
``LoadImage`` asks for into its input folder. A loader type with no writer here fails loudly: a new
workflow cannot be skipped silently. ``fast_settings`` shrinks sizes and step counts so a whole workflow
runs in seconds on CPU; the graph, the nodes and every connection stay as shipped.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from .pack import PACK_ROOT

SHIPPED_DIR = PACK_ROOT / "workflows"
FAST_SIZE = 64  # pixels: the random checkpoint's UNet is tiny, the VAE and CLIP are full size
FAST_STEPS = 2


def shipped_workflows() -> list[Path]:
    return sorted(SHIPPED_DIR.glob("*.json"))


def _link_or_write(target: Path, write: Callable[[Path], object], cache: Path) -> None:
    """Write the model once into ``cache``, then link it under every name a workflow uses."""
    if target.exists():
        return
    if not cache.exists():
        write(cache)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.symlink_to(cache, target_is_directory=cache.is_dir())


def _checkpoint(inputs: dict, comfyui) -> None:
    from .family_checkpoints import link_checkpoint
    from .sd15_checkpoint import write_sd15_checkpoint

    folder = comfyui.models_dir / "checkpoints"
    if "xl" in inputs["ckpt_name"].lower():  # an SDXL workflow: a reduced SDXL that ComfyUI detects as SDXL
        link_checkpoint(folder, inputs["ckpt_name"], "sdxl")
        return
    _link_or_write(
        folder / inputs["ckpt_name"],
        lambda p: write_sd15_checkpoint(p, small_unet=True),
        folder / "realign_sd15_random.safetensors",
    )


def _image(inputs: dict, comfyui) -> None:
    import numpy as np
    from PIL import Image

    path = comfyui.base_dir / "input" / inputs["image"]
    if path.exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 255, (FAST_SIZE, FAST_SIZE, 3), dtype=np.uint8)
    pixels[8:40, 8:40] = (200, 30, 30)  # a red square: something for a detector to find
    alpha = np.full((FAST_SIZE, FAST_SIZE), 255, dtype=np.uint8)
    alpha[8:40, 8:40] = 0  # painted region: LoadImage's MASK is 1 - alpha
    Image.fromarray(np.dstack([pixels, alpha]), "RGBA").save(path)


def _link(target: Path, source: Path) -> None:
    if target.exists() or target.is_symlink():
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    target.symlink_to(source, target_is_directory=source.is_dir())


def _grounding_dino(inputs: dict, comfyui) -> None:
    from .grounding import install_in_comfyui, write_bert_folder

    names = install_in_comfyui(comfyui)  # tiny GroundingDINO + BERT + SAM, and "auto" taught the tiny config
    models = Path(comfyui.models_dir)
    _link(models / "grounding-dino" / inputs["model_name"], models / "grounding-dino" / names["grounding_dino"])
    bert = models / "bert-base-uncased"
    if inputs["bert"] == "bert-base-uncased":  # the folder itself holds the model
        if not (bert / "config.json").exists():
            write_bert_folder(bert)  # same seed, same architecture as the tiny GroundingDINO's text encoder
    else:
        _link(bert / inputs["bert"], bert / names["bert"])


def _sam(inputs: dict, comfyui) -> None:
    from .sam import write_tiny_sam

    folder = Path(comfyui.models_dir) / "sams"
    if not (folder / inputs["model_name"]).exists():
        write_tiny_sam(folder, name=inputs["model_name"])


def _blip2(inputs: dict, comfyui) -> None:
    from .blip2 import write_tiny_blip2

    root = Path(comfyui.models_dir) / "blip2"
    if not (root / inputs["captioner"]).exists() or not (root / inputs["text_encoder"]).exists():
        write_tiny_blip2(root, captioner_name=inputs["captioner"], text_encoder_name=inputs["text_encoder"])


def _ram(inputs: dict, comfyui) -> None:
    from .ram import write_tiny_ram

    folder = Path(comfyui.models_dir) / "ram"
    if not (folder / inputs["ckpt_name"]).exists():
        write_tiny_ram(folder, "ram_plus" if "plus" in inputs["ckpt_name"] else "ram", file_name=inputs["ckpt_name"])


def _clip_score(inputs: dict, comfyui) -> None:
    from .clip_model import write_tiny_clip

    folder = Path(comfyui.models_dir) / "clip_score" / inputs["model"]
    if not (folder / "config.json").exists():
        write_tiny_clip(folder)  # a tiny random CLIP in openai/clip-vit-large-patch14's folder layout


# node type -> writer(inputs of the API prompt node, comfyui): the random-weight model, in the real file
# format, under the name the workflow asks for.
MODEL_WRITERS: dict[str, Callable[[dict, object], None]] = {
    "CheckpointLoaderSimple": _checkpoint,
    "LoadImage": _image,
    "RealignDiffGroundingDinoLoader": _grounding_dino,
    "RealignDiffSamLoader": _sam,
    "RealignDiffBlip2RewardLoader": _blip2,
    "RealignDiffRamLoader": _ram,
    "RealignDiffClipScoreLoader": _clip_score,
}
LOADER_HINTS = ("Loader", "LoadImage", "Load")


def prepare_inputs(prompt: dict, comfyui) -> None:
    """Write everything the prompt's loaders will read; raise for a loader nobody knows how to feed."""
    unknown = set()
    for entry in prompt.values():
        writer = MODEL_WRITERS.get(entry["class_type"])
        if writer is not None:
            writer(entry["inputs"], comfyui)
        elif any(hint in entry["class_type"] for hint in LOADER_HINTS):
            unknown.add(entry["class_type"])
    if unknown:
        raise KeyError(
            f"no random-model writer for loader node(s) {sorted(unknown)}: add one to "
            "realign_testkit.shipped.MODEL_WRITERS"
        )


def fast_settings(prompt: dict) -> dict:
    """Small latents and two sampling steps; everything else (masks included: the patch resizes them) as shipped."""
    for entry in prompt.values():
        inputs = entry["inputs"]
        if entry["class_type"] in ("KSampler", "KSamplerAdvanced") and isinstance(inputs.get("steps"), int):
            inputs["steps"] = FAST_STEPS
            if "end_at_step" in inputs and isinstance(inputs["end_at_step"], int):
                inputs["end_at_step"] = min(inputs["end_at_step"], FAST_STEPS)
        if entry["class_type"] == "EmptyLatentImage":
            inputs["width"] = inputs["height"] = FAST_SIZE
    return prompt


def environment_note() -> str:
    return f"CPU, {os.cpu_count()} cores; random-weight models; {FAST_SIZE} px; {FAST_STEPS} steps"
