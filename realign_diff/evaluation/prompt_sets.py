"""Prompt sets for an evaluation: a .txt (one prompt a line), .jsonl, JSON list or MS-COCO captions .json (read as
the trainer reads them), or TIFA v1.0's question file (``tifa_v1.0_question_answers.json``: one entry per question,
``id``, ``caption``, ``question``, ``choices``, ``answer``), whose captions become the prompts and whose questions
are asked of each image (TIFA, Hu et al. 2023, arXiv 2303.11897)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from ..refl.data import DataError, read_prompts


@dataclass(frozen=True)
class Question:
    question: str
    choices: tuple[str, ...]
    answer: str
    element_type: str = ""


@dataclass(frozen=True)
class EvalPrompt:
    id: str  # unique in the set, safe in file names
    text: str
    questions: tuple[Question, ...] = ()


def safe_id(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", str(text)).strip("-.") or "prompt"


def _is_tifa(data) -> bool:
    return (
        isinstance(data, list) and bool(data) and isinstance(data[0], dict) and {"question", "choices"} <= set(data[0])
    )


def _tifa(data: list, path: Path) -> list[EvalPrompt]:
    captions: dict[str, str] = {}
    questions: dict[str, list[Question]] = {}
    for number, item in enumerate(data, 1):
        missing = [k for k in ("id", "caption", "question", "choices", "answer") if k not in item]
        if missing or not isinstance(item["choices"], list) or not item["choices"]:
            raise DataError(
                f"{path}: entry {number} is not a TIFA question (needs id, caption, question, choices, answer)"
            )
        key = str(item["id"])
        captions.setdefault(key, " ".join(str(item["caption"]).split()))
        question = Question(
            str(item["question"]),
            tuple(str(c) for c in item["choices"]),
            str(item["answer"]),
            str(item.get("element_type") or item.get("answer_type") or ""),
        )
        if question not in questions.setdefault(key, []):  # TIFA's file repeats a few questions
            questions[key].append(question)
    return [EvalPrompt(safe_id(key), text, tuple(questions[key])) for key, text in captions.items()]


def read_prompt_set(path: str | Path, limit: int = 0) -> list[EvalPrompt]:
    """The prompts (with their TIFA questions, if any) of ``path``; ``limit`` > 0 keeps the first ``limit``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"prompt set not found: {path}")
    prompts = None
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise DataError(f"{path} is not valid JSON: {exc}") from exc
        if _is_tifa(data):
            prompts = _tifa(data, path)
    if prompts is None:
        prompts = [EvalPrompt(f"{i:05d}", text) for i, text in enumerate(read_prompts(path))]
    if len({p.id for p in prompts}) != len(prompts):
        raise DataError(f"{path}: prompt ids are not unique once made safe for file names")
    return prompts[:limit] if limit > 0 else prompts
