"""CaptionReward.reward_terms: caption, reward and log-probabilities of a ReFL micro-step from one vision pass."""

from __future__ import annotations

import pytest
import torch

from realign_diff.reward import RewardTerms, preprocess
from realign_diff.reward.caption_reward import _SeededSampler
from realign_testkit.refl import ToyCaptionScorer

PROMPTS = ["a red book", "a green tree", "a blue car", "two dogs in the park", "the moon"]


def pixels_of(images):
    """The fixture's ComfyUI images as [B, 3, H, W] pixels requiring grad, as the trainer's decoded x0'."""
    return images.permute(0, 3, 1, 2).contiguous().requires_grad_(True)


def count_calls(module):
    calls = []
    return calls, module.register_forward_hook(lambda *_: calls.append(1))


def generated_ids(reward, pixels, **generate_kwargs):
    """BLIP-2's own generate (its own vision pass), each row cut after its first end-of-text token."""
    pixel_values = preprocess(pixels.detach(), reward.image_stats)
    prefix = torch.tensor([reward.prefix_ids] * pixels.shape[0])
    with torch.no_grad():
        out = reward.captioner.generate(
            pixel_values=pixel_values,
            input_ids=prefix,
            attention_mask=torch.ones_like(prefix),
            min_new_tokens=1,
            **generate_kwargs,
        )
    out = out[:, 1:] if reward.is_encoder_decoder else out[:, prefix.shape[1] :]
    return [row[: row.index(reward.eos_id) + 1] if reward.eos_id in row else row for row in out.tolist()]


def full_forward_log_prob(reward, image, ids):
    """log p(ids | image) from a full captioner forward (pixels in, logits out), the first step without the
    end-of-text token as ``min_new_tokens=1`` decodes it."""
    pixel_values = preprocess(image.detach()[None], reward.image_stats)
    prefix, target = torch.tensor([reward.prefix_ids]), torch.tensor([ids])
    with torch.no_grad():
        if reward.is_encoder_decoder:
            start = torch.tensor([[reward.captioner.config.text_config.decoder_start_token_id]])
            logits = reward.captioner(
                pixel_values=pixel_values, input_ids=prefix, decoder_input_ids=torch.cat([start, target[:, :-1]], dim=1)
            ).logits[0]
        else:
            # the prefix through the captioner, the ids after it through its cache: a sampled caption may hold the
            # <image> token, which the captioner's forward would take for an image slot
            out = reward.captioner(pixel_values=pixel_values, input_ids=prefix, use_cache=True)
            rest = reward.captioner.language_model(
                input_ids=target[:, :-1],
                use_cache=True,
                past_key_values=out.language_model_outputs.past_key_values,
                attention_mask=torch.ones(1, prefix.shape[1] + len(ids) - 1, dtype=torch.long),
            )
            logits = torch.cat([out.logits[:, -1:], rest.logits], dim=1)[0]
    logits[0, reward.eos_id] = float("-inf")
    return torch.log_softmax(logits, dim=-1).gather(-1, target[0, :, None]).sum()


@pytest.mark.parametrize("prompt_log_prob", [False, True])
@pytest.mark.parametrize("sampling", [False, True])
def test_one_vision_qformer_and_projection_pass_per_call(reward, images, prompt_log_prob, sampling):
    captioner = reward.captioner
    counted = {
        name: count_calls(getattr(captioner, name)) for name in ("vision_model", "qformer", "language_projection")
    }
    try:
        terms = reward.reward_terms(
            pixels_of(images[:3]),
            PROMPTS[:3],
            max_new_tokens=6,
            sampling=sampling,
            seeds=[0, 1, 2],
            prompt_log_prob=prompt_log_prob,
        )
    finally:
        for _, handle in counted.values():
            handle.remove()
    assert {name: len(calls) for name, (calls, _) in counted.items()} == {
        "vision_model": 1,
        "qformer": 1,
        "language_projection": 1,
    }
    assert isinstance(terms, RewardTerms) and len(terms.captions) == 3
    assert (terms.log_p_prompt is not None) == prompt_log_prob


@pytest.mark.parametrize("num_beams", [1, 2])
def test_greedy_terms_are_what_score_gives_and_the_log_prob_of_the_generated_ids(any_reward, images, num_beams):
    reward, pixels = any_reward, pixels_of(images)
    terms = reward.reward_terms(pixels, PROMPTS, max_new_tokens=10, num_beams=num_beams)
    scored = reward.score(images, PROMPTS, max_new_tokens=10, num_beams=num_beams)
    assert terms.captions == scored.captions
    torch.testing.assert_close(terms.rewards, scored.rewards, atol=1e-6, rtol=0)
    assert (
        terms.rewards.dtype == torch.float32 and terms.rewards.device.type == "cpu" and not terms.rewards.requires_grad
    )

    sequences = generated_ids(reward, pixels, max_new_tokens=10, num_beams=num_beams)
    assert [reward.tokenizer.decode(ids, skip_special_tokens=True).strip() for ids in sequences] == terms.captions
    expected = torch.stack([full_forward_log_prob(reward, image, ids) for image, ids in zip(pixels, sequences)])
    assert terms.log_p_caption.shape == (5,) and terms.log_p_caption.dtype == torch.float32
    torch.testing.assert_close(terms.log_p_caption.detach(), expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kind, seed", [("opt_untied", 2), ("t5", 3)])  # seeds whose images give both kinds
def test_the_end_of_text_token_is_counted_when_generated_and_not_after_a_cut(request, kind, seed):
    """A caption that stopped is its tokens + EOS; one cut at max_new_tokens is its tokens alone."""
    reward = request.getfixturevalue(f"reward_{kind}")
    pixels = torch.rand(6, 3, 64, 64, generator=torch.Generator().manual_seed(seed)).requires_grad_(True)
    sequences = generated_ids(reward, pixels, max_new_tokens=10)
    stopped = [i for i, ids in enumerate(sequences) if ids[-1] == reward.eos_id]
    cut = [i for i, ids in enumerate(sequences) if ids[-1] != reward.eos_id]
    assert stopped and cut and all(len(sequences[i]) == 10 for i in cut)
    terms = reward.reward_terms(pixels, "a red book", max_new_tokens=10)
    for i in stopped + cut:
        expected = full_forward_log_prob(reward, pixels[i], sequences[i])
        assert terms.log_p_caption[i].item() == pytest.approx(expected.item(), abs=1e-5)
    i = stopped[0]
    without_eos = full_forward_log_prob(reward, pixels[i], sequences[i][:-1])
    assert terms.log_p_caption[i].item() < without_eos.item() - 1e-4


def test_gradient_reaches_the_pixels_and_no_blip2_weight(reward, images):
    pixels = pixels_of(images[:3])
    terms = reward.reward_terms(pixels, PROMPTS[:3], max_new_tokens=6, prompt_log_prob=True)
    terms.log_p_caption.sum().backward(retain_graph=True)
    grad = pixels.grad.clone()
    assert torch.isfinite(grad).all() and all(g.abs().sum() > 0 for g in grad)
    terms.log_p_prompt.sum().backward()
    assert torch.isfinite(pixels.grad).all() and not torch.equal(pixels.grad, grad)
    assert all(p.grad is None and not p.requires_grad for p in reward.parameters())


def test_log_p_prompt_is_caption_log_prob_of_the_prompts(any_reward, images):
    pixels = pixels_of(images)
    terms = any_reward.reward_terms(pixels, PROMPTS, max_new_tokens=4, prompt_log_prob=True)
    torch.testing.assert_close(terms.log_p_prompt, any_reward.caption_log_prob(pixels, PROMPTS), atol=1e-5, rtol=1e-5)
    assert any_reward.reward_terms(pixels, PROMPTS, max_new_tokens=4).log_p_prompt is None


# ---------------------------------------------------------------- sampled captions


def test_sampled_captions_follow_the_seeds_alone(sampling_reward, images):
    reward, pixels = sampling_reward, pixels_of(images)
    seeds = [11, 12, 13, 14, 15]
    first = reward.reward_terms(pixels, PROMPTS, max_new_tokens=8, sampling=True, seeds=seeds)
    torch.manual_seed(999)  # the global RNG plays no part...
    state = torch.get_rng_state()
    again = reward.reward_terms(pixels, PROMPTS, max_new_tokens=8, sampling=True, seeds=seeds)
    assert torch.equal(torch.get_rng_state(), state)  # ...and is left as it was
    assert again.captions == first.captions
    torch.testing.assert_close(again.log_p_caption, first.log_p_caption)
    for i in (0, 3):  # image i alone: the caption it got in the batch
        alone = reward.reward_terms(pixels[i : i + 1], PROMPTS[i], max_new_tokens=8, sampling=True, seeds=[seeds[i]])
        assert alone.captions == [first.captions[i]]
        torch.testing.assert_close(alone.log_p_caption, first.log_p_caption[i : i + 1], atol=1e-5, rtol=1e-5)
    other = reward.reward_terms(pixels, PROMPTS, max_new_tokens=8, sampling=True, seeds=[s + 100 for s in seeds])
    assert other.captions != first.captions
    greedy = reward.reward_terms(pixels, PROMPTS, max_new_tokens=8)
    assert first.captions != greedy.captions


def test_a_sample_is_scored_on_its_own_ids(sampling_reward, images):
    """The ids BLIP-2's own generate draws for image i alone with seeds[i] (its own vision pass, the same sampler):
    the caption decodes from them, and log_p_caption is their log-probability (EOS included when drawn)."""
    from transformers import LogitsProcessorList

    reward, pixels = sampling_reward, pixels_of(images[:3])
    seeds = [5, 6, 7]
    terms = reward.reward_terms(pixels, PROMPTS[:3], max_new_tokens=8, sampling=True, seeds=seeds)
    for i, seed in enumerate(seeds):
        sampler = LogitsProcessorList([_SeededSampler([seed], torch.device("cpu"))])
        ids = generated_ids(reward, pixels[i : i + 1], max_new_tokens=8, do_sample=False, logits_processor=sampler)[0]
        assert reward.tokenizer.decode(ids, skip_special_tokens=True).strip() == terms.captions[i]
        expected = full_forward_log_prob(reward, pixels[i], ids)
        assert terms.log_p_caption[i].item() == pytest.approx(expected.item(), abs=1e-4)
    torch.testing.assert_close(terms.rewards, reward.similarity(terms.captions, PROMPTS[:3]))


def test_the_sampler_draws_from_the_softmax_and_each_row_from_its_own_seed():
    probs = torch.tensor([0.5, 0.3, 0.15, 0.05, 0.0])
    scores = probs.log().expand(2000, 5)
    sampler = _SeededSampler(range(2000), torch.device("cpu"))
    out = sampler(None, scores)
    assert torch.equal((out == 0).sum(-1), torch.ones(2000, dtype=torch.long)) and torch.isinf(out).sum() == 2000 * 4
    frequencies = torch.bincount(out.argmax(-1), minlength=5) / 2000
    torch.testing.assert_close(frequencies, probs, atol=0.035, rtol=0)  # > 3 standard deviations at n = 2000
    batch, alone = _SeededSampler(range(2000), torch.device("cpu")), _SeededSampler([7], torch.device("cpu"))
    for _ in range(5):  # step after step, row 7 of the batch draws what seed 7 draws alone
        assert batch(None, scores)[7].argmax() == alone(None, scores[:1])[0].argmax()


def test_sampling_needs_one_seed_per_image(reward_t5, images):
    with pytest.raises(ValueError, match="one seed per image"):
        reward_t5.reward_terms(pixels_of(images[:2]), "a red book", sampling=True, seeds=[1])
    terms = reward_t5.reward_terms(pixels_of(images[:2]), "a red book", sampling=True)  # no seeds: the global RNG's
    assert len(terms.captions) == 2


def test_empty_captions_add_nothing(reward_opt, images, monkeypatch):
    pixels = pixels_of(images[:2])
    real_decode = reward_opt._decode
    monkeypatch.setattr(reward_opt, "_decode", lambda *a: [[], real_decode(*a)[1]])
    terms = reward_opt.reward_terms(pixels, "a red book", max_new_tokens=4)
    assert terms.captions[0] == "" and terms.captions[1]
    assert terms.log_p_caption[0].item() == 0.0 and terms.log_p_caption[1].item() < 0
    torch.testing.assert_close(terms.rewards, reward_opt.similarity(terms.captions, "a red book"))
    monkeypatch.setattr(reward_opt, "_decode", lambda *a: [[], []])
    terms = reward_opt.reward_terms(pixels, "a red book", max_new_tokens=4)
    assert terms.captions == ["", ""] and torch.equal(terms.log_p_caption, torch.zeros(2))
    assert not terms.log_p_caption.requires_grad


# ---------------------------------------------------------------- the toy scorer the trainer tests use


def test_toy_scorer_terms_agree_with_its_score_and_log_prob():
    scorer = ToyCaptionScorer()
    pixels = torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(0)).requires_grad_(True)
    prompts = ["a red book", "two small dogs", "a blue cup on a table"]
    terms = scorer.reward_terms(pixels, prompts, sampling=False, seeds=[0, 1, 2], prompt_log_prob=True)
    scored = scorer.score(pixels.detach().permute(0, 2, 3, 1), prompts)
    assert terms.captions == scored.captions
    torch.testing.assert_close(terms.rewards, scored.rewards)
    torch.testing.assert_close(terms.log_p_caption, scorer.caption_log_prob(pixels, terms.captions))
    torch.testing.assert_close(terms.log_p_prompt, scorer.caption_log_prob(pixels, prompts))
    terms.log_p_caption.sum().backward()
    assert pixels.grad.abs().sum() > 0

    sampled = scorer.reward_terms(pixels, prompts, sampling=True, seeds=[3, 4, 5])
    assert sampled.captions == scorer.reward_terms(pixels, prompts, sampling=True, seeds=[3, 4, 5]).captions
    assert sampled.captions[1:] == scorer.reward_terms(pixels[1:], prompts[1:], sampling=True, seeds=[4, 5]).captions
    assert any(
        scorer.reward_terms(pixels, prompts, sampling=True, seeds=[s, s + 1, s + 2]).captions != sampled.captions
        for s in range(10, 20)
    )
    torch.testing.assert_close(sampled.log_p_caption, scorer.caption_log_prob(pixels, sampled.captions))
    assert sampled.log_p_prompt is None
    assert scorer.calls["score"] == 1 and scorer.calls["caption_log_prob"] == 3  # the test's own calls only
