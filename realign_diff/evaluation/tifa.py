"""TIFA (Hu et al. 2023, arXiv 2303.11897): ask a VQA model the multiple-choice questions written for a prompt;
an image's TIFA score is the fraction it answers as the question file says.

The VQA model here is BLIP-2 (TIFA's own choice includes blip2-flan-t5-xl), asked as TIFA asks it
("Answer the multiple-choice question. Question: ... Choices: a, b Answer:"). Its free-form answer counts as the
choice it equals (case and spaces aside); otherwise TIFA maps it to the nearest choice with SBERT: we use the BLIP-2
text embedding of the caption reward (the nearest choice by cosine), so no further model is needed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from ..reward.image_prep import to_bchw
from .prompt_sets import Question

# (images [B, 3, H, W] in [0, 1], question, choices) -> one chosen answer per image
Vqa = Callable[[torch.Tensor, str, Sequence[str]], list[str]]


def _norm(text: str) -> str:
    return " ".join(text.lower().strip().rstrip(".").split())


@dataclass
class TifaResult:
    scores: list[float]  # per image: the fraction of questions answered right
    answers: list[list[str]]  # per image, per question: the chosen answer


def tifa_scores(vqa: Vqa, images: torch.Tensor, questions: Sequence[Question]) -> TifaResult:
    """The TIFA score of each image of ``images`` (all of the same prompt) on that prompt's ``questions``."""
    pixels = to_bchw(images)
    if not questions:
        raise ValueError("TIFA needs at least one question for the prompt")
    answers = [[] for _ in range(pixels.shape[0])]
    right = torch.zeros(pixels.shape[0])
    for question in questions:
        chosen = vqa(pixels, question.question, question.choices)
        for i, answer in enumerate(chosen):
            answers[i].append(answer)
            right[i] += float(_norm(answer) == _norm(question.answer))
    return TifaResult([float(r) / len(questions) for r in right], answers)


class Blip2Vqa:
    """BLIP-2 as TIFA's VQA model, on the captioner (and text tower) of a loaded ``CaptionReward``."""

    def __init__(self, reward, max_new_tokens: int = 10):
        self.reward, self.max_new_tokens = reward, max_new_tokens

    @staticmethod
    def question_text(question: str, choices: Sequence[str]) -> str:
        return f"Answer the multiple-choice question. Question: {question} Choices: {', '.join(choices)} Answer:"

    @torch.no_grad()
    def free_form(self, pixels: torch.Tensor, question: str, choices: Sequence[str]) -> list[str]:
        text = self.question_text(question, choices)
        return self.reward._generate(pixels, self.max_new_tokens, 1, text=text, do_sample=False)

    def choose(self, answer: str, choices: Sequence[str]) -> str:
        for choice in choices:
            if _norm(choice) == _norm(answer):
                return choice
        if not answer.strip():
            return choices[0]
        similarity = self.reward.similarity(list(choices), answer)
        return choices[int(similarity.argmax())]

    def __call__(self, pixels: torch.Tensor, question: str, choices: Sequence[str]) -> list[str]:
        return [self.choose(answer, choices) for answer in self.free_form(pixels, question, choices)]
