"""The caption reward on tiny random BLIP-2 folders, loaded through CaptionReward.from_pretrained."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from realign_diff.reward import CaptionReward, ImageStats, RewardResult, default_dtype, preprocess, to_bchw


def itc_text_embeddings(text_encoder_dir, texts):
    """f(texts) computed independently: transformers' own image-text retrieval model, contrastive (ITC) path."""
    from PIL import Image
    from transformers import Blip2ForImageTextRetrieval, Blip2Processor

    model = Blip2ForImageTextRetrieval.from_pretrained(str(text_encoder_dir)).eval()
    processor = Blip2Processor.from_pretrained(str(text_encoder_dir))
    image = Image.new("RGB", (64, 64), (120, 30, 200))
    out = []
    with torch.no_grad():
        for text in texts:
            inputs = processor(images=image, text=text, return_tensors="pt")
            result = model(
                pixel_values=inputs["pixel_values"],
                input_ids=inputs["input_ids"],
                attention_mask=inputs["attention_mask"],
                use_image_text_matching_head=False,
            )
            out.append(result.text_embeds[0])
    return torch.stack(out)


def test_loads_in_fp32_on_cpu_by_default(reward_opt):
    assert default_dtype("cpu") == torch.float32
    assert reward_opt.model_device.type == "cpu"
    assert reward_opt.model_dtype == torch.float32
    assert not any(p.requires_grad for p in reward_opt.parameters())
    reward_opt.train()
    assert not reward_opt.captioner.training and not reward_opt.text_encoder.training


def test_reward_is_the_cosine_of_independently_computed_text_embeddings(reward_opt, blip2_dirs, images):
    prompts = ["a red book and a yellow pen", "a cat on a sofa", "a red book and a yellow pen", "two dogs", "the moon"]
    result = reward_opt.score(images, prompts, max_new_tokens=8)
    assert isinstance(result, RewardResult)
    assert result.rewards.dtype == torch.float32 and result.rewards.shape == (5,)
    assert len(result.captions) == 5 and all(isinstance(c, str) and c for c in result.captions)

    embeds = itc_text_embeddings(blip2_dirs[1], result.captions + prompts)
    caption_embeds, prompt_embeds = embeds[:5], embeds[5:]
    expected = torch.nn.functional.cosine_similarity(caption_embeds, prompt_embeds, dim=-1)
    torch.testing.assert_close(result.rewards, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(reward_opt.embed_texts(prompts), prompt_embeds, atol=1e-5, rtol=1e-5)
    assert result.rewards.abs().max() <= 1.0 + 1e-6
    assert result.rewards.max() - result.rewards.min() > 1e-3  # the prompts matter: not a constant


def test_identical_caption_and_prompt_give_one(reward, images):
    captions = reward.score(images, "a photo", max_new_tokens=6).captions
    assert all(captions), "the tiny captioner should write non-empty captions"
    again = reward.score(images, captions, max_new_tokens=6)
    assert again.captions == captions
    torch.testing.assert_close(again.rewards, torch.ones(len(captions)), atol=1e-5, rtol=0)
    assert reward.similarity(["a red book"], "a red book").item() == pytest.approx(1.0, abs=1e-6)
    assert reward.similarity(["a red book"], "two dogs in the park").item() < 0.999


def test_batch_scoring_equals_one_by_one(reward, images):
    prompts = ["a red book", "a green tree", "a blue car", "a white plate", "the moon"]
    batched = reward.score(images, prompts, batch_size=3, max_new_tokens=8, num_beams=2)
    single = [
        reward.score(images[i : i + 1], prompts[i], batch_size=1, max_new_tokens=8, num_beams=2) for i in range(5)
    ]
    assert batched.captions == [s.captions[0] for s in single]
    torch.testing.assert_close(batched.rewards, torch.cat([s.rewards for s in single]), atol=1e-5, rtol=1e-5)


def test_each_distinct_prompt_is_embedded_once(reward_opt, images, monkeypatch):
    calls = []
    original = reward_opt.embed_texts

    def spy(texts, *args, **kwargs):
        calls.append(list(texts))
        return original(texts, *args, **kwargs)

    monkeypatch.setattr(reward_opt, "embed_texts", spy)
    prompts = ["a red book", "two dogs", "a red book", "a red book", "two dogs"]
    result = reward_opt.score(images, prompts, batch_size=2, max_new_tokens=4)
    embedded = [text for call in calls for text in call]
    assert embedded.count("a red book") == 1 and embedded.count("two dogs") == 1
    assert calls[0] == ["a red book", "two dogs"]
    assert calls[1] == result.captions  # captions: one call for the whole batch


def test_channels_first_images_and_the_callable_form_agree(reward_opt, images):
    hwc = reward_opt.score(images, "a red book", max_new_tokens=6)
    chw = reward_opt.score(images.permute(0, 3, 1, 2), "a red book", max_new_tokens=6)
    assert hwc.captions == chw.captions
    torch.testing.assert_close(hwc.rewards, chw.rewards)
    torch.testing.assert_close(reward_opt(images, "a red book", max_new_tokens=6), hwc.rewards)


def test_progress_callback_counts_every_image(reward_opt, images):
    steps = []
    reward_opt.score(images, "a red book", batch_size=2, max_new_tokens=3, on_step=steps.append)
    assert steps == [2, 2, 1]


def test_summary_lists_each_image(reward_opt, images):
    result = reward_opt.score(images[:2], ["a red book", "two dogs"], max_new_tokens=4)
    text = result.summary(["a red book", "two dogs"])
    assert text.splitlines()[0].startswith("Caption reward (BLIP-2): mean")
    assert f"{float(result.rewards[1]):+.4f}" in text and result.captions[1] in text and "two dogs" in text


# ---------------------------------------------------------------- differentiable form


def test_caption_log_prob_gradient_reaches_the_pixels(reward):
    generator = torch.Generator().manual_seed(1)
    pixels = torch.rand(2, 3, 48, 40, generator=generator).requires_grad_(True)
    log_prob = reward.caption_log_prob(pixels, ["a red book on a desk", "two dogs"])
    assert log_prob.shape == (2,) and log_prob.dtype == torch.float32
    assert torch.isfinite(log_prob).all() and (log_prob < 0).all()
    log_prob.sum().backward()
    assert pixels.grad is not None
    assert torch.isfinite(pixels.grad).all()
    assert pixels.grad.abs().sum() > 0
    assert pixels.grad[0].abs().sum() > 0 and pixels.grad[1].abs().sum() > 0


def test_caption_log_prob_matches_transformers_cross_entropy(reward):
    """Sum of log-probabilities == -(transformers' mean token loss) x tokens, for one text."""
    generator = torch.Generator().manual_seed(2)
    pixels = torch.rand(1, 3, 64, 64, generator=generator)
    text = "a red book on a wooden desk"
    ids = reward.tokenizer(text, add_special_tokens=False)["input_ids"] + [reward.eos_id]
    pixel_values = preprocess(pixels, reward.image_stats)
    prefix = torch.tensor([reward.prefix_ids])
    labels = torch.tensor([ids])
    with torch.no_grad():
        if reward.is_encoder_decoder:
            loss = reward.captioner(pixel_values=pixel_values, input_ids=prefix, labels=labels).loss
        else:
            input_ids = torch.cat([prefix, labels], dim=1)
            full_labels = torch.cat([torch.full_like(prefix, -100), labels], dim=1)
            loss = reward.captioner(pixel_values=pixel_values, input_ids=input_ids, labels=full_labels).loss
        ours = reward.caption_log_prob(pixels, text, include_eos=True)
    torch.testing.assert_close(ours, -loss.reshape(1) * len(ids), atol=1e-4, rtol=1e-4)


def test_caption_log_prob_batch_equals_one_by_one(reward):
    generator = torch.Generator().manual_seed(3)
    pixels = torch.rand(3, 3, 64, 64, generator=generator)
    texts = ["a red book", "two dogs playing with a ball in the park", "cat"]
    with torch.no_grad():
        batched = reward.caption_log_prob(pixels, texts)
        single = torch.cat([reward.caption_log_prob(pixels[i : i + 1], texts[i]) for i in range(3)])
    torch.testing.assert_close(batched, single, atol=1e-4, rtol=1e-4)


# ---------------------------------------------------------------- preprocessing


def test_torch_preprocessing_matches_the_processor(reward_opt):
    """Same statistics and size as transformers' BlipImageProcessor (PIL); only resampling details differ."""
    from PIL import Image

    generator = torch.Generator().manual_seed(4)
    stats = reward_opt.image_stats
    assert isinstance(stats, ImageStats) and stats.mode == "bicubic"
    ramp = torch.linspace(0, 1, 300)
    smooth = torch.stack(
        [ramp[:, None].expand(300, 200), ramp[None, :200].expand(300, 200), ramp[:, None] * ramp[None, :200]], -1
    )
    cases = [  # image, max and mean tolerated difference (normalized units; one 8-bit step is ~0.015)
        (torch.rand(stats.height, stats.width, 3, generator=generator), 1e-5, 1e-6),  # no resize: exact
        (smooth, 0.05, 0.01),
        (torch.rand(90, 70, 3, generator=generator), 0.35, 0.02),  # noise: PIL and torch bicubic kernels differ most
    ]
    for image, max_diff, mean_diff in cases:
        array = (image * 255).round().to(torch.uint8).numpy()
        processed = reward_opt.processor.image_processor(Image.fromarray(array), return_tensors="pt")["pixel_values"]
        expected = torch.as_tensor(np.asarray(processed))
        ours = preprocess(torch.from_numpy(array).float().div(255).permute(2, 0, 1)[None], stats)
        assert ours.shape == expected.shape == (1, 3, stats.height, stats.width)
        assert (ours - expected).abs().max() < max_diff
        assert (ours - expected).abs().mean() < mean_diff


def test_image_layouts():
    hwc = torch.rand(2, 10, 12, 3)
    assert to_bchw(hwc).shape == (2, 3, 10, 12)
    assert to_bchw(hwc.permute(0, 3, 1, 2)).shape == (2, 3, 10, 12)
    assert to_bchw(torch.rand(10, 12, 3)).shape == (1, 3, 10, 12)
    assert to_bchw(torch.rand(1, 10, 12, 4)).shape == (1, 3, 10, 12)  # RGBA: alpha dropped
    with pytest.raises(ValueError, match=r"\[B, H, W, 3\] or \[B, 3, H, W\]"):
        to_bchw(torch.rand(2, 10, 12, 5))
    with pytest.raises(ValueError, match="got shape"):
        to_bchw(torch.rand(12))


def test_loaded_model_folders_need_no_network(blip2_dirs, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    reward = CaptionReward.from_pretrained(*blip2_dirs, device="cpu")
    assert (
        reward.prefix_ids[: reward.captioner.config.num_query_tokens] == [reward.captioner.config.image_token_index] * 4
    )
