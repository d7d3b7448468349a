"""LoRA on the UNet's attention projections (peft), saved in the kohya layout ComfyUI's LoraLoader reads.

peft wraps each adapted ``nn.Linear`` (``to_q``, ``to_k``, ``to_v``, ``to_out.0`` of every ``attn1``/``attn2``)
so that it adds ``(alpha / rank) * B(A(x))``. A file holds, per adapted module of diffusers name ``N``::

    lora_unet_<N with '.' -> '_'>.lora_down.weight   [rank, in]    peft's lora_A
    lora_unet_<N with '.' -> '_'>.lora_up.weight     [out, rank]   peft's lora_B
    lora_unet_<N with '.' -> '_'>.alpha              scalar

ComfyUI maps ``lora_unet_<diffusers name>`` onto its UNet weights (``comfy.lora.model_lora_keys_unet``)
and applies ``W + alpha / rank * up @ down``, which is exactly what peft computes.
"""

from __future__ import annotations

import re

import torch
from torch import nn

TARGETS = ("to_q", "to_k", "to_v", "to_out.0")
PREFIX = "lora_unet_"
ADAPTER = "realign_refl"


def kohya_key(module_name: str) -> str:
    return PREFIX + module_name.replace(".", "_")


class UNetLoRA(nn.Module):
    """The trainable adapters peft puts into one UNet; ``state_dict()`` holds only them (``down``/``up`` of each
    adapted module, under its kohya key)."""

    def __init__(self, unet: nn.Module, rank: int, alpha: float | None = None, targets=TARGETS):
        super().__init__()
        if rank < 1:
            raise ValueError("LoRA rank must be at least 1")
        from peft import LoraConfig, inject_adapter_in_model
        from peft.tuners.lora import LoraLayer

        self.rank, self.alpha = rank, float(rank if alpha is None else alpha)
        pattern = r".*\.attn[12]\.(" + "|".join(re.escape(t) for t in targets) + ")"
        config = LoraConfig(
            r=rank, lora_alpha=self.alpha, target_modules=pattern, lora_dropout=0.0, init_lora_weights=True
        )
        try:
            inject_adapter_in_model(config, unet, adapter_name=ADAPTER)
        except ValueError as exc:
            raise ValueError("no attention projections found to adapt") from exc
        self._unet = [unet]  # a plain reference: the UNet is not part of this module's state
        self.adapters = nn.ModuleDict()
        self.module_names: dict[str, str] = {}
        for name, module in unet.named_modules():
            if isinstance(module, LoraLayer):
                pair = nn.Module()
                pair.down, pair.up = module.lora_A[ADAPTER], module.lora_B[ADAPTER]
                self.adapters[kohya_key(name)] = pair
                self.module_names[kohya_key(name)] = name

    def remove(self) -> None:
        """Puts the UNet's own linear layers back (the adapters stop acting; this module keeps their weights)."""
        unet = self._unet[0]
        for name in self.module_names.values():
            parent_name, _, child = name.rpartition(".")
            parent = unet.get_submodule(parent_name) if parent_name else unet
            setattr(parent, child, getattr(parent, child).base_layer)

    def kohya_state_dict(self, dtype: torch.dtype = torch.float16) -> dict[str, torch.Tensor]:
        out = {}
        for key, pair in self.adapters.items():
            out[f"{key}.lora_down.weight"] = pair.down.weight.detach().to("cpu", dtype).contiguous()
            out[f"{key}.lora_up.weight"] = pair.up.weight.detach().to("cpu", dtype).contiguous()
            out[f"{key}.alpha"] = torch.tensor(self.alpha, dtype=dtype)
        return out


class WithLoRA(nn.Module):
    """The UNet with its adapters as one module to hand to DDP: its forward is the UNet's, and only the
    adapters require gradients, so only they are synchronised."""

    def __init__(self, unet: nn.Module, lora: UNetLoRA):
        super().__init__()
        self.unet, self.lora = unet, lora

    def forward(self, *args, **kwargs):
        return self.unet(*args, **kwargs)


def apply_kohya_lora(unet_weights: dict[str, torch.Tensor], lora: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Merge a kohya LoRA file into diffusers-named UNet weights the way LoraLoader does (for checks and merging)."""
    out = dict(unet_weights)
    for key in {k.rsplit(".lora_", 1)[0] for k in lora if ".lora_" in k}:
        down, up = lora[f"{key}.lora_down.weight"].float(), lora[f"{key}.lora_up.weight"].float()
        alpha = float(lora[f"{key}.alpha"]) if f"{key}.alpha" in lora else down.shape[0]
        name = _diffusers_name(key, out)
        out[name] = out[name].float() + (alpha / down.shape[0]) * (up @ down)
    return out


def _diffusers_name(key: str, weights: dict[str, torch.Tensor]) -> str:
    wanted = key[len(PREFIX) :]
    for name in weights:
        if name.endswith(".weight") and name[: -len(".weight")].replace(".", "_") == wanted:
            return name
    raise KeyError(f"LoRA key {key} matches no UNet weight")
