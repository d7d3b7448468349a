"""Guidance -> conditioning text, token sets and report, on the real CLIP vocabulary."""

import pytest
import torch

from realign_diff import clip_tokenizer
from realign_diff.guidance import GuidedObject, RealignGuidance
from realign_diff.patch_plan import MAX_CHUNKS, plan_patch
from realign_testkit.clip_stream import clip_stream, word_tokenizer


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    try:
        tokenizer = clip_tokenizer.load_clip_tokenizer(cache_dir=tmp_path_factory.mktemp("clip"))
    except FileNotFoundError as error:
        pytest.skip(str(error))

    def text(t):
        return clip_stream(tokenizer, t)

    word = word_tokenizer(tokenizer)
    return text, word, tokenizer


def box(top, left, bottom, right, size=64):
    mask = torch.zeros(size, size)
    mask[top:bottom, left:right] = 1
    return mask


def paper_example(prompt="a red book and a yellow pen"):
    return RealignGuidance(
        prompt,
        64,
        64,
        [
            GuidedObject("book", 2.0, "a red book", box(0, 0, 32, 32)),
            GuidedObject("pen", 2.0, "a yellow pen", box(32, 32, 64, 64)),
            GuidedObject("desk", 0.5, "a wooden desk", box(40, 0, 64, 64)),
            GuidedObject("banana", 0.0, "a banana", box(0, 40, 20, 64)),
        ],
    )


def decoded(tok, plan, image, index):
    return tok[2].decode([plan.stream[p] for p in plan.objects_per_image[image][index].positions.tolist()])


def test_prompt_plus_captions_appends_only_what_is_missing_and_scored_above_zero(tok):
    plan = plan_patch([paper_example()], tok[0], tok[1])
    assert plan.text == "a red book and a yellow pen, a wooden desk"  # banana (score 0) is not added
    assert decoded(tok, plan, 0, 0) == "red book"
    assert decoded(tok, plan, 0, 1) == "yellow pen"
    assert decoded(tok, plan, 0, 2) == "wooden desk"
    assert plan.objects_per_image[0][3].positions.numel() == 0
    assert plan.prompt_length == 77
    report = plan.report()
    assert "banana (score 0" in report and "not in the conditioning" in report
    assert "'yellow pen' (by caption)" in report


def test_prompt_only_keeps_the_prompt(tok):
    plan = plan_patch([paper_example()], tok[0], tok[1], mode="prompt only")
    assert plan.text == "a red book and a yellow pen"
    assert plan.objects_per_image[0][2].positions.numel() == 0  # desk is not in the prompt


def test_scores_and_masks_reach_the_patch_objects(tok):
    plan = plan_patch([paper_example()], tok[0], tok[1])
    objects = plan.objects_per_image[0]
    assert [o.score for o in objects] == [2.0, 2.0, 0.5, 0.0]
    assert torch.equal(objects[1].mask, box(32, 32, 64, 64))


def test_empty_masks_are_skipped_with_a_note(tok):
    guidance = paper_example()
    guidance.objects[1].mask.zero_()
    plan = plan_patch([guidance], tok[0], tok[1])
    assert [o.tag for o in plan.located[0]] == ["book", "desk", "banana"]
    assert "'pen' (image 0) has an empty mask" in plan.report()


def test_batch_guidance_must_share_the_prompt(tok):
    with pytest.raises(ValueError, match="share one prompt"):
        plan_patch([paper_example(), paper_example("a blue car")], tok[0], tok[1])


def test_per_image_objects_map_into_one_conditioning(tok):
    second = RealignGuidance(
        "a red book and a yellow pen", 64, 64, [GuidedObject("lamp", 2.0, "a green lamp", box(0, 0, 10, 10))]
    )
    plan = plan_patch([paper_example(), second], tok[0], tok[1])
    assert plan.text.endswith(", a wooden desk, a green lamp")
    assert decoded(tok, plan, 1, 0) == "green lamp"


def test_too_many_objects_for_the_conditioning_is_a_clear_error(tok):
    objects = [
        GuidedObject(f"thing{i}", 2.0, f"a very detailed ornate thing{i} with patterns", box(0, 0, 8, 8))
        for i in range(40)
    ]
    with pytest.raises(ValueError, match=f"at most {MAX_CHUNKS}"):
        plan_patch([RealignGuidance("a scene", 64, 64, objects)], tok[0], tok[1])


def test_no_objects_is_a_normal_plan(tok):
    plan = plan_patch([RealignGuidance("a red book", 64, 64, [])], tok[0], tok[1])
    assert plan.text == "a red book" and plan.objects_per_image == [[]]
    assert "no objects" in plan.report()
    assert "no object was located" in plan.report()


def test_an_appended_caption_and_the_prompts_own_word_both_belong_to_the_object(tok):
    guidance = RealignGuidance(
        "a red book and a pen", 64, 64, [GuidedObject("pen", 2.0, "a yellow pen", box(0, 0, 8, 8))]
    )
    plan = plan_patch([guidance], tok[0], tok[1])
    assert plan.text == "a red book and a pen, a yellow pen"
    assert decoded(tok, plan, 0, 0) == "pen yellow pen"  # the prompt's "pen" and the appended caption
    assert plan.located[0][0].matched == "caption+tag"


def test_plural_tags_in_the_prompt_are_the_objects_too(tok):
    guidance = RealignGuidance("two pens on a desk", 64, 64, [GuidedObject("pen", 2.0, "pen", box(0, 0, 8, 8))])
    plan = plan_patch([guidance], tok[0], tok[1])
    assert plan.text == "two pens on a desk, pen"
    assert decoded(tok, plan, 0, 0) == "pens pen"


def test_a_caption_naming_another_object_leaves_that_word_to_it(tok):
    guidance = RealignGuidance(
        "a yellow pen on a wooden desk",
        64,
        64,
        [
            GuidedObject("pen", 2.0, "a yellow pen on a wooden desk", box(0, 0, 8, 8)),
            GuidedObject("desk", 0.5, "a wooden desk", box(8, 0, 64, 64)),
        ],
    )
    plan = plan_patch([guidance], tok[0], tok[1])
    assert "desk" not in decoded(tok, plan, 0, 0).split()
    assert decoded(tok, plan, 0, 1) == "wooden desk"


def test_a_long_prompt_alone_is_never_refused(tok):
    prompt = ", ".join(["a beautiful detailed landscape painting"] * 50) + ", a pen"
    guidance = RealignGuidance(prompt, 64, 64, [GuidedObject("pen", 2.0, "a pen", box(0, 0, 8, 8))])
    plan = plan_patch([guidance], tok[0], tok[1], mode="prompt only")
    assert plan.prompt_length > MAX_CHUNKS * 77 and plan.objects_per_image[0][0].positions.numel() > 0
