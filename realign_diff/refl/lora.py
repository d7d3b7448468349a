"""LoRA on the UNet's attention projections, saved in the kohya layout ComfyUI's LoraLoader reads.

Each adapted ``nn.Linear`` (``to_q``, ``to_k``, ``to_v``, ``to_out.0`` of every ``attn1``/``attn2``) gets a
forward hook adding ``(alpha / rank) * up(down(x))``; the UNet's own weights and state-dict names stay
untouched. A file holds, per adapted module of diffusers name ``N``::

    lora_unet_<N with '.' -> '_'>.lora_down.weight   [rank, in]
    lora_unet_<N with '.' -> '_'>.lora_up.weight     [out, rank]
    lora_unet_<N with '.' -> '_'>.alpha              scalar

ComfyUI maps ``lora_unet_<diffusers name>`` onto its UNet weights (``comfy.lora.model_lora_keys_unet``)
and applies ``W + alpha / rank * up @ down``, which is exactly what the hooks compute.
"""

from __future__ import annotations

import math

import torch
from torch import nn

TARGETS = ("to_q", "to_k", "to_v", "to_out.0")
PREFIX = "lora_unet_"


def kohya_key(module_name: str) -> str:
    return PREFIX + module_name.replace(".", "_")


class LoRAAdapter(nn.Module):
    def __init__(self, base: nn.Linear, rank: int, alpha: float):
        super().__init__()
        self.down = nn.Linear(base.in_features, rank, bias=False, device=base.weight.device)
        self.up = nn.Linear(rank, base.out_features, bias=False, device=base.weight.device)
        nn.init.kaiming_uniform_(self.down.weight, a=math.sqrt(5))
        nn.init.zeros_(self.up.weight)  # starts as the identity edit
        self.rank, self.alpha = rank, float(alpha)
        self.scale = self.alpha / rank

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(self.down(x)) * self.scale

    def delta_weight(self) -> torch.Tensor:
        return self.scale * (self.up.weight.float() @ self.down.weight.float())


class UNetLoRA(nn.Module):
    """The trainable adapters of one UNet; ``state_dict()`` holds only them."""

    def __init__(self, unet: nn.Module, rank: int, alpha: float | None = None, targets=TARGETS):
        super().__init__()
        if rank < 1:
            raise ValueError("LoRA rank must be at least 1")
        alpha = float(rank if alpha is None else alpha)
        self.adapters = nn.ModuleDict()
        self.module_names: dict[str, str] = {}
        self._handles = []
        for name, module in unet.named_modules():
            if isinstance(module, nn.Linear) and (".attn1." in name or ".attn2." in name) and name.endswith(tuple("." + t for t in targets)):
                key = kohya_key(name)
                adapter = LoRAAdapter(module, rank, alpha)
                self.adapters[key] = adapter
                self.module_names[key] = name
                self._handles.append(module.register_forward_hook(_hook(adapter)))
        if not self.adapters:
            raise ValueError("no attention projections found to adapt")

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def kohya_state_dict(self, dtype: torch.dtype = torch.float16) -> dict[str, torch.Tensor]:
        out = {}
        for key, adapter in self.adapters.items():
            out[f"{key}.lora_down.weight"] = adapter.down.weight.detach().to("cpu", dtype).contiguous()
            out[f"{key}.lora_up.weight"] = adapter.up.weight.detach().to("cpu", dtype).contiguous()
            out[f"{key}.alpha"] = torch.tensor(adapter.alpha, dtype=dtype)
        return out

    def merged_unet_weights(self, unet: nn.Module) -> dict[str, torch.Tensor]:
        """diffusers UNet parameter name -> W + delta for every adapted weight (float32, CPU)."""
        params = dict(unet.named_parameters())
        return {
            f"{self.module_names[key]}.weight": params[f"{self.module_names[key]}.weight"].detach().float().cpu() + adapter.delta_weight().cpu()
            for key, adapter in self.adapters.items()
        }


def _hook(adapter: LoRAAdapter):
    def add_delta(module, inputs, output):
        return output + adapter(inputs[0]).to(output.dtype)

    return add_delta


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
    wanted = key[len(PREFIX):]
    for name in weights:
        if name.endswith(".weight") and name[: -len(".weight")].replace(".", "_") == wanted:
            return name
    raise KeyError(f"LoRA key {key} matches no UNet weight")
