"""Which dtype each model of a ReFL run computes in, so that the small reward gradient survives.

The reward gradient (lambda = 1e-3 times a score-function term, ~1e-4..1e-5 at the pixels) flows back
through the frozen BLIP-2 vision tower and VAE decoder before it reaches the UNet. In fp16 without loss
scaling much of it underflows to zero while L_pre keeps training, and the run looks healthy. So frozen
models follow the autocast dtype: bf16 with bf16 autocast (bf16 has fp32's range), fp16 only together with
fp16 autocast, whose gradient scaler multiplies the loss before backward and so scales the reward gradient
through them as well. Flan-T5 language models overflow in fp16: a T5 captioner never runs in it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..dtypes import dtype_of, name_of


@dataclass(frozen=True)
class Precision:
    mixed: str  # "no", "fp16" or "bf16": the trained UNet's autocast
    frozen: torch.dtype  # CLIP text encoder, VAE, BLIP-2 text tower, the frozen UNet under --lora
    captioner: torch.dtype  # the BLIP-2 captioner
    notes: tuple[str, ...] = field(default=())

    @property
    def autocast(self) -> torch.dtype | None:
        return None if self.mixed == "no" else dtype_of(self.mixed)

    @property
    def loss_scaling(self) -> bool:
        return self.mixed == "fp16"

    def describe(self) -> str:
        return (
            f"mixed precision = {self.mixed}{' (loss scaling)' if self.loss_scaling else ''}, frozen models in "
            f"{name_of(self.frozen)}, BLIP-2 captioner in {name_of(self.captioner)}"
        )


def resolve(mixed: str, frozen: str, device_type: str, bf16_supported: bool, t5_captioner: bool = False) -> Precision:
    """``--mixed-precision`` and ``--frozen-dtype`` (each may be 'auto') on a device -> what runs."""
    if mixed == "auto":
        mixed = ("bf16" if bf16_supported else "fp16") if device_type == "cuda" else "no"
    notes = []
    if frozen == "auto":
        frozen_dtype = torch.float32 if mixed == "no" else dtype_of(mixed)
    else:
        frozen_dtype = dtype_of(frozen)
        if frozen_dtype == torch.float16 and mixed != "fp16":
            notes.append(
                f"--frozen-dtype fp16 without fp16 loss scaling (--mixed-precision {mixed}): the reward "
                "gradient through the VAE and BLIP-2 may underflow; prefer --frozen-dtype auto"
            )
    captioner = frozen_dtype
    if t5_captioner and frozen_dtype == torch.float16:
        captioner = torch.bfloat16 if bf16_supported else torch.float32
        notes.append(f"the Flan-T5 captioner overflows in fp16: it runs in {name_of(captioner)}")
    return Precision(mixed, frozen_dtype, captioner, tuple(notes))


def is_t5_captioner(folder: str | Path | None) -> bool:
    """Whether a BLIP-2 captioner folder's language model is (Flan-)T5, read from its config.json."""
    if not folder:
        return False
    try:
        config = json.loads((Path(folder) / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False  # the loader reports an unreadable folder with its own message
    return str((config.get("text_config") or {}).get("model_type", "")).startswith(("t5", "mt5", "umt5"))
