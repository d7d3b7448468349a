"""TIFA accuracy on a hand-made question file: a stub VQA with known answers gives the expected accuracy; BLIP-2's
free-form answer is mapped to a choice as TIFA maps it."""

from __future__ import annotations

import json

import pytest
import torch

from realign_diff.evaluation.prompt_sets import read_prompt_set
from realign_diff.evaluation.tifa import Blip2Vqa, tifa_scores

QUESTIONS = [
    {"id": "d1", "caption": "a red book and a pen", "question": "is there a book?", "choices": ["yes", "no"]}
    | {"answer": "yes"},
    {"id": "d1", "caption": "a red book and a pen", "question": "what color is the book?"}
    | {"choices": ["red", "blue", "green"], "answer": "red"},
    {"id": "d1", "caption": "a red book and a pen", "question": "is there a pen?", "choices": ["yes", "no"]}
    | {"answer": "yes"},
    {
        "id": "d1",
        "caption": "a red book and a pen",
        "question": "how many books?",
        "choices": ["1", "2"],
        "answer": "1",
    },
]


class StubVqa:
    """Image 0 answers every question right; image 1 says "no" and "blue" and "2" (and "yes" to "is there a pen?")."""

    def __call__(self, images, question, choices):
        wrong = {"is there a book?": "no", "what color is the book?": "Blue", "how many books?": "2"}
        right = {q["question"]: q["answer"] for q in QUESTIONS}
        return [right[question], wrong.get(question, right[question])][: images.shape[0]]


def test_tifa_accuracy_with_a_stub_vqa(tmp_path):
    path = tmp_path / "questions.json"
    path.write_text(json.dumps(QUESTIONS), encoding="utf-8")
    (prompt,) = read_prompt_set(path)
    result = tifa_scores(StubVqa(), torch.rand(2, 3, 8, 8), prompt.questions)
    assert result.scores == [1.0, 0.25]
    assert result.answers[1] == ["no", "Blue", "yes", "2"]
    with pytest.raises(ValueError, match="at least one question"):
        tifa_scores(StubVqa(), torch.rand(1, 3, 8, 8), ())


def test_blip2_answers_map_to_a_choice(eval_reward):
    vqa = Blip2Vqa(eval_reward)
    assert vqa.choose(" Yes. ", ["yes", "no"]) == "yes"  # equal up to case, spaces and a final period
    assert vqa.choose("", ["red", "blue"]) == "red"
    similarity = eval_reward.similarity(["red", "blue"], "a red book")
    assert vqa.choose("a red book", ["red", "blue"]) == ["red", "blue"][int(similarity.argmax())]
    answers = vqa(torch.rand(2, 3, 32, 32), "what color is the book?", ["red", "blue", "green"])
    assert len(answers) == 2 and set(answers) <= {"red", "blue", "green"}
