"""BLIP-2 Caption Reward Loader and Caption Reward Scorer (the core: ``realign_diff.reward``)."""

from __future__ import annotations

from ..realign_diff.checkpoint_file import ModelSource
from ..realign_diff.dtypes import PRECISION_CHOICES, dtype_of
from ..realign_diff.reward import (
    CaptionReward,
    RewardResult,
    default_dtype,
    split_prompt_lines,
    to_bchw,
)
from ..realign_diff.reward.blip2_files import CAPTIONER_ARCHS, CAPTIONER_SOURCES, TEXT_ENCODER_ARCHS, read_architectures
from .common import CATEGORY, PER_IMAGE_PROMPT, node_id

CAPTION_REWARD = "REALIGN_CAPTION_REWARD"  # a ModelPatcher wrapping a realign_diff.reward.CaptionReward
FOLDER = "blip2"
REQUIRES = {"transformers": "transformers>=4.51"}  # imported when a model loads
NO_MODELS = "(no BLIP-2 folders in models/blip2)"
SOURCES = f"captioner: {CAPTIONER_SOURCES}; text encoder: https://huggingface.co/Salesforce/blip2-itm-vit-g"
BLIP2 = ModelSource("BLIP-2 model folder (the whole Hugging Face download)", FOLDER, SOURCES)


def _choices(preferred: set[str]) -> list[str]:
    """Model folders in models/blip2, those of the preferred architecture first (so the default is a fitting one)."""
    from .model_folders import find_model_dir, list_model_dirs

    try:
        names = list_model_dirs(FOLDER, report_skipped=True)
    except (ImportError, KeyError):  # outside ComfyUI
        names = []
    if not names:
        return [NO_MODELS]

    def fits(name: str) -> bool:
        path = find_model_dir(FOLDER, name)
        return path is not None and bool(set(read_architectures(path)) & preferred)

    return sorted(names, key=lambda name: (not fits(name), name))


def resolve_precision(precision: str, load_device) -> torch.dtype:  # noqa: F821
    return dtype_of(precision, auto=default_dtype(load_device) if precision == "auto" else None)


def _model_dir(name: str, what: str) -> str:
    from .model_folders import model_dir

    missing = f"{what} folder" + (f" named {name!r}" if name != NO_MODELS else "")
    return model_dir(name if name != NO_MODELS else "", missing, BLIP2)


class Blip2RewardLoader:
    DESCRIPTION = (
        "Loads the two BLIP-2 models of the caption reward from models/blip2 (Hugging Face folders): a captioner "
        "that describes the image and an image-text retrieval model whose text tower embeds caption and prompt. "
        "Loaded once and kept between runs; ComfyUI offloads them when memory is needed."
    )
    CATEGORY = CATEGORY
    FUNCTION = "load"
    RETURN_TYPES = (CAPTION_REWARD,)
    RETURN_NAMES = ("caption_reward",)
    OUTPUT_TOOLTIPS = (
        "The caption reward model (BLIP-2 captioner + BLIP-2 text encoder), for the Caption Reward Scorer.",
    )

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "captioner": (
                    _choices(CAPTIONER_ARCHS),
                    {
                        "tooltip": "BLIP-2 captioner folder in models/blip2 (Blip2ForConditionalGeneration), e.g. "
                        "blip2-opt-2.7b or blip2-flan-t5-xl from huggingface.co/Salesforce."
                    },
                ),
                "text_encoder": (
                    _choices(TEXT_ENCODER_ARCHS),
                    {
                        "tooltip": "BLIP-2 image-text retrieval folder in models/blip2, e.g. blip2-itm-vit-g: only its "
                        "Q-Former text tower is loaded, to embed caption and prompt."
                    },
                ),
                "precision": (
                    list(PRECISION_CHOICES),
                    {
                        "default": "auto",
                        "tooltip": "Weight precision. auto: fp32 on the CPU; on a GPU bf16 where supported, else fp16. "
                        "Use bf16 or fp32 with Flan-T5 captioners (fp16 overflows in T5).",
                    },
                ),
            }
        }

    def load(self, captioner: str, text_encoder: str, precision: str):
        import comfy.model_management as mm

        from . import comfy_runtime

        captioner_dir = _model_dir(captioner, "BLIP-2 captioner")
        text_encoder_dir = _model_dir(text_encoder, "BLIP-2 image-text retrieval (text encoder)")
        dtype = resolve_precision(precision, mm.get_torch_device())
        reward = CaptionReward.from_pretrained(
            captioner_dir, text_encoder_dir, device=mm.unet_offload_device(), dtype=dtype
        )
        return (comfy_runtime.managed(reward),)


def score_images(
    reward: CaptionReward, images, prompt: str, max_new_tokens: int, num_beams: int, batch_size: int, on_step=None
) -> tuple[list[float], list[str], str, float]:
    """The scorer's work, ComfyUI-free: (rewards, captions, summary, mean reward)."""
    pixels = to_bchw(images)
    prompts = split_prompt_lines(prompt, pixels.shape[0])
    result: RewardResult = reward.score(
        pixels, prompts, max_new_tokens=max_new_tokens, num_beams=num_beams, batch_size=batch_size, on_step=on_step
    )
    rewards = [float(r) for r in result.rewards]
    return rewards, list(result.captions), result.summary(prompts), sum(rewards) / len(rewards)


class CaptionRewardScorer:
    DESCRIPTION = (
        "RealignDiff's caption reward: BLIP-2 captions each image, and the reward is the cosine similarity of the "
        "BLIP-2 text embeddings of that caption and the prompt (-1..1, higher = the image shows more of what the "
        "prompt says). Prompt box: one line is used for every image; several lines must be exactly one per image."
    )
    CATEGORY = CATEGORY
    FUNCTION = "score"
    OUTPUT_NODE = True
    RETURN_TYPES = ("FLOAT", "STRING", "STRING", "FLOAT")
    RETURN_NAMES = ("rewards", "captions", "summary", "mean_reward")
    OUTPUT_IS_LIST = (True, True, False, False)
    OUTPUT_TOOLTIPS = (
        "One reward per image, as a list: a node connected here runs once per image.",
        "One BLIP-2 caption per image, as a list.",
        "Readable report: mean reward, then each image's reward and caption.",
        "The mean reward of the batch (one number, e.g. to compare two workflows).",
    )

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "caption_reward": (CAPTION_REWARD, {"tooltip": "From the BLIP-2 Caption Reward Loader."}),
                "images": ("IMAGE", {"tooltip": "The images to score (a batch is scored in chunks of batch_size)."}),
                "prompt": PER_IMAGE_PROMPT,
                "max_new_tokens": (
                    "INT",
                    {"default": 30, "min": 1, "max": 256, "tooltip": "Longest caption BLIP-2 may write, in tokens."},
                ),
                "num_beams": (
                    "INT",
                    {
                        "default": 1,
                        "min": 1,
                        "max": 16,
                        "tooltip": "1: greedy captions (fastest). More: beam search (better captions, slower).",
                    },
                ),
                "batch_size": (
                    "INT",
                    {
                        "default": 8,
                        "min": 1,
                        "max": 128,
                        "tooltip": "Images captioned at once. Lower it if the GPU runs out of memory.",
                    },
                ),
            }
        }

    def score(self, caption_reward, images, prompt: str, max_new_tokens: int, num_beams: int, batch_size: int):
        from . import comfy_runtime

        comfy_runtime.load(caption_reward, full=True)
        rewards, captions, summary, mean = score_images(
            caption_reward.model,
            images,
            prompt,
            max_new_tokens,
            num_beams,
            batch_size,
            on_step=comfy_runtime.progress(int(images.shape[0])),
        )
        return {"ui": {"text": [summary]}, "result": (rewards, captions, summary, mean)}


NODE_CLASS_MAPPINGS = {
    node_id("Blip2RewardLoader"): Blip2RewardLoader,
    node_id("CaptionRewardScorer"): CaptionRewardScorer,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    node_id("Blip2RewardLoader"): "BLIP-2 Caption Reward Loader",
    node_id("CaptionRewardScorer"): "Caption Reward Scorer",
}
