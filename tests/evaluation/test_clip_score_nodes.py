"""The CLIP Score Loader and Scorer inside a real ComfyUI (its executor, its folder_paths): the loader lists the
CLIP folder in models/clip_score, the scorer gives each image of a batch the core's CLIP score, and a missing
folder names models/clip_score and where to download the model."""

from __future__ import annotations

import pytest
import torch

pytestmark = pytest.mark.comfyui
LOADER, SCORER, NAME = "RealignDiffClipScoreLoader", "RealignDiffClipScoreScorer", "clip-vit-large-patch14-tiny"


@pytest.fixture(scope="module")
def clip_in_models(comfyui, scoring_models):
    folder = comfyui.models_dir / "clip_score" / NAME
    if not folder.exists():
        folder.parent.mkdir(parents=True, exist_ok=True)
        folder.symlink_to(scoring_models["clip"], target_is_directory=True)
    return folder


def _graph(prompt: str) -> dict:
    empty = {"width": 64, "height": 48, "batch_size": 1}
    return {
        "1": {"class_type": "EmptyImage", "inputs": {**empty, "color": 0xCC2222}},
        "2": {"class_type": "EmptyImage", "inputs": {**empty, "color": 0x2255EE}},
        "3": {"class_type": "ImageBatch", "inputs": {"image1": ["1", 0], "image2": ["2", 0]}},
        "4": {"class_type": LOADER, "inputs": {"model": NAME}},
        "5": {"class_type": SCORER, "inputs": {"clip_score": ["4", 0], "images": ["3", 0], "prompt": prompt}},
    }


def test_scorer_gives_each_image_its_clip_score(comfyui, clip_in_models):
    from realign_diff.evaluation.clip_score import ClipScore

    choices = comfyui.nodes.NODE_CLASS_MAPPINGS[LOADER].INPUT_TYPES()["required"]["model"][0]
    assert NAME in choices
    outputs = comfyui.run(_graph("a red book\na blue car"))
    entry = comfyui.executor.caches.outputs.get("5")
    scores, summary, mean = entry.outputs if hasattr(entry, "outputs") else entry  # one list per output
    images = torch.stack([torch.tensor([0xCC, 0x22, 0x22]), torch.tensor([0x22, 0x55, 0xEE])]) / 255.0
    images = images[:, None, None, :].expand(2, 48, 64, 3)
    expected = ClipScore.from_pretrained(clip_in_models).score(images, ["a red book", "a blue car"])
    assert list(scores) == pytest.approx(expected.tolist(), abs=1e-4)
    assert mean[0] == pytest.approx(sum(expected.tolist()) / 2, abs=1e-4)
    assert outputs["5"]["text"][0].startswith("CLIP score (100 * max(cos, 0)): mean")


def test_missing_clip_folder_says_where_it_goes(comfyui, clip_in_models):
    with pytest.raises(FileNotFoundError, match=r"clip_score.*huggingface.co/openai/clip-vit-large-patch14"):
        comfyui.nodes.NODE_CLASS_MAPPINGS[LOADER]().load("clip-not-there")
