"""CLIP Score Loader and CLIP Score Scorer (the core: ``realign_diff.evaluation.clip_score``): the CLIP score of
each image of a batch against its prompt, beside the caption reward."""

from __future__ import annotations

from ..realign_diff.reward import split_prompt_lines, to_bchw
from .common import CATEGORY, PER_IMAGE_PROMPT, node_id

CLIP_SCORE = "REALIGN_CLIP_SCORE"  # a ModelPatcher wrapping a realign_diff.evaluation.clip_score.ClipScore
FOLDER = "clip_score"
REQUIRES = {"transformers": "transformers>=4.51", "torchmetrics": "torchmetrics>=1.9"}  # imported when a node runs
NO_MODELS = "(no CLIP folders in models/clip_score)"
SOURCE = "https://huggingface.co/openai/clip-vit-large-patch14 (the whole folder, Hugging Face format)"


def _choices() -> list[str]:
    from .model_folders import list_model_dirs

    try:
        names = list_model_dirs(FOLDER, report_skipped=True)
    except (ImportError, KeyError):  # outside ComfyUI
        names = []
    return names or [NO_MODELS]


class ClipScoreLoader:
    DESCRIPTION = (
        "Loads a CLIP model in Hugging Face format from models/clip_score (openai/clip-vit-large-patch14, the CLIP "
        "ViT-L/14 text-to-image papers score with) for the CLIP Score Scorer. Kept between runs; ComfyUI offloads "
        "it when memory is needed."
    )
    CATEGORY = CATEGORY
    FUNCTION = "load"
    RETURN_TYPES = (CLIP_SCORE,)
    RETURN_NAMES = ("clip_score",)
    OUTPUT_TOOLTIPS = ("The CLIP model, for the CLIP Score Scorer.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": (
                    _choices(),
                    {
                        "tooltip": "CLIP folder in models/clip_score (config.json, weights, preprocessor and tokenizer "
                        "files), e.g. clip-vit-large-patch14 from huggingface.co/openai."
                    },
                ),
            }
        }

    def load(self, model: str):
        import comfy.model_management as mm

        from ..realign_diff.checkpoint_file import ModelSource
        from ..realign_diff.evaluation.clip_score import ClipScore
        from . import comfy_runtime
        from .model_folders import model_dir

        named = f" named {model!r}" if model != NO_MODELS else ""
        source = ModelSource("CLIP ViT-L/14 folder", FOLDER, SOURCE)
        path = model_dir(model if model != NO_MODELS else "", f"CLIP folder{named}", source)
        return (comfy_runtime.managed(ClipScore.from_pretrained(path, device=mm.unet_offload_device())),)


def score_images(scorer, images, prompt: str) -> tuple[list[float], str, float]:
    """The scorer's work, ComfyUI-free: (scores, summary, mean score)."""
    pixels = to_bchw(images)
    prompts = split_prompt_lines(prompt, pixels.shape[0])
    scores = [float(s) for s in scorer.score(pixels, prompts)]
    mean = sum(scores) / len(scores)
    lines = [f"CLIP score (100 * max(cos, 0)): mean {mean:.2f} over {len(scores)} image{'s' * (len(scores) != 1)}"]
    if len(set(prompts)) == 1:
        lines.append(f"prompt: {prompts[0]}")
    for i, score in enumerate(scores):
        lines.append(f"#{i + 1}  {score:6.2f}" + (f"  prompt: {prompts[i]}" if len(set(prompts)) > 1 else ""))
    return scores, "\n".join(lines), mean


class ClipScoreScorer:
    DESCRIPTION = (
        "The CLIP score of each image against its prompt: 100 * max(cos(image embedding, text embedding), 0) with "
        "the loaded CLIP (0..100, higher = closer to the prompt), as torchmetrics' CLIPScore and the RealignDiff paper "
        "report it. Prompt box: one line for every image, or exactly one line per image."
    )
    CATEGORY = CATEGORY
    FUNCTION = "score"
    OUTPUT_NODE = True
    RETURN_TYPES = ("FLOAT", "STRING", "FLOAT")
    RETURN_NAMES = ("scores", "summary", "mean_score")
    OUTPUT_IS_LIST = (True, False, False)
    OUTPUT_TOOLTIPS = (
        "One CLIP score per image, as a list: a node connected here runs once per image.",
        "Readable report: the mean, then each image's score.",
        "The mean CLIP score of the batch.",
    )

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "clip_score": (CLIP_SCORE, {"tooltip": "From the CLIP Score Loader."}),
                "images": ("IMAGE", {"tooltip": "The images to score, e.g. the coarse and the realigned image."}),
                "prompt": PER_IMAGE_PROMPT,
            }
        }

    def score(self, clip_score, images, prompt: str):
        from . import comfy_runtime

        comfy_runtime.load(clip_score, full=True)
        scores, summary, mean = score_images(clip_score.model, images, prompt)
        return {"ui": {"text": [summary]}, "result": (scores, summary, mean)}


NODE_CLASS_MAPPINGS = {
    node_id("ClipScoreLoader"): ClipScoreLoader,
    node_id("ClipScoreScorer"): ClipScoreScorer,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    node_id("ClipScoreLoader"): "CLIP Score Loader",
    node_id("ClipScoreScorer"): "CLIP Score Scorer",
}
