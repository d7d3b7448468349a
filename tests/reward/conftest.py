"""Tiny random BLIP-2 folders (written once per session) and the caption reward loaded from them."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="session")
def blip2_dirs(tmp_path_factory):
    """(captioner_dir, text_encoder_dir): OPT captioner + retrieval model."""
    from realign_testkit.blip2 import write_tiny_blip2

    return write_tiny_blip2(tmp_path_factory.mktemp("blip2-opt"), language_model="opt")


@pytest.fixture(scope="session")
def blip2_t5_dirs(tmp_path_factory):
    """(captioner_dir, text_encoder_dir): Flan-T5-style (encoder-decoder) captioner + retrieval model."""
    from realign_testkit.blip2 import write_tiny_blip2

    return write_tiny_blip2(tmp_path_factory.mktemp("blip2-t5"), language_model="t5")


@pytest.fixture(scope="session")
def blip2_opt_untied_dirs(tmp_path_factory):
    """(captioner_dir, text_encoder_dir): OPT captioner with its own output head, whose samples vary with the seed."""
    from realign_testkit.blip2 import write_tiny_blip2

    return write_tiny_blip2(
        tmp_path_factory.mktemp("blip2-opt-untied"), language_model="opt", tie_word_embeddings=False
    )


@pytest.fixture(scope="session")
def reward_opt(blip2_dirs):
    from realign_diff.reward import CaptionReward

    return CaptionReward.from_pretrained(*blip2_dirs, device="cpu")


@pytest.fixture(scope="session")
def reward_t5(blip2_t5_dirs):
    from realign_diff.reward import CaptionReward

    return CaptionReward.from_pretrained(*blip2_t5_dirs, device="cpu")


@pytest.fixture(params=["opt", "t5"])
def reward(request):
    """The caption reward with each kind of captioner (decoder-only OPT, encoder-decoder T5)."""
    return request.getfixturevalue(f"reward_{request.param}")


@pytest.fixture(scope="session")
def reward_opt_untied(blip2_opt_untied_dirs):
    from realign_diff.reward import CaptionReward

    return CaptionReward.from_pretrained(*blip2_opt_untied_dirs, device="cpu")


@pytest.fixture(params=["opt", "opt_untied", "t5"])
def any_reward(request):
    """``reward``, plus the untied OPT captioner (captions that differ per image and end early)."""
    return request.getfixturevalue(f"reward_{request.param}")


@pytest.fixture(params=["opt_untied", "t5"])
def sampling_reward(request):
    """Captioners whose sampled captions vary with the seed (the tied tiny OPT's hardly do)."""
    return request.getfixturevalue(f"reward_{request.param}")


@pytest.fixture
def images():
    """Five distinct ComfyUI-style images [B, H, W, 3] in [0, 1], not at the model's input size."""
    generator = torch.Generator().manual_seed(0)
    solid = [
        torch.ones(40, 52, 3) * torch.tensor(c)
        for c in [(1.0, 0.0, 0.0), (0.0, 0.8, 0.1), (0.1, 0.2, 0.9), (1.0, 1.0, 1.0)]
    ]
    ramp = torch.linspace(0, 1, 52).view(1, 52, 1).expand(40, 52, 3) * torch.rand(1, 1, 3, generator=generator)
    return torch.stack(solid + [ramp])
