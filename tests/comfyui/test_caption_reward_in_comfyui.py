"""LoadImage -> Caption Reward Scorer inside a real ComfyUI, with tiny BLIP-2 folders in models/blip2."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytestmark = pytest.mark.comfyui

LOADER, SCORER = "RealignDiffBlip2RewardLoader", "RealignDiffCaptionRewardScorer"


@pytest.fixture(scope="module")
def blip2_in_models(comfyui):
    """Tiny BLIP-2 folders in ComfyUI's models/blip2 and two input PNGs; returns the folder names."""
    from PIL import Image

    from realign_testkit.blip2 import write_tiny_blip2

    captioner, text_encoder = write_tiny_blip2(comfyui.models_dir / "blip2")
    inputs = comfyui.base_dir / "input"
    Image.fromarray(np.full((48, 64, 3), (200, 30, 30), np.uint8)).save(inputs / "realign_red.png")
    ramp = np.linspace(0, 255, 64, dtype=np.uint8)[None, :, None].repeat(48, 0).repeat(3, 2)
    Image.fromarray(ramp).save(inputs / "realign_ramp.png")
    return captioner.name, text_encoder.name


def graph(captioner, text_encoder, prompt, two_images=False):
    nodes = {
        "1": {
            "class_type": LOADER,
            "inputs": {"captioner": captioner, "text_encoder": text_encoder, "precision": "auto"},
        },
        "2": {"class_type": "LoadImage", "inputs": {"image": "realign_red.png"}},
        "4": {
            "class_type": SCORER,
            "inputs": {
                "caption_reward": ["1", 0],
                "images": ["2", 0],
                "prompt": prompt,
                "max_new_tokens": 8,
                "num_beams": 1,
                "batch_size": 8,
            },
        },
    }
    if two_images:
        nodes["3"] = {"class_type": "LoadImage", "inputs": {"image": "realign_ramp.png"}}
        nodes["5"] = {"class_type": "ImageBatch", "inputs": {"image1": ["2", 0], "image2": ["3", 0]}}
        nodes["4"]["inputs"]["images"] = ["5", 0]
    return nodes


def cached(comfyui, node_id):
    """A node's outputs from ComfyUI's output cache (one list per output)."""
    entry = comfyui.executor.caches.outputs.get(node_id)
    return entry.outputs if hasattr(entry, "outputs") else entry


def test_loader_lists_the_registered_blip2_folder(comfyui, blip2_in_models):
    loader = comfyui.nodes.NODE_CLASS_MAPPINGS[LOADER]
    required = loader.INPUT_TYPES()["required"]
    assert required["captioner"][0][0] == blip2_in_models[0]  # captioners listed first for the captioner
    assert required["text_encoder"][0][0] == blip2_in_models[1]  # retrieval folders first for the text encoder
    assert set(blip2_in_models) <= set(required["captioner"][0])


def test_load_image_then_caption_reward_scorer(comfyui, blip2_in_models):
    import comfy.model_management as mm

    prompt = graph(*blip2_in_models, "a red book on a desk")
    outputs = comfyui.output_of(prompt, "4")
    rewards, captions, summary, mean = outputs
    assert isinstance(rewards, list) and len(rewards) == 1 and type(rewards[0]) is float
    assert -1.0 <= rewards[0] <= 1.0
    assert isinstance(captions, list) and len(captions) == 1 and isinstance(captions[0], str) and captions[0]
    assert summary[0].startswith("Caption reward (BLIP-2): mean") and captions[0] in summary[0]
    assert mean == [pytest.approx(rewards[0])]
    ui = comfyui.executor.history_result["outputs"]["4"]
    assert ui["text"] == summary

    # the loaded models are ComfyUI-managed: they are in its list of loaded models, on its compute device
    patcher = cached(comfyui, "1")[0][0]
    assert any(loaded.model is patcher for loaded in mm.current_loaded_models)
    assert patcher.model.model_device == mm.get_torch_device()

    # same as the library on the same pixels (LoadImage: 8-bit PNG -> [1, H, W, 3] float)
    from realign_diff.reward import CaptionReward

    image = torch.from_numpy(np.full((1, 48, 64, 3), (200, 30, 30), np.float32) / 255.0)
    reward = CaptionReward.from_pretrained(
        *(comfyui.models_dir / "blip2" / name for name in blip2_in_models), device="cpu"
    )
    direct = reward.score(image, "a red book on a desk", max_new_tokens=8)
    assert captions == direct.captions
    assert rewards[0] == pytest.approx(float(direct.rewards[0]), abs=1e-5)


def test_second_run_reuses_the_loaded_models_and_scores_a_batch(comfyui, blip2_in_models):
    comfyui.run(graph(*blip2_in_models, "a red book"))
    patcher = cached(comfyui, "1")[0][0]
    comfyui.run(graph(*blip2_in_models, "a red book\na colour ramp", two_images=True), reset_cache=False)
    assert cached(comfyui, "1")[0][0] is patcher  # the loader did not run again: same loaded models
    rewards, captions, summary, _ = cached(comfyui, "4")
    assert len(rewards) == 2 and len(captions) == 2
    assert "prompt:  a colour ramp" in summary[0]


def test_bad_prompt_fails_with_the_reason(comfyui, blip2_in_models):
    from realign_testkit.comfyui import ExecutionFailed

    with pytest.raises(ExecutionFailed, match="The prompt has 3 lines but the batch has 2 images"):
        comfyui.run(graph(*blip2_in_models, "one\ntwo\nthree", two_images=True))
    with pytest.raises(ExecutionFailed, match="The prompt is empty"):
        comfyui.run(graph(*blip2_in_models, "   "))


def test_missing_folder_names_models_blip2_and_the_source(comfyui, blip2_in_models):
    loader = comfyui.nodes.NODE_CLASS_MAPPINGS[LOADER]()
    with pytest.raises(FileNotFoundError, match=r"models/blip2.*huggingface.co/Salesforce/blip2-opt-2.7b"):
        loader.load("blip2-not-there", blip2_in_models[1], "auto")
