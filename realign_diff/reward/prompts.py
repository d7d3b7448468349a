"""Prompts for a batch of images: one for all, or one per image."""

from __future__ import annotations

from collections.abc import Sequence


class PromptError(ValueError):
    """Prompts that cannot be matched to the images (empty, or the wrong count)."""


def match_prompts(prompts: str | Sequence[str], batch: int) -> list[str]:
    """One prompt per image: a single string (or a one-item list) is used for every image.

    Raises ``PromptError`` for an empty prompt or a count that is neither 1 nor ``batch``.
    """
    if isinstance(prompts, str):
        prompts = [prompts]
    prompts = list(prompts)
    if not all(isinstance(p, str) for p in prompts):
        raise PromptError("prompts must be strings")
    if len(prompts) == 0:
        raise PromptError("No prompt given: the caption reward compares each image's caption with its prompt.")
    for i, prompt in enumerate(prompts):
        if not prompt.strip():
            which = "The prompt" if len(prompts) == 1 else f"Prompt {i + 1} of {len(prompts)}"
            raise PromptError(f"{which} is empty: the caption reward compares each image's caption with its prompt.")
    if len(prompts) == 1:
        return [prompts[0].strip()] * batch
    if len(prompts) != batch:
        raise PromptError(
            f"{len(prompts)} prompts for {batch} images: give one prompt for all images, or exactly one "
            f"prompt per image."
        )
    return [p.strip() for p in prompts]


def split_prompt_lines(text: str, batch: int) -> list[str]:
    """The Caption Reward Scorer's prompt box: each non-empty line is one prompt.

    One line: that prompt for every image. As many lines as images: line i is image i's prompt. Any other
    count is an error (so a mistake in a per-image list never silently shifts prompts).
    """
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        raise PromptError(
            "The prompt is empty: type the prompt the images were generated from (one line for all "
            "images, or one line per image)."
        )
    if len(lines) != 1 and len(lines) != batch:
        raise PromptError(
            f"The prompt has {len(lines)} lines but the batch has {batch} images: give one line (used "
            f"for every image) or exactly one line per image."
        )
    return match_prompts(lines, batch)
