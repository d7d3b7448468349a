"""What a tag scorer returns: per tag a likelihood score (2 / 0.5 / 0) and a local caption.

Two scorers produce it: the offline scorer (``offline_scorer.py``, rules + a small knowledge table)
and the LLM scorer (``llm.py``, any OpenAI-compatible endpoint, falling back to the offline scorer).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from ..guidance import VALID_SCORES

CERTAIN, POSSIBLE, UNLIKELY = 2.0, 0.5, 0.0
SCORE_TOLERANCE = 1e-3  # 0.4999 snaps to 0.5; 1 is rejected (neither 0.5 nor 2)


@dataclass(frozen=True)
class TagScore:
    tag: str  # exactly as the tagger (or the prompt) named it
    score: float  # one of 2, 0.5, 0
    caption: str  # the object as the prompt wants it, e.g. "a yellow pen"; never empty

    def to_dict(self) -> dict:
        return {"tag": self.tag, "score": self.score, "caption": self.caption}


@dataclass
class ScoringResult:
    entries: list[TagScore]  # one per requested tag, in the requested order
    source: str  # "offline" or "llm:<model>"
    status: str  # one human-readable line: what produced the scores, and why (fallback reasons included)
    cached: bool = False  # an LLM answer served from the cache (no request made)
    attempts: int = 0  # HTTP requests made for this result
    details: dict = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)  # what the user should know: a fallback, a replaced caption

    def by_tag(self) -> dict[str, TagScore]:
        return {e.tag: e for e in self.entries}

    def to_dict(self) -> dict:
        return {
            "source": self.source,
            "status": self.status,
            "cached": self.cached,
            "attempts": self.attempts,
            "warnings": list(self.warnings),
            "entries": [e.to_dict() for e in self.entries],
        }


class TagScorer(Protocol):
    def score(self, prompt: str, tags: list[str], check_cancel: Callable[[], None] | None = None) -> ScoringResult:
        """``check_cancel()`` raises when the user cancels; a scorer that waits (on a server) calls it often."""
        ...


def snap_score(value) -> float:
    """A score as a float in {2, 0.5, 0}. Numbers (or numeric strings) within 1e-3 of one of them snap
    to it; anything else raises ValueError: a "1" or a "0.8" is ambiguous (a different scale), so the
    whole answer is rejected and the model asked again rather than guessed at."""
    if isinstance(value, bool) or value is None:
        raise ValueError(f"score {value!r} is not a number")
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            raise ValueError(f"score {value!r} is not a number") from None
    if not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"score {value!r} is not a number")
    for allowed in VALID_SCORES:
        if abs(float(value) - allowed) <= SCORE_TOLERANCE:
            return float(allowed)
    raise ValueError(f"score {value!r} is not one of 2, 0.5, 0")


def normalize_tag(tag: str) -> str:
    """Comparison form of a tag: lower case, single spaces, underscores as spaces."""
    return re.sub(r"\s+", " ", str(tag).replace("_", " ")).strip().lower()


# periods that end an abbreviation, not a tag: "st. bernard", "mt. fuji", "dr. pepper"
_ABBREVIATIONS = ("st", "mt", "mr", "mrs", "ms", "dr", "jr", "sr", "vs", "no")
_TAG_SEPARATOR = re.compile(r"[,;\n]|" + "".join(rf"(?<!\b{a})" for a in _ABBREVIATIONS) + r"\.(?=\s|$)", re.IGNORECASE)


def split_tag_list(text: str) -> list[str]:
    """Tags typed in a widget: separated by commas, semicolons, new lines or a period that ends a word
    (GroundingDINO's ``cat . dog``) other than a common abbreviation's (``st. bernard``); in order, without
    repeats (compared by ``normalize_tag``)."""
    return unique_tags(t.strip() for t in _TAG_SEPARATOR.split(text or ""))


def unique_tags(tags) -> list[str]:
    """Tags without empty entries or duplicates (compared by ``normalize_tag``), first spelling kept."""
    seen, out = set(), []
    for tag in tags:
        key = normalize_tag(tag)
        if key and key not in seen:
            seen.add(key)
            out.append(str(tag).strip())
    return out
