"""Write random-weight SD-1.5 single-file checkpoints in the original (LDM) key layout.

``small_unet=True`` keeps a one-level UNet that ComfyUI still detects as SD-1.5; the CLIP-L text
encoder and the VAE are complete by default because ComfyUI builds them with fixed shapes.
``tiny_clip_vae=True`` shrinks those too, for code (the trainer) that reads shapes from the file.
``unet_overrides`` changes the UNet's diffusers config (e.g. two levels, to get layers of several sizes).
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch

from realign_diff import sd15_configs, sd15_keys
from realign_diff.compat.torchvision_ops import ensure_torchvision_importable

TINY_CLIP = {
    "hidden_size": 32,
    "intermediate_size": 37,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "projection_dim": 32,
}
TINY_VAE = {
    "block_out_channels": [32, 32],
    "down_block_types": ["DownEncoderBlock2D"] * 2,
    "up_block_types": ["UpDecoderBlock2D"] * 2,
    "layers_per_block": 1,
    "norm_num_groups": 32,
}


def build_components(
    small_unet: bool = True, tiny_clip_vae: bool = False, seed: int = 0, unet_overrides: dict | None = None
):
    """Random-weight (unet, vae, text_encoder) diffusers/transformers modules and their configs."""
    ensure_torchvision_importable()
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    unet_config = copy.deepcopy(sd15_configs.UNET_SMALL if small_unet else sd15_configs.UNET)
    unet_config.update(unet_overrides or {})
    vae_config = copy.deepcopy(sd15_configs.VAE)
    clip_config = copy.deepcopy(sd15_configs.CLIP_TEXT)
    if tiny_clip_vae:
        vae_config.update(TINY_VAE)
        clip_config.update(TINY_CLIP)
        unet_config["cross_attention_dim"] = TINY_CLIP["hidden_size"]
    unet = UNet2DConditionModel(**unet_config)
    vae = AutoencoderKL(**vae_config)
    text_encoder = CLIPTextModel(CLIPTextConfig(**clip_config))
    return unet, vae, text_encoder


def ldm_state_dict(unet, vae, text_encoder, dtype: torch.dtype = torch.float16) -> dict[str, torch.Tensor]:
    state = {}
    state.update(sd15_keys.unet_to_ldm(unet.state_dict(), unet.config))
    state.update(sd15_keys.vae_to_ldm(vae.state_dict(), vae.config))
    state.update(sd15_keys.clip_to_ldm(text_encoder.state_dict()))
    return {k: v.detach().to(dtype).contiguous() if v.is_floating_point() else v.contiguous() for k, v in state.items()}


def write_sd15_checkpoint(
    path: str | Path,
    small_unet: bool = True,
    tiny_clip_vae: bool = False,
    seed: int = 0,
    dtype: torch.dtype = torch.float16,
    unet_overrides: dict | None = None,
) -> Path:
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    unet, vae, text_encoder = build_components(small_unet, tiny_clip_vae, seed, unet_overrides)
    save_file(ldm_state_dict(unet, vae, text_encoder, dtype), str(path))
    return path
