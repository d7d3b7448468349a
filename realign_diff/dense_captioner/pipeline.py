"""The Local Dense Captioner pipeline: image + prompt -> ``RealignGuidance`` (one per image).

1. The tagger (RAM) tags every image of the batch.
2. The prompt's own objects that the tagger missed are added as candidates (``add_prompt_objects``):
   RAM often misses a small or half-drawn object, and an object the prompt names is exactly one the
   fine stage must place. GroundingDINO then decides whether it is in the image.
3. The scorer (offline or LLM) gives each candidate a score (2 / 0.5 / 0) and a local caption.
4. Grounded-SAM finds a mask for every candidate with a score above 0. Score-0 objects are left out: in
   the attention patch a score of 0 cancels the push inside the mask but keeps the pull-down outside it,
   which would pin an unwanted object's words to where it already is. It is asked for the *tag*, not the
   caption: the coarse image may show a blue pen where the prompt wants "a yellow pen", and it is that
   pen the fine stage must find and repaint.
5. Each found object becomes a ``GuidedObject(tag, score, caption, mask, box, confidence)``.

No detection is a normal result: an empty guidance; an empty prompt is an error (the second pass would be
sampled from it). Cancel: ``check_cancel()`` (ComfyUI's interrupt check, from the node) is called before
every layer of the three models, between the stages, and while an LLM is waited on. Everything here is
plain torch; the models come in as objects with the interfaces below (``realign_diff.dense_captioner.ram`` and
``.grounded_sam``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import nn

from ..guidance import GuidedObject, RealignGuidance, require_prompt
from .grounding import BOX_THRESHOLD, TEXT_THRESHOLD
from .offline_scorer import prompt_objects, same_name
from .scoring import ScoringResult, TagScorer, normalize_tag


@dataclass(frozen=True)
class CaptionerSettings:
    ram_threshold: float | None = None  # None: the tagger's per-class thresholds
    ram_threshold_overrides: dict[str, float] | None = None  # tag -> threshold
    ram_top_k: int | None = None  # at most this many tags per image (None: all)
    exclude_tags: tuple[str, ...] = ()  # never used, whoever names them
    box_threshold: float = BOX_THRESHOLD
    text_threshold: float = TEXT_THRESHOLD
    nms_threshold: float = 0.5
    add_prompt_objects: bool = True


@dataclass
class Candidate:
    tag: str
    origin: str  # "tagger" or "prompt"
    tagger_score: float | None = None
    score: float | None = None
    caption: str = ""
    grounded: bool = False  # sent to Grounded-SAM (score > 0)
    found: bool = False  # Grounded-SAM returned a mask for it

    def to_dict(self) -> dict:
        return {
            "tag": self.tag,
            "origin": self.origin,
            "tagger_score": None if self.tagger_score is None else round(float(self.tagger_score), 4),
            "score": self.score,
            "caption": self.caption,
            "grounded": self.grounded,
            "found": self.found,
        }


@dataclass
class CaptionedImage:
    guidance: RealignGuidance
    scoring: ScoringResult
    candidates: list[Candidate] = field(default_factory=list)

    def to_dict(self) -> dict:
        guidance = self.guidance.to_dict()
        for obj in guidance["objects"]:  # pixels to 0.01, confidences to 1e-4: readable JSON
            obj["box"] = None if obj["box"] is None else [round(float(v), 2) for v in obj["box"]]
            obj["confidence"] = None if obj["confidence"] is None else round(float(obj["confidence"]), 4)
        return {
            **guidance,
            "scoring": {k: v for k, v in self.scoring.to_dict().items() if k != "entries"},
            "tags": [c.to_dict() for c in self.candidates],
        }


@contextmanager
def cancel_checks(models, check: Callable[[], None]) -> Iterator[None]:
    """``check()`` before the forward of every module of these models (Swin and SAM blocks, BERT layers, the
    deformable encoder's attention...), so Cancel stops a CPU forward pass within about a second, not after
    it: GroundingDINO at 800 px takes ~30 s on a CPU. A check is a flag read: thousands per pass cost nothing."""
    modules = {id(m): m for model in models if isinstance(model, nn.Module) for m in model.modules()}
    handles = [module.register_forward_pre_hook(lambda *_: check()) for module in modules.values()]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def progress_steps(batch: int) -> int:
    """Progress units of ``caption_images`` for a batch: tagging, then scoring and grounding per image."""
    return 1 + 2 * batch


def candidates_for(prompt: str, tags, settings: CaptionerSettings) -> list[Candidate]:
    """The tagger's tags (as ``(name, score)`` pairs or objects with ``.name``/``.score``), plus the
    prompt's objects that none of them names (same word or a synonym). A tag of a wider kind does not
    count: with "a man and a woman" and the tag "person", "man" and "woman" are still looked for, each
    with its own mask and caption."""
    excluded = {normalize_tag(t) for t in settings.exclude_tags}
    out: list[Candidate] = []
    seen: set[str] = set()
    for tag in tags:
        name, score = (tag.name, tag.score) if hasattr(tag, "name") else (tag[0], tag[1])
        key = normalize_tag(name)
        if key and key not in seen and key not in excluded:
            seen.add(key)
            out.append(Candidate(tag=str(name).strip(), origin="tagger", tagger_score=float(score)))
    if settings.add_prompt_objects:
        tagged = [c.tag for c in out]
        for name, _ in prompt_objects(prompt):
            key = normalize_tag(name)
            if key in seen or key in excluded or any(same_name(name, t) for t in tagged):
                continue
            seen.add(key)
            out.append(Candidate(tag=name, origin="prompt"))
    return out


def caption_images(
    images: torch.Tensor,
    prompt: str,
    *,
    tagger,
    scorer: TagScorer,
    detector,
    segmenter,
    settings: CaptionerSettings | None = None,
    on_step: Callable[[int], None] | None = None,
    check_cancel: Callable[[], None] | None = None,
) -> list[CaptionedImage]:
    """One ``CaptionedImage`` per image of ``images`` ([B, H, W, 3] in [0, 1], ComfyUI's IMAGE layout).

    ``tagger.tag(images, threshold=, threshold_overrides=, top_k=, exclude=)`` -> per image a list of
    tags; ``ground_tags(detector, segmenter, image, tags, ...)`` -> grounded objects. ``on_step(n)``
    advances progress by n units (``progress_steps``); ``check_cancel()`` raises to cancel (default:
    ``on_step(0)``).
    """
    require_prompt(prompt, "Local Dense Captioner's prompt input")
    settings = settings or CaptionerSettings()
    step = on_step or (lambda n=1: None)
    check = check_cancel or (lambda: step(0))
    if images.dim() == 3:
        images = images.unsqueeze(0)
    if images.dim() != 4 or images.shape[-1] != 3:
        raise ValueError(f"images must be [B, H, W, 3] (ComfyUI IMAGE), got {tuple(images.shape)}")
    with cancel_checks((tagger, detector, segmenter), check):
        tag_lists = _tag(tagger, images, settings)
        step(1)
        return [
            _caption_one(images[i], prompt, tag_lists[i], scorer, detector, segmenter, settings, step, check)
            for i in range(images.shape[0])
        ]


def _tag(tagger, images: torch.Tensor, settings: CaptionerSettings) -> list:
    tag_lists = tagger.tag(
        images,
        threshold=settings.ram_threshold,
        threshold_overrides=settings.ram_threshold_overrides or None,
        top_k=settings.ram_top_k,
        exclude=_known_tags(tagger, settings.exclude_tags) or None,
    )
    if len(tag_lists) != images.shape[0]:
        raise RuntimeError(f"the tagger returned {len(tag_lists)} tag lists for {images.shape[0]} images")
    return tag_lists


def _caption_one(image, prompt, tags, scorer, detector, segmenter, settings, step, check) -> CaptionedImage:
    """Score, then ground, the candidates of one image ([H, W, 3])."""
    from .grounded_sam import ground_tags

    height, width = image.shape[:2]
    candidates = candidates_for(prompt, tags, settings)
    scoring = scorer.score(prompt, [c.tag for c in candidates], check_cancel=check)
    by_tag = {normalize_tag(e.tag): e for e in scoring.entries}
    for c in candidates:
        entry = by_tag.get(normalize_tag(c.tag))
        if entry is not None:
            c.score, c.caption = entry.score, entry.caption
            c.grounded = entry.score > 0
    step(1)

    to_ground = [c for c in candidates if c.grounded]
    grounded = []
    if to_ground:
        grounded = ground_tags(
            detector,
            segmenter,
            image,
            [c.tag for c in to_ground],
            box_threshold=settings.box_threshold,
            text_threshold=settings.text_threshold,
            nms_threshold=settings.nms_threshold,
            on_step=lambda n=1: check(),  # this image's grounding is one progress unit
        )
    objects = _guided_objects(to_ground, grounded, height, width)
    step(1)
    guidance = RealignGuidance(prompt=prompt, width=width, height=height, objects=objects, source=scoring.source)
    return CaptionedImage(guidance=guidance, scoring=scoring, candidates=candidates)


def _known_tags(tagger, names) -> list[str]:
    """The names the tagger knows (so they do not take top-k places); the others, which may be prompt
    objects, are excluded after tagging (``candidates_for``)."""
    if not hasattr(tagger, "tag_index"):
        return list(names)
    known = []
    for name in names:
        try:
            tagger.tag_index(name)
        except KeyError:
            continue
        known.append(name)
    return known


def _guided_objects(candidates: list[Candidate], grounded, height: int, width: int) -> list[GuidedObject]:
    """Grounded objects matched back to their candidates (by tag), in the candidates' order."""
    by_key: dict[str, object] = {}
    for g in grounded:
        by_key.setdefault(normalize_tag(g.tag), g)
    objects = []
    for c in candidates:
        g = by_key.get(normalize_tag(c.tag))
        if g is None:
            continue
        mask = torch.as_tensor(g.mask).float()
        if tuple(mask.shape) != (height, width):
            raise RuntimeError(
                f"Grounded-SAM returned a {tuple(mask.shape)} mask for {c.tag!r} on a {height}x{width} image"
            )
        c.found = True
        box = tuple(float(v) for v in g.box) if g.box is not None else None
        confidence = None if g.confidence is None else float(g.confidence)
        objects.append(
            GuidedObject(tag=c.tag, score=c.score, caption=c.caption, mask=mask, box=box, confidence=confidence)
        )
    return objects


def masks_batch(results: list[CaptionedImage]) -> torch.Tensor:
    """Every object's mask of every image, [N, H, W] (ComfyUI MASK). With no object at all, one empty
    mask, so nodes downstream still get a valid MASK."""
    masks = [o.mask for r in results for o in r.guidance.objects]
    if masks:
        return torch.stack(masks)
    g = results[0].guidance if results else None
    return torch.zeros(1, g.height if g else 64, g.width if g else 64)


def guidance_json(results: list[CaptionedImage], indent: int | None = 2) -> str:
    """The JSON of the node's STRING output: what the user should know first (an LLM fallback, a replaced
    caption), then per image the guidance, how it was scored, and every tag."""
    import json

    warnings = list(dict.fromkeys(w for r in results for w in r.scoring.warnings))  # a batch repeats them
    return json.dumps(
        {"format": "realign-guidance/1", "warnings": warnings, "images": [r.to_dict() for r in results]}, indent=indent
    )
