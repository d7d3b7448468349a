"""Realign Guidance From Mask, called as ComfyUI would call it (pack imported as a package, no ComfyUI)."""

import pytest
import torch

from realign_diff.guidance import RealignGuidance, guidance_list
from realign_testkit.pack import load_pack

load_pack()
from realign_pack.nodes.attention_patch import RealignAttentionPatch, RealignGuidanceFromMask  # noqa: E402


def mask(h=48, w=64, left=0, right=32):
    m = torch.zeros(1, h, w)
    m[:, :, left:right] = 1
    return m


def test_builds_one_guidance_per_chain_with_objects_in_order():
    node = RealignGuidanceFromMask()
    (first,) = node.build(mask(), "a red book", "", 2.0, "a red book and a yellow pen")
    (second,) = node.build(mask(left=32, right=64), "a yellow pen", "pen", 0.5, "", first)
    (guidance,) = guidance_list(second)
    assert isinstance(guidance, RealignGuidance)
    assert guidance.prompt == "a red book and a yellow pen" and (guidance.height, guidance.width) == (48, 64)
    assert [(o.tag, o.caption, o.score) for o in guidance.objects] == [
        ("book", "a red book", 2.0),
        ("pen", "a yellow pen", 0.5),
    ]
    assert guidance.source == "manual"


def test_masks_of_another_size_are_resized_to_the_guidance():
    node = RealignGuidanceFromMask()
    (first,) = node.build(mask(48, 64), "a red book", "", 2.0, "a red book")
    (second,) = node.build(mask(96, 128, 64, 128), "a pen", "", 2.0, "", first)
    pen = second[0].objects[1].mask
    assert pen.shape == (48, 64) and pen[:, 40:].min() == 1 and pen[:, :24].max() == 0


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"mask": torch.zeros(1, 8, 8)}, "mask for 'book' is empty"),
        ({"mask": torch.ones(2, 8, 8)}, "one mask per object"),
        ({"caption": "", "tag": ""}, "caption .* or a tag"),
        ({"prompt": ""}, "Write the prompt"),
    ],
)
def test_bad_inputs_say_what_to_do(kwargs, message):
    args = {"mask": mask(), "caption": "a red book", "tag": "", "score": 2.0, "prompt": "a red book"} | kwargs
    with pytest.raises(ValueError, match=message):
        RealignGuidanceFromMask().build(**args)


def test_chained_prompts_must_agree():
    node = RealignGuidanceFromMask()
    (first,) = node.build(mask(), "a red book", "", 2.0, "a red book")
    with pytest.raises(ValueError, match="differs from the chained guidance"):
        node.build(mask(), "a pen", "", 2.0, "a blue car", first)


def test_every_input_has_a_tooltip_and_the_nodes_declare_their_outputs():
    for cls in (RealignGuidanceFromMask, RealignAttentionPatch):
        inputs = cls.INPUT_TYPES()
        for section_name, section in inputs.items():
            if section_name == "hidden":  # filled in by ComfyUI (UNIQUE_ID), never shown: no tooltip
                continue
            for name, (_kind, *options) in section.items():
                assert options and options[0].get("tooltip"), f"{cls.__name__}.{name} has no tooltip"
        assert len(cls.OUTPUT_TOOLTIPS) == len(cls.RETURN_TYPES) == len(cls.RETURN_NAMES)
        assert cls.CATEGORY == "RealignDiff" and cls.DESCRIPTION


def test_patch_refuses_something_that_is_not_guidance():
    with pytest.raises(TypeError, match="REALIGN_GUIDANCE"):
        guidance_list({"prompt": "x"})
