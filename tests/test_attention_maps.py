"""The attention-map recorder and the inside-mask share, against direct float64 computations."""

import math

import pytest
import torch
from test_attention_math import dense_spec_maps, left_mask

from realign_diff.attention_maps import AttentionRecorder, mass_inside, object_maps, resize_maps
from realign_diff.realign_patch import PatchObject, RealignReplace, reference_attention

HEADS, DIM = 2, 8


def softmax_maps(q, k, heads, positions, prompt_length):
    """softmax(QKᵀ/√d) in float64, per head; mean over heads of the chosen tokens summed over copies: [B, T, N]."""
    b, n, inner = q.shape
    d = inner // heads
    q, k = (t.double().reshape(b, -1, heads, d).transpose(1, 2) for t in (q, k))
    probs = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(d), dim=-1).mean(1)  # [B, N, K]
    copies = k.shape[2] // prompt_length
    return torch.stack([sum(probs[..., p + c * prompt_length] for c in range(copies)) for p in positions], dim=1)


def options(h, w, sigma=1.0, sample_sigmas=None, flags=(1, 0)):
    sigmas = sigma if isinstance(sigma, torch.Tensor) else torch.tensor([sigma])  # one tensor per model call
    return {
        "n_heads": HEADS,
        "cond_or_uncond": list(flags),
        "activations_shape": [2, HEADS * DIM, h, w],
        "sigmas": sigmas,
        "sample_sigmas": sample_sigmas,
    }


def qk(batch, n, keys, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, n, HEADS * DIM, generator=g) * 2, torch.randn(batch, keys, HEADS * DIM, generator=g)


@pytest.mark.parametrize("repeats", [1, 2])
def test_maps_are_the_softmax_probabilities_of_the_chosen_tokens(repeats):
    q, k = qk(2, 4 * 6, 10 * repeats)  # uncond then cond, one latent each
    recorder = AttentionRecorder([2, 3, 7], prompt_length=10)
    recorder.observe(q, k, options(4, 6))
    expected = softmax_maps(q[1:], k[1:], HEADS, [2, 3, 7], 10).reshape(1, 3, 4, 6)
    torch.testing.assert_close(recorder.maps().double(), expected, rtol=1e-5, atol=1e-6)
    assert recorder.maps().shape == (1, 3, 4, 6) and recorder.model_calls == 1


def test_layers_of_several_resolutions_average_after_resizing_to_the_finest():
    recorder = AttentionRecorder([1, 4], prompt_length=8)
    layers = [(8, 12, 0), (4, 6, 1), (4, 6, 2), (8, 12, 3)]
    expected_per_layer = []
    for h, w, seed in layers:
        q, k = qk(2, h * w, 8, seed)
        recorder.observe(q, k, options(h, w))
        expected_per_layer.append(resize_maps(softmax_maps(q[1:], k[1:], HEADS, [1, 4], 8).reshape(1, 2, h, w), 8, 12))
    torch.testing.assert_close(recorder.maps().double(), sum(expected_per_layer) / 4, rtol=1e-5, atol=1e-6)
    assert recorder.resolutions == [(8, 12), (4, 6)]
    coarse = (expected_per_layer[1] + expected_per_layer[2]) / 2  # resized back to 4x6 below
    assert recorder.maps_at((4, 6)).shape == (1, 2, 4, 6)
    torch.testing.assert_close(
        resize_maps(recorder.maps_at((4, 6)), 8, 12).double(), coarse.float().double(), rtol=1e-5, atol=1e-6
    )
    assert recorder.maps((32, 48)).shape == (1, 2, 32, 48)  # any size, e.g. the image's


def test_memory_does_not_grow_with_the_step_count():
    def run(steps):
        recorder = AttentionRecorder(range(5), prompt_length=8)
        sample_sigmas = torch.linspace(10, 0, steps + 1)
        for step in range(steps):
            sigmas = sample_sigmas[step : step + 1].clone()
            for h, w in ((8, 8), (4, 4)):
                recorder.observe(*qk(2, h * w, 8, step), options(h, w, sigmas, sample_sigmas))
        return recorder

    few, many = run(2), run(40)
    assert few.model_calls == 2 and many.model_calls == 40
    assert few.state_bytes == many.state_bytes == (64 + 16) * 5 * 4  # rows x tokens x positions, float32


def test_steps_outside_the_range_are_not_recorded():
    sample_sigmas = torch.linspace(10, 0, 11)
    recorder = AttentionRecorder([0], prompt_length=4, start_percent=0.25, end_percent=0.5)
    for step in range(10):
        recorder.observe(*qk(2, 4, 4, step), options(2, 2, float(sample_sigmas[step]), sample_sigmas))
    assert recorder.model_calls == 3  # progress 0.3, 0.4, 0.5
    assert recorder.calls == {(2, 2): 3}


def test_mass_inside_is_the_masks_area_for_even_attention_and_one_for_attention_on_the_object():
    mask = left_mask(0.25, 16, 16)
    even = torch.ones(1, 4, 4)
    on_object = torch.zeros(1, 4, 4)
    on_object[0, :, 0] = 1.0
    shares = mass_inside(torch.cat([even, on_object, torch.zeros(1, 4, 4)]), mask.expand(3, -1, -1))
    torch.testing.assert_close(shares[:2], torch.tensor([0.25, 1.0]))
    assert math.isnan(shares[2])  # no mass at all
    half_cell = left_mask(0.125, 16, 16)  # covers half of each first-column cell at 4x4
    torch.testing.assert_close(mass_inside(even[0], half_cell), torch.tensor(0.125))


def test_on_a_realign_patch_the_modulated_probabilities_are_recorded():
    h, w, keys = 4, 6, 12
    q, k = qk(2, h * w, keys, seed=5)
    objects = [(left_mask(0.5, h * 8, w * 8), torch.tensor([2, 3]), 2.0)]
    realign = RealignReplace([[PatchObject(*o) for o in objects]], keys, 1.5, lambda s: s * 0 + 999.0)
    extra = options(h, w)
    recorder = AttentionRecorder([2, 3, 5], prompt_length=keys)
    realign(q, k, k, extra)
    recorder.observe(q, k, extra, realign=realign)

    activated, score, object_token = dense_spec_maps(objects, keys)  # 4x6 layer, as in test_attention_math
    lam = 1.5 * 0.999
    d = DIM
    qd, kd = (t[1:].double().reshape(1, -1, HEADS, d).transpose(1, 2) for t in (q, k))
    logits = qd @ kd.transpose(-1, -2)
    probs = torch.softmax(logits / d**0.5, dim=-1)
    m_pos, m_neg = logits.amax(-1, keepdim=True) - logits, logits - logits.amin(-1, keepdim=True)
    r = activated.double()
    m = lam * (r * m_pos * (1 - probs) - (1 - r) * m_neg * (1 - probs)) * object_token.double()
    modulated = torch.softmax((logits + score.double() * m) / d**0.5, dim=-1).mean(1)[..., [2, 3, 5]]
    expected = modulated.transpose(1, 2).reshape(1, 3, h, w)
    torch.testing.assert_close(recorder.maps().double(), expected, rtol=1e-4, atol=1e-6)
    plain = AttentionRecorder([2, 3, 5], prompt_length=keys)
    plain.observe(q, k, extra)
    book = recorder.index_of([2, 3])
    mask = objects[0][0]
    assert mass_inside(object_maps(recorder.maps()[0], [book]), mask[None]) > mass_inside(
        object_maps(plain.maps()[0], [book]), mask[None]
    )
    assert torch.equal(realign(q, k, k, extra)[:1], reference_attention(q[:1], k[:1], k[:1], extra))  # uncond kept


def test_a_conditioning_of_another_length_is_skipped_and_reported():
    recorder = AttentionRecorder([1], prompt_length=7)
    recorder.observe(*qk(2, 4, 10), options(2, 2))
    assert not recorder.sums and any("not a multiple" in p for p in recorder.problems)
    with pytest.raises(ValueError, match="nothing was recorded"):
        recorder.maps()


def test_read_out_draws_one_heatmap_per_object_and_compares_with_a_baseline():
    from realign_diff.attention_report import MappedObject, read_out, summary

    recorder = AttentionRecorder([1, 2, 3], prompt_length=6)
    for seed, (h, w) in enumerate(((4, 6), (2, 3))):
        recorder.observe(*qk(2, h * w, 6, seed), options(h, w))
    left = left_mask(0.5, 16, 24)
    objects = [[MappedObject("book", [1, 2], ["red", "book"], 2.0, left), MappedObject("cat", [], [], 0.5, left)]]
    heatmaps, data = read_out(recorder, objects, torch.rand(1, 16, 24, 3), "realigned")
    assert heatmaps.shape == (1, 16, 24, 3) and 0 <= heatmaps.min() and heatmaps.max() <= 1
    book = data["images"][0][0]
    expected = mass_inside(object_maps(recorder.maps()[0], [torch.tensor([0, 1])]), left[None])
    assert book["inside"] == pytest.approx(float(expected), abs=1e-4)
    assert set(book["inside_by_resolution"]) == {"6x4", "3x2"}  # width x height
    assert data["images"][0][1]["note"] == "its words are not in the conditioning"
    coarse = {"label": "coarse", "images": [[{**book, "inside": book["inside"] - 0.1}]]}
    text = summary(data, coarse)
    assert "book (score 2): " in text and "coarse " in text and "(+10.0 points)" in text
    with pytest.raises(ValueError, match="2 images for 1 recorded latents"):
        read_out(recorder, objects, torch.rand(2, 16, 24, 3))
