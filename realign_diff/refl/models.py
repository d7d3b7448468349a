"""Build the SD-1.x UNet, VAE and CLIP text encoder from a single-file checkpoint, offline.

Every shape is read from the file itself (levels, layers per block, channels, context size of the UNet;
width and depth of CLIP; levels of the VAE), so a full SD-1.5 file and the small random test files load
through the same code. Files of other families (SDXL, SD-2.x, inpainting) are refused with a message.
"""

from __future__ import annotations

import copy
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from .. import checkpoint_file, sd15_configs, sd15_keys

log = logging.getLogger(__name__)


class BaseCheckpointError(ValueError):
    """The base file is missing, unreadable, or not an SD-1.x single-file checkpoint."""


def read_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """All tensors of a single-file checkpoint (.safetensors, or .ckpt/.pt read with weights_only)."""
    path = Path(path)
    if not path.is_file():
        raise BaseCheckpointError(f"base checkpoint not found: {path}")
    if path.suffix.lower() not in (".safetensors", ".ckpt", ".pt", ".pth", ".bin"):
        raise BaseCheckpointError(f"{path}: expected a .safetensors or .ckpt checkpoint")
    try:
        return checkpoint_file.read_state_dict(path)
    except ValueError as exc:
        raise BaseCheckpointError(f"base checkpoint {path}: {exc}") from exc


# --- recognising SD-1.x and reading its shapes ------------------------------------------------------------


def check_sd1(state: dict[str, torch.Tensor], name: str = "base checkpoint") -> None:
    """Raise BaseCheckpointError unless ``state`` is an SD-1.x single-file checkpoint in the LDM layout."""
    keys = state.keys()
    expected = "Expected an SD-1.5 single-file checkpoint (e.g. v1-5-pruned-emaonly.safetensors)."
    if (
        any(k.startswith("conditioner.embedders.") for k in keys)
        or "model.diffusion_model.label_emb.0.0.weight" in state
    ):
        raise BaseCheckpointError(f"{name} is an SDXL checkpoint. {expected}")
    if any(k.startswith("cond_stage_model.model.") for k in keys):
        raise BaseCheckpointError(f"{name} is an SD-2.x checkpoint (OpenCLIP text encoder). {expected}")
    if not any(k.startswith(sd15_keys.UNET_PREFIX) for k in keys):
        raise BaseCheckpointError(
            f"{name} has no UNet tensors (model.diffusion_model.*): it is not a single-file Stable Diffusion "
            f"checkpoint (LoRA, VAE-only and diffusers-folder files are not accepted). {expected}"
        )
    for prefix, what in ((sd15_keys.CLIP_PREFIX, "CLIP text encoder"), (sd15_keys.VAE_PREFIX, "VAE")):
        if not any(k.startswith(prefix) for k in keys):
            raise BaseCheckpointError(f"{name} has no {what} tensors ({prefix}*). {expected}")
    conv_in = state.get(sd15_keys.UNET_PREFIX + "input_blocks.0.0.weight")
    if conv_in is None or conv_in.dim() != 4:
        raise BaseCheckpointError(f"{name}: UNet input convolution missing. {expected}")
    if conv_in.shape[1] != 4:
        raise BaseCheckpointError(
            f"{name}: the UNet takes {conv_in.shape[1]} input channels (an inpainting or instruct model); "
            f"only text-to-image SD-1.5 (4 channels) can be trained. {expected}"
        )
    context = _context_dim(state)
    clip_width = state[sd15_keys.CLIP_PREFIX + "embeddings.token_embedding.weight"].shape[1]
    if context == 1024:
        raise BaseCheckpointError(f"{name}: the UNet cross-attention context is 1024 wide (SD-2.x). {expected}")
    if context != clip_width:
        raise BaseCheckpointError(
            f"{name}: the UNet expects {context}-wide text features but the CLIP text encoder gives "
            f"{clip_width}. {expected}"
        )


def _context_dim(state) -> int:
    for key, value in state.items():
        if key.startswith(sd15_keys.UNET_PREFIX) and key.endswith(".attn2.to_k.weight"):
            return int(value.shape[1])
    raise BaseCheckpointError("the UNet has no cross-attention (attn2) layers: not a text-conditioned SD-1.x model")


def _indices(state, pattern: str) -> list[int]:
    regex = re.compile(pattern)
    return sorted({int(m.group(1)) for k in state for m in [regex.match(k)] if m})


def infer_unet_config(state: dict[str, torch.Tensor]) -> dict:
    """diffusers ``UNet2DConditionModel`` config of the UNet stored in an LDM-layout state dict."""
    p = sd15_keys.UNET_PREFIX
    blocks = _indices(state, re.escape(p) + r"input_blocks\.(\d+)\.")
    groups: list[list[int]] = [[]]
    for i in blocks[1:]:
        if p + f"input_blocks.{i}.0.op.weight" in state:
            groups.append([])
        else:
            groups[-1].append(i)
    layers = {len(g) for g in groups}
    if len(layers) != 1 or 0 in layers:
        raise BaseCheckpointError(f"unsupported UNet layout: resblocks per level {[len(g) for g in groups]}")
    layers_per_block = layers.pop()
    channels = [int(state[p + f"input_blocks.{g[0]}.0.out_layers.3.weight"].shape[0]) for g in groups]
    down_attn = [p + f"input_blocks.{g[0]}.1.proj_in.weight" in state for g in groups]
    levels = len(groups)
    up_attn = [p + f"output_blocks.{u * (layers_per_block + 1)}.1.proj_in.weight" in state for u in range(levels)]
    depth = len(_indices(state, re.escape(p) + r"(?:input|middle|output)_blocks\.\d+\.1\.transformer_blocks\.(\d+)\."))
    proj_in = next(v for k, v in state.items() if k.startswith(p) and k.endswith(".proj_in.weight"))
    config = copy.deepcopy(sd15_configs.UNET)
    config.update(
        in_channels=int(state[p + "input_blocks.0.0.weight"].shape[1]),
        out_channels=int(state[p + "out.2.weight"].shape[0]),
        block_out_channels=channels,
        layers_per_block=layers_per_block,
        down_block_types=["CrossAttnDownBlock2D" if a else "DownBlock2D" for a in down_attn],
        up_block_types=["CrossAttnUpBlock2D" if a else "UpBlock2D" for a in up_attn],
        cross_attention_dim=_context_dim(state),
        use_linear_projection=proj_in.dim() == 2,
    )
    if depth > 1:
        config["transformer_layers_per_block"] = depth
    # set explicitly: the key converter reads it from the config
    config["mid_block_type"] = "UNetMidBlock2DCrossAttn" if p + "middle_block.1.proj_in.weight" in state else None
    return config


def infer_vae_config(state: dict[str, torch.Tensor]) -> dict:
    p = sd15_keys.VAE_PREFIX
    levels = _indices(state, re.escape(p) + r"encoder\.down\.(\d+)\.")
    per_level = _indices(state, re.escape(p) + r"encoder\.down\.0\.block\.(\d+)\.")
    channels = [int(state[p + f"encoder.down.{i}.block.0.conv2.weight"].shape[0]) for i in levels]
    config = copy.deepcopy(sd15_configs.VAE)
    config.update(
        block_out_channels=channels,
        down_block_types=["DownEncoderBlock2D"] * len(channels),
        up_block_types=["UpDecoderBlock2D"] * len(channels),
        layers_per_block=len(per_level),
        latent_channels=int(state[p + "quant_conv.weight"].shape[0]) // 2,
    )
    return config


def clip_heads(width: int) -> int:
    """Attention heads of an SD-1 CLIP text encoder of this width (not stored in the file)."""
    if width == 768:
        return 12  # CLIP ViT-L/14
    return width // 64 if width % 64 == 0 else max(1, width // 8)


def infer_clip_config(state: dict[str, torch.Tensor]) -> dict:
    p = sd15_keys.CLIP_PREFIX
    vocab, width = state[p + "embeddings.token_embedding.weight"].shape
    config = copy.deepcopy(sd15_configs.CLIP_TEXT)
    config.update(
        vocab_size=int(vocab),
        hidden_size=int(width),
        intermediate_size=int(state[p + "encoder.layers.0.mlp.fc1.weight"].shape[0]),
        num_hidden_layers=len(_indices(state, re.escape(p) + r"encoder\.layers\.(\d+)\.")),
        num_attention_heads=clip_heads(int(width)),
        max_position_embeddings=int(state[p + "embeddings.position_embedding.weight"].shape[0]),
        projection_dim=int(width),
    )
    return config


def is_full_sd15(unet_config: dict) -> bool:
    ref = sd15_configs.UNET
    return all(unet_config.get(k) == ref[k] for k in ("block_out_channels", "layers_per_block", "cross_attention_dim"))


# --- building the modules ---------------------------------------------------------------------------------


@dataclass
class BaseModels:
    unet: torch.nn.Module
    vae: torch.nn.Module
    text_encoder: torch.nn.Module
    unet_config: dict
    vae_config: dict
    clip_config: dict

    @property
    def vae_scale_factor(self) -> int:
        return 2 ** (len(self.vae_config["block_out_channels"]) - 1)

    @property
    def latent_multiple(self) -> int:
        """Image sizes must be multiples of this (VAE downsampling x UNet downsampling)."""
        return self.vae_scale_factor * 2 ** (len(self.unet_config["block_out_channels"]) - 1)


def _load_strict(module: torch.nn.Module, state: dict, what: str, assign: bool = False) -> None:
    result = module.load_state_dict(state, strict=False, assign=assign)
    missing = [k for k in result.missing_keys if not k.endswith("position_ids")]
    if missing or result.unexpected_keys:
        raise BaseCheckpointError(
            f"{what} weights do not fit the shape read from the file: missing {missing[:5]}, "
            f"unexpected {result.unexpected_keys[:5]}"
        )


def build_models(state: dict[str, torch.Tensor], name: str = "base checkpoint") -> BaseModels:
    """UNet / VAE / CLIP text encoder (diffusers / transformers modules, float32, on CPU) from ``state``."""
    check_sd1(state, name)
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    unet_config, vae_config, clip_config = infer_unet_config(state), infer_vae_config(state), infer_clip_config(state)
    if not is_full_sd15(unet_config):
        log.info(
            "%s: UNet shape differs from full SD-1.5 (%s, %d layers per block); training it as read",
            name,
            unet_config["block_out_channels"],
            unet_config["layers_per_block"],
        )
    with torch.device("meta"):
        unet = UNet2DConditionModel(**unet_config)
    _load_strict(unet, sd15_keys.ldm_to_unet(state, unet_config), "UNet", assign=True)
    vae = AutoencoderKL(**vae_config)
    _load_strict(vae, sd15_keys.ldm_to_vae(state, vae_config), "VAE")
    text_encoder = CLIPTextModel(CLIPTextConfig(**clip_config))
    clip_state = {k: v for k, v in sd15_keys.ldm_to_clip(state).items() if not k.endswith("position_ids")}
    _load_strict(text_encoder, clip_state, "CLIP text encoder")
    unet.float()
    for module in (unet, vae, text_encoder):
        module.requires_grad_(False)
        module.eval()
    return BaseModels(unet, vae.float(), text_encoder.float(), unet_config, vae_config, clip_config)


def load_base(path: str | Path) -> BaseModels:
    return build_models(read_checkpoint(path), Path(path).name)


@torch.no_grad()
def encode_prompts(text_encoder, tokenizer, prompts: list[str], device) -> torch.Tensor:
    """SD-1 conditioning: CLIP's last hidden state (after its final layer norm) for 77 padded tokens."""
    ids = tokenizer(
        list(prompts), padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt"
    ).input_ids
    return text_encoder(ids.to(device))[0]
