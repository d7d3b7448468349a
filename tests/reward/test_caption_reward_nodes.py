"""The caption reward nodes' declarations and their ComfyUI-free work, loaded as ComfyUI loads the pack."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from realign_diff.reward import PromptError


@pytest.fixture(scope="module")
def node_module(pack):
    from realign_pack.nodes import caption_reward

    return caption_reward


def test_nodes_are_registered_with_stable_ids_and_names(pack):
    assert pack.NODE_CLASS_MAPPINGS["RealignDiffBlip2RewardLoader"].__name__ == "Blip2RewardLoader"
    assert pack.NODE_CLASS_MAPPINGS["RealignDiffCaptionRewardScorer"].__name__ == "CaptionRewardScorer"
    assert pack.NODE_DISPLAY_NAME_MAPPINGS["RealignDiffBlip2RewardLoader"] == "BLIP-2 Caption Reward Loader"
    assert pack.NODE_DISPLAY_NAME_MAPPINGS["RealignDiffCaptionRewardScorer"] == "Caption Reward Scorer"


def test_declarations_are_complete(node_module):
    for cls in (node_module.Blip2RewardLoader, node_module.CaptionRewardScorer):
        inputs = cls.INPUT_TYPES()["required"]
        for name, spec in inputs.items():
            assert spec[1].get("tooltip"), f"{cls.__name__}.{name} has no tooltip"
        assert len(cls.RETURN_TYPES) == len(cls.RETURN_NAMES) == len(cls.OUTPUT_TOOLTIPS)
        assert cls.CATEGORY == "RealignDiff" and cls.DESCRIPTION and hasattr(cls, cls.FUNCTION)
    scorer = node_module.CaptionRewardScorer
    assert scorer.RETURN_TYPES == ("FLOAT", "STRING", "STRING", "FLOAT")
    assert scorer.OUTPUT_IS_LIST == (True, True, False, False)
    assert scorer.INPUT_TYPES()["required"]["prompt"][1]["multiline"] is True
    assert node_module.Blip2RewardLoader.RETURN_TYPES == ("REALIGN_CAPTION_REWARD",)
    choices = node_module.Blip2RewardLoader.INPUT_TYPES()["required"]["captioner"][0]
    if importlib.util.find_spec("folder_paths") is None:
        # outside ComfyUI there is no models/blip2 to list: a placeholder that names the folder
        assert choices == [node_module.NO_MODELS]
    else:  # a ComfyUI started in this process by the comfyui tests
        assert choices and all(isinstance(choice, str) for choice in choices)


def test_precision_choices(node_module):
    assert node_module.resolve_precision("auto", torch.device("cpu")) == torch.float32
    assert node_module.resolve_precision("fp16", torch.device("cpu")) == torch.float16
    assert node_module.resolve_precision("bf16", torch.device("cpu")) == torch.bfloat16


def test_scorer_outputs_one_reward_and_caption_per_image(node_module, reward_opt, images):
    rewards, captions, summary, mean = node_module.score_images(reward_opt, images, "a red book\n", 8, 1, 2)
    assert isinstance(rewards, list) and len(rewards) == 5 and all(type(r) is float for r in rewards)
    assert isinstance(captions, list) and len(captions) == 5 and all(type(c) is str for c in captions)
    assert isinstance(summary, str) and summary.count("caption:") == 5 and "prompt: a red book" in summary
    assert type(mean) is float and mean == pytest.approx(sum(rewards) / 5)
    direct = reward_opt.score(images, "a red book", max_new_tokens=8)
    assert captions == direct.captions
    assert rewards == pytest.approx(direct.rewards.tolist(), abs=1e-6)


def test_scorer_takes_one_prompt_line_per_image(node_module, reward_opt, images):
    lines = "a red book\ntwo dogs\n\nthe moon\na cat\na blue car"
    rewards, captions, summary, _ = node_module.score_images(reward_opt, images, lines, 6, 1, 8)
    expected = reward_opt.score(images, ["a red book", "two dogs", "the moon", "a cat", "a blue car"], max_new_tokens=6)
    assert rewards == pytest.approx(expected.rewards.tolist(), abs=1e-6)
    assert "prompt:  two dogs" in summary
    with pytest.raises(PromptError, match="The prompt has 2 lines but the batch has 5 images"):
        node_module.score_images(reward_opt, images, "a red book\ntwo dogs", 6, 1, 8)
    with pytest.raises(PromptError, match="The prompt is empty"):
        node_module.score_images(reward_opt, images, "\n  \n", 6, 1, 8)
