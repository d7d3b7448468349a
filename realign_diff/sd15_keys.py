"""Key conversion between diffusers' SD-1.x modules and the original (LDM) single-file layout.

The single-file layout is what ComfyUI's ``CheckpointLoaderSimple`` reads:
``model.diffusion_model.*`` (UNet), ``first_stage_model.*`` (VAE) and
``cond_stage_model.transformer.text_model.*`` (CLIP-L). diffusers ships only the
LDM -> diffusers direction; both directions here come from one prefix table built from
the UNet's config, so a round trip is exact by construction.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
CLIP_PREFIX = "cond_stage_model.transformer.text_model."

_RESNET_PARTS = [
    ("in_layers.0", "norm1"),
    ("in_layers.2", "conv1"),
    ("out_layers.0", "norm2"),
    ("out_layers.3", "conv2"),
    ("emb_layers.1", "time_emb_proj"),
    ("skip_connection", "conv_shortcut"),
]

_UNET_FIXED = [
    ("time_embed.0.", "time_embedding.linear_1."),
    ("time_embed.2.", "time_embedding.linear_2."),
    ("input_blocks.0.0.", "conv_in."),
    ("out.0.", "conv_norm_out."),
    ("out.2.", "conv_out."),
]


def unet_prefix_table(
    levels: int, layers_per_block: int, down_attention: Sequence[bool], up_attention: Sequence[bool], mid_block: bool
) -> list[tuple[str, str]]:
    """(ldm prefix, diffusers prefix) pairs for a UNet2DConditionModel of this shape."""
    table = list(_UNET_FIXED)
    per_level = layers_per_block + 1
    for level in range(levels):
        for j in range(layers_per_block):
            ldm = f"input_blocks.{1 + level * per_level + j}."
            table.append((ldm + "0.", f"down_blocks.{level}.resnets.{j}."))
            if down_attention[level]:
                table.append((ldm + "1.", f"down_blocks.{level}.attentions.{j}."))
        if level < levels - 1:
            table.append((f"input_blocks.{(level + 1) * per_level}.0.op.", f"down_blocks.{level}.downsamplers.0.conv."))
        for j in range(per_level):
            ldm = f"output_blocks.{level * per_level + j}."
            table.append((ldm + "0.", f"up_blocks.{level}.resnets.{j}."))
            if up_attention[level]:
                table.append((ldm + "1.", f"up_blocks.{level}.attentions.{j}."))
        if level < levels - 1:
            slot = 2 if up_attention[level] else 1
            table.append(
                (f"output_blocks.{level * per_level + layers_per_block}.{slot}.", f"up_blocks.{level}.upsamplers.0.")
            )
    if mid_block:
        table += [
            ("middle_block.0.", "mid_block.resnets.0."),
            ("middle_block.1.", "mid_block.attentions.0."),
            ("middle_block.2.", "mid_block.resnets.1."),
        ]
    return table


def unet_prefix_table_from_config(config: Mapping) -> list[tuple[str, str]]:
    down = [t.startswith("CrossAttn") for t in config["down_block_types"]]
    up = [t.startswith("CrossAttn") for t in config["up_block_types"]]
    layers = config["layers_per_block"]
    if not isinstance(layers, int):
        raise ValueError("only a single layers_per_block for every level is supported")
    return unet_prefix_table(len(down), layers, down, up, config.get("mid_block_type") is not None)


def _rename(key: str, table: Sequence[tuple[str, str]], source: int) -> str:
    for pair in table:
        if key.startswith(pair[source]):
            return pair[1 - source] + key[len(pair[source]) :]
    raise KeyError(f"no mapping for key {key!r}")


def unet_to_ldm(state_dict: Mapping[str, torch.Tensor], config: Mapping) -> dict[str, torch.Tensor]:
    """diffusers UNet state dict -> ``model.diffusion_model.*`` keys."""
    table = unet_prefix_table_from_config(config)
    out = {}
    for key, value in state_dict.items():
        new = _rename(key, table, source=1)
        if ".resnets." in key:
            new = _resnet_suffix(new, to_ldm=True)
        out[UNET_PREFIX + new] = value
    return out


def ldm_to_unet(state_dict: Mapping[str, torch.Tensor], config: Mapping) -> dict[str, torch.Tensor]:
    """``model.diffusion_model.*`` keys (others ignored) -> diffusers UNet state dict."""
    table = unet_prefix_table_from_config(config)
    out = {}
    for key, value in state_dict.items():
        if not key.startswith(UNET_PREFIX):
            continue
        local = key[len(UNET_PREFIX) :]
        new = _rename(local, table, source=0)
        if ".resnets." in new:
            new = _resnet_suffix(new, to_ldm=False)
        out[new] = value
    return out


def _resnet_suffix(key: str, to_ldm: bool) -> str:
    """Rename the inside of a ResBlock (norm1 <-> in_layers.0, ...) after the prefix moved."""
    for ldm, hf in _RESNET_PARTS:
        src, dst = (hf, ldm) if to_ldm else (ldm, hf)
        marker = "." + src + "."
        if marker in key:
            return key.replace(marker, "." + dst + ".", 1)
    return key


# --- VAE --------------------------------------------------------------------------------------


def _vae_prefix_table(levels: int = 4, layers_per_block: int = 2) -> list[tuple[str, str]]:
    table = [
        ("encoder.mid.attn_1.", "encoder.mid_block.attentions.0."),
        ("decoder.mid.attn_1.", "decoder.mid_block.attentions.0."),
        ("encoder.norm_out.", "encoder.conv_norm_out."),
        ("decoder.norm_out.", "decoder.conv_norm_out."),
    ]
    for side in ("encoder", "decoder"):
        for i in range(2):
            table.append((f"{side}.mid.block_{i + 1}.", f"{side}.mid_block.resnets.{i}."))
    for i in range(levels):
        for j in range(layers_per_block):
            table.append((f"encoder.down.{i}.block.{j}.", f"encoder.down_blocks.{i}.resnets.{j}."))
        for j in range(layers_per_block + 1):
            table.append((f"decoder.up.{levels - 1 - i}.block.{j}.", f"decoder.up_blocks.{i}.resnets.{j}."))
        if i < levels - 1:
            table.append((f"encoder.down.{i}.downsample.", f"encoder.down_blocks.{i}.downsamplers.0."))
            table.append((f"decoder.up.{levels - 1 - i}.upsample.", f"decoder.up_blocks.{i}.upsamplers.0."))
    return table


_VAE_ATTN_PARTS = [
    ("norm.", "group_norm."),
    ("q.", "to_q."),
    ("k.", "to_k."),
    ("v.", "to_v."),
    ("proj_out.", "to_out.0."),
]


def _vae_table_from_config(config: Mapping | None) -> list[tuple[str, str]]:
    config = config or {}
    levels = len(config.get("block_out_channels", (128, 256, 512, 512)))
    return _vae_prefix_table(levels, config.get("layers_per_block", 2))


def vae_to_ldm(state_dict: Mapping[str, torch.Tensor], config: Mapping | None = None) -> dict[str, torch.Tensor]:
    table = _vae_table_from_config(config)
    out = {}
    for key, value in state_dict.items():
        new = _rename_vae(key, table, to_ldm=True)
        if ".mid.attn_1." in new and value.dim() == 2:
            value = value[:, :, None, None]  # LDM keeps the attention projections as 1x1 convs
        out[VAE_PREFIX + new] = value
    return out


def ldm_to_vae(state_dict: Mapping[str, torch.Tensor], config: Mapping | None = None) -> dict[str, torch.Tensor]:
    table = _vae_table_from_config(config)
    out = {}
    for key, value in state_dict.items():
        if not key.startswith(VAE_PREFIX):
            continue
        new = _rename_vae(key[len(VAE_PREFIX) :], table, to_ldm=False)
        if ".mid_block.attentions." in new and value.dim() == 4:
            value = value[:, :, 0, 0]
        out[new] = value
    return out


def _rename_vae(key: str, table: Sequence[tuple[str, str]], to_ldm: bool) -> str:
    source = 1 if to_ldm else 0
    for pair in table:
        if key.startswith(pair[source]):
            rest = key[len(pair[source]) :]
            if "attn_1" in pair[0]:
                for ldm, hf in _VAE_ATTN_PARTS:
                    src, dst = (hf, ldm) if to_ldm else (ldm, hf)
                    if rest.startswith(src):
                        rest = dst + rest[len(src) :]
                        break
            else:
                rest = (
                    rest.replace("conv_shortcut.", "nin_shortcut.")
                    if to_ldm
                    else rest.replace("nin_shortcut.", "conv_shortcut.")
                )
            return pair[1 - source] + rest
    return key  # conv_in, conv_out, quant_conv, post_quant_conv keep their names


# --- CLIP text encoder --------------------------------------------------------------------------


def clip_to_ldm(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """transformers CLIPTextModel state dict (with or without the ``text_model.`` prefix) -> LDM keys."""
    out = {}
    for key, value in state_dict.items():
        local = key[len("text_model.") :] if key.startswith("text_model.") else key
        out[CLIP_PREFIX + local] = value
    return out


def ldm_to_clip(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k[len(CLIP_PREFIX) :]: v for k, v in state_dict.items() if k.startswith(CLIP_PREFIX)}
