"""Every bad input the caption reward can meet, and the message it gives."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from realign_diff.reward import (
    Blip2FolderError,
    CaptionReward,
    PromptError,
    check_blip2_dir,
    match_prompts,
    split_prompt_lines,
)


def test_missing_folder_names_the_folder_the_files_and_the_source(tmp_path, blip2_dirs):
    missing = tmp_path / "blip2-opt-2.7b"
    with pytest.raises(FileNotFoundError) as error:
        CaptionReward.from_pretrained(missing, blip2_dirs[1])
    message = str(error.value)
    assert str(missing) in message and "captioner" in message
    assert "config.json" in message and "model.safetensors" in message
    assert "huggingface.co/Salesforce/blip2-opt-2.7b" in message

    with pytest.raises(FileNotFoundError, match="huggingface.co/Salesforce/blip2-itm-vit-g"):
        CaptionReward.from_pretrained(blip2_dirs[0], tmp_path / "nothing-here")


def test_folder_without_config_is_not_a_model_folder(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(Blip2FolderError, match="config.json is missing"):
        check_blip2_dir(tmp_path, "captioner")


def test_another_model_type_is_refused(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert", "architectures": ["BertModel"]}))
    with pytest.raises(Blip2FolderError, match=r"holds a bert model, not BLIP-2 .*expected 'blip-2'"):
        check_blip2_dir(tmp_path, "text_encoder")


def test_swapped_folders_say_which_is_which(blip2_dirs):
    captioner_dir, text_encoder_dir = blip2_dirs
    with pytest.raises(Blip2FolderError, match="image-text retrieval model .* use it as the text encoder"):
        CaptionReward.from_pretrained(text_encoder_dir, text_encoder_dir)
    with pytest.raises(Blip2FolderError, match="is a BLIP-2 captioner .* use it as the captioner"):
        CaptionReward.from_pretrained(captioner_dir, captioner_dir)


def test_incomplete_folder_lists_the_missing_files(tmp_path, blip2_dirs):
    copy = tmp_path / "captioner"
    shutil.copytree(blip2_dirs[0], copy)
    (copy / "model.safetensors").unlink()
    (copy / "processor_config.json").unlink()
    with pytest.raises(Blip2FolderError) as error:
        CaptionReward.from_pretrained(copy, blip2_dirs[1])
    assert "missing weights (model.safetensors" in str(error.value)
    assert "image processor (preprocessor_config.json" in str(error.value)


def test_weights_of_another_model_are_reported_as_missing(tmp_path, blip2_dirs):
    copy = tmp_path / "captioner"
    shutil.copytree(blip2_dirs[0], copy)
    shutil.copy(blip2_dirs[1] / "model.safetensors", copy / "model.safetensors")  # retrieval weights: no language model
    with pytest.raises(
        Blip2FolderError, match="does not hold a complete BLIP-2 captioner: weights missing for language_model"
    ):
        CaptionReward.from_pretrained(copy, blip2_dirs[1])


def test_retrieval_folder_without_a_text_tower_is_reported(tmp_path, blip2_dirs):
    """A BLIP-2 folder whose Q-Former has no text layers (flag off, weights absent) cannot embed text."""
    from safetensors.torch import load_file, save_file

    copy = tmp_path / "itm"
    shutil.copytree(blip2_dirs[1], copy)
    config = json.loads((copy / "config.json").read_text())
    config["qformer_config"]["use_qformer_text_input"] = False
    (copy / "config.json").write_text(json.dumps(config))
    weights = load_file(copy / "model.safetensors")
    save_file(
        {k: v for k, v in weights.items() if ".intermediate." not in k and ".output." not in k},
        copy / "model.safetensors",
    )
    with pytest.raises(
        Blip2FolderError, match=r"does not hold a complete BLIP-2 text encoder .*weights missing for qformer"
    ):
        CaptionReward.from_pretrained(blip2_dirs[0], copy)


def test_retrieval_folder_whose_config_omits_the_text_flag_still_loads(tmp_path, blip2_dirs, reward_opt):
    copy = tmp_path / "itm"
    shutil.copytree(blip2_dirs[1], copy)
    config = json.loads((copy / "config.json").read_text())
    config["qformer_config"].pop("use_qformer_text_input", None)
    (copy / "config.json").write_text(json.dumps(config))
    reward = CaptionReward.from_pretrained(blip2_dirs[0], copy)
    torch.testing.assert_close(reward.embed_texts(["a red book"]), reward_opt.embed_texts(["a red book"]))


def test_prompt_count_must_match_the_batch(reward_opt):
    images = torch.rand(3, 32, 32, 3)
    with pytest.raises(PromptError, match="2 prompts for 3 images: give one prompt for all images, or exactly one"):
        reward_opt.score(images, ["a red book", "two dogs"])


def test_empty_prompts_are_refused(reward_opt):
    images = torch.rand(3, 32, 32, 3)
    with pytest.raises(PromptError, match="The prompt is empty"):
        reward_opt.score(images, "   ")
    with pytest.raises(PromptError, match="Prompt 2 of 3 is empty"):
        reward_opt.score(images, ["a red book", "", "two dogs"])
    with pytest.raises(PromptError, match="No prompt given"):
        match_prompts([], 3)


def test_prompt_lines_one_for_all_or_one_per_image():
    assert split_prompt_lines("a red book\n", 3) == ["a red book"] * 3
    assert split_prompt_lines("a red book\n\n two dogs \nthe moon", 3) == ["a red book", "two dogs", "the moon"]
    with pytest.raises(PromptError, match="The prompt has 2 lines but the batch has 3 images"):
        split_prompt_lines("a red book\ntwo dogs", 3)
    with pytest.raises(PromptError, match="The prompt is empty"):
        split_prompt_lines(" \n \n", 2)


def test_log_prob_text_count_must_match(reward_opt):
    with pytest.raises(ValueError, match="2 texts for 3 images"):
        reward_opt.caption_log_prob(torch.rand(3, 3, 32, 32), ["a", "b"])


def test_images_must_be_image_tensors(reward_opt):
    with pytest.raises(TypeError, match="torch.Tensor"):
        reward_opt.score([[0.5]], "a red book")
    with pytest.raises(ValueError, match="got shape"):
        reward_opt.score(torch.rand(2, 5, 8, 8), "a red book")
