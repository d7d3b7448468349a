"""The one table of precision names: what a node's ``precision`` widget or a trainer flag says -> torch dtype.

No torch import at module level: the trainer's argument parser reads the names before torch is loaded.
"""

from __future__ import annotations

PRECISIONS = ("fp16", "bf16", "fp32")
PRECISION_CHOICES = ("auto", *PRECISIONS)  # every precision widget and --frozen-dtype, in this order


def _table() -> dict:
    import torch

    return {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}


def dtype_of(name: str, auto=None):
    """``"fp16"`` -> torch.float16; ``"auto"`` -> ``auto`` (the caller's choice for the device)."""
    if name == "auto" and auto is not None:
        return auto
    if name not in PRECISIONS:
        raise ValueError(f"unknown precision {name!r}: expected one of {', '.join(PRECISIONS)}")
    return _table()[name]


def name_of(dtype) -> str:
    """torch.bfloat16 -> ``"bf16"``."""
    return {dtype: name for name, dtype in _table().items()}[dtype]
