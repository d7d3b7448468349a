"""CLIP score: ``100 * max(cos(E_image, E_text), 0)`` with CLIP ViT-L/14 (Hessel et al. 2021, as torchmetrics'
``CLIPScore`` computes it and text-to-image papers, RealignDiff's Table I among them, report it).

The score itself is torchmetrics' ``clip_score`` (its preprocessing through the model folder's ``CLIPProcessor``,
its feature normalization, its clamp), given our model loaded from a local Hugging Face folder (never downloaded),
called one image at a time: torchmetrics clamps the *mean* of a batch, and we want each image's own score.
torchmetrics 1.9 expects ``get_image_features`` / ``get_text_features`` to return the projected features (as in
transformers 4); transformers 5 returns a model output holding them as ``pooler_output``: :class:`_Features`
hands torchmetrics the tensor either way.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import torch

from ..reward.image_prep import to_bchw
from ..reward.prompts import match_prompts

SOURCE = "https://huggingface.co/openai/clip-vit-large-patch14"


class ClipFolderError(FileNotFoundError):
    pass


def check_clip_dir(folder: str | Path) -> Path:
    folder = Path(folder)
    config = folder / "config.json"
    if not config.is_file():
        raise ClipFolderError(
            f"{folder} is not a CLIP model folder (no config.json). Download openai/clip-vit-large-patch14 in "
            f"Hugging Face format: hf download openai/clip-vit-large-patch14 --local-dir {folder} ({SOURCE})"
        )
    model_type = json.loads(config.read_text(encoding="utf-8")).get("model_type")
    if model_type != "clip":
        raise ClipFolderError(f"{folder} holds a {model_type!r} model, not CLIP (model_type 'clip'); see {SOURCE}")
    has = lambda *names: any((folder / name).is_file() for name in names)  # noqa: E731
    if not has("preprocessor_config.json", "processor_config.json") or not has("tokenizer.json", "vocab.json"):
        raise ClipFolderError(
            f"{folder} has no image processor (preprocessor_config.json) or tokenizer files (tokenizer.json or "
            f"vocab.json + merges.txt): an incomplete download? Download the whole folder from {SOURCE}"
        )
    return folder


def _features(output) -> torch.Tensor:
    return output if isinstance(output, torch.Tensor) else output.pooler_output


class _Features:
    """The ``CLIPModel`` as torchmetrics calls it: ``to``, ``config``, and feature methods returning tensors."""

    def __init__(self, model):
        self.model, self.config = model, model.config

    def to(self, device):
        self.model.to(device)
        return self

    def get_image_features(self, pixel_values):
        return _features(self.model.get_image_features(pixel_values=pixel_values))

    def get_text_features(self, input_ids, attention_mask=None):
        return _features(self.model.get_text_features(input_ids=input_ids, attention_mask=attention_mask))


class ClipScore(torch.nn.Module):
    """A ``CLIPModel`` and its processor; :meth:`score` gives one CLIP score per image. An ``nn.Module`` so that
    ``.to()`` moves it and ComfyUI's ModelPatcher can manage it. fp32: torchmetrics hands the processor's fp32
    pixels to the model as they are."""

    def __init__(self, model, processor):
        super().__init__()
        self.model = model.eval().requires_grad_(False)
        self.processor = processor

    @classmethod
    def from_pretrained(cls, folder: str | Path, device: torch.device | str = "cpu") -> ClipScore:
        folder = check_clip_dir(folder)
        from transformers import CLIPModel, CLIPProcessor

        model = CLIPModel.from_pretrained(str(folder), dtype=torch.float32, local_files_only=True)
        processor = CLIPProcessor.from_pretrained(str(folder), local_files_only=True)
        return cls(model, processor).to(device)

    def train(self, mode: bool = True) -> ClipScore:
        return super().train(False)

    @property
    def model_device(self) -> torch.device:  # not "device": ComfyUI's ModelPatcher sets that attribute
        return next(self.model.parameters()).device

    @torch.no_grad()
    def score(self, images: torch.Tensor, prompts: str | Sequence[str]) -> torch.Tensor:
        """``images``: [B, H, W, 3] (ComfyUI) or [B, 3, H, W], float in [0, 1]; ``prompts``: one, or one per image.
        Returns [B] float32 on the CPU, each in [0, 100]."""
        from ..compat.torchvision_ops import ensure_torchvision_importable

        ensure_torchvision_importable()  # torchmetrics imports torchvision
        from torchmetrics.functional.multimodal import clip_score

        pixels = to_bchw(images)
        prompts = match_prompts(prompts, pixels.shape[0])
        as_bytes = (pixels.clamp(0, 1) * 255).round().to(torch.uint8).to(self.model_device)  # what an image file holds
        features = _Features(self.model)
        model = lambda: (features, self.processor)  # noqa: E731  (torchmetrics takes a factory)
        scores = [clip_score(image, text, model) for image, text in zip(as_bytes, prompts)]
        return torch.stack([s.detach().float().cpu() for s in scores]) if scores else torch.zeros(0)
