"""Swin Transformer image encoder, as Recognize Anything (RAM / RAM++) uses it.

Parameter names match the official ``SwinTransformer`` of recognize-anything (itself Microsoft's Swin code)
exactly, so a checkpoint's ``visual_encoder.*`` weights load as they are. Inference only: no dropout, no
stochastic depth (both are identity in eval mode).

The official module also stores two derived buffers per block, ``attn.relative_position_index`` and
``attn_mask`` (the shifted-window mask). They are functions of the window size and resolution only, so here
they are computed on the fly (cached) instead of being module state: a checkpoint's copies are ignored, as
the official loader ignores them too (it deletes them before ``load_state_dict``).

Output, like the official encoder: ``[B, 1 + L, C]`` where token 0 is the mean of the final tokens and
the L = (H/32)·(W/32) final tokens follow (C = 8 · embed_dim).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class SwinConfig:
    image_size: int = 384
    patch_size: int = 4
    in_chans: int = 3
    embed_dim: int = 192
    depths: tuple[int, ...] = (2, 2, 18, 2)
    num_heads: tuple[int, ...] = (6, 12, 24, 48)
    window_size: int = 12
    mlp_ratio: float = 4.0

    @property
    def num_features(self) -> int:
        return self.embed_dim * 2 ** (len(self.depths) - 1)

    def stage_resolution(self, stage: int) -> int:
        return self.image_size // self.patch_size // 2**stage

    def stage_window(self, stage: int) -> int:
        """The official block shrinks the window to the resolution when the resolution is not larger."""
        return min(self.window_size, self.stage_resolution(stage))

    def block_shift(self, stage: int, block: int) -> int:
        if self.stage_resolution(stage) <= self.window_size:
            return 0
        return 0 if block % 2 == 0 else self.window_size // 2


# The official configs (recognize-anything ram/configs/swin/*.json), by backbone and input size.
SWIN_L_384 = SwinConfig(384, 4, 3, 192, (2, 2, 18, 2), (6, 12, 24, 48), 12)
SWIN_L_224 = SwinConfig(224, 4, 3, 192, (2, 2, 18, 2), (6, 12, 24, 48), 7)
SWIN_B_384 = SwinConfig(384, 4, 3, 128, (2, 2, 18, 2), (4, 8, 16, 32), 12)
SWIN_B_224 = SwinConfig(224, 4, 3, 128, (2, 2, 18, 2), (4, 8, 16, 32), 7)


@lru_cache(maxsize=64)
def _on_device(make, *args_and_device):
    """A cached tensor, copied once per device (blocks call this on every forward pass)."""
    *args, device = args_and_device
    return make(*args).to(device)


@lru_cache(maxsize=16)
def _relative_position_index(window: int) -> torch.Tensor:
    coords = torch.stack(
        torch.meshgrid(torch.arange(window, device="cpu"), torch.arange(window, device="cpu"), indexing="ij")
    ).flatten(1)
    relative = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (window - 1)
    return relative[:, :, 0] * (2 * window - 1) + relative[:, :, 1]  # [w², w²]


@lru_cache(maxsize=32)
def _shift_mask(resolution: int, window: int, shift: int) -> torch.Tensor:
    """[nW, w², w²] additive mask: -100 between tokens of different regions after the cyclic shift (as official)."""
    img = torch.zeros(1, resolution, resolution, 1, device="cpu")
    slices = (slice(0, -window), slice(-window, -shift), slice(-shift, None))
    count = 0
    for h in slices:
        for w in slices:
            img[:, h, w, :] = count
            count += 1
    windows = _partition(img, window).reshape(-1, window * window)
    mask = windows[:, None, :] - windows[:, :, None]
    return mask.masked_fill(mask != 0, -100.0).masked_fill(mask == 0, 0.0)


def _partition(x: torch.Tensor, window: int) -> torch.Tensor:
    b, h, w, c = x.shape
    x = x.view(b, h // window, window, w // window, window, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, window, window, c)


def _reverse(windows: torch.Tensor, window: int, h: int, w: int) -> torch.Tensor:
    c = windows.shape[-1]
    x = windows.view(-1, h // window, w // window, window, window, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, h, w, c)


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x)))


class WindowAttention(nn.Module):
    def __init__(self, dim: int, window: int, num_heads: int):
        super().__init__()
        self.window = window
        self.num_heads = num_heads
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window - 1) ** 2, num_heads))
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def position_bias(self) -> torch.Tensor:
        index = _on_device(_relative_position_index, self.window, self.relative_position_bias_table.device)
        n = self.window * self.window
        return self.relative_position_bias_table[index.view(-1)].view(n, n, -1).permute(2, 0, 1)  # [heads, N, N]

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """x: [B·nW, N, C]; mask: [nW, N, N] or None."""
        bw, n, c = x.shape
        q, k, v = self.qkv(x).reshape(bw, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        bias = self.position_bias().to(q.dtype)
        if mask is not None:  # windows folded into the head axis: 4-D inputs keep SDPA on its fast kernels
            nw = mask.shape[0]
            bias = (bias[None] + mask[:, None].to(q.dtype)).reshape(1, nw * self.num_heads, n, n)
            shape = (bw // nw, nw * self.num_heads, n, -1)
            q, k, v = q.reshape(shape), k.reshape(shape), v.reshape(shape)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        return self.proj(out.reshape(bw, self.num_heads, n, -1).transpose(1, 2).reshape(bw, n, c))


class SwinTransformerBlock(nn.Module):
    def __init__(self, dim: int, resolution: int, num_heads: int, window: int, shift: int, mlp_ratio: float):
        super().__init__()
        self.resolution, self.window, self.shift = resolution, window, shift
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, window, num_heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, length, c = x.shape
        r, w, s = self.resolution, self.window, self.shift
        shortcut = x
        x = self.norm1(x).view(b, r, r, c)
        if s > 0:
            x = torch.roll(x, shifts=(-s, -s), dims=(1, 2))
            mask = _on_device(_shift_mask, r, w, s, x.device)
        else:
            mask = None
        windows = self.attn(_partition(x, w).view(-1, w * w, c), mask)
        x = _reverse(windows.view(-1, w, w, c), w, r, r)
        if s > 0:
            x = torch.roll(x, shifts=(s, s), dims=(1, 2))
        x = shortcut + x.reshape(b, length, c)
        return x + self.mlp(self.norm2(x))


class PatchMerging(nn.Module):
    def __init__(self, dim: int, resolution: int):
        super().__init__()
        self.resolution = resolution
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)
        self.norm = nn.LayerNorm(4 * dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, c = x.shape
        r = self.resolution
        x = x.view(b, r, r, c)
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], -1)
        return self.reduction(self.norm(x.view(b, -1, 4 * c)))


class BasicLayer(nn.Module):
    def __init__(self, config: SwinConfig, stage: int):
        super().__init__()
        dim = config.embed_dim * 2**stage
        resolution = config.stage_resolution(stage)
        self.blocks = nn.ModuleList(
            SwinTransformerBlock(
                dim,
                resolution,
                config.num_heads[stage],
                config.stage_window(stage),
                config.block_shift(stage, i),
                config.mlp_ratio,
            )
            for i in range(config.depths[stage])
        )
        self.downsample = PatchMerging(dim, resolution) if stage < len(config.depths) - 1 else None

    def forward(self, x):
        for block in self.blocks:
            x = block(x)
        return self.downsample(x) if self.downsample is not None else x


class PatchEmbed(nn.Module):
    def __init__(self, config: SwinConfig):
        super().__init__()
        self.proj = nn.Conv2d(config.in_chans, config.embed_dim, config.patch_size, config.patch_size)
        self.norm = nn.LayerNorm(config.embed_dim)

    def forward(self, x):
        return self.norm(self.proj(x).flatten(2).transpose(1, 2))


class SwinTransformer(nn.Module):
    def __init__(self, config: SwinConfig):
        super().__init__()
        for stage in range(len(config.depths)):
            resolution = config.stage_resolution(stage)
            if resolution % config.stage_window(stage) or (stage < len(config.depths) - 1 and resolution % 2):
                raise ValueError(f"image size {config.image_size} does not fit Swin windows of {config.window_size}")
        self.config = config
        self.patch_embed = PatchEmbed(config)
        self.layers = nn.ModuleList(BasicLayer(config, i) for i in range(len(config.depths)))
        self.norm = nn.LayerNorm(config.num_features)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """image: [B, 3, S, S] normalized -> [B, 1 + L, C] (mean token first)."""
        size = self.config.image_size
        if image.shape[-2:] != (size, size):
            raise ValueError(f"Swin expects {size}x{size} images, got {tuple(image.shape[-2:])}")
        x = self.patch_embed(image)
        for layer in self.layers:
            x = layer(x)
        x = self.norm(x)
        return torch.cat([x.mean(dim=1, keepdim=True), x], dim=1)
