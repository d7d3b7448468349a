"""The CLIP score on a tiny random CLIP in openai/clip-vit-large-patch14's folder layout: each image's score is
torchmetrics' formula 100 * max(cos, 0), computed here from the transformers model directly, and equals
torchmetrics' own clip_score on that image; bad folders say what to download."""

from __future__ import annotations

import json

import pytest
import torch

from realign_diff.evaluation.clip_score import ClipFolderError, ClipScore

PROMPTS = ["a red book on a desk", "a photo of a cat", "two dogs playing", "a blue car", "a green tree", "the moon"]


@pytest.fixture(scope="module")
def clip(scoring_models):
    return ClipScore.from_pretrained(scoring_models["clip"])


def _cosines(clip: ClipScore, images: torch.Tensor, prompts) -> list[float]:
    """cos(E_image, E_text) from the model and its processor, in float64."""
    model, processor = clip.model, clip.processor
    out = []
    for image, text in zip(images, prompts):
        pixels = (image.permute(2, 0, 1) * 255).round().to(torch.uint8)
        inputs = processor(text=[text], images=[pixels], return_tensors="pt", padding=True)
        with torch.no_grad():
            img = model.get_image_features(pixel_values=inputs["pixel_values"])
            txt = model.get_text_features(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"])
        img, txt = (getattr(x, "pooler_output", x).double() for x in (img, txt))
        out.append(float(torch.nn.functional.cosine_similarity(img, txt)))
    return out


def test_clip_score_is_100_max_cos_0_per_image(clip):
    images = torch.rand(len(PROMPTS), 40, 52, 3, generator=torch.Generator().manual_seed(0))
    scores = clip.score(images, PROMPTS)
    cosines = _cosines(clip, images, PROMPTS)
    assert scores.shape == (len(PROMPTS),) and scores.dtype == torch.float32
    assert scores.tolist() == pytest.approx([100 * max(c, 0.0) for c in cosines], abs=1e-3)
    assert min(cosines) < 0 < max(cosines)  # the clamp is exercised
    assert clip.score(images[:1], "a red book on a desk").item() == pytest.approx(scores[0].item())


def test_clip_score_equals_torchmetrics_on_each_image(clip):
    from torchmetrics.functional.multimodal import clip_score

    from realign_diff.evaluation.clip_score import _Features

    images = torch.rand(3, 56, 56, 3, generator=torch.Generator().manual_seed(1))
    ours = clip.score(images, PROMPTS[:3])
    for image, text, score in zip(images, PROMPTS[:3], ours):
        pixels = (image.permute(2, 0, 1) * 255).round().to(torch.uint8)
        theirs = clip_score(pixels, text, lambda: (_Features(clip.model), clip.processor))
        assert float(theirs) == pytest.approx(float(score), abs=1e-4)


def test_clip_folders_that_cannot_work_say_what_to_get(tmp_path, scoring_models):
    with pytest.raises(ClipFolderError, match="no config.json.*openai/clip-vit-large-patch14"):
        ClipScore.from_pretrained(tmp_path / "missing")
    blip = tmp_path / "blip"
    blip.mkdir()
    (blip / "config.json").write_text(json.dumps({"model_type": "blip-2"}))
    with pytest.raises(ClipFolderError, match="'blip-2' model, not CLIP"):
        ClipScore.from_pretrained(blip)
    half = tmp_path / "half"
    half.mkdir()
    (half / "config.json").write_text((scoring_models["clip"] / "config.json").read_text())
    with pytest.raises(ClipFolderError, match="incomplete download"):
        ClipScore.from_pretrained(half)
