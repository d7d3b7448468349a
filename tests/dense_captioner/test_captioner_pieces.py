"""The pipeline's pure pieces: candidates, option parsing, the MASK batch, the JSON and the preview."""

from __future__ import annotations

import json

import torch

from realign_diff.dense_captioner.pipeline import (
    CaptionedImage,
    CaptionerSettings,
    candidates_for,
    guidance_json,
    masks_batch,
)
from realign_diff.dense_captioner.preview import draw_guidance, label_of
from realign_diff.dense_captioner.scoring import ScoringResult, TagScore
from realign_diff.guidance import GuidedObject, RealignGuidance


def test_candidates_are_tagger_tags_plus_prompt_objects_the_tagger_missed():
    tags = [("Book", 0.9), ("desk", 0.8), ("book", 0.7), ("wall", 0.6)]
    got = candidates_for("a red book and a yellow pen", tags, CaptionerSettings(exclude_tags=("wall",)))
    assert [(c.tag, c.origin, c.tagger_score) for c in got] == [
        ("Book", "tagger", 0.9),
        ("desk", "tagger", 0.8),
        ("pen", "prompt", None),
    ]
    # a prompt object the tagger named by a synonym is not added again; one named by its kind is
    got = candidates_for("a puppy on a couch", [("dog", 0.9), ("sofa", 0.8)], CaptionerSettings())
    assert [c.tag for c in got] == ["dog", "sofa", "puppy"]
    got = candidates_for("a red book and a yellow pen", tags, CaptionerSettings(add_prompt_objects=False))
    assert [c.tag for c in got] == ["Book", "desk", "wall"]


def _result(objects, width=8, height=6, source="offline"):
    guidance = RealignGuidance("a red book", width, height, objects, source=source)
    scoring = ScoringResult([TagScore("book", 2.0, "a red book")], source, "offline scorer")
    return CaptionedImage(guidance, scoring, [])


def test_masks_batch_and_json():
    mask = torch.zeros(6, 8)
    mask[1:3, 2:5] = 1
    book = GuidedObject("book", 2, "a red book", mask, (2, 1, 5, 3), 0.8)
    results = [_result([book]), _result([]), _result([book, book])]
    masks = masks_batch(results)
    assert masks.shape == (3, 6, 8) and torch.equal(masks[0], mask)
    empty = masks_batch([_result([])])
    assert empty.shape == (1, 6, 8) and empty.sum() == 0
    data = json.loads(guidance_json(results))
    assert data["format"] == "realign-guidance/1" and len(data["images"]) == 3
    first = data["images"][0]
    assert first["objects"][0] == {
        "tag": "book",
        "score": 2.0,
        "caption": "a red book",
        "box": [2.0, 1.0, 5.0, 3.0],
        "confidence": 0.8,
        "mask_area": 0.125,
    }
    assert first["source"] == "offline" and first["scoring"]["status"] == "offline scorer"
    assert data["images"][1]["objects"] == []


def test_preview_draws_objects_and_keeps_the_size():
    image = torch.full((64, 96, 3), 0.5)
    mask = torch.zeros(64, 96)
    mask[10:40, 20:60] = 1
    obj = GuidedObject("pen", 0.5, "a yellow pen", mask, (20, 10, 60, 40), 0.42)
    out = draw_guidance(image, RealignGuidance("p", 96, 64, [obj], source="offline"))
    assert out.shape == image.shape and out.dtype == torch.float32
    assert 0 <= out.min() and out.max() <= 1
    assert (out[25, 40] - image[25, 40]).abs().sum() > 0.1  # the mask is tinted
    assert torch.allclose(out[5, 90], image[5, 90], atol=1 / 255)  # far from it, untouched
    assert label_of(obj) == "pen 0.5 (0.42)"
