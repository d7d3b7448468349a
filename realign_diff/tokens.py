"""Which key tokens belong to which object, in the encoded conditioning.

CLIP's BPE tokenizes each word independently of its neighbours, so a phrase's token ids appear
as a contiguous run in the token stream of any text that contains it (punctuation aside). An
object is located by its local caption first ("a yellow pen"), then by its tag ("pen", plural
or singular); its token set is every matched token of a content word (articles, conjunctions
and punctuation are left out: they belong to no object). The stream is the tokenizer's output
for the whole conditioning, chunks included (start, end and padding tokens never match).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

STOP_WORDS = frozenset(
    "a an the and or of with in on at to for from by is are be it its this that these those some".split()
)
_PUNCTUATION = ".,;:!?\"'()[]{}"

TokenizeWord = Callable[[str], list[int]]  # one word -> its token ids (no start/end tokens)


@dataclass
class ObjectTokens:
    tag: str
    caption: str
    positions: list[int] = field(default_factory=list)  # key indices in one prompt-length sequence
    matched: str = ""  # "caption", "tag" or "" when the object is not in the conditioning
    matched_words: list[str] = field(default_factory=list)


def split_words(phrase: str) -> list[str]:
    """Words of a phrase, lower-cased, with surrounding punctuation removed (weights syntax dropped)."""
    cleaned = re.sub(r"[()\[\]]|:\s*-?\d+(\.\d+)?", " ", phrase)
    words = [w.strip(_PUNCTUATION).lower() for w in cleaned.split()]
    return [w for w in words if w]


def tag_variants(tag: str) -> list[str]:
    """The tag and its simple plural/singular forms, longest first ("box" -> "boxes", "box")."""
    tag = " ".join(split_words(tag))
    if not tag:
        return []
    sibilant = tag.endswith(("s", "x", "z", "ch", "sh"))
    if tag.endswith("ies"):
        other = tag[:-3] + "y"
    elif tag.endswith("es") and tag[:-2].endswith(("s", "x", "z", "ch", "sh")):
        other = tag[:-2]
    elif tag.endswith("s") and not tag.endswith(("ss", "us")):
        other = tag[:-1]
    elif tag.endswith("y") and len(tag) > 1 and tag[-2] not in "aeiou":
        other = tag[:-1] + "ies"
    else:
        other = tag + ("es" if sibilant else "s")
    return sorted({tag, other}, key=len, reverse=True)


def find_phrase(
    stream: Sequence[int | None], words: list[list[int]], skippable: frozenset[int] = frozenset()
) -> list[list[list[int]]]:
    """Every occurrence of a phrase (its words' token ids, in order) in the stream.

    Skippable tokens (punctuation) may sit between words. Returns, per occurrence, the stream
    positions of each word's tokens.
    """
    words = [w for w in words if w]
    if not words:
        return []
    occurrences = []
    first = words[0]
    for start in range(len(stream) - len(first) + 1):
        positions: list[list[int]] = []
        cursor = start
        for index, word in enumerate(words):
            if index > 0:
                while cursor < len(stream) and stream[cursor] in skippable:
                    cursor += 1
            if list(stream[cursor : cursor + len(word)]) != word:
                break
            positions.append(list(range(cursor, cursor + len(word))))
            cursor += len(word)
        else:
            occurrences.append(positions)
    return occurrences


def locate_object(
    stream: Sequence[int | None],
    tag: str,
    caption: str,
    tokenize_word: TokenizeWord,
    skippable: frozenset[int] = frozenset(),
) -> ObjectTokens:
    """The object's token positions: its caption's content words if the caption occurs, else its tag."""
    result = ObjectTokens(tag=tag, caption=caption)
    candidates = [("caption", split_words(caption))] + [("tag", split_words(v)) for v in tag_variants(tag)]
    for kind, words in candidates:
        if not words:
            continue
        occurrences = find_phrase(stream, [tokenize_word(w) for w in words], skippable)
        if not occurrences:
            continue
        positions = sorted(
            {p for occurrence in occurrences for word, spots in zip(words, occurrence) if word not in STOP_WORDS for p in spots}
        )
        if not positions:
            continue
        result.positions = positions
        result.matched = kind
        result.matched_words = [w for w in words if w not in STOP_WORDS]
        return result
    return result


def conditioning_text(prompt: str, captions_to_add: Sequence[str]) -> str:
    """The fine-stage text: the prompt, then each local caption it does not already contain."""
    text = prompt.strip()
    for caption in captions_to_add:
        caption = caption.strip()
        if caption:
            text = f"{text}, {caption}" if text else caption
    return text
