"""Re-weighting attention modulation (docs/method.md, the paper's eqs. 8-10).

For logits ``L = Q Kᵀ`` (per head, unscaled) and a query position p / key token j:

    R[p, j] = 1 if j belongs to an object whose mask covers p, else 0
    S[p, j] = that object's score s_i where R[p, j] = 1, else 1
    Mpos = rowmax(L) - L,   Mneg = L - rowmin(L)
    B    = softmax(L / sqrt(d))              (unmodulated attention probabilities)
    M    = λ_t [R Mpos (1 - B) - (1 - R) Mneg (1 - B)]   for object tokens, 0 for all others
    A'   = softmax((L + S ⊙ M) / sqrt(d))

Cross-attention has few keys (77 per prompt chunk) and objects own a handful of them, so the bias
is computed on the object-token columns only, from one explicit logit matrix.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

SCHEDULES = ("paper", "densediffusion")


def timestep_strength(strength: float, timestep: float, schedule: str = "paper") -> float:
    """λ_t: ``λ·t/1000`` (the paper: proportional to the timestep) or DenseDiffusion's ``λ·(t/1000)^5``."""
    fraction = min(max(float(timestep) / 1000.0, 0.0), 1.0)
    if schedule == "paper":
        return strength * fraction
    if schedule == "densediffusion":
        return strength * fraction**5
    raise ValueError(f"unknown schedule {schedule!r}; expected one of {SCHEDULES}")


def resize_masks(masks: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """[n, H, W] masks in [0, 1] -> [n, height, width] bool at a layer's resolution.

    A mask is the pixels above 0.5; a layer position belongs to it when its cell overlaps it (the method's
    m_i(p) > 0 after resizing), so small objects survive at the coarse layers.
    """
    if masks.numel() == 0:
        return torch.zeros(masks.shape[0], height, width, dtype=torch.bool, device=masks.device)
    inside = (masks[:, None] > 0.5).float()
    return F.interpolate(inside, size=(height, width), mode="area")[:, 0] > 0


@dataclass
class ModulationMaps:
    """The object-dependent part of the modulation at one layer resolution, for G guidance images.

    ``columns``: the key indices of object tokens (union over images), [C] long.
    ``activated``: R restricted to those columns, [G, N, C] bool.
    ``weight``: S restricted to those columns, times 1 where the token is an object token *of that image*
    and 0 where it is not (so other images' tokens stay unmodulated), [G, N, C] float32.
    ``repeats``: how many copies of the prompt the keys hold (ComfyUI repeats a shorter conditioning to
    match a longer one); B is measured over one copy so the push does not depend on the other prompt.
    """

    columns: torch.Tensor
    activated: torch.Tensor
    weight: torch.Tensor
    repeats: int = 1

    def __post_init__(self):
        self._rows: dict[tuple[int, int], ModulationMaps] = {}

    @property
    def empty(self) -> bool:
        return self.columns.numel() == 0

    def for_rows(self, per_chunk: int, n_chunks: int) -> ModulationMaps:
        """Maps for a batch of ``n_chunks`` chunks of ``per_chunk`` images (image i of a chunk gets
        guidance image i mod G), cached: the attention calls of one model share them."""
        key = (per_chunk, n_chunks)
        if key not in self._rows:
            index = (torch.arange(per_chunk) % self.activated.shape[0]).repeat(n_chunks).to(self.activated.device)
            self._rows[key] = ModulationMaps(self.columns, self.activated[index], self.weight[index], self.repeats)
        return self._rows[key]


def build_maps(
    objects_per_image: list[list[tuple[torch.Tensor, torch.Tensor, float]]],
    height: int,
    width: int,
    n_keys: int,
    device: torch.device | str = "cpu",
    repeats: int = 1,
) -> ModulationMaps:
    """Maps for each guidance image from its objects ``(mask [H, W], token positions [T] long, score)``.

    Token positions must already be valid key indices (< n_keys).
    """
    n_queries = height * width
    columns = sorted({int(j) for objects in objects_per_image for _, tokens, _ in objects for j in tokens.tolist()})
    if any(j >= n_keys or j < 0 for j in columns):
        raise ValueError(f"token index out of range for {n_keys} keys")
    column_of = {j: c for c, j in enumerate(columns)}
    n_images = max(len(objects_per_image), 1)
    activated = torch.zeros(n_images, n_queries, len(columns), dtype=torch.bool)
    owned = torch.zeros(n_images, len(columns), dtype=torch.bool)
    best_score = torch.full((n_images, n_queries, len(columns)), float("-inf"))
    for g, objects in enumerate(objects_per_image):
        if not objects:
            continue
        masks = resize_masks(torch.stack([m for m, _, _ in objects]), height, width).reshape(len(objects), n_queries)
        for mask, (_, tokens, score) in zip(masks, objects):
            if tokens.numel() == 0:
                continue
            cols = torch.tensor([column_of[int(j)] for j in tokens.tolist()], dtype=torch.long)
            owned[g, cols] = True
            inside = mask[:, None].expand(-1, len(cols))
            activated[g][:, cols] |= inside
            current = best_score[g][:, cols]
            best_score[g][:, cols] = torch.where(inside, torch.clamp(current, min=float(score)), current)
    weight = torch.where(activated, best_score, torch.ones(()))
    weight = weight * owned[:, None, :]
    return ModulationMaps(
        columns=torch.tensor(columns, dtype=torch.long, device=device),
        activated=activated.to(device),
        weight=weight.to(device=device, dtype=torch.float32),
        repeats=repeats,
    )


def realign_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    heads: int,
    maps: ModulationMaps,
    strength: float,
    image_index: torch.Tensor | None = None,
) -> torch.Tensor:
    """Modulated cross-attention. q [B, N, H·D], k/v [B, K, H·D] (already projected) -> [B, N, H·D].

    ``image_index`` [B] picks each row's guidance image in ``maps``; by default row i takes image i mod G
    (``maps.for_rows`` prepares maps whose rows already match the batch). Computed in float32, returned in
    q's dtype. Everything below is in scaled units: with L̃ = L/√d, softmax((L + S⊙M)/√d) is
    softmax(L̃ + S⊙M̃) where M̃ is M built from L̃ (M is linear in L).
    """
    batch, n_queries, inner = q.shape
    dim_head = inner // heads
    out_dtype = q.dtype
    q = (q.float() * dim_head**-0.5).reshape(batch, n_queries, heads, dim_head).transpose(1, 2)
    k = k.float().reshape(batch, -1, heads, dim_head).transpose(1, 2)
    v = v.float().reshape(batch, -1, heads, dim_head).transpose(1, 2)
    logits = q @ k.transpose(-1, -2)  # [B, H, N, K], L/√d

    if not maps.empty and strength != 0.0:
        activated, weight = maps.activated, maps.weight
        if image_index is not None:
            activated, weight = activated[image_index], weight[image_index]
        elif activated.shape[0] != batch:
            index = torch.arange(batch, device=activated.device) % activated.shape[0]
            activated, weight = activated[index], weight[index]
        cols = maps.columns
        object_logits = logits[..., cols]  # [B, H, N, C]
        # B, over one copy of the prompt's keys
        probs = torch.exp(object_logits - torch.logsumexp(logits, dim=-1, keepdim=True)) * maps.repeats
        push = torch.where(
            activated[:, None],
            logits.amax(dim=-1, keepdim=True) - object_logits,  # Mpos
            -(object_logits - logits.amin(dim=-1, keepdim=True)),  # -Mneg
        )
        logits.index_add_(-1, cols, weight[:, None] * (strength * push * (1.0 - probs)))  # + S ⊙ M

    attention = torch.softmax(logits, dim=-1)
    out = attention @ v
    return out.transpose(1, 2).reshape(batch, n_queries, inner).to(out_dtype)
