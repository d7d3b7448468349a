"""The modulation math against a direct transcription of the paper's equations (docs/method.md)."""

import pytest
import torch

from realign_diff.attention import build_maps, realign_attention, resize_masks, timestep_strength
from realign_diff.realign_patch import PatchObject, RealignReplace, reference_attention

HEADS, DIM, KEYS, H, W = 2, 8, 12, 4, 6


def spec_attention(q, k, v, heads, activated, score, object_token, lam):
    """The paper's eqs. 8-10 written out densely in float64: A' = softmax((L + S⊙M)/√d) V."""
    b, n, inner = q.shape
    d = inner // heads
    q, k, v = (t.double().reshape(b, -1, heads, d).transpose(1, 2) for t in (q, k, v))
    logits = q @ k.transpose(-1, -2)
    probs = torch.softmax(logits / d**0.5, dim=-1)
    m_pos = logits.max(dim=-1, keepdim=True).values - logits
    m_neg = logits - logits.min(dim=-1, keepdim=True).values
    r = activated.double()[:, None]  # [B, 1, N, K]
    m = lam * (r * m_pos * (1 - probs) - (1 - r) * m_neg * (1 - probs))
    m = m * object_token.double()[:, None, None, :]
    out = torch.softmax((logits + score.double()[:, None] * m) / d**0.5, dim=-1) @ v
    return out.transpose(1, 2).reshape(b, n, inner)


def random_qkv(batch=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(batch, H * W, HEADS * DIM, generator=g)
    k = torch.randn(batch, KEYS, HEADS * DIM, generator=g)
    v = torch.randn(batch, KEYS, HEADS * DIM, generator=g)
    return q, k, v


def left_mask(width_fraction=0.5, height=H * 8, width=W * 8):
    mask = torch.zeros(height, width)
    mask[:, : int(width * width_fraction)] = 1
    return mask


def dense_spec_maps(objects, n_keys=KEYS):
    """R, S and the object-token indicator for one image, from (mask, tokens, score) at the layer size."""
    activated = torch.zeros(H * W, n_keys, dtype=torch.bool)
    score = torch.ones(H * W, n_keys)
    object_token = torch.zeros(n_keys, dtype=torch.bool)
    for mask, tokens, s in objects:
        inside = resize_masks(mask[None], H, W).reshape(-1)
        for j in tokens.tolist():
            object_token[j] = True
            for p in range(H * W):
                if inside[p]:
                    score[p, j] = s if not activated[p, j] else max(score[p, j].item(), s)
                    activated[p, j] = True
    return activated, score, object_token


def test_matches_the_spec_equations_on_random_qkv():
    q, k, v = random_qkv()
    objects = [(left_mask(0.5), torch.tensor([2, 3]), 2.0), (left_mask(0.34).flip(-1), torch.tensor([5]), 0.5)]
    maps = build_maps([objects], H, W, KEYS)
    ours = realign_attention(q, k, v, HEADS, maps, strength=0.7)
    activated, score, object_token = dense_spec_maps(objects)
    expected = spec_attention(
        q,
        k,
        v,
        HEADS,
        activated[None].expand(2, -1, -1),
        score[None].expand(2, -1, -1),
        object_token[None].expand(2, -1),
        0.7,
    )
    torch.testing.assert_close(ours.double(), expected, rtol=1e-5, atol=1e-5)


def test_overlapping_objects_sharing_a_token_take_the_larger_score():
    q, k, v = random_qkv(batch=1, seed=3)
    objects = [(left_mask(0.34), torch.tensor([4, 6]), 2.0), (left_mask(0.67), torch.tensor([4]), 0.5)]
    ours = realign_attention(q, k, v, HEADS, build_maps([objects], H, W, KEYS), strength=1.0)
    activated, score, object_token = dense_spec_maps(objects)
    expected = spec_attention(q, k, v, HEADS, activated[None], score[None], object_token[None], 1.0)
    torch.testing.assert_close(ours.double(), expected, rtol=1e-5, atol=1e-5)


def mass(q, k, maps, strength, token):
    """A'[p, token] of the first image, averaged over heads: read through v = one-hot on that token."""
    b, n, inner = q.shape
    d = inner // HEADS
    v = torch.zeros(b, KEYS, inner)
    v[:, token, ::d] = 1.0  # channel 0 of every head carries the token's probability
    return realign_attention(q, k, v, HEADS, maps, strength)[0, :, ::d].mean(-1)


@pytest.mark.parametrize("score", [0.5, 2.0])
def test_object_token_mass_rises_inside_its_mask_and_falls_outside(score):
    q, k, _ = random_qkv(batch=1, seed=1)
    mask = left_mask(0.5)
    inside = resize_masks(mask[None], H, W).reshape(-1)
    maps = build_maps([[(mask, torch.tensor([3]), score)]], H, W, KEYS)
    before = mass(q, k, maps, 0.0, 3)
    after = mass(q, k, maps, 1.0, 3)
    assert (after[inside] > before[inside]).all()
    assert (after[~inside] < before[~inside]).all()


def test_score_two_pushes_harder_than_half():
    q, k, _ = random_qkv(batch=1, seed=2)
    mask = left_mask(0.5)
    inside = resize_masks(mask[None], H, W).reshape(-1)
    strong = mass(q, k, build_maps([[(mask, torch.tensor([3]), 2.0)]], H, W, KEYS), 1.0, 3)
    weak = mass(q, k, build_maps([[(mask, torch.tensor([3]), 0.5)]], H, W, KEYS), 1.0, 3)
    assert (strong[inside] > weak[inside]).all()


def test_untouched_tokens_keep_their_logits_up_to_renormalisation():
    q, k, _ = random_qkv(batch=1, seed=4)
    maps = build_maps([[(left_mask(0.5), torch.tensor([3, 4]), 2.0)]], H, W, KEYS)
    b, n, inner = q.shape
    d = inner // HEADS
    v = torch.zeros(b, KEYS, inner)
    v[:, 0, ::d] = 1.0  # per head, channel 0 reads A'[., 0] and channel 1 reads A'[., 7]
    v[:, 7, 1::d] = 1.0
    plain = realign_attention(q, k, v, HEADS, build_maps([[]], H, W, KEYS), 0.0).reshape(b, n, HEADS, d)
    moved = realign_attention(q, k, v, HEADS, maps, 1.0).reshape(b, n, HEADS, d)
    # the ratio of two untouched tokens is exp(ΔL/√d) per head: the modulation leaves it alone
    torch.testing.assert_close(moved[..., 0] / moved[..., 1], plain[..., 0] / plain[..., 1], rtol=1e-4, atol=1e-6)
    assert not torch.allclose(moved[..., 0], plain[..., 0])  # while each is renormalised


def test_strength_zero_in_the_math_is_plain_softmax_attention():
    q, k, v = random_qkv()
    maps = build_maps([[(left_mask(), torch.tensor([1]), 2.0)]], H, W, KEYS)
    torch.testing.assert_close(
        realign_attention(q, k, v, HEADS, maps, 0.0),
        reference_attention(q, k, v, {"n_heads": HEADS}),
        rtol=1e-5,
        atol=1e-5,
    )


def test_half_precision_inputs_come_back_in_half_precision_and_agree():
    q, k, v = random_qkv()
    maps = build_maps([[(left_mask(), torch.tensor([1, 2]), 2.0)]], H, W, KEYS)
    full = realign_attention(q, k, v, HEADS, maps, 1.0)
    for dtype in (torch.float16, torch.bfloat16):
        half = realign_attention(q.to(dtype), k.to(dtype), v.to(dtype), HEADS, maps, 1.0)
        assert half.dtype == dtype
        torch.testing.assert_close(half.float(), full, rtol=0.05, atol=0.05)


def test_maps_follow_non_square_layers():
    mask = torch.zeros(32, 64)
    mask[:, :16] = 1  # left quarter of a wide image
    maps = build_maps([[(mask, torch.tensor([0]), 2.0)]], 4, 8, KEYS)
    activated = maps.activated[0, :, 0].reshape(4, 8)
    assert activated[:, :2].all() and not activated[:, 2:].any()


def test_schedules():
    assert timestep_strength(2.0, 500, "paper") == pytest.approx(1.0)
    assert timestep_strength(2.0, 500, "densediffusion") == pytest.approx(2.0 * 0.5**5)
    assert timestep_strength(1.0, 999, "paper") == pytest.approx(0.999)
    with pytest.raises(ValueError, match="unknown schedule"):
        timestep_strength(1.0, 10, "cosine")


# --- the replace function, given q, k, v and extra_options -------------------------------------


def extra(cond_or_uncond=(1, 0), sigma=10.0, sample_sigmas=(14.6, 10.0, 5.0, 1.0, 0.0), batch_per_chunk=1):
    return {
        "n_heads": HEADS,
        "cond_or_uncond": list(cond_or_uncond),
        "sigmas": torch.full((len(cond_or_uncond) * batch_per_chunk,), sigma),
        "sample_sigmas": torch.tensor(sample_sigmas),
        "activations_shape": [len(cond_or_uncond) * batch_per_chunk, 320, H, W],
        "block": ("input", 1),
        "block_index": 0,
    }


def make_replace(strength=1.0, objects=None, prompt_length=KEYS, **kwargs):
    objects = objects if objects is not None else [[PatchObject(left_mask(), torch.tensor([2, 3]), 2.0)]]
    return RealignReplace(objects, prompt_length, strength, sigma_to_timestep=lambda s: s * 50, **kwargs)


def test_replace_with_strength_zero_is_exactly_the_fallback():
    q, k, v = random_qkv()
    replace = make_replace(strength=0.0)
    assert torch.equal(replace(q, k, v, extra()), reference_attention(q, k, v, extra()))


def test_replace_without_objects_is_exactly_the_fallback():
    q, k, v = random_qkv()
    replace = make_replace(objects=[[PatchObject(left_mask(), torch.tensor([], dtype=torch.long), 2.0)]])
    assert torch.equal(replace(q, k, v, extra()), reference_attention(q, k, v, extra()))


@pytest.mark.parametrize("order", [(1, 0), (0, 1)])
def test_replace_modulates_only_positive_chunks(order):
    q, k, v = random_qkv()
    replace = make_replace()
    out = replace(q, k, v, extra(cond_or_uncond=order))
    plain = reference_attention(q, k, v, extra())
    positive, negative = order.index(0), order.index(1)
    assert torch.equal(out[negative], plain[negative])
    assert not torch.allclose(out[positive], plain[positive])
    t = 10.0 * 50  # sigma_to_timestep in make_replace
    maps = build_maps([[(left_mask(), torch.tensor([2, 3]), 2.0)]], H, W, KEYS)
    expected = realign_attention(
        q[positive : positive + 1],
        k[positive : positive + 1],
        v[positive : positive + 1],
        HEADS,
        maps,
        timestep_strength(1.0, t),
    )
    torch.testing.assert_close(out[positive : positive + 1], expected)


def test_replace_stops_at_the_end_fraction():
    q, k, v = random_qkv()
    replace = make_replace(end_percent=0.3)
    plain = reference_attention(q, k, v, extra())
    assert not torch.equal(replace(q, k, v, extra(sigma=14.6)), plain)  # step 0 of 4
    assert torch.equal(replace(q, k, v, extra(sigma=5.0)), plain)  # step 2 of 4: past 30%


def test_replace_gives_each_image_of_a_batch_its_own_guidance():
    q, k, v = random_qkv(batch=4)
    first = [PatchObject(left_mask(), torch.tensor([2]), 2.0)]
    second = [PatchObject(left_mask().flip(-1), torch.tensor([5]), 2.0)]
    replace = make_replace(objects=[first, second])
    out = replace(q, k, v, extra(cond_or_uncond=(1, 0), batch_per_chunk=2))
    strength = timestep_strength(1.0, 500)
    for row, objects in ((2, first), (3, second)):
        maps = build_maps([[(o.mask, o.positions, o.score) for o in objects]], H, W, KEYS)
        expected = realign_attention(q[row : row + 1], k[row : row + 1], v[row : row + 1], HEADS, maps, strength)
        torch.testing.assert_close(out[row : row + 1], expected)
    assert torch.equal(out[:2], reference_attention(q[:2], k[:2], v[:2], extra()))


def test_a_repeated_conditioning_gives_what_one_copy_gives():
    # ComfyUI repeats a shorter conditioning to the longer one's length: [k; k] must not change the push
    q, k, v = random_qkv()
    objects = [[PatchObject(left_mask(), torch.tensor([1, 4]), 2.0)]]
    single = make_replace(objects=objects)(q, k, v, extra())
    doubled = make_replace(objects=objects)(q, torch.cat([k, k], 1), torch.cat([v, v], 1), extra())
    torch.testing.assert_close(doubled, single, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(single[1], reference_attention(q, k, v, extra())[1])


def test_replace_skips_keys_of_another_length_with_a_warning(caplog):
    q, k, v = random_qkv()
    replace = make_replace(prompt_length=KEYS - 1)
    assert torch.equal(replace(q, k, v, extra()), reference_attention(q, k, v, extra()))
    assert "not a multiple" in caplog.text


def test_replace_wraps_a_patch_another_pack_installed():
    q, k, v = random_qkv()
    seen = []

    def other_pack(q_, k_, v_, options):  # like an image-prompt pack: plain attention plus its own term
        seen.append(q_.shape[0])
        return reference_attention(q_, k_, v_, options) + 100.0

    replace = make_replace()
    out = replace.for_block(other_pack)(q, k, v, extra(cond_or_uncond=(1, 0)))
    assert seen == [2]  # it still sees the whole batch
    assert torch.equal(out[0], reference_attention(q, k, v, extra())[0] + 100.0)
    ours = make_replace()(q, k, v, extra(cond_or_uncond=(1, 0)))
    torch.testing.assert_close(out[1], ours[1] + 100.0)  # its term survives on the positive rows too
    off = make_replace(strength=0.0).for_block(other_pack)
    assert torch.equal(off(q, k, v, extra()), reference_attention(q, k, v, extra()) + 100.0)
    assert replace.called_blocks == {("input", 1, 0)}


def test_only_our_conditions_chunks_are_modulated_when_their_uuids_are_known():
    q, k, v = random_qkv(batch=3)
    options = extra(cond_or_uncond=(0, 1, 0)) | {"uuids": ["other-positive", "negative", "ours"]}
    replace = make_replace()
    replace.positive_uuids = {"ours"}
    out = replace(q, k, v, options)
    plain = reference_attention(q, k, v, options)
    assert torch.equal(out[:2], plain[:2])  # a positive that is not ours (e.g. SAG's, DualCFG's) is left alone
    assert not torch.allclose(out[2], plain[2])


def test_mask_rule_keeps_small_objects_and_ignores_faint_paint():
    small = torch.zeros(64, 64)
    small[20:24, 20:24] = 1  # a 4x4 px object inside one 16x16 cell
    assert resize_masks(small[None], 4, 4).sum() == 1  # still present at a 16x coarser layer
    faint = torch.full((64, 64), 0.3)  # a feathered brush's halo
    assert not resize_masks(faint[None], 8, 8).any()


def test_a_guidance_batch_that_does_not_match_the_latents_is_reported(caplog):
    q, k, v = random_qkv(batch=6)
    objects = [[PatchObject(left_mask(), torch.tensor([2]), 2.0)] for _ in range(2)]
    make_replace(objects=objects)(q, k, v, extra(batch_per_chunk=3))
    assert "2 guidance images for a batch of 3 latents" in caplog.text


@pytest.mark.parametrize("latent", [(152, 104), (104, 152), (125, 125), (13, 17)])
def test_layer_sizes_of_any_multiple_of_eight_are_found_from_the_latent_alone(latent):
    """832x1216, 1216x832, 1000x1000...: each UNet level halves its input, rounding up (stride-2 convolutions)."""
    from realign_diff.realign_patch import layer_size

    height, width = latent
    conv = torch.nn.Conv2d(1, 1, 3, stride=2, padding=1)
    x = torch.zeros(1, 1, height, width)
    for _ in range(4):
        h, w = x.shape[-2:]
        options = {"original_shape": [2, 4, height, width]}  # no activations_shape: the size comes from the latent
        assert layer_size(options, h * w) == (h, w)
        x = conv(x)
