"""The cross-attention replace function: ComfyUI's attn2 contract without importing ComfyUI.

ComfyUI calls ``fn(q, k, v, extra_options)`` with q/k/v projected, ``[B, N, heads·dim_head]``;
``extra_options`` carries ``n_heads``, ``cond_or_uncond`` (the batch is chunked: 0 = positive,
1 = negative), ``sigmas``, ``sample_sigmas``, ``activations_shape``/``original_shape``, ``block`` and
``block_index``. Only positive chunks are modulated; everything else, and every call where the
modulation is off, goes to the fallback attention (ComfyUI's own, or a replace another pack
installed on the same block), so with λ = 0 the output is exactly ComfyUI's.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import torch

from .attention import ModulationMaps, build_maps, realign_attention, timestep_strength

log = logging.getLogger(__name__)

AttentionFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, dict], torch.Tensor]


@dataclass
class PatchObject:
    """One object of one guidance image: mask at image resolution, its key positions, its score."""

    mask: torch.Tensor  # [H, W] float32
    positions: torch.Tensor  # [T] long, indices into one prompt-length token sequence
    score: float


def reference_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, extra_options: dict) -> torch.Tensor:
    """Plain scaled-dot-product attention in ComfyUI's layout (the fallback outside ComfyUI)."""
    heads = extra_options["n_heads"]
    b, n, inner = q.shape
    d = inner // heads
    q, k, v = (t.reshape(b, -1, heads, d).transpose(1, 2) for t in (q, k, v))
    out = torch.nn.functional.scaled_dot_product_attention(q, k, v)
    return out.transpose(1, 2).reshape(b, n, inner)


def layer_size(extra_options: dict, n_queries: int) -> tuple[int, int] | None:
    """(h, w) of the layer whose queries these are, for masks of any aspect ratio."""
    shape = extra_options.get("activations_shape")
    if shape is not None and len(shape) == 4 and shape[2] * shape[3] == n_queries:
        return int(shape[2]), int(shape[3])
    original = extra_options.get("original_shape")
    if original is not None and len(original) >= 4:
        height, width = original[-2], original[-1]
        for factor in (1, 2, 4, 8, 16, 32, 64):
            h, w = -(-height // factor), -(-width // factor)
            if h * w == n_queries:
                return h, w
    return None


def sampling_progress(sigma: float, sample_sigmas: torch.Tensor | None) -> float:
    """Fraction of the sampling steps done when the model is called at ``sigma`` (0 at the first step)."""
    if sample_sigmas is None or len(sample_sigmas) < 2:
        return 0.0
    index = int(torch.argmin((sample_sigmas.float().cpu() - sigma).abs()))
    return index / (len(sample_sigmas) - 1)


class RealignReplace:
    """Shared by every cross-attention block of one patched model; caches maps per resolution."""

    def __init__(
        self,
        objects_per_image: list[list[PatchObject]],
        prompt_length: int,
        strength: float,
        sigma_to_timestep: Callable[[torch.Tensor], torch.Tensor],
        schedule: str = "paper",
        end_percent: float = 1.0,
        attention_fn: AttentionFn = reference_attention,
    ):
        timestep_strength(1.0, 0.0, schedule)  # validates the schedule name
        self.objects_per_image = objects_per_image
        self.prompt_length = prompt_length
        self.strength = float(strength)
        self.schedule = schedule
        self.end_percent = float(end_percent)
        self.sigma_to_timestep = sigma_to_timestep
        self.attention_fn = attention_fn
        self.has_objects = any(obj.positions.numel() for objects in objects_per_image for obj in objects)
        self.called_blocks: set[tuple] = set()
        self.modulated_calls = 0
        self._maps: dict[tuple, ModulationMaps] = {}
        self._warned: set[str] = set()

    def for_block(self, previous: Callable | None = None) -> Callable:
        """The function to register on one block; ``previous`` is a replace already installed there."""

        def replace(q, k, v, extra_options):
            return self(q, k, v, extra_options, previous)

        replace.realign = self  # lets a later patch (or a test) find us
        return replace

    def current_strength(self, extra_options: dict) -> float:
        sigmas = extra_options.get("sigmas")
        if self.strength == 0.0 or not self.has_objects or sigmas is None:
            return 0.0
        sigma = sigmas.detach().flatten()[0].float()
        if sampling_progress(float(sigma), extra_options.get("sample_sigmas")) >= self.end_percent:
            return 0.0
        timestep = float(self.sigma_to_timestep(sigma.reshape(1)).flatten()[0])
        return timestep_strength(self.strength, timestep, self.schedule)

    def _warn_once(self, key: str, message: str, *args) -> None:
        if key not in self._warned:
            self._warned.add(key)
            log.warning("[RealignDiff] " + message, *args)

    def maps_for(self, height: int, width: int, n_keys: int, device: torch.device) -> ModulationMaps | None:
        if n_keys % self.prompt_length:
            self._warn_once(
                f"keys{n_keys}",
                "cross-attention has %d keys, not a multiple of the realign conditioning's %d tokens: "
                "use the patch node's CONDITIONING output as the positive prompt. Modulation skipped.",
                n_keys,
                self.prompt_length,
            )
            return None
        key = (height, width, n_keys, str(device))
        if key not in self._maps:
            repeats = n_keys // self.prompt_length  # ComfyUI repeats shorter conds to a common length
            offsets = torch.arange(repeats) * self.prompt_length
            tiled = [
                [(o.mask, (o.positions[None, :] + offsets[:, None]).flatten(), o.score) for o in objects]
                for objects in self.objects_per_image
            ]
            self._maps[key] = build_maps(tiled, height, width, n_keys, device)
            self._check_aspect(height, width)
        return self._maps[key]

    def _check_aspect(self, height: int, width: int) -> None:
        for objects in self.objects_per_image:
            if objects:
                mask_h, mask_w = objects[0].mask.shape
                if abs(mask_w / mask_h - width / height) > 0.02 * width / height:
                    self._warn_once(
                        "aspect",
                        "guidance masks are %dx%d but the latent is %dx%d (width x height at this layer): "
                        "the masks are stretched to fit",
                        mask_w, mask_h, width, height,
                    )

    def __call__(self, q, k, v, extra_options, previous: Callable | None = None):
        block = extra_options.get("block")
        if block is not None:
            self.called_blocks.add((block[0], block[1], extra_options.get("block_index", 0)))
        fallback = previous if previous is not None else self.attention_fn
        strength = self.current_strength(extra_options)
        if strength == 0.0:
            return fallback(q, k, v, extra_options)

        batch = q.shape[0]
        chunks = list(extra_options.get("cond_or_uncond") or [0])
        per_chunk = batch // len(chunks)
        rows = [c * per_chunk + i for c, flag in enumerate(chunks) if flag == 0 for i in range(per_chunk)]
        if not rows:
            return fallback(q, k, v, extra_options)
        size = layer_size(extra_options, q.shape[1])
        if size is None:
            self._warn_once("size", "cannot tell this layer's resolution (%d queries); modulation skipped", q.shape[1])
            return fallback(q, k, v, extra_options)
        maps = self.maps_for(size[0], size[1], k.shape[1], q.device)
        if maps is None or maps.empty:
            return fallback(q, k, v, extra_options)

        cond = torch.tensor(rows, device=q.device)
        image_index = torch.tensor([r % per_chunk for r in rows], device=q.device) % maps.activated.shape[0]
        modulated = realign_attention(q[cond], k[cond], v[cond], extra_options["n_heads"], maps, strength, image_index)
        self.modulated_calls += 1
        if previous is not None:  # another pack's patch keeps the whole batch; we replace the positive rows
            out = previous(q, k, v, extra_options).clone()
        else:
            out = torch.empty_like(q)
            positive = set(rows)
            other = [r for r in range(batch) if r not in positive]
            if other:
                index = torch.tensor(other, device=q.device)
                out[index] = self.attention_fn(q[index], k[index], v[index], extra_options).to(q.dtype)
        out[cond] = modulated.to(out.dtype)
        return out
