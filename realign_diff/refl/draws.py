"""Random draws keyed by (seed, step, global sample index, purpose), never by the process that makes them.

A run on N processes must be the computation of one process with an N-times larger batch: sample g of
optimizer step s gets the same noise, ReFL step k, L_pre timestep and noise, and pair, whichever process
and micro-step it lands on. Each draw takes a fresh ``torch.Generator`` seeded from the key, so nothing
depends on what was drawn before it (and a resumed run needs no generator state).
"""

from __future__ import annotations

import hashlib

import torch

# one stream per use, so that adding a draw of one kind never shifts the draws of another
PURPOSES = ("noise", "refl_step", "pre_timestep", "pre_noise", "posterior", "caption", "validation_noise")


def key_seed(seed: int, step: int, sample: int, purpose: str) -> int:
    if purpose not in PURPOSES:
        raise ValueError(f"unknown draw {purpose!r}")
    digest = hashlib.blake2b(f"{seed}/{step}/{sample}/{purpose}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & (2**63 - 1)


def generator(seed: int, step: int, sample: int, purpose: str) -> torch.Generator:
    return torch.Generator().manual_seed(key_seed(seed, step, sample, purpose))


def normal(shape: tuple[int, ...], seed: int, step: int, samples: list[int], purpose: str) -> torch.Tensor:
    """[len(samples), *shape] standard normal, row i drawn from sample ``samples[i]``'s own generator (CPU)."""
    return torch.stack([torch.randn(shape, generator=generator(seed, step, s, purpose)) for s in samples])


def integers(low: int, high: int, seed: int, step: int, samples: list[int], purpose: str) -> torch.Tensor:
    """[len(samples)] integers in [low, high], inclusive, one per sample (CPU, int64)."""
    draws = [torch.randint(low, high + 1, (1,), generator=generator(seed, step, s, purpose)) for s in samples]
    return torch.cat(draws)
