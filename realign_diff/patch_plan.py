"""From guidance to what the patch needs: the fine-stage text, each object's tokens, and a report.

The tokenizer is passed in as two callbacks (ComfyUI's CLIP in the node, a Hugging Face CLIP
tokenizer in tests), so this stays pure.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from .guidance import RealignGuidance, mask_problem, require_prompt
from .realign_patch import PatchObject
from .tokens import ObjectTokens, TokenizeWord, conditioning_text, locate_object, split_words, tag_variants

CONDITIONING_MODES = ("prompt + local captions", "prompt only")
MAX_CHUNKS = 3  # 3 x 75 tokens: beyond that the objects would drown the prompt

TokenizeText = Callable[[str], list[int | None]]  # text -> the whole token stream, chunks included


@dataclass
class PatchPlan:
    text: str
    stream: list[int | None]
    objects_per_image: list[list[PatchObject]]
    located: list[list[ObjectTokens]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def prompt_length(self) -> int:
        return len(self.stream)

    def report(self) -> str:
        lines = [f"conditioning: {self.text!r} ({self.prompt_length} tokens)"]
        for index, located in enumerate(self.located):
            if len(self.located) > 1:
                lines.append(f"image {index}:")
            if not located:
                lines.append("  no objects: this image is sampled unmodulated")
            for obj, patch in zip(located, self.objects_per_image[index]):
                where = (
                    f"tokens {obj.positions} = {' '.join(obj.matched_words)!r} (by {obj.matched})"
                    if obj.positions
                    else "not in the conditioning: not modulated"
                )
                lines.append(f"  {obj.tag} (score {patch.score:g}, caption {obj.caption!r}): {where}")
        if not any(o.positions.numel() for objects in self.objects_per_image for o in objects):
            lines.append("note: no object was located in the conditioning: sampling is unchanged")
        lines += [f"note: {note}" for note in self.notes]
        return "\n".join(lines)


def _shared_prompt(guidances: Sequence[RealignGuidance]) -> str:
    prompts = {g.prompt.strip() for g in guidances}
    if len(prompts) > 1:
        raise ValueError(
            "The guidance of every image in the batch must share one prompt (one patched model samples "
            f"one conditioning); got {len(prompts)} different prompts."
        )
    return prompts.pop()


def _sampling_notes(guidances: Sequence[RealignGuidance]) -> list[str]:
    """What sampling must match (the warnings it would otherwise log only on the console, mid-sampling)."""
    sizes = {(g.width, g.height) for g in guidances}
    notes = [
        f"masks are {w}x{h}: sample a latent of that aspect ratio (e.g. {w}x{h} pixels, latent {w // 8}x{h // 8}), "
        "or they are stretched to fit; at another size of that shape (a hires pass) they are resized to it"
        for w, h in sorted(sizes)
    ]
    if len(guidances) > 1:
        notes.append(
            f"guidance for {len(guidances)} images: sample a batch of {len(guidances)} latents; another batch "
            "size reuses the guidance in turn"
        )
    return notes


def plan_patch(
    guidances: Sequence[RealignGuidance],
    tokenize_text: TokenizeText,
    tokenize_word: TokenizeWord,
    skippable: frozenset[int] = frozenset(),
    mode: str = CONDITIONING_MODES[0],
    chunk_length: int = 77,
) -> PatchPlan:
    if mode not in CONDITIONING_MODES:
        raise ValueError(f"unknown conditioning mode {mode!r}; expected one of {CONDITIONING_MODES}")
    if not guidances:
        raise ValueError("The guidance is empty: it needs one entry per image (an entry may have no objects).")
    prompt = require_prompt(
        _shared_prompt(guidances), "Local Dense Captioner (or the first Realign Guidance From Mask)"
    )
    notes = _sampling_notes(guidances)
    usable = []
    for index, guidance in enumerate(guidances):
        kept = []
        for obj in guidance.objects:
            if (problem := mask_problem(obj.mask, obj.tag)) is not None:
                kind = "an empty" if float(obj.mask.max()) <= 0 else "a faint"
                notes.append(f"{obj.tag!r} (image {index}) has {kind} mask: skipped. {problem}")
                continue
            kept.append(obj)
        usable.append(kept)

    names = {o.tag: frozenset(w for v in tag_variants(o.tag) for w in split_words(v)) for kept in usable for o in kept}

    def others(tag: str) -> frozenset[str]:  # words naming the other objects
        return frozenset().union(*(words for name, words in names.items() if name != tag)) - names.get(tag, frozenset())

    def locate(stream, obj):
        return locate_object(stream, obj.tag, obj.caption, tokenize_word, skippable, others(obj.tag))

    captions = []
    if mode == CONDITIONING_MODES[0]:
        prompt_stream = tokenize_text(prompt)
        for obj in (o for kept in usable for o in kept):
            phrase = obj.caption.strip() or obj.tag
            if obj.score > 0 and phrase not in captions and "caption" not in locate(prompt_stream, obj).matched:
                captions.append(phrase)
    text = conditioning_text(prompt, captions)
    stream = tokenize_text(text)
    if captions and len(stream) > MAX_CHUNKS * chunk_length:
        raise ValueError(
            f"The prompt plus {len(captions)} appended local captions need {len(stream) // chunk_length} CLIP chunks "
            f"of 75 tokens (at most {MAX_CHUNKS} with captions appended). Keep fewer objects (lower the captioner's "
            "top-k or raise its thresholds) or choose conditioning 'prompt only'."
        )

    located, objects_per_image = [], []
    for kept in usable:
        found = [locate(stream, o) for o in kept]
        located.append(found)
        objects_per_image.append(
            [PatchObject(o.mask, torch.tensor(f.positions, dtype=torch.long), o.score) for o, f in zip(kept, found)]
        )
    return PatchPlan(text, list(stream), objects_per_image, located, notes)
