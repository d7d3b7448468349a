"""The caption reward (BLIP-2 caption vs prompt) and its differentiable surrogate. See ``caption_reward``."""

from .blip2_files import Blip2FolderError, Blip2FolderMissing, check_blip2_dir
from .caption_reward import CaptionReward, RewardResult, RewardTerms, default_device, default_dtype
from .image_prep import ImageStats, preprocess, to_bchw
from .prompts import PromptError, match_prompts, split_prompt_lines

__all__ = [
    "Blip2FolderError",
    "Blip2FolderMissing",
    "CaptionReward",
    "ImageStats",
    "PromptError",
    "RewardResult",
    "RewardTerms",
    "check_blip2_dir",
    "default_device",
    "default_dtype",
    "match_prompts",
    "preprocess",
    "split_prompt_lines",
    "to_bchw",
]
