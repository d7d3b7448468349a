"""What the trainer needs of a reward: a small protocol, so any scorer object can be handed to it.

The BLIP-2 caption reward (``realign_diff.reward.CaptionReward``) is the one the CLI loads; tests hand in
any object with the same two methods.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

import torch


@runtime_checkable
class CaptionScorer(Protocol):
    def score(self, images: torch.Tensor, prompts: Sequence[str], max_new_tokens: int = ..., num_beams: int = ...):
        """images [B, H, W, 3] in [0, 1], no gradient -> object with ``rewards`` (Tensor[B]) and ``captions``
        (list[str])."""

    def reward_terms(
        self,
        pixels: torch.Tensor,
        prompts: Sequence[str],
        *,
        max_new_tokens: int = ...,
        num_beams: int = ...,
        sampling: bool = ...,
        seeds: Sequence[int] | None = ...,
        prompt_log_prob: bool = ...,
    ):
        """pixels [B, 3, H, W] in [0, 1] (with gradient) -> object with ``rewards`` (Tensor[B], no gradient),
        ``captions``, ``log_p_caption`` (Tensor[B], log p(generated caption | image), differentiable) and
        ``log_p_prompt`` (teacher-forced log p(prompt | image) when ``prompt_log_prob``, else None). With
        ``sampling`` the caption of image i is drawn with ``seeds[i]`` alone."""


def check_scorer(scorer) -> None:
    if not isinstance(scorer, CaptionScorer):
        raise TypeError(
            f"the reward must have score(images, prompts, ...) and reward_terms(pixels, prompts, ...); "
            f"got {type(scorer).__name__}"
        )


def check_reward_folders(captioner_dir: str | None, text_encoder_dir: str | None) -> None:
    from .config import ConfigError

    if not captioner_dir or not text_encoder_dir:
        raise ConfigError(
            "--captioner and --text-encoder are required: the BLIP-2 captioner folder (e.g. blip2-opt-2.7b) and the "
            "BLIP-2 image-text-retrieval folder (e.g. blip2-itm-vit-g), both in Hugging Face format"
        )
    for flag, folder in (("--captioner", captioner_dir), ("--text-encoder", text_encoder_dir)):
        if not Path(folder).is_dir():
            raise FileNotFoundError(f"{flag} folder not found: {folder}")


def load_caption_reward(captioner_dir: str, text_encoder_dir: str, device, dtype) -> CaptionScorer:
    """The BLIP-2 caption reward from two local folders (nothing is downloaded); never wrapped for gradient sync."""
    check_reward_folders(captioner_dir, text_encoder_dir)
    from ..reward import CaptionReward

    reward = CaptionReward.from_pretrained(captioner_dir, text_encoder_dir, device=device, dtype=dtype)
    return reward.requires_grad_(False)  # frozen: gradients reach the pixels, never BLIP-2's weights
