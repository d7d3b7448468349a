"""Reading a model checkpoint file tensor-only: ``.safetensors``, or ``.pth`` / ``.ckpt`` with
``torch.load(..., weights_only=True)`` (memory-mapped when the file allows), never unpickling arbitrary objects."""

from __future__ import annotations

import os
import pickle

import torch


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The tensors of a ``.pth`` / ``.safetensors`` checkpoint, unwrapped from ``{"model": ...}`` and ``module.``."""
    path = os.fspath(path)
    if path.lower().endswith(".safetensors"):
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
        raise ValueError(f"{os.path.basename(path)} does not hold a state dict (found {type(obj).__name__})")
    state = {key.removeprefix("module."): value for key, value in obj.items() if isinstance(value, torch.Tensor)}
    if not state:
        raise ValueError(f"{os.path.basename(path)} holds no tensors: not a model checkpoint")
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
