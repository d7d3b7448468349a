"""An evaluation's real parts: ComfyUI's HTTP server on loopback with a random-weight SD-1.5 checkpoint, the small
two-pass workflow of ``realign_testkit.evaluation``, and tiny random scoring models."""

from __future__ import annotations

import json

import pytest

from realign_testkit.evaluation import CHECKPOINT, two_pass_prompt


@pytest.fixture(scope="session")
def eval_server(tmp_path_factory):
    """ComfyUI's ``main.py`` on a free loopback port, the pack linked in, the random checkpoint in its models."""
    from realign_testkit.comfyui import find_comfyui
    from realign_testkit.comfyui_server import ComfyUIServer
    from realign_testkit.sd15_checkpoint import write_sd15_checkpoint

    path, reason = find_comfyui()
    if path is None:
        pytest.skip(reason)
    base = tmp_path_factory.mktemp("eval-server")
    write_sd15_checkpoint(base / "models" / "checkpoints" / CHECKPOINT, small_unet=True)
    with ComfyUIServer(path, base) as server:
        yield server


@pytest.fixture(scope="session")
def workflow_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("eval-workflow") / "two_pass_api.json"
    path.write_text(json.dumps(two_pass_prompt(), indent=1), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def scoring_models(tmp_path_factory):
    """{"captioner", "text_encoder", "clip"}: tiny random BLIP-2 (OPT) and CLIP folders."""
    from realign_testkit.blip2 import write_tiny_blip2
    from realign_testkit.clip_model import write_tiny_clip

    root = tmp_path_factory.mktemp("eval-models")
    captioner, text_encoder = write_tiny_blip2(root / "blip2", language_model="opt", tie_word_embeddings=False)
    return {"captioner": captioner, "text_encoder": text_encoder, "clip": write_tiny_clip(root / "clip")}


@pytest.fixture(scope="session")
def eval_reward(scoring_models):
    """The caption reward (and TIFA's VQA model) on the tiny BLIP-2 folders."""
    from realign_diff.reward import CaptionReward

    return CaptionReward.from_pretrained(scoring_models["captioner"], scoring_models["text_encoder"], device="cpu")
