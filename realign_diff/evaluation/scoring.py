"""The scoring half of an evaluation, offline, on the saved images: the caption reward (BLIP-2 caption vs prompt),
the CLIP score, TIFA (when the prompt has questions) and the inside-mask attention share (when the workflow reported
one). Each run's scores are saved as soon as they are computed; a metric already in a run's scores is not computed
again, so a killed scoring resumes, and a metric added later (a model folder given later) is filled in."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from .prompt_sets import EvalPrompt
from .store import Store
from .template import KINDS
from .tifa import Vqa, tifa_scores

METRICS = ("caption_reward", "clip_score", "tifa", "attention_share")
LABELS = {
    "caption_reward": "Caption reward (BLIP-2)",
    "clip_score": "CLIP score (ViT-L/14)",
    "tifa": "TIFA accuracy (BLIP-2 VQA)",
    "attention_share": "Attention inside the masks",
}


def load_image(path: str | Path) -> torch.Tensor:
    """[H, W, 3] float in [0, 1], as ComfyUI's IMAGE (8-bit file values / 255)."""
    import numpy as np
    from PIL import Image

    with Image.open(path) as image:
        array = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(array.copy())


@dataclass
class Scorers:
    caption_reward: object | None = None  # realign_diff.reward.CaptionReward
    clip: object | None = None  # realign_diff.evaluation.clip_score.ClipScore
    vqa: Vqa | None = None

    @property
    def enabled(self) -> set[str]:
        models = {"caption_reward": self.caption_reward, "clip_score": self.clip, "tifa": self.vqa}
        return {name for name, model in models.items() if model is not None}


def wanted_metrics(enabled: set[str], prompt: EvalPrompt, record: dict) -> list[str]:
    """The metrics a run gets: those with a model (TIFA only for a prompt with questions), and the attention share
    when the run reported one."""
    wanted = [m for m in ("caption_reward", "clip_score") if m in enabled]
    wanted += ["tifa"] if "tifa" in enabled and prompt.questions else []
    return wanted + (["attention_share"] if record.get("attention_share") else [])


def missing_metrics(store: Store, name: str, record: dict, prompt: EvalPrompt, enabled: set[str]) -> list[str]:
    done = store.scores_of(name).get(KINDS[0], {})
    return [m for m in wanted_metrics(enabled, prompt, record) if m not in done]


def _batches(images: list[torch.Tensor]) -> list[tuple[list[int], torch.Tensor]]:
    """Both images in one batch when they have one size, else one by one."""
    if len({tuple(i.shape) for i in images}) == 1:
        return [(list(range(len(images))), torch.stack(images))]
    return [([k], image.unsqueeze(0)) for k, image in enumerate(images)]


def _compute(metric: str, batch: torch.Tensor, prompt: EvalPrompt, scorers: Scorers) -> list[dict]:
    if metric == "caption_reward":
        result = scorers.caption_reward.score(batch, prompt.text)
        return [{"caption_reward": float(r), "caption": c} for r, c in zip(result.rewards, result.captions)]
    if metric == "clip_score":
        return [{"clip_score": float(s)} for s in scorers.clip.score(batch, prompt.text)]
    result = tifa_scores(scorers.vqa, batch, prompt.questions)
    return [{"tifa": s, "tifa_answers": a} for s, a in zip(result.scores, result.answers)]


def score_run(store: Store, name: str, record: dict, prompt: EvalPrompt, scorers: Scorers) -> dict:
    scores = store.scores_of(name)
    for kind in KINDS:
        scores.setdefault(kind, {})
    todo = missing_metrics(store, name, record, prompt, scorers.enabled)
    if not todo:
        return scores
    images = [load_image(store.root / record["images"][kind]) for kind in KINDS]
    for metric in todo:
        if metric == "attention_share":
            for kind in KINDS:
                scores[kind]["attention_share"] = record["attention_share"].get(kind)
            continue
        for indices, batch in _batches(images):
            for k, values in zip(indices, _compute(metric, batch, prompt, scorers)):
                scores[KINDS[k]].update(values)
    store.save_scores(name, scores)
    return scores


def score_all(
    store: Store, runs: Sequence[tuple[str, dict, EvalPrompt]], scorers: Scorers, on_done: Callable[[], None]
) -> None:
    """Score every finished run of ``runs`` ((name, run record, prompt)) that lacks a metric."""
    for name, record, prompt in runs:
        score_run(store, name, record, prompt, scorers)
        on_done()
