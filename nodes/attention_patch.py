"""Realign Attention Patch, and a node that builds guidance by hand from masks."""

from __future__ import annotations

import logging
import uuid

from ..realign_diff.attention import SCHEDULES
from ..realign_diff.guidance import guidance_from_mask, guidance_list
from ..realign_diff.patch_plan import CONDITIONING_MODES, plan_patch
from ..realign_diff.realign_patch import RealignReplace
from ..realign_diff.tokens import PUNCTUATION_MARKS
from .common import CATEGORY, GUIDANCE, node_id
from .patch_families import Family, model_family, sd_tokenizers, sigma_to_timestep, token_stream, word_tokenizer

log = logging.getLogger(__name__)

POSITIVE_MARK = "realign_diff_positive"  # set on our CONDITIONING so the patch knows its chunks


# --- ComfyUI model and CLIP access (the only ComfyUI-specific logic) ---------------------------


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


SDXL_SIZE_KEYS = ("width", "height", "crop_w", "crop_h", "target_width", "target_height")


def _size_conditioning(size_from, family: Family) -> tuple[dict, list[str]]:
    """SDXL's size conditioning (CLIPTextEncodeSDXL's width/height/crop/target size) taken from ``size_from``."""
    if not size_from:
        return {}, []
    options = size_from[0][1]
    sizes = {key: options[key] for key in SDXL_SIZE_KEYS if key in options}
    if family.name != "SDXL":
        return {}, [f"size_from ignored: size conditioning is SDXL's, this model is {family.name}"]
    if not sizes:
        return {}, [
            "size_from carries no SDXL size conditioning (connect a CLIPTextEncodeSDXL): sampling uses "
            "the latent's size"
        ]
    return sizes, ["SDXL size conditioning kept: " + ", ".join(f"{k}={v}" for k, v in sizes.items())]


NOT_SAMPLED = (
    "this sampling run never used the Realign Attention Patch's positive CONDITIONING, so nothing was realigned: "
    "connect the patch's 'positive' output to the sampler's positive input (not another CLIP Text Encode)"
)
NOT_SAMPLED_NOTE = "sample with this node's 'positive' output: the patch changes nothing for any other conditioning"


class _PositiveWatch:
    """Whether a sampling run (ComfyUI's OUTER_SAMPLE wraps one) ever sampled the patch's positive chunks."""

    def __init__(self, replace: RealignReplace):
        self.replace, self.sampled = replace, False

    def outer_sample(self, executor, *args, **kwargs):
        self.sampled = False
        result = executor(*args, **kwargs)
        if not self.sampled:  # once per run: the same patched model may be sampled again, rewired
            log.warning("[RealignDiff] %s", NOT_SAMPLED)
            if self.replace.notify is not None:
                self.replace.notify(NOT_SAMPLED)
        return result


def _positive_finder(replace: RealignReplace, mark: str, watch: _PositiveWatch):
    """A CALC_COND_BATCH wrapper: before each batch of conditions, tell the patch which chunks are ours
    (by the uuid ComfyUI gives each condition), so other positives (SAG, DualCFG, combined conds) are left alone."""

    def wrapper(executor, model, conds, x_in, timestep, model_options):
        ours = [c for group in conds if group for c in group if c.get(POSITIVE_MARK) == mark]
        replace.positive_uuids = {c["uuid"] for c in ours}
        watch.sampled = watch.sampled or bool(ours)
        replace.sigma_to_timestep = sigma_to_timestep(model.model_sampling)  # as sampled: a ModelSampling* node
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


def apply_realign_patch(
    model, clip, guidance, strength, schedule, end_percent, conditioning, node_id=None, size_from=None
):
    from comfy.patcher_extension import WrappersMP

    from .comfy_runtime import show_on_node

    guidances = guidance_list(guidance)
    family = model_family(model)
    tokenizers = sd_tokenizers(clip, family)
    tokenize_word = word_tokenizer(tokenizers[0])
    skippable = frozenset(i for p in PUNCTUATION_MARKS for i in tokenize_word(p))
    plan = plan_patch(
        guidances,
        lambda text: token_stream(clip.tokenize(text)),
        tokenize_word,
        skippable,
        conditioning,
        chunk_length=tokenizers[0].max_length,
    )
    positive = clip.encode_from_tokens_scheduled(clip.tokenize(plan.text))
    _check_encoded(positive, plan.prompt_length, family, model)
    sizes, notes = _size_conditioning(size_from, family)
    mark = uuid.uuid4().hex
    positive = [[embedding, {**options, **sizes, POSITIVE_MARK: mark}] for embedding, options in positive]

    patched = model.clone()
    replace = RealignReplace(
        plan.objects_per_image,
        plan.prompt_length,
        strength,
        sigma_to_timestep=sigma_to_timestep(model.get_model_object("model_sampling")),
        schedule=schedule,
        end_percent=end_percent,
        attention_fn=comfy_attention,
    )
    replace.notify = show_on_node(node_id)  # stretched masks, a reused guidance: seen on the node while sampling
    installed = patched.model_options["transformer_options"].get("patches_replace", {}).get("attn2", {})
    for name, number, index in cross_attention_blocks(patched.model.diffusion_model):
        previous = installed.get((name, number, index)) or installed.get((name, number))
        if previous is not None and hasattr(previous, "realign"):
            previous = previous.realign_previous  # a second Realign patch replaces the first, keeping what it wrapped
            notes.append("replaced an earlier Realign Attention Patch")
        if previous is not None:
            notes.append(f"wrapped another pack's attention patch on {name} {number}.{index}")
        patched.set_model_attn2_replace(replace.for_block(previous), name, number, index)
    watch = _PositiveWatch(replace)
    patched.add_wrapper_with_key(WrappersMP.CALC_COND_BATCH, "realign_diff", _positive_finder(replace, mark, watch))
    patched.add_wrapper_with_key(WrappersMP.OUTER_SAMPLE, "realign_diff", watch.outer_sample)
    notes.append(NOT_SAMPLED_NOTE)
    report = f"model: {family.name}\n" + plan.report() + "".join(f"\nnote: {n}" for n in dict.fromkeys(notes))
    return patched, positive, report


def _check_encoded(positive, prompt_length: int, family: Family, model) -> None:
    embedding = positive[0][0]
    if embedding.shape[1] != prompt_length:
        raise RuntimeError(f"encoded {embedding.shape[1]} tokens, planned {prompt_length}: please report this")
    width = model.model.model_config.unet_config.get("context_dim") or family.context_width
    if embedding.shape[-1] != width:
        raise ValueError(
            f"The CLIP encodes {embedding.shape[-1]}-wide token embeddings but this {family.name} MODEL's "
            f"cross-attention takes {width}: {family.clip_fix}."
        )


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
                "model": (
                    "MODEL",
                    {
                        "tooltip": "An SD-1.x (ideally the ReFL fine-tuned checkpoint), SD 2.x or SDXL model (base "
                        "or a fine-tune); UNet weights in fp32, fp16, bf16 or fp8."
                    },
                ),
                "clip": (
                    "CLIP",
                    {"tooltip": "The model's CLIP: encodes the fine-stage prompt and locates each object's tokens."},
                ),
                "guidance": (
                    GUIDANCE,
                    {
                        "tooltip": "Per object: mask, score and local caption, from the Local Dense Captioner or "
                        "Realign Guidance From Mask."
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
                        "tooltip": "How λ fades over sampling: paper λ·t/1000, or DenseDiffusion's λ·(t/1000)^5 "
                        "(use with end_percent ≈ 0.3).",
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
                        "tooltip": "Append local captions the prompt does not contain (objects scored above 0), or use "
                        "the prompt alone.",
                    },
                ),
            },
            "optional": {
                "size_from": (
                    "CONDITIONING",
                    {
                        "tooltip": "SDXL only: a conditioning (e.g. CLIPTextEncodeSDXL's) whose size conditioning "
                        "(width, height, crop, target size) the patched positive keeps; its text is not used. "
                        "Unconnected: the latent's size, as CLIPTextEncode gives."
                    },
                ),
            },
            "hidden": {"unique_id": "UNIQUE_ID"},
        }

    def patch(
        self, model, clip, guidance, strength, schedule, end_percent, conditioning, size_from=None, unique_id=None
    ):
        return apply_realign_patch(
            model, clip, guidance, strength, schedule, end_percent, conditioning, unique_id, size_from
        )


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
                        "tooltip": "The object as the prompt wants it, e.g. 'a yellow pen'. Found in the prompt, or "
                        "appended to it.",
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
                        "tooltip": "The whole prompt. Needed on the first node of a chain; later nodes may leave it "
                        "empty.",
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
