"""The Local Dense Captioner pipeline on real (tiny, random-weight) RAM, GroundingDINO and SAM, loaded
from files in the official formats through our loaders."""

from __future__ import annotations

import json

import pytest
import torch

from realign_diff.dense_captioner.llm import LLMScorer, ScoreCache, resolve_llm
from realign_diff.dense_captioner.offline_scorer import OfflineScorer
from realign_diff.dense_captioner.pipeline import (
    CaptionerSettings,
    caption_images,
    guidance_json,
    masks_batch,
    progress_steps,
)
from realign_diff.dense_captioner.scoring import ScoringResult, TagScore
from realign_diff.guidance import RealignGuidance
from realign_testkit.captioner_models import tiny_captioner_models
from realign_testkit.llm_stub import Reply, StubLLMServer, answer
from realign_testkit.ram import synthetic_image

PROMPT = "a red book and a yellow pen"
FOUND_EVERYTHING = CaptionerSettings(box_threshold=0.0, text_threshold=0.0)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """(tagger, detector, segmenter): RAM always tags book, desk and banana; the others never."""
    return tiny_captioner_models(tmp_path_factory.mktemp("captioner-models"))


class NothingBelongs:
    """A scorer that scores every tag 0: nothing is grounded (tests of the candidates, without detection)."""

    def score(self, prompt, tags, check_cancel=None):
        return ScoringResult([TagScore(t, 0.0, t) for t in tags], "test", "all zero")


def run(models, images, scorer=None, settings=FOUND_EVERYTHING, prompt=PROMPT, on_step=None):
    tagger, detector, segmenter = models
    return caption_images(
        images,
        prompt,
        tagger=tagger,
        scorer=scorer or OfflineScorer(),
        detector=detector,
        segmenter=segmenter,
        settings=settings,
        on_step=on_step,
    )


@pytest.fixture(scope="module")
def found(models):
    """A batch of two images with GroundingDINO's thresholds at 0 (its boxes are kept), and the progress calls."""
    calls = []
    results = run(models, synthetic_image(72, 112, batch=2), on_step=lambda n=1: calls.append(n))
    return results, calls


def test_batch_gives_one_well_formed_guidance_per_image(found):
    results, _ = found
    assert len(results) == 2
    for result in results:
        guidance = result.guidance
        assert isinstance(guidance, RealignGuidance)
        assert (guidance.prompt, guidance.width, guidance.height, guidance.source) == (PROMPT, 112, 72, "offline")
        candidates = {c.tag: c for c in result.candidates}
        assert sorted((c.tag, c.origin) for c in result.candidates) == [
            ("banana", "tagger"),
            ("book", "tagger"),
            ("desk", "tagger"),
            ("pen", "prompt"),
        ]
        assert result.candidates[-1].tag == "pen"  # the tagger's tags first, best first
        assert (candidates["book"].score, candidates["book"].caption) == (2.0, "a red book")
        assert (candidates["pen"].score, candidates["pen"].caption) == (2.0, "a yellow pen")
        assert candidates["desk"].score == 0.5 and candidates["banana"].score == 0.0
        assert [c.tag for c in result.candidates if c.grounded] == [
            c.tag for c in result.candidates if c.tag != "banana"
        ]
        assert candidates["book"].tagger_score > 0 and candidates["pen"].tagger_score is None
        # thresholds at 0: GroundingDINO keeps its boxes, so the grounded tags are found
        assert guidance.objects and len(guidance.objects) == sum(c.found for c in result.candidates)
        for obj in guidance.objects:
            c = candidates[obj.tag]
            assert c.grounded and c.found and (obj.score, obj.caption) == (c.score, c.caption)
            assert obj.mask.shape == (72, 112) and obj.mask.dtype == torch.float32
            assert 0 <= obj.mask.min() and obj.mask.max() <= 1 and obj.mask.sum() > 0
            x0, y0, x1, y1 = obj.box
            assert 0 <= x0 <= x1 <= 112 and 0 <= y0 <= y1 <= 72
            assert 0 <= obj.confidence <= 1
    masks = masks_batch(results)
    assert masks.shape == (sum(len(r.guidance.objects) for r in results), 72, 112)
    data = json.loads(guidance_json(results))
    assert [len(i["objects"]) for i in data["images"]] == [len(r.guidance.objects) for r in results]
    assert data["images"][0]["scoring"]["source"] == "offline"
    assert {t["tag"]: t["origin"] for t in data["images"][0]["tags"]}["pen"] == "prompt"


def test_nothing_found_is_an_empty_guidance(models):
    images = synthetic_image(40, 56)  # GroundingDINO's thresholds at 1: no box passes
    (result,) = run(models, images, settings=CaptionerSettings(box_threshold=1.0, text_threshold=1.0))
    assert result.guidance.objects == [] and (result.guidance.width, result.guidance.height) == (56, 40)
    assert not any(c.found for c in result.candidates)
    masks = masks_batch([result])
    assert masks.shape == (1, 40, 56) and masks.sum() == 0


def test_prompt_objects_exclusions_and_top_k(models):
    images = synthetic_image(40, 56)

    def tags(**settings):
        (result,) = run(models, images, scorer=NothingBelongs(), settings=CaptionerSettings(**settings))
        assert result.guidance.objects == [] and not any(c.grounded for c in result.candidates)
        return [(c.tag, c.origin) for c in result.candidates]

    assert sorted(tags(add_prompt_objects=False)) == [("banana", "tagger"), ("book", "tagger"), ("desk", "tagger")]
    # a RAM tag is excluded by the tagger; a prompt object (not a RAM tag here) after it, without an error
    assert sorted(tags(exclude_tags=("desk", "pen", "unicorn"))) == [("banana", "tagger"), ("book", "tagger")]
    # the prompt's "book" is RAM's best tag; top-k = 1 keeps it alone, and "pen" still comes from the prompt
    assert tags(ram_top_k=1) == [("book", "tagger"), ("pen", "prompt")]


def test_progress_units_and_cancel(models, found):
    _, calls = found
    assert sum(calls) == progress_steps(2) == 5
    assert calls.count(0) > 0  # Cancel is also checked inside grounding

    class Cancelled(Exception):
        pass

    def cancel_after_tagging(n=1):
        if n:
            raise Cancelled

    with pytest.raises(Cancelled):
        run(models, synthetic_image(40, 56), on_step=cancel_after_tagging)


def test_llm_scores_flow_into_the_guidance_and_the_key_stays_out(models, monkeypatch):
    secret = "sk-test-PIPELINESECRET42"
    reply = answer(
        [("book", 2, "a crimson book"), ("desk", 0, "a desk"), ("banana", 0, "a banana"), ("pen", 0.5, "a yellow pen")]
    )
    with StubLLMServer() as server:
        server.default = Reply(content=reply)
        resolved = resolve_llm(
            "stub-model",
            "",
            environ={"REALIGN_DIFF_LLM_BASE_URL": server.url, "REALIGN_DIFF_LLM_API_KEY": secret},
            config_paths=[],
            timeout=5,
        )
        scorer = LLMScorer(resolved, cache=ScoreCache())
        results = run(models, synthetic_image(40, 56), scorer=scorer)
    (result,) = results
    assert result.guidance.source == "llm:stub-model" and result.scoring.status.endswith("answered in 1 attempt")
    assert {o.tag: (o.score, o.caption) for o in result.guidance.objects}.items() <= {
        "book": (2.0, "a crimson book"),
        "pen": (0.5, "a yellow pen"),
    }.items()
    assert [c.grounded for c in result.candidates] == [True, False, False, True]
    text = guidance_json(results) + repr(result) + result.guidance.to_json()
    assert secret not in text and "PIPELINESECRET" not in text
