"""Cross-attention maps per object, and the share of an object's attention that falls inside its mask.

RealignDiff (Jiang, Fang et al., arXiv 2305.19599, Fig. 10) shows its fine stage through cross-attention
heatmaps. An object's map is, at each query position, the softmax attention probability its key tokens receive,
averaged over heads and tokens, resized to one resolution and averaged over the layers and the chosen sampling
steps. Its inside-mask share is the map summed inside the object's mask over its sum on the whole image:
attention spread evenly gives the mask's area, attention that stays on the object gives 1.

The recorder keeps one running sum per layer resolution, per token (rows x tokens x positions: never a map per
step or per layer). Layers are resized only when read: resizing is linear, so the resized sum over the count is
the mean of the resized maps. On a model patched by RealignDiff it records the modulated probabilities
(``RealignReplace.attention_probabilities``), elsewhere softmax(QKᵀ/√d) of the q and k the layer receives.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from .guidance import MASK_THRESHOLD
from .realign_patch import layer_size, sampling_progress

QUERY_BLOCK = 4096  # queries per block: bounds the [rows, heads, block, keys] temporary at large latents


def reduce_tokens(picked: torch.Tensor, columns: torch.Tensor) -> torch.Tensor:
    """[B, H, N, copies·T] probabilities at ``columns.flatten()`` ([copies, T] key indices) -> [B, T, N]: the mean
    over heads, a token's copies summed (ComfyUI repeats a shorter conditioning to a common length: together the
    copies are what the token receives)."""
    return picked.unflatten(-1, tuple(columns.shape)).sum(-2).mean(1).transpose(1, 2)


def select_tokens(probs: torch.Tensor, columns: torch.Tensor) -> torch.Tensor:
    """[B, H, N, K] probabilities -> [B, T, N], by ``reduce_tokens``."""
    return reduce_tokens(probs[..., columns.flatten()], columns)


def token_attention(q: torch.Tensor, k: torch.Tensor, heads: int, columns: torch.Tensor) -> torch.Tensor:
    """softmax(q kᵀ/√d) per head for q [B, N, H·d], k [B, K, H·d], reduced by ``select_tokens``: [B, T, N] float32."""
    dim = q.shape[-1] // heads
    keys = k.float().unflatten(-1, (heads, dim)).transpose(1, 2)
    maps = []
    for start in range(0, q.shape[1], QUERY_BLOCK):
        block = q[:, start : start + QUERY_BLOCK].float().unflatten(-1, (heads, dim)).transpose(1, 2)
        maps.append(select_tokens(torch.softmax((block * dim**-0.5) @ keys.transpose(-1, -2), dim=-1), columns))
    return torch.cat(maps, dim=-1)


def resize_maps(maps: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """[..., h, w] -> [..., height, width], bilinear (linear in the maps)."""
    if tuple(maps.shape[-2:]) == (height, width):
        return maps
    lead = maps.shape[:-2]
    flat = maps.reshape(-1, 1, *maps.shape[-2:]).float()
    return F.interpolate(flat, size=(height, width), mode="bilinear", align_corners=False).reshape(*lead, height, width)


def mass_inside(maps: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Share of each map's mass inside its mask: maps [..., h, w] >= 0, masks [..., H, W] in [0, 1] -> [...].

    A mask is its pixels above ``MASK_THRESHOLD``; at a coarser map each cell counts by the fraction of it the
    mask covers. A map with no mass gives NaN.
    """
    inside = (masks > MASK_THRESHOLD).float()
    if tuple(inside.shape[-2:]) != tuple(maps.shape[-2:]):
        lead = inside.shape[:-2]
        flat = F.interpolate(inside.reshape(-1, 1, *inside.shape[-2:]), size=tuple(maps.shape[-2:]), mode="area")
        inside = flat.reshape(*lead, *maps.shape[-2:])
    total = maps.float().sum((-2, -1))
    share = (maps.float() * inside).sum((-2, -1)) / total.clamp_min(torch.finfo(torch.float32).tiny)
    return torch.where(total > 0, share, torch.full_like(share, float("nan")))


class AttentionRecorder:
    """Accumulates the cross-attention maps of chosen key tokens while a model samples.

    ``positions``: the key indices of the tokens to record, in one copy of the conditioning of ``prompt_length``
    tokens. Steps whose sampling progress lies outside [start_percent, end_percent] are not recorded. Only the
    first positive chunk of each call is recorded (one row per latent of the batch).
    """

    def __init__(self, positions: Sequence[int], prompt_length: int, start_percent=0.0, end_percent=1.0):
        if not 0.0 <= start_percent <= end_percent <= 1.0:
            raise ValueError(f"need 0 <= start_percent <= end_percent <= 1, got {start_percent}, {end_percent}")
        self.positions = torch.tensor(sorted({int(p) for p in positions}), dtype=torch.long)
        if self.positions.numel() and (self.positions.min() < 0 or self.positions.max() >= prompt_length):
            raise ValueError(f"token positions must lie in [0, {prompt_length})")
        self.prompt_length = int(prompt_length)
        self.start_percent, self.end_percent = float(start_percent), float(end_percent)
        self.problems: set[str] = set()  # why calls were skipped, for the read-out to report
        self.reset()

    def reset(self) -> None:
        """Forget what was recorded (called when a sampling run starts)."""
        self.sums: dict[tuple[int, int], torch.Tensor] = {}  # (h, w) -> [rows, T, h·w] float32
        self.calls: dict[tuple[int, int], int] = {}  # (h, w) -> layer calls summed there
        self.model_calls = 0
        self._sigmas = None

    @property
    def state_bytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.sums.values())

    def index_of(self, positions: Sequence[int]) -> torch.Tensor:
        """Indices into the recorded tokens of these key positions (all must have been recorded)."""
        recorded = {int(p): i for i, p in enumerate(self.positions.tolist())}
        missing = [int(p) for p in positions if int(p) not in recorded]
        if missing:
            raise ValueError(f"token positions {missing} were not recorded")
        return torch.tensor([recorded[int(p)] for p in positions], dtype=torch.long)

    def _in_range(self, extra_options: dict) -> bool:
        sigmas = extra_options.get("sigmas")
        if sigmas is None:
            return True
        progress = sampling_progress(float(sigmas.detach().flatten()[0]), extra_options.get("sample_sigmas"))
        inside = self.start_percent <= progress <= self.end_percent
        if inside and sigmas is not self._sigmas:  # every layer of one model call sees the same sigmas tensor
            self._sigmas = sigmas
            self.model_calls += 1
        return inside

    def observe(self, q: torch.Tensor, k: torch.Tensor, extra_options: dict, realign=None) -> None:
        """Add one cross-attention call (q [B, N, H·d], k [B, K, H·d], ComfyUI's ``extra_options``).

        ``realign``: the RealignReplace that computes this layer's attention, when there is one: its modulated
        probabilities are recorded, and its own positive chunks.
        """
        if not self.positions.numel() or not self._in_range(extra_options):
            return
        flags = extra_options.get("cond_or_uncond") or [0]
        per_chunk = q.shape[0] // len(flags)
        chunks = realign.positive_chunks(extra_options, len(flags)) if realign is not None else None
        chunks = chunks if chunks is not None else [c for c, flag in enumerate(flags) if flag == 0]
        size = layer_size(extra_options, q.shape[1])
        if not chunks or size is None or k.shape[1] % self.prompt_length:
            if chunks:
                self.problems.add(
                    f"a layer with {q.shape[1]} queries matches no latent size"
                    if size is None
                    else f"{k.shape[1]} keys are not a multiple of the recorded conditioning's {self.prompt_length} "
                    "tokens: the text given to the recorder is not the sampler's positive prompt"
                )
            return
        offsets = torch.arange(k.shape[1] // self.prompt_length) * self.prompt_length
        columns = (self.positions[None] + offsets[:, None]).to(q.device)
        modulated = realign.attention_probabilities(q, k, extra_options, columns.flatten()) if realign else None
        if modulated is not None and modulated[0][0] == chunks[0]:
            maps = reduce_tokens(modulated[1][:per_chunk], columns)
        else:
            rows = slice(chunks[0] * per_chunk, (chunks[0] + 1) * per_chunk)
            maps = token_attention(q[rows], k[rows], extra_options["n_heads"], columns)
        self._add(size, maps)

    def _add(self, size: tuple[int, int], maps: torch.Tensor) -> None:
        total = self.sums.get(size)
        if total is None:
            self.sums[size], self.calls[size] = torch.zeros_like(maps), 0
        elif total.shape != maps.shape:
            self.problems.add(f"the batch changed from {total.shape[0]} to {maps.shape[0]} latents while sampling")
            return
        self.sums[size] += maps
        self.calls[size] += 1

    @property
    def resolutions(self) -> list[tuple[int, int]]:
        """Layer resolutions recorded, finest first."""
        return sorted(self.sums, key=lambda hw: -hw[0] * hw[1])

    def maps_at(self, resolution: tuple[int, int]) -> torch.Tensor:
        """[rows, T, h, w]: the mean over the layer calls at one resolution."""
        total = self.sums[resolution]
        return (total / self.calls[resolution]).unflatten(-1, resolution)

    def maps(self, size: tuple[int, int] | None = None) -> torch.Tensor:
        """[rows, T, H, W]: the mean over every recorded layer call, each resized to ``size`` (default: the finest
        layer resolution, the latent's)."""
        if not self.sums:
            raise ValueError("nothing was recorded")
        size = size or self.resolutions[0]
        total = sum(resize_maps(self.sums[r].unflatten(-1, r), *size) for r in self.resolutions)
        return total / sum(self.calls.values())


def object_maps(token_maps: torch.Tensor, tokens: Sequence[torch.Tensor]) -> torch.Tensor:
    """[T, H, W] maps of one row, and each object's token indices -> [objects, H, W], the mean over its tokens."""
    if not tokens:
        return token_maps.new_zeros(0, *token_maps.shape[-2:])
    return torch.stack([token_maps[index].mean(0) for index in tokens])
