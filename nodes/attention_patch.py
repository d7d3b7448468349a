"""Realign Attention Patch, and a node that builds guidance by hand from masks."""

from __future__ import annotations

import uuid

from ..realign_diff.attention import SCHEDULES
from ..realign_diff.guidance import guidance_from_mask, guidance_list
from ..realign_diff.patch_plan import CONDITIONING_MODES, plan_patch
from ..realign_diff.realign_patch import RealignReplace
from ..realign_diff.tokens import PUNCTUATION_MARKS
from .common import CATEGORY, GUIDANCE, node_id

POSITIVE_MARK = "realign_diff_positive"  # set on our CONDITIONING so the patch knows its chunks


# --- ComfyUI model and CLIP access (the only ComfyUI-specific logic) ---------------------------


def require_sd1(model) -> None:
    import comfy.supported_models

    config = model.model.model_config
    if not isinstance(config, comfy.supported_models.SD15):
        raise ValueError(
            f"Realign Attention Patch works on SD-1.x models (CLIP-L conditioning, 768-wide cross-attention); "
            f"this model is {type(config).__name__}. Load an SD-1.5 checkpoint."
        )


def cross_attention_blocks(diffusion_model) -> list[tuple[str, int, int]]:
    """Every (block, number, transformer index) whose transformer has cross-attention, as ComfyUI keys attn2 patches."""
    groups = (
        ("input", diffusion_model.input_blocks),
        ("middle", [diffusion_model.middle_block]),
        ("output", diffusion_model.output_blocks),
    )
    found = []
    for name, blocks in groups:
        for number, block in enumerate(blocks):
            for layer in block:
                for index, transformer in enumerate(getattr(layer, "transformer_blocks", [])):
                    if getattr(transformer, "attn2", None) is not None:
                        found.append((name, number, index))
    return found


def _sd1_tokenizer(clip):
    tokenizer = getattr(clip.tokenizer, getattr(clip.tokenizer, "clip", ""), None)
    if tokenizer is None or not hasattr(tokenizer, "tokenizer"):
        raise ValueError(
            "Realign Attention Patch needs an SD-1.x CLIP (CLIP-L), the one loaded with an SD-1.5 checkpoint."
        )
    return tokenizer


def _stream(tokens: dict) -> list[int | None]:
    chunks = next(iter(tokens.values()))
    return [t[0] if isinstance(t[0], int) else None for chunk in chunks for t in chunk]  # embeddings never match


def _word_tokenizer(sd_tokenizer):
    end = -1 if sd_tokenizer.tokenizer_adds_end_token else None

    def tokenize_word(word: str) -> list[int]:
        return sd_tokenizer.tokenizer(word)["input_ids"][sd_tokenizer.tokens_start : end]

    return tokenize_word


def _positive_finder(replace: RealignReplace, mark: str):
    """A CALC_COND_BATCH wrapper: before each batch of conditions, tell the patch which chunks are ours
    (by the uuid ComfyUI gives each condition), so other positives (SAG, DualCFG, combined conds) are left alone."""

    def wrapper(executor, model, conds, x_in, timestep, model_options):
        ours = [c for group in conds if group for c in group if c.get(POSITIVE_MARK) == mark]
        replace.positive_uuids = {c["uuid"] for c in ours}
        if any(c.get("area") is not None for c in ours):
            replace.warn_once(
                "area", "the realign positive carries an area: guidance masks cover the area, not the image"
            )
        return executor(model, conds, x_in, timestep, model_options)

    return wrapper


def comfy_attention(q, k, v, extra_options):
    """Exactly the call ComfyUI's CrossAttention makes when no patch is installed."""
    from comfy.ldm.modules.attention import optimized_attention

    return optimized_attention(
        q,
        k,
        v,
        extra_options["n_heads"],
        attn_precision=extra_options.get("attn_precision"),
        transformer_options=extra_options,
    )


# --- the nodes ---------------------------------------------------------------------------------


def apply_realign_patch(model, clip, guidance, strength, schedule, end_percent, conditioning, node_id=None):
    from comfy.patcher_extension import WrappersMP

    from .comfy_runtime import show_on_node

    guidances = guidance_list(guidance)
    require_sd1(model)
    sd_tokenizer = _sd1_tokenizer(clip)
    tokenize_word = _word_tokenizer(sd_tokenizer)
    skippable = frozenset(i for p in PUNCTUATION_MARKS for i in tokenize_word(p))
    plan = plan_patch(
        guidances,
        lambda text: _stream(clip.tokenize(text)),
        tokenize_word,
        skippable,
        conditioning,
        chunk_length=sd_tokenizer.max_length,
    )
    tokens = clip.tokenize(plan.text)
    positive = clip.encode_from_tokens_scheduled(tokens)
    if positive[0][0].shape[1] != plan.prompt_length:
        raise RuntimeError(
            f"encoded {positive[0][0].shape[1]} tokens, planned {plan.prompt_length}: please report this"
        )
    mark = uuid.uuid4().hex
    positive = [[embedding, {**options, POSITIVE_MARK: mark}] for embedding, options in positive]

    patched = model.clone()
    replace = RealignReplace(
        plan.objects_per_image,
        plan.prompt_length,
        strength,
        sigma_to_timestep=model.get_model_object("model_sampling").timestep,
        schedule=schedule,
        end_percent=end_percent,
        attention_fn=comfy_attention,
    )
    replace.notify = show_on_node(node_id)  # stretched masks, a reused guidance: seen on the node while sampling
    installed = patched.model_options["transformer_options"].get("patches_replace", {}).get("attn2", {})
    notes = []
    for name, number, index in cross_attention_blocks(patched.model.diffusion_model):
        previous = installed.get((name, number, index)) or installed.get((name, number))
        if previous is not None and hasattr(previous, "realign"):
            previous = previous.realign_previous  # a second Realign patch replaces the first, keeping what it wrapped
            notes.append("replaced an earlier Realign Attention Patch")
        if previous is not None:
            notes.append(f"wrapped another pack's attention patch on {name} {number}.{index}")
        patched.set_model_attn2_replace(replace.for_block(previous), name, number, index)
    patched.add_wrapper_with_key(WrappersMP.CALC_COND_BATCH, "realign_diff", _positive_finder(replace, mark))
    report = plan.report() + "".join(f"\nnote: {n}" for n in dict.fromkeys(notes))
    return patched, positive, report


class RealignAttentionPatch:
    DESCRIPTION = (
        "RealignDiff's fine stage: re-weights every UNet cross-attention layer so each object's words attend "
        "inside its mask (more for score 2 than 0.5) and less outside. Sample with the MODEL and the positive "
        "CONDITIONING it returns, with the coarse image's seed."
    )
    CATEGORY = CATEGORY
    FUNCTION = "patch"
    RETURN_TYPES = ("MODEL", "CONDITIONING", "STRING")
    RETURN_NAMES = ("model", "positive", "report")
    OUTPUT_TOOLTIPS = (
        "The model with its cross-attention patched (the input model is left untouched).",
        "The fine-stage positive conditioning (the prompt plus any local captions it lacked): use it as the "
        "sampler's positive input, the token positions are planned for it.",
        "Which tokens went to which object, and anything skipped.",
    )

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": ("MODEL", {"tooltip": "An SD-1.5 model (ideally the ReFL fine-tuned checkpoint)."}),
                "clip": (
                    "CLIP",
                    {"tooltip": "The model's CLIP: encodes the fine-stage prompt and locates each object's tokens."},
                ),
                "guidance": (
                    GUIDANCE,
                    {
                        "tooltip": "Per object: mask, score and local caption, from the Local Dense Captioner or Realign Guidance From Mask."
                    },
                ),
                "strength": (
                    "FLOAT",
                    {
                        "default": 1.0,
                        "min": 0.0,
                        "max": 10.0,
                        "step": 0.05,
                        "tooltip": "λ: how hard attention is pushed. 0 leaves the model exactly as it was.",
                    },
                ),
                "schedule": (
                    list(SCHEDULES),
                    {
                        "default": "paper",
                        "tooltip": "How λ fades over sampling: paper λ·t/1000, or DenseDiffusion's λ·(t/1000)^5 (use with end_percent ≈ 0.3).",
                    },
                ),
                "end_percent": (
                    "FLOAT",
                    {
                        "default": 1.0,
                        "min": 0.0,
                        "max": 1.0,
                        "step": 0.01,
                        "tooltip": "Stop modulating after this fraction of the sampling steps (1.0: every step).",
                    },
                ),
                "conditioning": (
                    list(CONDITIONING_MODES),
                    {
                        "default": CONDITIONING_MODES[0],
                        "tooltip": "Append local captions the prompt does not contain (objects scored above 0), or use the prompt alone.",
                    },
                ),
            },
            "hidden": {"unique_id": "UNIQUE_ID"},
        }

    def patch(self, model, clip, guidance, strength, schedule, end_percent, conditioning, unique_id=None):
        return apply_realign_patch(model, clip, guidance, strength, schedule, end_percent, conditioning, unique_id)


class RealignGuidanceFromMask:
    DESCRIPTION = (
        "Builds Realign guidance by hand: one object (mask, caption, score) per node; chain nodes for more "
        "objects. For using the attention patch without the captioner models."
    )
    CATEGORY = CATEGORY
    FUNCTION = "build"
    RETURN_TYPES = (GUIDANCE,)
    RETURN_NAMES = ("guidance",)
    OUTPUT_TOOLTIPS = (
        "The guidance with this object added, for Realign Attention Patch or the next node of the chain.",
    )

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "mask": ("MASK", {"tooltip": "Where the object should be (any size: resized to the latent)."}),
                "caption": (
                    "STRING",
                    {
                        "default": "",
                        "tooltip": "The object as the prompt wants it, e.g. 'a yellow pen'. Found in the prompt, or appended to it.",
                    },
                ),
                "tag": (
                    "STRING",
                    {"default": "", "tooltip": "The object's name, e.g. 'pen'. Empty: the caption's last word."},
                ),
                "score": (
                    "FLOAT",
                    {
                        "default": 2.0,
                        "min": 0.0,
                        "max": 4.0,
                        "step": 0.5,
                        "tooltip": "How surely it belongs: 2 certainly (pushes hard), 0.5 maybe, 0 unlikely.",
                    },
                ),
                "prompt": (
                    "STRING",
                    {
                        "default": "",
                        "multiline": True,
                        "tooltip": "The whole prompt. Needed on the first node of a chain; later nodes may leave it empty.",
                    },
                ),
            },
            "optional": {
                "guidance": (
                    GUIDANCE,
                    {"tooltip": "Guidance to add this object to (chain several nodes for several objects)."},
                ),
            },
        }

    def build(self, mask, caption, tag, score, prompt, guidance=None):
        return (guidance_from_mask(mask, caption, tag, score, prompt, guidance),)


NODE_CLASS_MAPPINGS = {
    node_id("AttentionPatch"): RealignAttentionPatch,
    node_id("GuidanceFromMask"): RealignGuidanceFromMask,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    node_id("AttentionPatch"): "Realign Attention Patch",
    node_id("GuidanceFromMask"): "Realign Guidance From Mask",
}
