"""The cross-attention replace function: ComfyUI's attn2 contract without importing ComfyUI.

ComfyUI calls ``fn(q, k, v, extra_options)`` with q/k/v projected, ``[B, N, heads·dim_head]``;
``extra_options`` carries ``n_heads``, ``cond_or_uncond`` and ``uuids`` (the batch is chunked, one chunk
per condition), ``sigmas``, ``sample_sigmas``, ``activations_shape``/``original_shape``, ``block`` and
``block_index``. Only the chunks of our own positive conditioning are modulated (known by uuid when the
glue reports them, else the chunks flagged 0); everything else, and every call where the modulation is
off, goes to the fallback attention (ComfyUI's own, or a replace another pack installed on the same
block), so with λ = 0 the output is exactly ComfyUI's.
"""

from __future__ import annotations

import logging
from collections import deque
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
        self.positive_uuids: set | None = None  # set by the glue before each batch of conditions
        self.called_blocks: set[tuple] = set()
        self.modulated_blocks: set[tuple] = set()
        self.modulated_calls = 0
        self.modulated_rows = 0
        # (σ, λ_t) of the latest model calls, for tests and recorders; bounded, as a cached patched model is
        # sampled again and again
        self.strengths: deque[tuple[float, float]] = deque(maxlen=4096)
        self._maps: dict[tuple, ModulationMaps] = {}
        self._strength_of: tuple[object, float] = (None, 0.0)  # (the sigmas tensor of the current call, λ_t)
        self._warned: set[str] = set()
        self.notify: Callable[[str], None] | None = None  # where a warning is also shown (the node glue: the UI)

    def for_block(self, previous: Callable | None = None) -> Callable:
        """The function to register on one block; ``previous`` is a replace already installed there."""

        def replace(q, k, v, extra_options):
            return self(q, k, v, extra_options, previous)

        replace.realign = self  # lets a later Realign patch (or a test) find us
        replace.realign_previous = previous  # ... and keep what we wrapped
        return replace

    def current_strength(self, extra_options: dict) -> float:
        """λ_t for this model call; computed once per call (every block sees the same ``sigmas`` tensor)."""
        sigmas = extra_options.get("sigmas")
        if self.strength == 0.0 or not self.has_objects or sigmas is None:
            return 0.0
        if self._strength_of[0] is sigmas:
            return self._strength_of[1]
        sigma = sigmas.detach().flatten()[0].float()
        strength = 0.0
        if (
            self.end_percent >= 1.0
            or sampling_progress(float(sigma), extra_options.get("sample_sigmas")) < self.end_percent
        ):
            timestep = float(self.sigma_to_timestep(sigma.reshape(1)).flatten()[0])
            strength = timestep_strength(self.strength, timestep, self.schedule)
        self._strength_of = (sigmas, strength)
        self.strengths.append((float(sigma), strength))
        return strength

    def warn_once(self, key: str, message: str, *args) -> None:
        if key not in self._warned:
            self._warned.add(key)
            text = message % args
            log.warning("[RealignDiff] %s", text)
            if self.notify is not None:
                self.notify(text)

    def maps_for(self, height: int, width: int, n_keys: int, device: torch.device) -> ModulationMaps | None:
        if n_keys % self.prompt_length:
            self.warn_once(
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
            self._maps[key] = build_maps(tiled, height, width, n_keys, device, repeats=repeats)
            self._check_aspect(height, width)
        return self._maps[key]

    def _check_aspect(self, height: int, width: int) -> None:
        for objects in self.objects_per_image:
            if objects:
                mask_h, mask_w = objects[0].mask.shape
                # a coarse layer's sizes are rounded up (13x19 -> 7x10): one cell of slack on top of 2 %
                if abs(mask_w / mask_h - width / height) > (0.02 + 1.0 / min(height, width)) * width / height:
                    self.warn_once(
                        "aspect",
                        "guidance masks are %dx%d but the latent is %dx%d (width x height at this layer): "
                        "the masks are stretched to fit",
                        mask_w,
                        mask_h,
                        width,
                        height,
                    )

    def positive_chunks(self, extra_options: dict, n_chunks: int) -> list[int]:
        """The chunks of our own positive conditioning."""
        uuids = extra_options.get("uuids")
        if self.positive_uuids is not None and uuids is not None and len(uuids) == n_chunks:
            return [c for c, uuid in enumerate(uuids) if uuid in self.positive_uuids]
        flags = extra_options.get("cond_or_uncond") or [0] * n_chunks
        return [c for c, flag in enumerate(flags) if flag == 0]

    def attention_probabilities(
        self, q, k, extra_options, columns: torch.Tensor
    ) -> tuple[list[int], torch.Tensor] | None:
        """For a recorder (realign_diff.attention_maps): ``(chunks, probabilities)``, the float32 ``[rows, heads, N,
        len(columns)]`` this patch attends with, at the key ``columns``, on the chunks it modulates in this call; None
        where it leaves the call to the fallback. Taken from ``realign_attention`` itself, with V one-hot on the
        columns (heads padded when narrower than the columns, q rescaled so L/sqrt(d) is unchanged): A'V is A'."""
        strength = self.current_strength(extra_options)
        n_chunks = len(extra_options.get("cond_or_uncond") or [0])
        chunks = self.positive_chunks(extra_options, n_chunks) if strength else []
        size = layer_size(extra_options, q.shape[1]) if chunks else None
        maps = self.maps_for(size[0], size[1], k.shape[1], q.device) if size else None
        if maps is None or maps.empty:
            return None
        heads, per_chunk = extra_options["n_heads"], q.shape[0] // n_chunks
        dim = q.shape[-1] // heads
        width = max(dim, len(columns))
        rows = torch.cat([torch.arange(c * per_chunk, (c + 1) * per_chunk) for c in chunks]).to(q.device)
        qp, kp = (
            torch.nn.functional.pad(t[rows].float().unflatten(-1, (heads, dim)) * scale, (0, width - dim)).flatten(-2)
            for t, scale in ((q, (width / dim) ** 0.5), (k, 1.0))
        )
        one_hot = torch.zeros(k.shape[1], width, device=q.device)
        one_hot[columns.to(q.device), torch.arange(len(columns), device=q.device)] = 1.0
        values = one_hot[:, None].expand(-1, heads, width).reshape(1, k.shape[1], -1).expand(len(rows), -1, -1)
        out = realign_attention(qp, kp, values, heads, maps.for_rows(per_chunk, len(chunks)), strength)
        return chunks, out.unflatten(-1, (heads, width))[..., : len(columns)].transpose(1, 2)

    def __call__(self, q, k, v, extra_options, previous: Callable | None = None):
        block = extra_options.get("block")
        block_key = (block[0], block[1], extra_options.get("block_index", 0)) if block is not None else None
        self.called_blocks.add(block_key)
        fallback = previous if previous is not None else self.attention_fn
        strength = self.current_strength(extra_options)
        if strength == 0.0:
            return fallback(q, k, v, extra_options)

        n_chunks = len(extra_options.get("cond_or_uncond") or [0])
        per_chunk = q.shape[0] // n_chunks
        chunks = self.positive_chunks(extra_options, n_chunks)
        size = layer_size(extra_options, q.shape[1]) if chunks else None
        if chunks and size is None:
            self.warn_once(
                "size",
                "a cross-attention layer with %d queries matches no latent size; it is not "
                "modulated (please report the model and image size)",
                q.shape[1],
            )
        maps = self.maps_for(size[0], size[1], k.shape[1], q.device) if size else None
        if maps is None or maps.empty:
            return fallback(q, k, v, extra_options)
        if len(self.objects_per_image) > 1 and len(self.objects_per_image) != per_chunk:
            self.warn_once(
                "batch",
                "%d guidance images for a batch of %d latents: guidance is reused in turn",
                len(self.objects_per_image),
                per_chunk,
            )

        spans = [slice(c * per_chunk, (c + 1) * per_chunk) for c in chunks]
        qp, kp, vp = (t[spans[0]] if len(spans) == 1 else torch.cat([t[s] for s in spans]) for t in (q, k, v))
        modulated = realign_attention(
            qp, kp, vp, extra_options["n_heads"], maps.for_rows(per_chunk, len(spans)), strength
        )
        self.modulated_calls += 1
        self.modulated_rows += qp.shape[0]
        self.modulated_blocks.add(block_key)
        if previous is not None:
            # another pack's patch (e.g. an image prompt adding its own term) keeps its effect: we add our change
            out = previous(q, k, v, extra_options).clone()
            delta = modulated - self.attention_fn(qp, kp, vp, extra_options).to(modulated.dtype)
            for index, span in enumerate(spans):
                out[span] += delta[index * per_chunk : (index + 1) * per_chunk].to(out.dtype)
            return out
        out = torch.empty_like(q)
        for c in range(n_chunks):
            if c not in chunks:
                span = slice(c * per_chunk, (c + 1) * per_chunk)
                out[span] = self.attention_fn(q[span], k[span], v[span], extra_options).to(q.dtype)
        for index, span in enumerate(spans):
            out[span] = modulated[index * per_chunk : (index + 1) * per_chunk].to(q.dtype)
        return out
