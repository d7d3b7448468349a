"""Random-weight SDXL and SD 2.x single-file checkpoints that ComfyUI's CheckpointLoaderSimple detects as such.

Built from ComfyUI's own classes (``comfy.supported_models.SDXL`` / ``SD20`` with a reduced ``unet_config``,
``SDXLClipModel`` / ``SD2ClipModel``) and written in the original key layout by ComfyUI's own saving code
(``BaseModel.state_dict_for_saving``, as its CheckpointSave node does). ComfyUI tells SDXL from its UNet keys:
``model_channels`` 320, ``transformer_depth`` [0, 0, 2, 2, 10, 10], 2048-wide context, a 2816-wide ``y``; it
does not read the channel multipliers, the middle block's or the decoder's depths, so the SDXL here keeps
320 channels at every level, one transformer in the middle and one per decoder block (160 M parameters
instead of 2.6 B; still 24 + 1 + 6 = 31 cross-attention blocks at two resolutions). The text encoders are
complete (ComfyUI builds them with fixed shapes); the VAE is SD's. SD 2.x is detected on its 1024-wide
context and linear projections alone: one level, one ResBlock and one transformer.

The files are written once per machine into a cache folder (``REALIGN_TEST_MODELS``, default
``<tmp>/realign_diff_test_models``) and linked where a test wants them: the SDXL one is 2.1 GB.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch

VERSION = "v2"
SDXL_UNET = {
    "model_channels": 320,
    "channel_mult": [1, 1, 1],
    "num_res_blocks": [2, 2, 2],
    "transformer_depth": [0, 0, 2, 2, 10, 10],
    "transformer_depth_middle": 1,
    "transformer_depth_output": [0, 0, 0, 1, 1, 1, 1, 1, 1],
    "context_dim": 2048,
    "adm_in_channels": 2816,
    "num_classes": "sequential",
}
SD2_UNET = {
    "model_channels": 320,
    "channel_mult": [1],
    "num_res_blocks": [1],
    "transformer_depth": [1],
    "transformer_depth_middle": 1,
    "transformer_depth_output": [1, 1],
    "context_dim": 1024,
    "adm_in_channels": None,
}
_COMMON = {
    "use_linear_in_transformer": True,
    "in_channels": 4,
    "out_channels": 4,
    "use_temporal_attention": False,
    "use_temporal_resblock": False,
    "image_size": 32,
    "use_spatial_transformer": True,
    "legacy": False,
    "use_checkpoint": False,
}


def full_unet_config(family: str) -> dict:
    """The shipped model's whole UNet ("sdxl": SDXL base, 2.6 B parameters, 70 cross-attention blocks; "refiner":
    the SDXL refiner), in ComfyUI's unet_config terms."""
    import comfy.supported_models

    if family == "refiner":
        return dict(
            comfy.supported_models.SDXLRefiner.unet_config,
            **_COMMON,
            channel_mult=[1, 2, 4, 4],
            num_res_blocks=[2, 2, 2, 2],
            transformer_depth_output=[0, 0, 0, 4, 4, 4, 4, 4, 4, 0, 0, 0],
            transformer_depth_middle=4,
            num_classes="sequential",
        )
    return dict(
        comfy.supported_models.SDXL.unet_config,
        **_COMMON,
        channel_mult=[1, 2, 4],
        num_res_blocks=[2, 2, 2],
        transformer_depth_output=[0, 0, 0, 2, 2, 2, 10, 10, 10],
        transformer_depth_middle=10,
        num_classes="sequential",
    )


def cache_dir() -> Path:
    return Path(os.environ.get("REALIGN_TEST_MODELS") or Path(tempfile.gettempdir()) / "realign_diff_test_models")


def randomize(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Variance-keeping random weights (ComfyUI's layers skip weight init): norms 1, biases 0, matrices
    N(0, 1/fan_in)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in module.named_parameters():
            if param.dim() == 0:
                param.fill_(4.6)  # CLIP's logit scale
            elif param.dim() == 1:
                param.fill_(1.0 if name.endswith("weight") else 0.0)
            else:
                param.normal_(0.0, param[0].numel() ** -0.5, generator=generator)
    return module


def unet_config(family: str) -> dict:
    return {**(SDXL_UNET if family == "sdxl" else SD2_UNET), **_COMMON}


def build_model(family: str, seed: int = 0):
    """A random-weight ComfyUI ``BaseModel`` of the reduced SDXL or SD 2.x UNet (through supported_models)."""
    import comfy.supported_models

    config_class = comfy.supported_models.SDXL if family == "sdxl" else comfy.supported_models.SD20
    return randomize(config_class(unet_config(family)).get_model({}, device="cpu"), seed)


def _vae_state_dict(seed: int) -> dict[str, torch.Tensor]:
    from diffusers import AutoencoderKL

    from realign_diff import sd15_configs, sd15_keys

    torch.manual_seed(seed)
    vae = AutoencoderKL(**sd15_configs.VAE)
    prefix = "first_stage_model."  # state_dict_for_saving adds the model's own VAE prefix
    return {k.removeprefix(prefix): v for k, v in sd15_keys.vae_to_ldm(vae.state_dict(), vae.config).items()}


def write_checkpoint(path: Path, family: str, seed: int = 0) -> Path:
    """Write the reduced ``family`` ("sdxl" or "sd2") checkpoint, fp16, in the original key layout."""
    import comfy.sdxl_clip
    import comfy.text_encoders.sd2_clip
    from safetensors.torch import save_file

    model = build_model(family, seed)
    clip_class = comfy.sdxl_clip.SDXLClipModel if family == "sdxl" else comfy.text_encoders.sd2_clip.SD2ClipModel
    clip = randomize(clip_class(device="cpu", dtype=torch.float32), seed + 1)
    state = model.state_dict_for_saving(clip.state_dict(), _vae_state_dict(seed + 2))
    state = {k: v.to(torch.float16).contiguous() if v.is_floating_point() else v.contiguous() for k, v in state.items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f"{path.name}.{os.getpid()}.partial")
    save_file(state, str(partial))
    os.replace(partial, path)  # whole or absent, even with several test processes at once
    return path


def cached_checkpoint(family: str) -> Path:
    """The checkpoint file in the cache folder, written on first use."""
    path = cache_dir() / f"realign_{family}_reduced_{VERSION}.safetensors"
    if not path.exists():
        write_checkpoint(path, family)
    return path


def link_checkpoint(folder: Path, name: str, family: str) -> str:
    """``folder/name`` linked to the cached ``family`` checkpoint; returns ``name``."""
    target = Path(folder) / name
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        target.symlink_to(cached_checkpoint(family))
    return name
