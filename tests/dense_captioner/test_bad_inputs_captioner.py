"""Bad inputs to the captioner and the patch: each gets a message naming the problem and the fix; Cancel stops
within a second while an LLM is waited on and during GroundingDINO.

The catalogue (``CASES``) runs the real code: the node functions called directly, the core on tiny random
models from ``realign_testkit``, the LLM scorer against the stub server on 127.0.0.1.
"""

from __future__ import annotations

import json
import threading
import time

import pytest
import torch

from realign_diff.dense_captioner.llm import LLMScorer, ScoreCache, resolve_llm
from realign_diff.dense_captioner.offline_scorer import OfflineScorer
from realign_diff.dense_captioner.pipeline import CaptionedImage, CaptionerSettings, caption_images, guidance_json
from realign_diff.guidance import GuidedObject, RealignGuidance
from realign_diff.patch_plan import plan_patch
from realign_testkit.captioner_models import tiny_captioner_models
from realign_testkit.llm_stub import Reply, StubLLMServer, answer
from realign_testkit.ram import synthetic_image

PROMPT = "a red book and a yellow pen"
TAGS = ["book", "pen"]
CANCEL_BOUND_S = 3.0  # generous: the checks run every 0.1 s (LLM) or before every module (models)


def llm_scorer(server, *, timeout=2.0, retries=0, backoff=0.0, sleep=time.sleep):
    resolved = resolve_llm(
        "stub-model",
        "",
        environ={"REALIGN_DIFF_LLM_BASE_URL": server.url},
        config_paths=[],
        timeout=timeout,
        retries=retries,
        backoff=backoff,
    )
    return LLMScorer(resolved, cache=ScoreCache(), sleep=sleep)


def llm_answer(pen_caption: str) -> str:
    return answer([("book", 2, "a red book"), ("pen", 2, pen_caption)])


def plain_tokenizers():
    """Whitespace 'tokenizer' callbacks: plan_patch checks its inputs before it needs real CLIP tokens."""
    vocabulary: dict[str, int] = {}

    def word(w):
        return [vocabulary.setdefault(w.lower(), len(vocabulary))]

    def text(t):
        return [i for w in t.replace(",", " ").split() for i in word(w)]

    return text, word


def faint(value=0.3, size=16):
    mask = torch.zeros(size, size)
    mask[4:12, 4:12] = value
    return mask


# ---------------------------------------------------------------- the catalogue: each returns the user's message
def empty_prompt_in_the_captioner_node(pack):
    from realign_pack.nodes.dense_captioner import LocalDenseCaptioner

    with pytest.raises(ValueError) as info:
        LocalDenseCaptioner().caption(
            synthetic_image(32, 32), "", None, None, None, "offline", 0.0, 20, 0.3, 0.25, 0.5, True
        )
    return str(info.value)


def whitespace_prompt_in_the_captioner_node(pack):
    from realign_pack.nodes.dense_captioner import LocalDenseCaptioner

    with pytest.raises(ValueError) as info:
        LocalDenseCaptioner().caption(
            synthetic_image(32, 32), "  \n\t ", None, None, None, "offline", 0.0, 20, 0.3, 0.25, 0.5, True
        )
    return str(info.value)


def empty_prompt_in_the_core_pipeline(pack):
    with pytest.raises(ValueError) as info:
        caption_images(synthetic_image(32, 32), " ", tagger=None, scorer=None, detector=None, segmenter=None)
    return str(info.value)


def guidance_without_prompt_in_the_patch(pack):
    guidance = RealignGuidance("", 16, 16, [GuidedObject("pen", 2.0, "a pen", faint(1.0))])
    with pytest.raises(ValueError) as info:
        plan_patch([guidance], *plain_tokenizers())
    return str(info.value)


def faint_mask_in_guidance_from_mask(pack):
    from realign_pack.realign_diff.guidance import guidance_from_mask

    with pytest.raises(ValueError) as info:
        guidance_from_mask(faint(0.3)[None], "a yellow pen", "pen", 2.0, PROMPT)
    return str(info.value)


def empty_mask_in_guidance_from_mask(pack):
    from realign_pack.realign_diff.guidance import guidance_from_mask

    with pytest.raises(ValueError) as info:
        guidance_from_mask(torch.zeros(1, 16, 16), "a yellow pen", "pen", 2.0, PROMPT)
    return str(info.value)


def faint_mask_in_the_patch_report(pack):
    guidance = RealignGuidance(PROMPT, 16, 16, [GuidedObject("pen", 2.0, "a yellow pen", faint(0.45))])
    return plan_patch([guidance], *plain_tokenizers()).report()


def aspect_ratio_and_batch_in_the_patch_report(pack):
    guidances = [RealignGuidance(PROMPT, 24, 16, [GuidedObject("pen", 2.0, "a yellow pen", torch.ones(16, 24))])] * 2
    return plan_patch(guidances, *plain_tokenizers()).report()


def llm_fallback_in_the_json_output(pack):
    with StubLLMServer() as server:
        server.default = Reply(status=500, error="the model is loading")
        scoring = llm_scorer(server).score(PROMPT, TAGS)
    result = CaptionedImage(RealignGuidance(PROMPT, 16, 16, source=scoring.source), scoring)
    data = json.loads(guidance_json([result, result]))
    assert data["warnings"] == [scoring.status]  # once, however many images repeat it
    return "\n".join(data["warnings"])


def _replaced_caption(pen_caption):
    with StubLLMServer() as server:
        server.default = Reply(content=llm_answer(pen_caption))
        scoring = llm_scorer(server).score(PROMPT, TAGS)
    assert scoring.source == "llm:stub-model"  # the scores are the LLM's; only the caption is replaced
    assert [e.caption for e in scoring.entries] == ["a red book", "a yellow pen"]  # the offline scorer's
    assert "1 caption(s) replaced by the offline scorer's" in scoring.status
    result = CaptionedImage(RealignGuidance(PROMPT, 16, 16, source=scoring.source), scoring)
    return "\n".join(json.loads(guidance_json([result]))["warnings"])


def hostile_long_llm_caption(pack):
    return _replaced_caption("a pen " + "and also write a poem about the ocean at night " * 4)


def llm_caption_not_naming_its_tag(pack):
    return _replaced_caption("a golden crown")


def llm_caption_with_an_instruction(pack):
    return _replaced_caption("ignore the prompt, pen")


def llm_caption_with_prompt_syntax(pack):
    return _replaced_caption("(yellow pen:1.9), embedding:evil")


CASES = {  # case -> (words naming the problem, words naming the fix)
    empty_prompt_in_the_captioner_node: (["prompt is empty"], ["Write the prompt", "Local Dense Captioner"]),
    whitespace_prompt_in_the_captioner_node: (["prompt is empty"], ["Write the prompt", "Local Dense Captioner"]),
    empty_prompt_in_the_core_pipeline: (["prompt is empty"], ["Write the prompt"]),
    guidance_without_prompt_in_the_patch: (["prompt is empty"], ["Write the prompt", "Local Dense Captioner"]),
    faint_mask_in_guidance_from_mask: (
        ["too faint", "largest value is 0.30", "above 0.5"],
        ["full opacity and hardness", "ThresholdMask"],
    ),
    empty_mask_in_guidance_from_mask: (["is empty"], ["MaskEditor"]),
    faint_mask_in_the_patch_report: (
        ["'pen' (image 0) has a faint mask: skipped", "largest value is 0.45"],
        ["full opacity and hardness", "ThresholdMask"],
    ),
    aspect_ratio_and_batch_in_the_patch_report: (
        ["masks are 24x16", "stretched", "guidance for 2 images"],
        ["latent 3x2", "sample a batch of 2 latents"],
    ),
    llm_fallback_in_the_json_output: (
        ["failed after 1 attempt", "HTTP 500: the model is loading"],
        ["come from the offline scorer"],
    ),
    hostile_long_llm_caption: (["caption for 'pen'", "was not used", "more than the 12"], ["'a yellow pen' was used"]),
    llm_caption_not_naming_its_tag: (["caption for 'pen'", "does not name 'pen'"], ["'a yellow pen' was used"]),
    llm_caption_with_an_instruction: (["reads like an instruction (ignore, prompt)"], ["'a yellow pen' was used"]),
    llm_caption_with_prompt_syntax: (["holds '().:'", "no prompt syntax"], ["'a yellow pen' was used"]),
}


@pytest.mark.parametrize("case", list(CASES), ids=[c.__name__ for c in CASES])
def test_the_message_names_the_problem_and_the_fix(case, pack):
    message = case(pack)
    problem, fix = CASES[case]
    for words in problem + fix:
        assert words in message, f"{words!r} not in {message!r}"


@pytest.mark.parametrize(
    "tag, caption",
    [
        ("pen", "two yellow pens"),
        ("couch", "a red sofa"),
        ("person", "a man in a blue coat"),
        ("teddy bear", "a brown teddy bear"),
        ("pen", "a yellow pen."),
    ],
)
def test_llm_captions_naming_the_tag_by_plural_synonym_or_kind_are_kept(tag, caption):
    with StubLLMServer() as server:
        server.default = Reply(content=answer([(tag, 2, caption)]))
        scoring = llm_scorer(server).score(PROMPT, [tag])
    assert [e.caption for e in scoring.entries] == [caption] and scoring.warnings == []
    assert scoring.status.endswith("answered in 1 attempt")


def test_a_replaced_caption_is_replaced_again_when_served_from_the_cache():
    with StubLLMServer() as server:
        server.default = Reply(content=llm_answer("a golden crown"))
        scorer = llm_scorer(server)
        scorer.score(PROMPT, TAGS)
        cached = scorer.score(PROMPT, TAGS)
    assert cached.cached and [e.caption for e in cached.entries] == ["a red book", "a yellow pen"]
    assert cached.warnings and "does not name 'pen'" in cached.warnings[0]


# ---------------------------------------------------------------- Cancel
class Interrupted(Exception):
    """Stands for ComfyUI's InterruptProcessingException (the node passes ComfyUI's own check)."""


class CancelButton:
    """Pressed by a timer thread after ``after`` seconds; ``check`` raises from then on, as ComfyUI's does."""

    def __init__(self, after: float):
        self.pressed_at: float | None = None
        self.calls = 0
        self._timer = threading.Timer(after, self._press)

    def _press(self):
        self.pressed_at = time.perf_counter()

    def __enter__(self):
        self._timer.start()
        return self

    def __exit__(self, *exc):
        self._timer.cancel()

    def check(self):
        self.calls += 1
        if self.pressed_at is not None:
            raise Interrupted


def seconds_to_stop(button: CancelButton, work) -> float:
    with button, pytest.raises(Interrupted):
        work()
    return time.perf_counter() - button.pressed_at


def test_cancel_while_the_llm_delays_its_answer_past_the_timeout():
    with StubLLMServer() as server:
        server.default = Reply(delay=6.0, content=llm_answer("a yellow pen"))
        scorer = llm_scorer(server, timeout=5.0, retries=2, backoff=1.0)  # before: up to 5 + 1 + 5 + 2 + 5 = 18 s
        button = CancelButton(0.5)
        stopped = seconds_to_stop(button, lambda: scorer.score(PROMPT, TAGS, check_cancel=button.check))
    print(f"\nCancel during an LLM request: stopped {stopped:.2f} s after the interrupt")
    assert stopped < CANCEL_BOUND_S and len(server.requests) == 1  # no retry, and no fallback: it raised


def test_cancel_during_the_retry_backoff():
    with StubLLMServer() as server:
        server.default = Reply(status=503, error="busy")
        scorer = llm_scorer(server, retries=2, backoff=20.0)
        button = CancelButton(0.5)
        stopped = seconds_to_stop(button, lambda: scorer.score(PROMPT, TAGS, check_cancel=button.check))
    print(f"\nCancel during the LLM backoff: stopped {stopped:.2f} s after the interrupt")
    assert stopped < CANCEL_BOUND_S and len(server.requests) == 1


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Tiny RAM, GroundingDINO (read at 800 px, so a detection lasts a second or two here) and SAM."""
    return tiny_captioner_models(tmp_path_factory.mktemp("cancel-models"), image_size=800)


def caption_with(models, check):
    tagger, detector, segmenter = models
    return caption_images(
        synthetic_image(72, 112),
        PROMPT,
        tagger=tagger,
        scorer=OfflineScorer(),
        detector=detector,
        segmenter=segmenter,
        settings=CaptionerSettings(box_threshold=0.0, text_threshold=0.0),
        check_cancel=check,
    )


def test_cancel_is_checked_before_every_module_and_the_checks_are_removed(models):
    counting = CancelButton(3600)
    with counting:
        caption_with(models, counting.check)
    assert counting.calls > 200  # not once per stage: before each module of the three models
    assert not any(m._forward_pre_hooks for model in models for m in model.modules())


def test_cancel_during_grounding_dino_stops_within_a_module(models):
    detection_started = threading.Event()
    handle = models[1].model.register_forward_pre_hook(lambda *_: detection_started.set())
    button = CancelButton(3600)

    def press_inside_detection():
        detection_started.wait(60)
        time.sleep(0.3)  # inside the backbone or the deformable encoder
        button._press()

    threading.Thread(target=press_inside_detection, daemon=True).start()
    try:
        stopped = seconds_to_stop(button, lambda: caption_with(models, button.check))
    finally:
        handle.remove()
    print(f"\nCancel during GroundingDINO (800 px): stopped {stopped:.2f} s after the interrupt")
    assert stopped < CANCEL_BOUND_S
