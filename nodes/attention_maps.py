"""Realign Attention Maps (records while the sampler runs) and Realign Attention Heatmaps (reads it out after).

Two nodes because ComfyUI runs a node once its inputs exist: the recording happens inside the sampler, so the
read-out must sit downstream of it (it takes the decoded IMAGE, which also gives the heatmaps their background).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass

from ..realign_diff.attention_maps import AttentionRecorder
from ..realign_diff.attention_report import MappedObject, parse_baseline, read_out, summary
from ..realign_diff.guidance import guidance_list, mask_problem
from ..realign_diff.patch_plan import plan_patch
from ..realign_diff.tokens import PUNCTUATION_MARKS, locate_object, split_words
from .attention_patch import comfy_attention, cross_attention_blocks
from .common import CATEGORY, GUIDANCE, node_id
from .patch_families import sd_tokenizers, token_stream, word_tokenizer

ATTENTION_MAPS = "REALIGN_ATTENTION_MAPS"  # a Recording
WRAPPER_KEY = "realign_diff_attention_maps"


@dataclass
class Recording:
    recorder: AttentionRecorder
    clip: object
    text: str = ""  # the conditioning's text, when typed; else the Realign patch's object tokens are recorded
    realign: object = None  # the RealignReplace below the recorder at install time
    above: object = None  # ... or above it (a Realign patch applied after this node), found when sampling starts

    @property
    def source(self):
        return self.above or self.realign


def _installed(model) -> dict:
    return model.model_options["transformer_options"].get("patches_replace", {}).get("attn2", {})


def _realign_above(replaces, recording: Recording):
    """A Realign patch that wraps this recording's replace (through any chain of wrapped replaces)."""
    for fn in replaces:
        found = None
        while fn is not None and getattr(fn, "attention_recording", None) is not recording:
            found = getattr(fn, "realign", None) or found
            fn = getattr(fn, "realign_previous", None) or getattr(fn, "recorded_previous", None)
        if fn is not None and found is not None:
            return found
    return None


def _recording_replace(recording: Recording, previous):
    fallback = previous if previous is not None else comfy_attention

    def replace(q, k, v, extra_options):
        out = fallback(q, k, v, extra_options)
        recording.recorder.observe(q, k, extra_options, realign=recording.source)
        return out

    replace.attention_recording = recording
    replace.recorded_previous = previous
    return replace


def _sampling_starts(recording: Recording):
    def wrapper(executor, *args, **kwargs):
        recording.recorder.reset()
        recording.above = _realign_above(_installed(executor.class_obj).values(), recording)
        return executor(*args, **kwargs)

    return wrapper


def record_attention(model, clip, text, start_percent, end_percent):
    from comfy.patcher_extension import WrappersMP

    installed = _installed(model)
    blocks = cross_attention_blocks(model.model.diffusion_model)
    previous_of = {b: installed.get(b) or installed.get(b[:2]) for b in blocks}
    for block, fn in previous_of.items():
        if fn is not None and hasattr(fn, "attention_recording"):  # a second recorder replaces the first
            previous_of[block] = fn.recorded_previous
    realign = next((fn.realign for fn in previous_of.values() if hasattr(fn, "realign")), None)
    if text.strip():
        tokens = clip.tokenize(text, return_word_ids=True)
        flat = [t for chunk in next(iter(tokens.values())) for t in chunk]
        recorder = AttentionRecorder([i for i, t in enumerate(flat) if t[2] > 0], len(flat), start_percent, end_percent)
    elif realign is not None:
        positions = [int(p) for objects in realign.objects_per_image for o in objects for p in o.positions.tolist()]
        recorder = AttentionRecorder(positions, realign.prompt_length, start_percent, end_percent)
    else:
        raise ValueError(
            "Write the sampler's positive prompt in `text`: it says which tokens to record (only a model patched "
            "by Realign Attention Patch knows its own conditioning)."
        )
    recording = Recording(recorder, clip, text.strip(), realign)
    patched = model.clone()
    for (name, number, index), previous in previous_of.items():
        patched.set_model_attn2_replace(_recording_replace(recording, previous), name, number, index)
    patched.add_wrapper_with_key(WrappersMP.OUTER_SAMPLE, WRAPPER_KEY, _sampling_starts(recording))
    return patched, recording


def _located_objects(recording: Recording, guidances) -> list[list[MappedObject]]:
    """Each guidance object's tokens in the recorded conditioning, found as the Realign patch finds them."""
    if not recording.text:  # the patch's own tokens, object by object (it skips unusable masks, as here)
        objects = recording.realign.objects_per_image
        usable = [[o for o in g.objects if mask_problem(o.mask, o.tag) is None] for g in guidances]
        if [len(u) for u in usable] != [len(o) for o in objects]:
            raise ValueError(
                "This guidance is not the one the Realign Attention Patch got: connect the same guidance to both, "
                "or write the sampler's positive prompt in the recorder's `text`."
            )
        return [
            [MappedObject(g.tag, o.positions.tolist(), [], g.score, g.mask) for g, o in zip(u, obj)]
            for u, obj in zip(usable, objects)
        ]
    tokenizer = sd_tokenizers(recording.clip)[0]
    tokenize_word = word_tokenizer(tokenizer)
    skippable = frozenset(i for p in PUNCTUATION_MARKS for i in tokenize_word(p))
    plan = plan_patch(
        [dataclasses.replace(g, prompt=recording.text) for g in guidances],
        lambda text: token_stream(recording.clip.tokenize(text)),
        tokenize_word,
        skippable,
        "prompt only",
        chunk_length=tokenizer.max_length,
    )
    return [
        [MappedObject(o.tag, o.positions, o.matched_words, p.score, p.mask) for o, p in zip(located, patch)]
        for located, patch in zip(plan.located, plan.objects_per_image)
    ]


def _typed_objects(recording: Recording, words: str) -> list[list[MappedObject]]:
    if not recording.text:
        raise ValueError("Words typed by hand need the recorder's `text` (the sampler's positive prompt).")
    tokenize_word = word_tokenizer(sd_tokenizers(recording.clip)[0])
    stream = token_stream(recording.clip.tokenize(recording.text))
    skippable = frozenset(i for p in PUNCTUATION_MARKS for i in tokenize_word(p))
    objects = []
    for phrase in (p.strip() for p in words.split(",")):
        if split_words(phrase):
            found = locate_object(stream, split_words(phrase)[-1], phrase, tokenize_word, skippable)
            objects.append(MappedObject(phrase, found.positions, found.matched_words))
    return [objects]


def show_attention(recording, image, label, guidance=None, words="", compare_with=""):
    if not isinstance(recording, Recording):
        raise TypeError("maps must come from a Realign Attention Maps node")
    if not recording.recorder.sums:
        problems = "; ".join(sorted(recording.recorder.problems))
        raise ValueError(
            "Nothing was recorded: sample with the MODEL output of Realign Attention Maps, and connect the image "
            "decoded from that sampler." + (f" ({problems})" if problems else "")
        )
    if guidance is not None:
        objects = _located_objects(recording, guidance_list(guidance))
    elif words.strip():
        objects = _typed_objects(recording, words)
    else:
        raise ValueError("Connect the guidance (masks, for the inside-mask share) or type the words to map.")
    heatmaps, data = read_out(recording.recorder, objects, image, label.strip())
    data["modulated_by_realign_patch"] = recording.source is not None
    return heatmaps, json.dumps(data, indent=2), summary(data, parse_baseline(compare_with))


class RealignAttentionMaps:
    DESCRIPTION = (
        "Records each object's cross-attention while the sampler runs (the modulated attention on a model patched "
        "by Realign Attention Patch; any other pack's attention patch keeps working). Sample with its MODEL, then "
        "read the maps with Realign Attention Heatmaps. Sampling results are unchanged."
    )
    CATEGORY = CATEGORY
    FUNCTION = "record"
    RETURN_TYPES = ("MODEL", ATTENTION_MAPS)
    RETURN_NAMES = ("model", "maps")
    OUTPUT_TOOLTIPS = (
        "The model, recording its cross-attention while it samples (the input model is left untouched).",
        "The recording, for Realign Attention Heatmaps downstream of the sampler.",
    )

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": (
                    "MODEL",
                    {"tooltip": "The model to sample with: plain, or patched (Realign Attention Patch, other packs)."},
                ),
                "clip": ("CLIP", {"tooltip": "The model's CLIP: finds the tokens of the prompt and of each object."}),
                "text": (
                    "STRING",
                    {
                        "default": "",
                        "multiline": True,
                        "tooltip": "The sampler's positive prompt, as encoded. May stay empty on a model patched by "
                        "Realign Attention Patch (its objects' tokens are recorded).",
                    },
                ),
                "start_percent": (
                    "FLOAT",
                    {
                        "default": 0.0,
                        "min": 0.0,
                        "max": 1.0,
                        "step": 0.01,
                        "tooltip": "Record from this fraction of the sampling steps on.",
                    },
                ),
                "end_percent": (
                    "FLOAT",
                    {
                        "default": 1.0,
                        "min": 0.0,
                        "max": 1.0,
                        "step": 0.01,
                        "tooltip": "Record up to this fraction of the sampling steps (1.0: to the last step).",
                    },
                ),
            }
        }

    def record(self, model, clip, text, start_percent, end_percent):
        return record_attention(model, clip, text, start_percent, end_percent)


class RealignAttentionHeatmaps:
    DESCRIPTION = (
        "After the sampler ran: each object's cross-attention as a heatmap over the decoded image, and the share of "
        "it inside the object's mask (overall and per layer size). The fine stage works when the share rises from "
        "the coarse pass to the realigned pass."
    )
    CATEGORY = CATEGORY
    FUNCTION = "show"
    RETURN_TYPES = ("IMAGE", "STRING", "STRING")
    RETURN_NAMES = ("heatmaps", "json", "summary")
    OUTPUT_TOOLTIPS = (
        "One image per object: its attention (scaled to its peak) over the image, its mask outlined in white.",
        "Per object: tokens, mask area, share inside the mask overall and per layer size (for compare_with).",
        "The shares in a few lines (against compare_with's, when connected).",
    )

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "maps": (ATTENTION_MAPS, {"tooltip": "The recording from Realign Attention Maps."}),
                "image": (
                    "IMAGE",
                    {"tooltip": "The image decoded from the sampler that used the recording MODEL (its background)."},
                ),
                "label": (
                    "STRING",
                    {
                        "default": "",
                        "tooltip": "A name for this pass (e.g. coarse, realigned), on the images and texts.",
                    },
                ),
            },
            "optional": {
                "guidance": (
                    GUIDANCE,
                    {"tooltip": "The objects to map (masks, captions, scores); the masks give the inside-mask share."},
                ),
                "words": (
                    "STRING",
                    {
                        "default": "",
                        "tooltip": "Without guidance: words or phrases to map, comma-separated, e.g. 'red book, pen' "
                        "(maps only, no share).",
                    },
                ),
                "compare_with": (
                    "STRING",
                    {"forceInput": True, "tooltip": "The json of another Heatmaps node (e.g. the coarse pass's)."},
                ),
            },
        }

    def show(self, maps, image, label, guidance=None, words="", compare_with=""):
        return show_attention(maps, image, label, guidance, words, compare_with)


NODE_CLASS_MAPPINGS = {
    node_id("AttentionMaps"): RealignAttentionMaps,
    node_id("AttentionHeatmaps"): RealignAttentionHeatmaps,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    node_id("AttentionMaps"): "Realign Attention Maps",
    node_id("AttentionHeatmaps"): "Realign Attention Heatmaps",
}
