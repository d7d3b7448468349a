"""RAM / RAM++ tagger: loading the official checkpoint layout, the official numbers, tagging, thresholds, files."""

from __future__ import annotations

import logging
import math

import pytest
import torch

from realign_diff.dense_captioner.ram import (
    DEFAULT_THRESHOLD,
    REWEIGHT_SCALE_INIT,
    TAG_LIST_URL,
    THRESHOLDS_URL,
    RamConfig,
    RamTagger,
    Tag,
    config_from_state_dict,
    ignored_reason,
    load_ram,
)
from realign_testkit.ram import TINY_TAGS, TINY_THRESHOLD, synthetic_image, write_tiny_ram

VARIANTS = ("ram", "ram_plus")

# Logits of the official recognize-anything code (commit 7cb804a, ram/models/ram.py and ram_plus.py,
# ``generate_tag``; its JSON configs set to the testkit's tiny architecture) on ``write_tiny_ram(folder, variant)``
# and the preprocessed ``synthetic_image(batch=2)``.
OFFICIAL_LOGITS = {
    "ram": [
        [
            1.447641,
            -0.733379,
            -3.040119,
            -0.103524,
            0.092044,
            1.564091,
            0.391937,
            -0.043104,
            0.806159,
            -0.081109,
            -0.581294,
            -1.849637,
        ],
        [
            1.857800,
            -0.059980,
            -2.372975,
            0.866147,
            1.161905,
            1.923410,
            0.575464,
            1.145327,
            1.323633,
            0.540686,
            -0.248861,
            -0.917860,
        ],
    ],
    "ram_plus": [
        [
            -2.919589,
            -0.148434,
            0.008270,
            -1.832425,
            -0.852413,
            -1.534525,
            -1.379982,
            -0.809597,
            0.454562,
            0.849163,
            -1.269879,
            -1.353499,
        ],
        [
            -2.258160,
            1.032632,
            0.874821,
            -0.908559,
            -0.246424,
            -0.377619,
            -0.234635,
            0.070491,
            0.862483,
            1.083161,
            -0.263585,
            -0.466713,
        ],
    ],
}
OFFICIAL_TAGS = {  # the same run's tag strings (tags in tag-list order, thresholds 0.65)
    "ram": ["book | dog | car", "book | banana | cat | dog | sky | car"],
    "ram_plus": ["person", "pen | desk | car | person"],
}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """{variant: checkpoint path}, both in one folder with the tag list and thresholds files."""
    folder = tmp_path_factory.mktemp("ram")
    return {variant: write_tiny_ram(folder, variant) for variant in VARIANTS}


@pytest.fixture(scope="module")
def taggers(tiny):
    return {variant: load_ram(path, strict=True) for variant, path in tiny.items()}


# ---- loading ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("variant", VARIANTS)
def test_official_layout_loads_with_every_key_used_or_knowingly_ignored(tiny, taggers, variant):
    tagger = taggers[variant]
    report = tagger.load_report
    state = torch.load(tiny[variant], map_location="cpu", weights_only=True)["model"]
    assert tagger.variant == variant
    assert report.unexpected == [] and report.defaulted == []
    assert report.loaded == len(tagger.state_dict())
    assert report.loaded + sum(report.ignored.values()) == len(state)
    expected_reasons = {
        "Swin derived buffer, recomputed",
        "Swin derived buffer (shifted-window mask), recomputed",
        "tagging head word embeddings, deleted by the official model",
        "tagging head self-attention, deleted by the official model",
    }
    if variant == "ram":
        expected_reasons |= {
            "RAM: Tag2Text image-tag interaction encoder (captioning only)",
            "RAM: image-tag-text caption decoder (captioning only)",
        }
    assert set(report.ignored) == expected_reasons
    for key, value in tagger.state_dict().items():
        assert torch.equal(value, state[key]), key


@pytest.mark.parametrize("variant", VARIANTS)
def test_logits_and_tags_equal_the_official_implementation(taggers, variant):
    tagger = taggers[variant]
    images = synthetic_image(batch=2)
    with torch.inference_mode():
        logits = tagger(tagger.preprocess(images))
    torch.testing.assert_close(logits, torch.tensor(OFFICIAL_LOGITS[variant]), atol=1e-4, rtol=0)
    tags = tagger.tag(images)
    as_official = [" | ".join(sorted((t.name for t in row), key=TINY_TAGS.index)) for row in tags]
    assert as_official == OFFICIAL_TAGS[variant]


def test_legacy_vision_multi_names_and_absent_reweight_scale(tmp_path, taggers):
    path = write_tiny_ram(tmp_path, "ram_plus", legacy_names=True, reweight_scale=False)
    tagger = load_ram(path, strict=True)
    assert tagger.load_report.defaulted == ["reweight_scale"]
    assert tagger.reweight_scale.item() == pytest.approx(REWEIGHT_SCALE_INIT)
    reference = taggers["ram_plus"].state_dict()
    for key, value in tagger.state_dict().items():
        if key != "reweight_scale":
            assert torch.equal(value, reference[key]), key


def test_unexpected_key_is_listed_and_strict_refuses_it(tmp_path, caplog):
    path = write_tiny_ram(tmp_path, "ram", extra_keys={"clip_distill_head.weight": torch.zeros(3, 3)})
    with pytest.raises(ValueError, match="clip_distill_head.weight"):
        load_ram(path, strict=True)
    with caplog.at_level(logging.WARNING, logger="RealignDiff"):
        tagger = load_ram(path)
    assert tagger.load_report.unexpected == ["clip_distill_head.weight"]
    assert "clip_distill_head.weight" in caplog.text


def test_missing_weight_is_an_error_naming_it(tmp_path):
    key = "tagging_head.encoder.layer.1.output.dense.weight"
    path = write_tiny_ram(tmp_path, "ram", drop_keys=[key])
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        load_ram(path)


def test_variant_is_detected_and_checked(tiny):
    assert load_ram(tiny["ram_plus"], variant="ram++").variant == "ram_plus"
    with pytest.raises(ValueError, match="expected a RAM\\+\\+ checkpoint, but this one is RAM"):
        load_ram(tiny["ram"], variant="ram_plus")
    with pytest.raises(ValueError, match="expected a RAM checkpoint, but this one is RAM\\+\\+"):
        load_ram(tiny["ram_plus"], variant="ram")


def test_ram_plus_without_training_keys_or_reweight_scale_is_still_detected(tmp_path):
    path = write_tiny_ram(tmp_path, "ram_plus", training_keys=False, reweight_scale=False)
    assert load_ram(path).variant == "ram_plus"


def test_tag2text_and_foreign_checkpoints_are_refused(tmp_path):
    path = write_tiny_ram(
        tmp_path, "ram", drop_keys=["label_embed"], extra_keys={"label_embed.weight": torch.zeros(12, 32)}
    )
    with pytest.raises(ValueError, match="Tag2Text"):
        load_ram(path)
    path = write_tiny_ram(tmp_path, "ram", file_name="broken", drop_keys=["visual_encoder.patch_embed.proj.weight"])
    with pytest.raises(ValueError, match="not a RAM"):
        load_ram(path)


def test_tag_list_of_another_size_is_refused(tmp_path):
    path = write_tiny_ram(tmp_path, "ram")
    (tmp_path / "ram_tag_list.txt").write_text("\n".join(TINY_TAGS[:5]))
    (tmp_path / "ram_tag_list_threshold.txt").write_text("0.5\n" * 5)
    with pytest.raises(ValueError, match="5 tags but this RAM checkpoint has 12 label embeddings"):
        load_ram(path)


def test_safetensors_gives_the_same_scores(tmp_path, taggers):
    path = write_tiny_ram(tmp_path, "ram_plus", fmt="safetensors")
    tagger = load_ram(path, strict=True)
    images = synthetic_image()
    torch.testing.assert_close(tagger.scores(images), taggers["ram_plus"].scores(images))


def test_reduced_precision_and_device_arguments(tiny, taggers):
    tagger = load_ram(tiny["ram"], dtype=torch.bfloat16, device="cpu")
    assert tagger.image_proj.weight.dtype == torch.bfloat16 and tagger.image_proj.weight.device.type == "cpu"
    images = synthetic_image()
    torch.testing.assert_close(tagger.scores(images), taggers["ram"].scores(images), atol=0.05, rtol=0)


# ---- tag and threshold files --------------------------------------------------------------------------
def test_named_thresholds_file_missing_is_an_error_saying_what_and_where(tiny, tmp_path):
    missing = tmp_path / "ram_tag_list_threshold.txt"
    with pytest.raises(FileNotFoundError) as error:
        load_ram(tiny["ram"], thresholds_path=missing)
    message = str(error.value)
    assert str(missing) in message and "models/ram" in message and THRESHOLDS_URL in message


def test_missing_tag_list_is_an_error_saying_what_and_where(tmp_path):
    path = write_tiny_ram(tmp_path, "ram", tag_files=False)
    with pytest.raises(FileNotFoundError) as error:
        load_ram(path)
    message = str(error.value)
    assert "ram_tag_list.txt" in message and "models/ram" in message and TAG_LIST_URL in message


def test_without_thresholds_file_every_tag_uses_the_official_default(tmp_path, caplog):
    path = write_tiny_ram(tmp_path, "ram")
    (tmp_path / "ram_tag_list_threshold.txt").unlink()
    with caplog.at_level(logging.WARNING, logger="RealignDiff"):
        tagger = load_ram(path)
    assert DEFAULT_THRESHOLD == 0.68
    assert torch.equal(tagger.class_threshold, torch.full((len(TINY_TAGS),), 0.68))
    assert "ram_tag_list_threshold.txt" in caplog.text


def test_thresholds_file_is_read_per_tag_and_validated(tmp_path):
    values = [0.1 * (i % 10) for i in range(len(TINY_TAGS))]
    path = write_tiny_ram(tmp_path, "ram", thresholds=values)
    torch.testing.assert_close(load_ram(path).class_threshold, torch.tensor(values))
    (tmp_path / "ram_tag_list_threshold.txt").write_text("0.5\n" * 3)
    with pytest.raises(ValueError, match="3 values for 12 tags"):
        load_ram(path)
    (tmp_path / "ram_tag_list_threshold.txt").write_text("0.5\nhigh\n")
    with pytest.raises(ValueError, match="line 2"):
        load_ram(path)


def test_explicit_file_paths_are_used(tiny, tmp_path):
    tags = tmp_path / "my_tags.txt"
    tags.write_text("\n".join(t.upper() for t in TINY_TAGS))
    thresholds = tmp_path / "my_thresholds.txt"
    thresholds.write_text("0.25\n" * len(TINY_TAGS))
    tagger = load_ram(tiny["ram"], tag_list_path=tags, thresholds_path=thresholds)
    assert tagger.tag_names[0] == "BOOK"
    assert torch.equal(tagger.class_threshold, torch.full((len(TINY_TAGS),), 0.25))


# ---- tagging ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("variant", VARIANTS)
def test_tags_are_from_the_list_with_scores_above_their_thresholds_best_first(taggers, variant):
    tagger = taggers[variant]
    images = synthetic_image(batch=2)
    scores = tagger.scores(images)
    assert scores.shape == (2, len(TINY_TAGS)) and scores.min() >= 0 and scores.max() <= 1
    results = tagger.tag(images)
    assert len(results) == 2
    for row, image_scores in zip(results, scores):
        assert all(isinstance(t, Tag) and t.name in TINY_TAGS and 0 <= t.score <= 1 for t in row)
        assert [t.score for t in row] == sorted((t.score for t in row), reverse=True)
        expected = {TINY_TAGS[i] for i in range(len(TINY_TAGS)) if image_scores[i] > TINY_THRESHOLD}
        assert {t.name for t in row} == expected
        for tag in row:
            assert tag.score == pytest.approx(image_scores[TINY_TAGS.index(tag.name)].item())
    assert results[0] and results[1]  # the synthetic images do get tags with the testkit's weights


def test_threshold_overrides_top_k_and_exclude(taggers):
    tagger = taggers["ram"]
    image = synthetic_image()
    base = tagger.tag(image)[0]
    names = [t.name for t in base]
    assert len(names) >= 2
    best, absent = names[0], next(t for t in TINY_TAGS if t not in names)

    raised = [t.name for t in tagger.tag(image, threshold_overrides={best: 0.9999})[0]]
    assert raised == names[1:]
    lowered = [t.name for t in tagger.tag(image, threshold_overrides={absent.upper(): 0.0})[0]]
    assert absent in lowered and set(lowered) == set(names) | {absent}

    everything = tagger.tag(image, threshold=0.0)[0]
    assert len(everything) == len(TINY_TAGS)
    assert [t.name for t in tagger.tag(image, threshold=0.0, top_k=3)[0]] == [t.name for t in everything[:3]]
    assert len(tagger.tag(image, top_k=1)[0]) == 1
    assert tagger.tag(image, top_k=0)[0] == base  # 0: no cap
    assert [t.name for t in tagger.tag(image, exclude=[best])[0]] == names[1:]
    only_override = tagger.tag(image, threshold=1.0, threshold_overrides={absent: 0.0})[0]
    assert [t.name for t in only_override] == [absent]

    with pytest.raises(ValueError, match="'unicorn' not in the RAM tag list"):
        tagger.tag(image, threshold_overrides={"unicorn": 0.5})
    with pytest.raises(ValueError, match="exclude"):
        tagger.tag(image, exclude=["pen", "unicorn"])


def test_testkit_present_tags_are_always_and_only_returned(tmp_path):
    tagger = load_ram(write_tiny_ram(tmp_path, "ram_plus", present=("book", "pen")))
    for tags in tagger.tag(synthetic_image(batch=3)):
        assert sorted(t.name for t in tags) == ["book", "pen"]


def test_preprocess_resizes_and_normalizes_like_the_official_transform(taggers):
    tagger = taggers["ram"]
    flat = torch.full((2, 100, 150, 3), 0.5)
    pixels = tagger.preprocess(flat)
    assert pixels.shape == (2, 3, 224, 224)
    mean, std = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
    torch.testing.assert_close(pixels[0, :, 7, 9], (0.5 - mean) / std)
    same = torch.rand(1, 224, 224, 4)  # an alpha channel is dropped, an image at the input size is not resampled
    torch.testing.assert_close(tagger.preprocess(same)[0], ((same[0, ..., :3] - mean) / std).permute(2, 0, 1))


# ---- the real architecture, on the meta device --------------------------------------------------------
def official_state_shapes(
    variant,
    embed=192,
    depths=(2, 2, 18, 2),
    heads=(6, 12, 24, 48),
    window=12,
    image=384,
    classes=4585,
    descriptions=51,
    width=512,
    hidden=768,
    inter=3072,
    layers=2,
):
    """(parameters, buffers): names and shapes of the official RAM / RAM++ state dict's tagging path, written from
    the official definitions (recognize-anything 7cb804a): swin_transformer.py (PatchEmbed with norm, BasicLayer of
    SwinTransformerBlock: norm1, WindowAttention with relative_position_bias_table/qkv/proj, norm2, Mlp fc1/fc2;
    PatchMerging but after the last stage; final norm; the block's window shrinks to the resolution, and only odd
    blocks of stages wider than the window shift and keep an attn_mask); ram.py / ram_plus.py (image_proj to 512,
    label_embed, wordvec_proj 512 -> 768, fc, RAM++ reweight_scale); bert.py's BertModel from q2l_config.json with
    ``embeddings`` and every layer's ``attention`` deleted. Default arguments: Swin-L at 384 (config_swinL_384.json)."""
    params, buffers = {}, {}

    def linear(name, out, inp, bias=True):
        params[name + ".weight"] = (out, inp)
        if bias:
            params[name + ".bias"] = (out,)

    def norm(name, dim):
        params[name + ".weight"] = params[name + ".bias"] = (dim,)

    params["visual_encoder.patch_embed.proj.weight"], params["visual_encoder.patch_embed.proj.bias"] = (
        (embed, 3, 4, 4),
        (embed,),
    )
    norm("visual_encoder.patch_embed.norm", embed)
    res = image // 4
    for i, (depth, h) in enumerate(zip(depths, heads)):
        dim, w = embed * 2**i, min(window, res)
        for j in range(depth):
            p = f"visual_encoder.layers.{i}.blocks.{j}"
            norm(p + ".norm1", dim)
            params[p + ".attn.relative_position_bias_table"] = ((2 * w - 1) ** 2, h)
            linear(p + ".attn.qkv", 3 * dim, dim)
            linear(p + ".attn.proj", dim, dim)
            norm(p + ".norm2", dim)
            linear(p + ".mlp.fc1", 4 * dim, dim)
            linear(p + ".mlp.fc2", dim, 4 * dim)
            buffers[p + ".attn.relative_position_index"] = (w * w, w * w)
            if j % 2 and res > window:
                buffers[p + ".attn_mask"] = ((res // w) ** 2, w * w, w * w)
        if i < len(depths) - 1:
            linear(f"visual_encoder.layers.{i}.downsample.reduction", 2 * dim, 4 * dim, bias=False)
            norm(f"visual_encoder.layers.{i}.downsample.norm", 4 * dim)
        res //= 2
    features = embed * 2 ** (len(depths) - 1)
    norm("visual_encoder.norm", features)
    linear("image_proj", width, features)
    params["label_embed"] = (classes * (descriptions if variant == "ram_plus" else 1), width)
    linear("wordvec_proj", hidden, width)
    for layer in range(layers):
        p = f"tagging_head.encoder.layer.{layer}"
        linear(p + ".crossattention.self.query", hidden, hidden)
        linear(p + ".crossattention.self.key", hidden, width)
        linear(p + ".crossattention.self.value", hidden, width)
        linear(p + ".crossattention.output.dense", hidden, hidden)
        norm(p + ".crossattention.output.LayerNorm", hidden)
        linear(p + ".intermediate.dense", inter, hidden)
        linear(p + ".output.dense", hidden, inter)
        norm(p + ".output.LayerNorm", hidden)
    linear("fc", 1, hidden)
    if variant == "ram_plus":
        params["reweight_scale"] = ()
    return params, buffers


REAL = [  # (variant, backbone, size, official kwargs, parameters of the tagging path)
    ("ram", "swin_l", 384, {}, 212_117_045),
    ("ram_plus", "swin_l", 384, {}, 329_493_046),
    ("ram", "swin_b", 224, dict(embed=128, heads=(4, 8, 16, 32), window=7, image=224), 103_399_609),
]


@pytest.mark.parametrize(
    "variant, backbone, size, kwargs, count", REAL, ids=["ram-swinL384", "ramplus-swinL384", "ram-swinB224"]
)
def test_real_architecture_has_exactly_the_official_keys_and_shapes(variant, backbone, size, kwargs, count):
    params, buffers = official_state_shapes(variant, **kwargs)
    config = RamConfig.official(variant, backbone, size)
    with torch.device("meta"):
        model = RamTagger(config, [f"tag{i}" for i in range(config.num_classes)])
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert ours == params
    assert sum(math.prod(s) for s in params.values()) == count
    assert all(ignored_reason(k) is not None for k in buffers)
    assert all(ignored_reason(k) is None for k in params)
    if (backbone, size) == ("swin_l", 384):
        assert sum(k.endswith("relative_position_index") for k in buffers) == 24
        assert sum(k.endswith("attn_mask") for k in buffers) == 11  # odd blocks of stages 0-2; stage 3 is 12x12

    # the loader reads this very architecture back from the official state dict's shapes
    state = {k: torch.empty(s, device="meta") for k, s in {**params, **buffers}.items()}
    if variant == "ram":
        state["tag_encoder.encoder.layer.0.attention.self.query.weight"] = torch.empty(768, 768, device="meta")
    assert config_from_state_dict(state, config.num_classes) == config
