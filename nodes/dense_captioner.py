"""Local Dense Captioner: RAM tags + scores and local captions (offline or LLM) + Grounded-SAM masks.

The work is done by ``realign_diff.dense_captioner.pipeline``; this module only wires ComfyUI's types,
memory management and progress bar to it.
"""

from __future__ import annotations

from ..realign_diff.dense_captioner.grounding import BOX_THRESHOLD, TEXT_THRESHOLD
from ..realign_diff.dense_captioner.llm import SCORER_MODES
from .common import CATEGORY, GROUNDING_DINO, GUIDANCE, RAM, SAM, node_id


class LocalDenseCaptioner:
    DESCRIPTION = (
        "Fine-stage guidance for RealignDiff. RAM tags the image; each tag gets a likelihood score (2 certain, "
        "0.5 possible, 0 unlikely) and a local caption from the prompt, either offline (rules on the prompt's own "
        "words, no network) or from an OpenAI-compatible LLM (OpenAI, Ollama, llama.cpp, vLLM; configured by "
        "environment variables or realign_diff_llm.json, see the README); Grounded-SAM then finds one mask per "
        "object with a score above 0. Outputs one guidance per image for the Realign Attention Patch, all masks, a "
        "preview and the guidance as JSON (which says what produced the scores)."
    )
    CATEGORY = CATEGORY
    FUNCTION = "caption"
    RETURN_TYPES = (GUIDANCE, "MASK", "IMAGE", "STRING")
    RETURN_NAMES = ("guidance", "masks", "preview", "json")
    OUTPUT_TOOLTIPS = (
        "Per image: every found object's tag, score, local caption, mask, box and detection confidence, with the "
        "prompt and image size. Feed it to the Realign Attention Patch.",
        "Every object's mask, all images in order, [N, H, W] at the image's size (one empty mask when nothing "
        "was found).",
        "The images with each object's mask, box and 'tag score (confidence)' drawn, and what produced the scores.",
        "The guidance as JSON: first its warnings (an LLM answer not used and why, an LLM caption replaced by the "
        "offline one), then per image the objects, every tag with its origin, score, caption and whether it was "
        "found, and the scorer's source and status.",
    )

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "image": ("IMAGE", {"tooltip": "The coarse image(s). A batch gives one guidance per image."}),
                "prompt": (
                    "STRING",
                    {
                        "multiline": True,
                        "default": "",
                        "tooltip": (
                            "The prompt the image was generated from (the positive prompt). Required: the second pass "
                            "is sampled from it."
                        ),
                    },
                ),
                "ram": (RAM, {"tooltip": "The RAM / RAM++ tagger, from the RAM Loader node."}),
                "grounding_dino": (GROUNDING_DINO, {"tooltip": "GroundingDINO, from its loader node: boxes per tag."}),
                "sam": (SAM, {"tooltip": "Segment Anything, from its loader node: a mask per box."}),
                "scorer": (
                    list(SCORER_MODES),
                    {
                        "default": "offline",
                        "tooltip": (
                            "Who scores the tags and writes the local captions. offline: rules on the prompt's own "
                            "words, no network. openai-compatible: the LLM endpoint configured by environment "
                            "variables or realign_diff_llm.json (the API key never goes in a widget); on any failure "
                            "it falls back to offline and the json output says why."
                        ),
                    },
                ),
                "ram_threshold": (
                    "FLOAT",
                    {
                        "default": 0.0,
                        "min": 0.0,
                        "max": 1.0,
                        "step": 0.01,
                        "tooltip": (
                            "Tag confidence threshold for every tag. 0 uses RAM's per-class thresholds (recommended)."
                        ),
                    },
                ),
                "ram_top_k": (
                    "INT",
                    {
                        "default": 20,
                        "min": 0,
                        "max": 500,
                        "tooltip": ("Keep at most this many tags per image, most confident first. 0: no limit."),
                    },
                ),
                "box_threshold": (
                    "FLOAT",
                    {
                        "default": BOX_THRESHOLD,
                        "min": 0.0,
                        "max": 1.0,
                        "step": 0.01,
                        "tooltip": "GroundingDINO: minimum box confidence.",
                    },
                ),
                "text_threshold": (
                    "FLOAT",
                    {
                        "default": TEXT_THRESHOLD,
                        "min": 0.0,
                        "max": 1.0,
                        "step": 0.01,
                        "tooltip": "GroundingDINO: minimum confidence that a box matches the tag's words.",
                    },
                ),
                "nms_threshold": (
                    "FLOAT",
                    {
                        "default": 0.5,
                        "min": 0.0,
                        "max": 1.0,
                        "step": 0.01,
                        "tooltip": "Boxes overlapping more than this (IoU) are merged by non-maximum suppression.",
                    },
                ),
                "add_prompt_objects": (
                    "BOOLEAN",
                    {
                        "default": True,
                        "tooltip": (
                            "Also look for the objects the prompt names that RAM did not tag (a small or half-drawn "
                            "object is exactly what the fine stage should fix)."
                        ),
                    },
                ),
            },
            "optional": {
                "llm_model": (
                    "STRING",
                    {
                        "default": "",
                        "tooltip": (
                            "openai-compatible only: the model name, e.g. gpt-4o-mini or llama3.1:8b. Empty: the "
                            "configured one (REALIGN_DIFF_LLM_MODEL or realign_diff_llm.json; default gpt-4o-mini)."
                        ),
                    },
                ),
                "llm_base_url": (
                    "STRING",
                    {
                        "default": "",
                        "tooltip": (
                            "openai-compatible only: the endpoint, e.g. http://127.0.0.1:11434/v1 for Ollama. Empty: "
                            "the configured one. Your API key is only sent to the configured endpoint, never to a URL "
                            "typed here."
                        ),
                    },
                ),
                "exclude_tags": (
                    "STRING",
                    {
                        "default": "",
                        "multiline": True,
                        "tooltip": (
                            "Tags never used, from RAM or from the prompt, separated by commas or lines "
                            "(e.g. 'background, wall')."
                        ),
                    },
                ),
                "ram_threshold_overrides": (
                    "STRING",
                    {
                        "default": "",
                        "multiline": True,
                        "tooltip": (
                            "Per-tag RAM thresholds that win over ram_threshold, e.g. 'person: 0.9, sky: 0.5' "
                            "(commas or lines). A name not in RAM's tag list is an error that names it."
                        ),
                    },
                ),
            },
        }

    @classmethod
    def IS_CHANGED(cls, scorer="offline", **_):
        """Re-run after an LLM failure or a change of the LLM configuration; otherwise ComfyUI's cache decides."""
        if scorer != "openai-compatible":
            return ""
        from ..realign_diff.dense_captioner.llm import configuration_token

        return configuration_token()

    def caption(
        self,
        image,
        prompt,
        ram,
        grounding_dino,
        sam,
        scorer,
        ram_threshold,
        ram_top_k,
        box_threshold,
        text_threshold,
        nms_threshold,
        add_prompt_objects,
        llm_model="",
        llm_base_url="",
        exclude_tags="",
        ram_threshold_overrides="",
    ):
        from ..realign_diff.dense_captioner.llm import build_scorer
        from ..realign_diff.dense_captioner.pipeline import (
            CaptionerSettings,
            caption_images,
            guidance_json,
            masks_batch,
            progress_steps,
        )
        from ..realign_diff.dense_captioner.preview import draw_batch
        from ..realign_diff.dense_captioner.scoring import split_tag_list
        from ..realign_diff.guidance import require_prompt
        from .ram import parse_threshold_overrides

        require_prompt(prompt, "Local Dense Captioner's prompt input")  # before any model is loaded
        settings = CaptionerSettings(
            ram_threshold=ram_threshold if ram_threshold > 0 else None,
            ram_threshold_overrides=parse_threshold_overrides(ram_threshold_overrides),
            ram_top_k=ram_top_k if ram_top_k > 0 else None,
            exclude_tags=tuple(split_tag_list(exclude_tags)),
            box_threshold=box_threshold,
            text_threshold=text_threshold,
            nms_threshold=nms_threshold,
            add_prompt_objects=add_prompt_objects,
        )
        tag_scorer = build_scorer(scorer, llm_model, llm_base_url)
        import comfy.model_management as mm  # ComfyUI from here on: the checks above run without it

        from . import comfy_runtime

        step = comfy_runtime.progress(progress_steps(image.shape[0]))
        tagger, detector, segmenter = comfy_runtime.load_all(ram, grounding_dino, sam)
        results = caption_images(
            image,
            prompt,
            tagger=tagger,
            scorer=tag_scorer,
            detector=detector,
            segmenter=segmenter,
            settings=settings,
            on_step=step,
            # checked often: no progress-bar message each time
            check_cancel=mm.throw_exception_if_processing_interrupted,
        )
        guidances = [r.guidance for r in results]
        return (guidances, masks_batch(results), draw_batch(image, guidances), guidance_json(results))


NODE_CLASS_MAPPINGS = {node_id("LocalDenseCaptioner"): LocalDenseCaptioner}
NODE_DISPLAY_NAME_MAPPINGS = {node_id("LocalDenseCaptioner"): "Local Dense Captioner"}
